"""JointTilt: one tilt's data and its (fixed) acquisition state for the joint refinement."""

from __future__ import annotations

import dataclasses

import numpy as np

from . import _inputs


@dataclasses.dataclass(frozen=True)
class JointTilt:
    """rotation (3, 3) and shifts_A (2,) (dy, dx) in A: the tilt's pose; probe (M, ny, nx) complex at the
    entrance of the first slab; positions_px (B, 2) (y, x) in projection pixels; patterns (B, ny, nx)
    counts, zero frequency at the centre (any array that slices lazily, e.g. an HDF5 dataset)."""

    rotation: np.ndarray
    shifts_A: np.ndarray
    probe: np.ndarray
    positions_px: np.ndarray
    patterns: object

    def __post_init__(self):
        for name, check in (("rotation", _inputs.rotation), ("shifts_A", _inputs.shifts),
                            ("probe", _inputs.probe), ("positions_px", _inputs.positions)):  # fmt: skip
            object.__setattr__(self, name, check(getattr(self, name)))
        _inputs.patterns_shape(self.patterns, self.positions_px.shape[0], self.probe.shape[1:])
