"""PtychoResult: what a multislice ptychography reconstruction returns."""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import PtychoConfig


@dataclasses.dataclass(frozen=True)
class PtychoResult:
    """A reconstructed tilt.

    slices : (S, Y, X) complex64 transmission functions, entrance to exit; pixel ``pixel_size_A``, slice
        thickness ``slice_thickness_A``. Object pixel (0, 0) sits at ``object_origin_A`` (y, x) in the
        scan's position frame.
    probe : (M, ky, kx) complex64 probe modes at the stack's entrance, strongest first.
    positions_A : (N, 2) refined probe positions (y, x) in A; ``nominal_positions_A`` the ones given.
    tilt_mrad : refined beam tilt (ty, tx).
    loss : (iterations,) mean loss per pattern after each iteration.
    summed_phase : (Y, X) sum over slices of each slice's phase (rad): the projection for tomography.
    timings : wall times in seconds ("total", "per_iteration").
    """

    slices: np.ndarray
    probe: np.ndarray
    positions_A: np.ndarray
    nominal_positions_A: np.ndarray
    tilt_mrad: np.ndarray
    loss: np.ndarray
    summed_phase: np.ndarray
    pixel_size_A: tuple[float, float]
    slice_thickness_A: float
    object_origin_A: np.ndarray
    timings: dict
    config: PtychoConfig

    @property
    def iterations(self) -> int:
        return len(self.loss)
