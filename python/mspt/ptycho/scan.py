"""PtychoScan: one tilt's 4D-STEM scan with its calibrations, and batched reading of its patterns.

Data is (scan_y, scan_x, k_y, k_x) or (positions, k_y, k_x) counts with zero frequency at the pattern
centre, as a NumPy array or any lazily indexed array (an h5py dataset): patterns are read in batches and
the whole scan is never loaded unless it fits the memory budget.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from .. import _validate as v
from ..constants import wavelength_A

DEFOCUS_REFERENCES = ("centre", "entrance")
# A scan row of which a read wants fewer than this fraction of the patterns is read pattern by pattern (only
# the chunks that hold them), a row wanted more fully in one contiguous read.
SPARSE_ROW_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class PtychoScan:
    """A 4D-STEM scan and its calibrations.

    data : (scan_y, scan_x, k_y, k_x) or (N, k_y, k_x) counts (electrons), zero frequency at the centre.
    energy_eV : beam energy (eV). semiangle_mrad : probe convergence semiangle (mrad).
    scan_step_A : raster step (dy, dx) in A (used when ``positions_A`` is not given).
    reciprocal_sampling_invA : detector pixel (dky, dkx) in 1/A; or give ``detector_sampling_mrad``.
    defocus_A : probe defocus (A, abTEM's sign: positive = crossover downstream of the reference plane).
    defocus_reference : "centre": the defocus refers to the plane through the rotation centre, about which
        the slice stack is placed (the tilt-series convention); "entrance": to the stack's entrance surface.
    aberrations : Krivanek coefficients (A, rad) besides defocus, e.g. {"C30": 1e4}.
    positions_A : (N, 2) measured probe positions (y, x) in A; default: the raster grid, centred on 0.
    scan_rotation_deg : rotation of the scan axes relative to the detector axes (counter-clockwise in the
        (x, y) plane); the raster grid is rotated by it.
    detector_transpose : the detector's axes are (k_x, k_y); patterns are transposed when read.
    tilt_mrad : initial beam tilt (mistilt) guess (ty, tx) in mrad.
    """

    data: Any
    energy_eV: float
    semiangle_mrad: float
    scan_step_A: Any = None
    reciprocal_sampling_invA: Any = None
    detector_sampling_mrad: Any = None
    defocus_A: float = 0.0
    defocus_reference: str = "centre"
    aberrations: Mapping[str, float] | None = None
    positions_A: Any = None
    scan_rotation_deg: float = 0.0
    detector_transpose: bool = False
    tilt_mrad: Any = (0.0, 0.0)

    def __post_init__(self):
        shape = tuple(getattr(self.data, "shape", ()))
        if len(shape) not in (3, 4):
            raise ValueError(
                f"data: expected shape (scan_y, scan_x, k_y, k_x) or (positions, k_y, k_x), got {shape or type(self.data)}"
            )
        if min(shape) < 1 or min(shape[-2:]) < 8:
            raise ValueError(f"data: expected patterns of at least 8x8 pixels and at least one position, got {shape}")
        v.positive("energy_eV", self.energy_eV)
        v.positive("semiangle_mrad", self.semiangle_mrad)
        v.finite("defocus_A", self.defocus_A, "A")
        v.choice("defocus_reference", self.defocus_reference, DEFOCUS_REFERENCES)
        v.finite("scan_rotation_deg", self.scan_rotation_deg, "degrees")
        v.pair("tilt_mrad", self.tilt_mrad, "mrad")
        if (self.reciprocal_sampling_invA is None) == (self.detector_sampling_mrad is None):
            raise ValueError(
                "reciprocal_sampling_invA / detector_sampling_mrad: give exactly one detector calibration "
                "(1/A per pixel, or mrad per pixel)"
            )
        if self.reciprocal_sampling_invA is not None:
            v.pair("reciprocal_sampling_invA", self.reciprocal_sampling_invA, "1/A", positive_values=True)
        else:
            v.pair("detector_sampling_mrad", self.detector_sampling_mrad, "mrad", positive_values=True)
        if self.positions_A is None:
            if self.scan_step_A is None:
                raise ValueError("scan_step_A: required (raster step (dy, dx) in A) unless positions_A is given")
            if len(shape) != 4:
                raise ValueError("data: a raster scan needs shape (scan_y, scan_x, k_y, k_x); or give positions_A")
            v.pair("scan_step_A", self.scan_step_A, "A", positive_values=True)
        else:
            positions = np.asarray(self.positions_A, dtype=float)
            if positions.shape != (self.n_positions, 2):
                raise ValueError(f"positions_A: expected shape ({self.n_positions}, 2) to match data {shape}, got {positions.shape}")
            if not np.all(np.isfinite(positions)):
                raise ValueError("positions_A: expected finite positions")

    # -- geometry --------------------------------------------------------------------------------------
    @property
    def n_positions(self) -> int:
        shape = self.data.shape
        return shape[0] * shape[1] if len(shape) == 4 else shape[0]

    @property
    def pattern_shape(self) -> tuple[int, int]:
        ky, kx = self.data.shape[-2:]
        return (kx, ky) if self.detector_transpose else (ky, kx)

    @property
    def wavelength_A(self) -> float:
        return wavelength_A(self.energy_eV)

    @property
    def dk_invA(self) -> tuple[float, float]:
        """Detector pixel in 1/A, (dky, dkx) after any transpose."""
        if self.reciprocal_sampling_invA is not None:
            dk = v.pair("reciprocal_sampling_invA", self.reciprocal_sampling_invA, "1/A")
        else:
            mrad = v.pair("detector_sampling_mrad", self.detector_sampling_mrad, "mrad")
            dk = (mrad[0] * 1e-3 / self.wavelength_A, mrad[1] * 1e-3 / self.wavelength_A)
        return dk

    @property
    def sampling_A(self) -> tuple[float, float]:
        """Real-space pixel of the reconstruction: 1 / (pattern size * detector pixel), in A."""
        ky, kx = self.pattern_shape
        dky, dkx = self.dk_invA
        return 1.0 / (ky * dky), 1.0 / (kx * dkx)

    def positions(self) -> np.ndarray:
        """Probe positions (N, 2) as (y, x) in A: the given ones, or the rotated raster centred on 0."""
        if self.positions_A is not None:
            return np.asarray(self.positions_A, dtype=np.float64).copy()
        sy, sx = self.data.shape[:2]
        dy, dx = v.pair("scan_step_A", self.scan_step_A, "A")
        yy, xx = np.meshgrid((np.arange(sy) - (sy - 1) / 2) * dy, (np.arange(sx) - (sx - 1) / 2) * dx, indexing="ij")
        theta = math.radians(self.scan_rotation_deg)
        x = xx * math.cos(theta) - yy * math.sin(theta)
        y = xx * math.sin(theta) + yy * math.cos(theta)
        return np.column_stack([y.ravel(), x.ravel()])

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, indices) -> np.ndarray:
        """Patterns at flat position indices, as float32 (B, k_y, k_x) (transposed if the detector is).

        Every pattern is written once, straight into the float32 result (converted and transposed on the
        way): a read holds the result and, from a file, one block as read (a scan row, or the selected
        patterns of a list of positions)."""
        indices = np.asarray(indices, dtype=np.int64)
        if isinstance(self.data, np.ndarray):
            flat = self.data.reshape(-1, *self.data.shape[-2:])
            if flat.dtype == np.float32 and not self.detector_transpose:
                return flat[indices]  # the fancy-indexed copy is the result
        out = np.empty((len(indices), *self.pattern_shape), np.float32)
        target = np.swapaxes(out, -1, -2) if self.detector_transpose else out  # (B, k_y, k_x) as stored
        if isinstance(self.data, np.ndarray):
            target[...] = flat[indices]  # one temporary, in the data's own dtype
        else:
            self._read_lazy(indices, target)
        return out

    def _read_lazy(self, indices: np.ndarray, target: np.ndarray) -> None:
        """Write the patterns at ``indices`` into ``target`` (B, k_y, k_x) from a lazily indexed array (h5py),
        which wants increasing indices, one axis at a time: one scan row at a time, the whole row where the
        batch wants much of it (one contiguous read), only the wanted patterns where it wants a few (the
        held-out positions, the curvature's sample and a search take a few patterns from many rows; read
        whole, their rows cost as much as a pass over the scan)."""
        order = np.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        shape = self.data.shape
        if len(shape) == 4:
            rows, cols = np.divmod(sorted_idx, shape[1])
            for row in np.unique(rows):
                sel = rows == row
                wanted = cols[sel]  # increasing
                if len(wanted) < SPARSE_ROW_FRACTION * shape[1]:
                    unique, inverse = np.unique(wanted, return_inverse=True)  # the file wants each index once
                    block = np.asarray(self.data[int(row), unique.tolist()])
                    target[order[sel]] = block if len(unique) == len(wanted) else block[inverse]
                else:
                    target[order[sel]] = np.asarray(self.data[int(row)])[wanted]
        else:
            unique, inverse = np.unique(sorted_idx, return_inverse=True)
            block = np.asarray(self.data[unique])
            target[order] = block if len(unique) == len(sorted_idx) else block[inverse]

    @property
    def nbytes_float32(self) -> int:
        ky, kx = self.pattern_shape
        return self.n_positions * ky * kx * 4

    def check_patterns(self, chunk: int = 1024, centre_tolerance_px: float = 2.0) -> float:
        """Read every pattern once in chunks: counts must be finite and non-negative, and the mean pattern
        centred. Returns the mean total counts per pattern. ValueError names what is wrong."""
        total = 0.0
        mean_pattern = np.zeros(self.pattern_shape)
        for start in range(0, self.n_positions, chunk):
            idx = np.arange(start, min(start + chunk, self.n_positions))
            block = self.read(idx)
            # min and max carry any NaN or infinity without a temporary the size of the chunk
            low, high = block.min(), block.max()
            if not (np.isfinite(low) and np.isfinite(high)):
                bad = idx[np.nonzero(~np.isfinite(block).reshape(len(idx), -1).all(1))[0][0]]
                raise ValueError(f"data: pattern {bad} contains NaN or infinite counts")
            if low < 0:
                bad = idx[np.nonzero((block < 0).reshape(len(idx), -1).any(1))[0][0]]
                raise ValueError(f"data: pattern {bad} contains negative counts (subtract the dark reference and clip)")
            total += float(block.sum(dtype=np.float64))
            mean_pattern += block.sum(0)
            del block  # freed before the next chunk is read
        if total <= 0:
            raise ValueError("data: the scan holds no counts")
        ky, kx = self.pattern_shape
        weight = mean_pattern / mean_pattern.sum()
        cy = float((weight.sum(1) * np.arange(ky)).sum())
        cx = float((weight.sum(0) * np.arange(kx)).sum())
        if abs(cy - ky // 2) > centre_tolerance_px or abs(cx - kx // 2) > centre_tolerance_px:
            raise ValueError(
                f"data: the mean pattern's centre of mass is at ({cy:.1f}, {cx:.1f}) px, expected the zero "
                f"frequency at ({ky // 2}, {kx // 2}) +- {centre_tolerance_px} px; centre the patterns (shift the "
                "bright field disk to the centre) before reconstructing"
            )
        return total / self.n_positions
