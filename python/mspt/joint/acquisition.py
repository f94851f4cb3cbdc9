"""The acquisition block of the joint refinement: one tilt's pose, probe and positions, each in turn by
L-BFGS on that tilt's data with the volume held fixed.

Parametrisations (chosen so that a unit step is a sensible first move):

* pose: the rotation update ``R = exp([w]x) R0`` with ``w`` in degrees, and the shifts (dy, dx) in A. The
  model's rotation gradient is the tangent one at R (for ``exp([d]x) R``); at w != 0 the gradient w.r.t. w is
  that times the left Jacobian of SO(3), so the line search sees the exact derivative.
* probe: the modes' real and imaginary parts (counts^(1/2) per pixel).
* positions: (y, x) in pixels, bounded so every probe window stays inside the projection grid (a start
  outside the bounds is moved onto them).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize

from ..tomo.rotations import left_jacobian, rotation_exp
from .model import JointModel
from .tilt import JointTilt


def window_bounds(window, grid) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) (y, x) pixel bounds of a window centre: a window covers [round(p) - N//2, round(p) - N//2 + N)
    (DESIGN.md) and must stay on the (Py, Px) grid."""
    window, grid = np.asarray(window), np.asarray(grid)
    return window // 2 - 0.49, grid - (window - window // 2) + 0.49


def _minimise(objective, start, evaluations: int, bounds=None):
    """L-BFGS-B from ``start`` -> (the best point evaluated, its loss, evaluations). The best evaluated
    point, not the last iterate: a line search that gives up in float32 rounding near a minimum may end on a
    point a little worse than one it has seen, and a block must never return a worse state than it got."""
    best = [math.inf, None]

    def tracked(x):
        loss, grad = objective(x)
        if loss < best[0]:
            best[0], best[1] = float(loss), np.array(x, copy=True)
        return loss, grad

    result = optimize.minimize(tracked, start, jac=True, method="L-BFGS-B", bounds=bounds,
                               options=dict(maxfun=int(evaluations), maxiter=int(evaluations)))  # fmt: skip
    return best[1], best[0], int(result.nfev)


def refine_pose(model: JointModel, volume, tilt: JointTilt, evaluations: int):
    rotation0 = tilt.rotation

    def objective(x):
        w = np.radians(x[:3])
        part = model.tilt_loss_grad(volume, tilt, wrt=("rotation", "shifts"), rotation=rotation_exp(w) @ rotation0,
                                    shifts_A=x[3:])  # fmt: skip
        grad_w = left_jacobian(w).T @ part.rotation_vector
        return part.loss, np.concatenate([np.radians(grad_w), part.shifts_A])

    x, loss, n = _minimise(objective, np.concatenate([np.zeros(3), tilt.shifts_A]), evaluations)
    rotation = rotation_exp(np.radians(x[:3])) @ rotation0
    return dataclasses.replace(tilt, rotation=rotation, shifts_A=x[3:].copy()), loss, n


def refine_probe(model: JointModel, volume, tilt: JointTilt, evaluations: int):
    shape, dtype = tilt.probe.shape, tilt.probe.dtype
    half = int(np.prod(shape))

    def as_probe(x):
        return (x[:half] + 1j * x[half:]).reshape(shape).astype(dtype)

    def objective(x):
        part = model.tilt_loss_grad(volume, tilt, wrt=("probe",), probe=as_probe(x))
        return part.loss, np.concatenate([part.probe.real.ravel(), part.probe.imag.ravel()]).astype(np.float64)

    start = np.concatenate([tilt.probe.real.ravel(), tilt.probe.imag.ravel()]).astype(np.float64)
    x, loss, n = _minimise(objective, start, evaluations)
    return dataclasses.replace(tilt, probe=as_probe(x)), loss, n


def refine_positions(model: JointModel, volume, tilt: JointTilt, evaluations: int, grid: tuple[int, int]):
    low, high = window_bounds(tilt.probe.shape[-2:], grid)
    lo = np.broadcast_to(low, tilt.positions_px.shape).ravel()
    hi = np.broadcast_to(high, tilt.positions_px.shape).ravel()

    def objective(x):
        part = model.tilt_loss_grad(volume, tilt, wrt=("positions",), positions_px=x.reshape(-1, 2))
        return part.loss, part.positions_px.ravel()

    start = np.clip(tilt.positions_px.ravel(), lo, hi)
    x, loss, n = _minimise(objective, start, evaluations, optimize.Bounds(lo, hi))
    return dataclasses.replace(tilt, positions_px=x.reshape(-1, 2)), loss, n


def refine_tilt(model: JointModel, volume, tilt: JointTilt, blocks, evaluations: int, grid: tuple[int, int]):
    """(tilt, loss, evaluations): ``tilt`` with each of ``blocks`` ("poses", "probe", "positions") refined in
    turn; the loss after the last block and the evaluations of this tilt's data made."""
    loss, total = math.nan, 0
    for block in blocks:
        if block == "poses":
            tilt, loss, n = refine_pose(model, volume, tilt, evaluations)
        elif block == "probe":
            tilt, loss, n = refine_probe(model, volume, tilt, evaluations)
        else:
            tilt, loss, n = refine_positions(model, volume, tilt, evaluations, grid)
        total += n
    return tilt, loss, total
