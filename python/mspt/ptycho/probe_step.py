"""The engine's probe update after each batch, in one native call (cpu/probe_step_cpu.cpp): the batch's
coverage (the entrance slice's power summed over its windows) and the preconditioned step of every mode."""

from __future__ import annotations

import numpy as np

from .._native import core as _core


def windowed_probe_step(
    probe: np.ndarray,
    grad: np.ndarray,
    entrance_slice: np.ndarray,
    positions_px: np.ndarray,
    *,
    step: float,
    curvature: float,
    floor_fraction: float,
    threads: int | None = None,
) -> float:
    """``probe -= step * grad / (curvature * (coverage + floor_fraction * max coverage))`` in place, every
    mode, where ``coverage`` (ny, nx) is ``|entrance_slice|^2`` summed over the probe windows at
    ``positions_px`` (B, 2; object pixels). ``probe`` and ``grad`` are (modes, ny, nx) of the slice's complex
    dtype, ``probe`` C-contiguous. Returns the batch's largest coverage."""
    positions = np.ascontiguousarray(positions_px, dtype=np.float64)
    return _core.windowed_probe_step(
        probe, grad, entrance_slice, positions, float(step), float(curvature), float(floor_fraction), int(threads or 0)
    )
