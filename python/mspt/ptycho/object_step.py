"""The engine's object update after one batch, done where the batch's probe windows lie.

After each batch the slices take a preconditioned gradient step and the object constraint projects them
again (engine.py). Both used to sweep the whole object; the gradient, the illumination and the step are
zero outside the union of the batch's windows, and the constraint changes nothing where it already holds,
so the native step (cpp/cpu/object_step_cpu.cpp) visits that union only, with no object-sized temporaries.
On an 800 x 800 scan the object is thousands of windows wide, and a whole-object sweep per batch would cost
more than the batch's multislice itself.
"""

from __future__ import annotations

import numpy as np

from .._native import core as _core
from .config import OBJECT_CONSTRAINTS

_CONSTRAINT_CODES = {name: code for code, name in enumerate(OBJECT_CONSTRAINTS)}


def windowed_object_step(
    slices: np.ndarray,
    grad: np.ndarray,
    probe_intensity: np.ndarray,
    positions_px: np.ndarray,
    *,
    step: float,
    curvature: float,
    floor_fraction: float,
    constraint: str,
    threads: int | None = None,
) -> float:
    """``slices -= step * grad / (curvature * (illumination + floor_fraction * max illumination))`` then the
    object constraint, in place, over the union of the probe windows at ``positions_px`` (B, 2) only.

    ``illumination`` is ``probe_intensity`` (ny, nx, summed over modes) added at every window; ``grad``
    (the batch's dL/dO, shaped like ``slices`` and zero outside the windows) is zeroed where it was read, so
    one buffer serves every batch. Returns the batch's largest illumination. The slices must be C-contiguous
    complex64 (or complex128) and the windows inside them."""
    if constraint not in _CONSTRAINT_CODES:
        raise ValueError(f"constraint: expected one of {OBJECT_CONSTRAINTS}, got {constraint!r}")
    real = np.float64 if slices.dtype == np.complex128 else np.float32
    probe_intensity = np.ascontiguousarray(probe_intensity, dtype=real)
    positions = np.ascontiguousarray(positions_px, dtype=np.float64)
    return _core.windowed_object_step(
        slices, grad, probe_intensity, positions, float(step), float(curvature), float(floor_fraction),
        _CONSTRAINT_CODES[constraint], int(threads or 0),
    )  # fmt: skip


def constrain_object(slices: np.ndarray, constraint: str, threads: int | None = None) -> np.ndarray:
    """The object constraint on every value of ``slices`` (C-contiguous complex64 or complex128), in place;
    returns ``slices``. The same projection the windowed step applies to a batch's windows."""
    if constraint not in _CONSTRAINT_CODES:
        raise ValueError(f"constraint: expected one of {OBJECT_CONSTRAINTS}, got {constraint!r}")
    _core.constrain_object(slices, _CONSTRAINT_CODES[constraint], int(threads or 0))
    return slices
