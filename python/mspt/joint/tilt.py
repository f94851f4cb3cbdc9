"""JointTilt: one tilt's data and its (fixed) acquisition state for the joint refinement."""

from __future__ import annotations

import dataclasses

import numpy as np

from . import _inputs


@dataclasses.dataclass(frozen=True)
class JointTilt:
    """rotation (3, 3) and shifts_A (2,) (dy, dx) in A: the tilt's pose; probe (M, ny, nx) complex at the
    entrance of the first slab; positions_px (B, 2) (y, x) in projection pixels; patterns (B, ny, nx)
    counts, zero frequency at the centre (any array that slices lazily, e.g. an HDF5 dataset); tilt_mrad
    (ty, tx) the beam's tilt in the multislice (the ptychography's refined mistilt; held fixed here)."""

    rotation: np.ndarray
    shifts_A: np.ndarray
    probe: np.ndarray
    positions_px: np.ndarray
    patterns: object
    tilt_mrad: np.ndarray = (0.0, 0.0)

    def __post_init__(self):
        for name, check in (("rotation", _inputs.rotation), ("shifts_A", _inputs.shifts),
                            ("probe", _inputs.probe), ("positions_px", _inputs.positions)):  # fmt: skip
            object.__setattr__(self, name, check(getattr(self, name)))
        tilt = np.asarray(self.tilt_mrad, dtype=np.float64)
        if tilt.shape != (2,) or not np.all(np.isfinite(tilt)):
            raise ValueError(f"tilt_mrad: expected a finite (ty, tx) pair in mrad, got {self.tilt_mrad!r}")
        object.__setattr__(self, "tilt_mrad", tilt)
        _inputs.patterns_shape(self.patterns, self.positions_px.shape[0], self.probe.shape[1:])
