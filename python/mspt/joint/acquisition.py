"""The acquisition block of the joint refinement: one tilt's pose, probe and positions, each in turn by
L-BFGS on that tilt's data with the volume held fixed.

Parametrisations (chosen so that a unit step is a sensible first move):

* pose: the rotation update ``R = exp([w]x) R0`` with ``w`` in degrees, and the shifts (dy, dx) in A. The
  model's rotation gradient is the tangent one at R (for ``exp([d]x) R``); at w != 0 the gradient w.r.t. w is
  that times the left Jacobian of SO(3), so the line search sees the exact derivative.
* probe: the modes' real and imaginary parts (counts^(1/2) per pixel).
* positions: (y, x) in pixels, bounded so every probe window stays inside the projection grid.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize

from ..tomo.rotations import _cross_matrix, rotation_exp
from .model import JointModel
from .tilt import JointTilt


def left_jacobian(w: np.ndarray) -> np.ndarray:
    """J(w) with exp([w + d]x) = exp([J(w) d]x) exp([w]x) to first order in d (w in radians)."""
    angle = float(np.linalg.norm(w))
    k = _cross_matrix(np.asarray(w, dtype=float))
    if angle < 1e-8:
        return np.eye(3) + k / 2
    return np.eye(3) + (1 - math.cos(angle)) / angle**2 * k + (angle - math.sin(angle)) / angle**3 * (k @ k)


def _minimise(objective, start, evaluations: int, bounds=None):
    result = optimize.minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                               options=dict(maxfun=int(evaluations), maxiter=int(evaluations)))  # fmt: skip
    return result.x, float(result.fun), int(result.nfev)


def refine_pose(model: JointModel, volume, tilt: JointTilt, evaluations: int):
    rotation0 = tilt.rotation

    def objective(x):
        w = np.radians(x[:3])
        part = model.loss_grad(volume, rotation_exp(w) @ rotation0, x[3:], tilt.probe, tilt.positions_px,
                               tilt.patterns, wrt=("rotation", "shifts"))  # fmt: skip
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
        part = model.loss_grad(volume, tilt.rotation, tilt.shifts_A, as_probe(x), tilt.positions_px, tilt.patterns,
                               wrt=("probe",))  # fmt: skip
        return part.loss, np.concatenate([part.probe.real.ravel(), part.probe.imag.ravel()]).astype(np.float64)

    start = np.concatenate([tilt.probe.real.ravel(), tilt.probe.imag.ravel()]).astype(np.float64)
    x, loss, n = _minimise(objective, start, evaluations)
    return dataclasses.replace(tilt, probe=as_probe(x)), loss, n


def refine_positions(model: JointModel, volume, tilt: JointTilt, evaluations: int, grid: tuple[int, int]):
    # A window covers [round(p) - N//2, round(p) - N//2 + N) (DESIGN.md) and must stay on the grid.
    window = np.array(tilt.probe.shape[-2:])
    lo = np.broadcast_to(window // 2 - 0.49, tilt.positions_px.shape).ravel()
    hi = np.broadcast_to(np.array(grid) - (window - window // 2) + 0.49, tilt.positions_px.shape).ravel()

    def objective(x):
        part = model.loss_grad(volume, tilt.rotation, tilt.shifts_A, tilt.probe, x.reshape(-1, 2), tilt.patterns,
                               wrt=("positions",))  # fmt: skip
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
