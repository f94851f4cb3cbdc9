"""save_tiltseries: write an ``mspt.tiltseries`` HDF5 file (schema in :mod:`mspt.io.tiltseries`), atomically
(temporary file + rename) and chunked by scan rows, the unit in which the reconstruction reads patterns."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import h5py
import numpy as np

from ..ops import tilt_series_rotations
from .atomic import atomic_path
from .calibration import ScanCalibration
from .poses import checked_rotation
from .tiltseries import FORMAT, TILTS, _dose, check_scan_array

_CHUNK_BYTES = 4 * 2**20  # at most ~4 MiB per chunk: whole rows of patterns where they fit


def save_tiltseries(path, tilts: Sequence, tilts_deg=None, rotations=None, *, energy_eV: float, semiangle_mrad: float,
                    scan_step_A, defocus_A: float = 0.0, aberrations=None, detector_sampling_mrad=None,
                    reciprocal_sampling_invA=None, scan_rotation_deg: float = 0.0, detector_transpose: bool = False,
                    doses_e_per_A2=None, compression: str | None = None, overwrite: bool = False,
                    extra: Callable[[h5py.File], None] | None = None) -> None:  # fmt: skip
    """Write a tilt series.

    tilts : T arrays (scan_y, scan_x, k_y, k_x) of counts (NumPy, or lazily indexed arrays copied row by row).
    tilts_deg : T tilt angles about y (degrees); or ``rotations`` (T, 3, 3) active poses (not both).
    energy_eV ... detector_transpose : the calibrations (see :class:`mspt.io.ScanCalibration`); defocus_A
        is referenced to the rotation-centre plane.
    doses_e_per_A2 : optional dose per tilt (e/A^2), one number for all or one per tilt.
    compression : an h5py filter ("gzip", "lzf") or None.
    overwrite : replace an existing file (otherwise FileExistsError).
    extra : called with the open file before it is renamed into place, to add more groups (e.g. ground truth).
    """
    calibration = ScanCalibration(
        energy_eV=energy_eV, semiangle_mrad=semiangle_mrad, scan_step_A=scan_step_A, defocus_A=defocus_A,
        aberrations=aberrations, detector_sampling_mrad=detector_sampling_mrad,
        reciprocal_sampling_invA=reciprocal_sampling_invA, scan_rotation_deg=scan_rotation_deg,
        detector_transpose=detector_transpose,
    )  # fmt: skip
    if isinstance(tilts, np.ndarray) and tilts.ndim == 4:
        raise ValueError("tilts: expected a list of (scan_y, scan_x, k_y, k_x) arrays, one per tilt; got one 4D array")
    tilts = list(tilts)
    poses = _poses(tilts_deg, rotations, len(tilts))
    doses = _doses(doses_e_per_A2, len(tilts))
    for i, array in enumerate(tilts):
        check_scan_array(f"tilts[{i}]", array)
        if i and array.shape[-2:] != tilts[0].shape[-2:]:
            raise ValueError(f"tilts[{i}]: expected patterns of {tilts[0].shape[-2:]} pixels like tilts[0], got {array.shape[-2:]}")
    if compression not in (None, "gzip", "lzf"):
        raise ValueError(f"compression: expected None, 'gzip' or 'lzf', got {compression!r}")
    with atomic_path(path, name="path", overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            for key, value in calibration.to_attrs().items():
                f.attrs[key] = value
            for i, (array, (key, pose), dose) in enumerate(zip(tilts, poses, doses)):
                group = f.create_group(f"{TILTS}/{i:03d}")
                group.attrs[key] = pose
                if dose is not None:
                    group.attrs["dose_e_per_A2"] = dose
                _write_scan(group, f"tilts[{i}]", array, compression)
            if extra is not None:
                extra(f)


def _poses(tilts_deg, rotations, n: int) -> list[tuple[str, object]]:
    if (tilts_deg is None) == (rotations is None):
        raise ValueError("tilts_deg / rotations: expected exactly one of them (angles about y, or (T, 3, 3) poses)")
    if tilts_deg is not None:
        angles = np.asarray(tilts_deg, dtype=float).reshape(-1)
        if angles.size != n:
            raise ValueError(f"tilts_deg: expected {n} angles (one per tilt in tilts), got {angles.size}")
        tilt_series_rotations(angles)  # validates: finite angles
        return [("tilt_deg", float(a)) for a in angles]
    mats = np.asarray(rotations, dtype=float)
    if mats.shape != (n, 3, 3):
        raise ValueError(f"rotations: expected shape ({n}, 3, 3) (one pose per tilt in tilts), got {mats.shape}")
    return [("rotation", checked_rotation(f"rotations[{i}]", m)) for i, m in enumerate(mats)]


def _doses(value, n: int) -> list[float | None]:
    if value is None:
        return [None] * n
    items = [value] * n if np.ndim(value) == 0 else list(value)
    if len(items) != n:
        raise ValueError(f"doses_e_per_A2: expected one dose or {n} (one per tilt), got {len(items)}")
    return [_dose(f"doses_e_per_A2[{i}]", d) for i, d in enumerate(items)]


def _write_scan(group: h5py.Group, name: str, array, compression) -> None:
    sy, sx, ky, kx = array.shape
    dtype = np.dtype(array.dtype)
    dtype = np.dtype(np.float32) if dtype.kind == "f" else dtype
    row_bytes = sx * ky * kx * dtype.itemsize
    chunk = (1, sx, ky, kx) if row_bytes <= _CHUNK_BYTES else (1, max(1, _CHUNK_BYTES // (ky * kx * dtype.itemsize)), ky, kx)
    dataset = group.create_dataset("data", shape=array.shape, dtype=dtype, chunks=chunk, compression=compression)
    for row in range(sy):  # one scan row at a time: the input may itself be larger than memory
        block = np.asarray(array[row])
        if dtype.kind == "f" and not np.all(np.isfinite(block)):
            raise ValueError(f"{name}: scan row {row} contains NaN or infinite counts; expected finite counts")
        if np.any(block < 0):
            raise ValueError(f"{name}: scan row {row} contains negative counts; expected counts >= 0")
        dataset[row] = block
