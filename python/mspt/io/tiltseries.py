"""TiltSeries: a tilt series of 4D-STEM scans with shared calibrations, read lazily; and the reader of the
``mspt.tiltseries`` HDF5 schema (DESIGN.md, "Files").

Schema: root attributes ``energy_eV``, ``semiangle_mrad``, ``scan_step_A`` (dy, dx), optional ``defocus_A``
(referenced to the rotation-centre plane), ``aberrations`` (JSON), ``scan_rotation_deg``,
``detector_transpose``, and one of ``detector_sampling_mrad`` / ``reciprocal_sampling_invA``; group
``tilts/NNN`` (000, 001, ...) per tilt with dataset ``data`` (scan_y, scan_x, k_y, k_x) and one of the
attributes ``tilt_deg``, ``rotation`` (3x3) or ``euler_deg`` (with root attribute ``euler_convention``),
optional ``dose_e_per_A2``. Other groups (e.g. a simulator's ``truth``) are ignored.

Patterns stay in the file: a scan hands its h5py dataset to :class:`mspt.ptycho.PtychoScan`, which reads it
in batches of scan rows.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from .calibration import ScanCalibration
from .poses import checked_rotation, tilt_about_y_deg

FORMAT = "mspt.tiltseries/1"
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".emd")  # never handed to rosettasciio, even when not HDF5
TILTS = "tilts"


class TiltSeries:
    """A tilt series: per tilt a (scan_y, scan_x, k_y, k_x) array (NumPy or lazily indexed, e.g. h5py) and a
    pose, with one set of calibrations.

    data : sequence of T arrays. rotations : (T, 3, 3) active rotations (DESIGN.md convention).
    calibration : :class:`ScanCalibration`. doses_e_per_A2 : per-tilt dose (e/A^2) or None entries.
    path : the file it was read from (None for in-memory series). Close it (or use ``with``) to release
    the file.
    """

    def __init__(self, data: Sequence[Any], rotations, calibration: ScanCalibration, *, doses_e_per_A2=None,
                 path=None, file: h5py.File | None = None, names: Sequence[str] | None = None):  # fmt: skip
        self.data = list(data)
        self.names = list(names) if names is not None else [f"tilts/{i:03d}/data" for i in range(len(self.data))]
        if not self.data:
            raise ValueError("tilts: expected at least one tilt, got none")
        rotations = np.asarray(rotations, dtype=float)
        if rotations.shape != (len(self.data), 3, 3):
            raise ValueError(
                f"rotations: expected one (3, 3) pose per tilt, i.e. shape ({len(self.data)}, 3, 3), got {rotations.shape}"
            )
        self.rotations = np.stack([checked_rotation(f"rotation of tilt {i}", r) for i, r in enumerate(rotations)])
        if not isinstance(calibration, ScanCalibration):
            raise TypeError(f"calibration: expected a ScanCalibration, got {type(calibration).__name__}")
        self.calibration = calibration
        doses = [None] * len(self.data) if doses_e_per_A2 is None else list(doses_e_per_A2)
        if len(doses) != len(self.data):
            raise ValueError(f"doses_e_per_A2: expected {len(self.data)} entries (one per tilt), got {len(doses)}")
        self.doses_e_per_A2 = [None if d is None else _dose(f"{self.names[i]}: dose_e_per_A2", d) for i, d in enumerate(doses)]
        self.path = None if path is None else pathlib.Path(path)
        self._file = file
        pattern = None
        for name, array in zip(self.names, self.data):
            check_scan_array(name, array)
            if pattern is None:
                pattern = array.shape[-2:]
            elif array.shape[-2:] != pattern:
                raise ValueError(f"{name}: expected patterns of {pattern} pixels like the first tilt, got {array.shape[-2:]}")

    # -- geometry --------------------------------------------------------------------------------------
    @property
    def n_tilts(self) -> int:
        return len(self.data)

    def __len__(self) -> int:
        return self.n_tilts

    @property
    def tilts_deg(self) -> np.ndarray:
        """(T,) tilt about y per tilt (degrees): the angle each pose moves +z towards +x."""
        return np.array([tilt_about_y_deg(r) for r in self.rotations])

    def scan(self, index: int, **overrides):
        """Tilt ``index`` as a :class:`mspt.ptycho.PtychoScan` (patterns read lazily); keyword arguments
        override its calibrations (e.g. ``defocus_A``)."""
        from ..ptycho.scan import PtychoScan

        if not isinstance(index, (int, np.integer)) or not -self.n_tilts <= index < self.n_tilts:
            raise IndexError(f"index: expected a tilt index in [0, {self.n_tilts}), got {index!r}")
        return PtychoScan(data=self.data[index], **{**self.calibration.scan_kwargs(), **overrides})

    def check(self, chunk: int = 1024) -> None:
        """Read every pattern once, in chunks: ValueError naming the tilt when counts are NaN, infinite or
        negative, or a tilt's mean pattern is not centred."""
        for index, name in enumerate(self.names):
            try:
                self.scan(index).check_patterns(chunk=chunk)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None

    # -- resources -------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "TiltSeries":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        shape = self.data[0].shape
        return f"TiltSeries({self.n_tilts} tilts of {shape}{where})"


def check_scan_array(name: str, array) -> None:
    """A tilt's data: shape (scan_y, scan_x, k_y, k_x) with patterns of at least 8x8, real numeric dtype."""
    shape = tuple(getattr(array, "shape", ()))
    dtype = np.dtype(getattr(array, "dtype", object))
    if len(shape) != 4 or min(shape) < 1 or min(shape[2:]) < 8:
        raise ValueError(f"{name}: expected shape (scan_y, scan_x, k_y, k_x) with patterns of at least 8x8, got {shape}")
    if dtype.kind not in "uif":
        raise ValueError(f"{name}: expected real counts (integer or float dtype), got dtype {dtype}")


def _dose(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name}: expected a positive finite dose in e/A^2, got {value!r}")
    return number
