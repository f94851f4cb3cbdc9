"""TomoResult: what a tomographic reconstruction with joint alignment returns."""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import TomoConfig


@dataclasses.dataclass(frozen=True)
class TomoResult:
    """A reconstructed volume and the refined poses.

    volume : (Z, Y, X) float32, in the projections' units per A (a line integral of it over A gives them);
        voxel (k, j, i) at ((i - X//2) d, (j - Y//2) d, (k - Z//2) d) from the rotation centre, d =
        ``voxel_size_A``.
    support : (Z, Y, X) bool, the support the volume was restricted to (all True without one).
    rotation : (T, 3, 3) refined active rotations; ``shifts_A`` (T, 2) refined (dy, dx) in A. The corrections
        to the poses given carry no common rotation or 3D translation (the gauge, :mod:`mspt.tomo.gauge`).
    initial_rotation, initial_shifts_A : the poses given.
    loss : (outer steps,) relative data misfit |A x - b|^2 / |b|^2 after each outer step's volume solve, at
        that step's level (the final pass appends one entry).
    residuals : (T,) per-tilt relative misfit |A_t x - b_t| / |b_t| of the final volume.
    levels : (outer steps,) pyramid factor of each loss entry (1 for the final pass).
    projector_calls : passes of project / backproject / the pose vjp over the whole series.
    timings : wall times in seconds ("total", "prealign", per level "level_<factor>", "final").
    """

    volume: np.ndarray
    voxel_size_A: float
    support: np.ndarray
    rotation: np.ndarray
    shifts_A: np.ndarray
    initial_rotation: np.ndarray
    initial_shifts_A: np.ndarray
    loss: np.ndarray
    residuals: np.ndarray
    levels: np.ndarray
    projector_calls: float
    timings: dict
    config: TomoConfig


@dataclasses.dataclass(frozen=True)
class TomoStep:
    """The state after one outer step of :func:`mspt.tomo.reconstruct`, handed to its ``callback``.

    level_factor : the pyramid factor of the step's level; step : the step's index within its level.
    rotation : (T, 3, 3) active rotations and shifts_A (T, 2) (dy, dx) in A after the step's pose update.
    loss : the step's relative data misfit |A x - b|^2 / |b|^2 (before its pose update).
    projector_calls : passes of project / backproject / the pose vjp over the whole series so far.
    """

    level_factor: int
    step: int
    rotation: np.ndarray
    shifts_A: np.ndarray
    loss: float
    projector_calls: float
