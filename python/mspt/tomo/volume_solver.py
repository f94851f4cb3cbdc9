"""The volume solver: min_x 1/2 |A x - b|^2 over x >= 0 (optional) inside a support, for fixed poses.

SIRT-preconditioned projected gradient with Nesterov momentum (FISTA in the SIRT metric):
x <- P(y + C A^T W (b - A y)) with W = 1 / (A s) the inverse ray lengths through the support s and
C = s / (A^T 1) the inverse back-projected weights. ``W^1/2 A C^1/2`` has norm <= 1 for a non-negative A,
so the unit step is safe; momentum is restarted whenever the loss rises (O'Donoghue & Candes 2015).
A x of the momentum point follows from linearity, A y = A x_k + beta (A x_k - A x_k-1), so every iteration
costs one projection and one back-projection and ends with the residual of the returned volume.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .series_operator import SeriesProjector


@dataclasses.dataclass
class VolumeSolution:
    volume: np.ndarray  # (Z, Y, X) float32
    model: np.ndarray  # (T, Py, Px) A x of that volume
    loss: float  # 1/2 |A x - b|^2


def sirt_weights(op: SeriesProjector, support: np.ndarray, rotation, shifts_A):
    """The SIRT weights (W (T, Py, Px), C (Z, Y, X)) at the current poses (two projector calls)."""
    lengths = op.forward(support.astype(np.float32), rotation, shifts_A)
    row = np.where(lengths > 1e-6 * max(float(lengths.max()), 1e-30), 1.0 / np.maximum(lengths, 1e-30), 0.0)
    coverage = op.adjoint(np.ones_like(lengths), rotation, shifts_A)
    column = np.where(support & (coverage > 0), 1.0 / np.maximum(coverage, 1e-30), 0.0)
    return row.astype(np.float32), column.astype(np.float32)


def solve_volume(op: SeriesProjector, data, volume, model, rotation, shifts_A, weights, iterations: int,
                 nonnegative: bool) -> VolumeSolution:  # fmt: skip
    """Run ``iterations`` solver steps from ``volume`` (warm start) whose projection is ``model`` -> the new
    volume, its projection and its loss. Costs 2 ``iterations`` projector calls."""
    row, column = weights
    x = np.asarray(volume, dtype=np.float32)
    ax = model
    # The iteration descends the W-weighted loss; restarts watch that one.
    weighted = float(np.sum(row * (ax - data) ** 2, dtype=np.float64))
    x_prev, ax_prev = x, ax
    t = 1.0
    for _ in range(iterations):
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_next
        y = x + beta * (x - x_prev)
        ay = ax + beta * (ax - ax_prev)
        step = op.adjoint(row * (data - ay), rotation, shifts_A)
        x_new = y + column * step
        if nonnegative:
            np.maximum(x_new, 0.0, out=x_new)
        ax_new = op.forward(x_new, rotation, shifts_A)
        weighted_new = float(np.sum(row * (ax_new - data) ** 2, dtype=np.float64))
        if weighted_new > weighted:
            t_next = 1.0  # restart the momentum
        x_prev, ax_prev, x, ax, weighted, t = x, ax, x_new, ax_new, weighted_new, t_next
    return VolumeSolution(x, ax, 0.5 * float(np.sum((ax - data) ** 2, dtype=np.float64)))
