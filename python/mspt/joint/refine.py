"""refine_volume: a few projected-gradient steps on the volume against every tilt's patterns.

The minimal joint refinement: the poses, probes and positions stay fixed; each iteration streams the tilts
one at a time (the volume and one tilt's batch in memory), sums the loss and the volume gradient, and
takes a step ``v <- max(v - alpha g, 0)`` (a potential is non-negative) whose length ``alpha`` backtracks
(halved until the total loss decreases) and grows by half after each accepted step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .. import _validate as _v
from . import _inputs
from .model import JointModel
from .tilt import JointTilt

_MAX_HALVINGS = 12


@dataclasses.dataclass(frozen=True)
class RefineResult:
    """volume : (Z, Y, X) float32, the refined potential (V). loss : (n + 1,) the summed loss over all tilts
    before the first step and after each accepted step. step_size : the last accepted step length
    (0 if none was)."""

    volume: np.ndarray
    loss: np.ndarray
    step_size: float


def _total(model: JointModel, volume: np.ndarray, tilts: Sequence[JointTilt], with_gradient: bool):
    loss, grad = 0.0, np.zeros(volume.shape, np.float64) if with_gradient else None
    for tilt in tilts:
        part = model.loss_grad(
            volume, tilt.rotation, tilt.shifts_A, tilt.probe, tilt.positions_px, tilt.patterns,
            wrt=("volume",) if with_gradient else (),
        )  # fmt: skip
        loss += part.loss
        if with_gradient:
            grad += part.volume
    return loss, grad


def refine_volume(
    model: JointModel,
    volume,
    tilts: Sequence[JointTilt],
    *,
    iterations: int = 5,
    step_size: float | None = None,
) -> RefineResult:
    """Refine ``volume`` (Z, Y, X, volts) against ``tilts`` under ``model`` for ``iterations`` steps.

    ``step_size`` (V per unit gradient) is the first step's length; by default one that changes the largest
    voxel by a tenth of the volume's largest value. Stops early when no step decreases the loss.
    """
    if not isinstance(model, JointModel):
        raise TypeError(f"model: expected an mspt.joint.JointModel, got {type(model).__name__}")
    tilts = list(tilts)
    if not tilts or not all(isinstance(t, JointTilt) for t in tilts):
        raise TypeError("tilts: expected a non-empty sequence of mspt.joint.JointTilt")
    iterations = int(_v.positive("iterations", iterations, integer=True))
    alpha = None if step_size is None else float(_v.positive("step_size", step_size))
    vol = _inputs.volume(volume).astype(np.float32)
    loss, grad = _total(model, vol, tilts, with_gradient=True)
    if alpha is None:
        scale = float(np.abs(vol).max()) or 1.0
        alpha = 0.1 * scale / max(float(np.abs(grad).max()), np.finfo(float).tiny)
    history, accepted = [loss], 0.0
    for iteration in range(iterations):
        if iteration > 0:
            _, grad = _total(model, vol, tilts, with_gradient=True)
        for _ in range(_MAX_HALVINGS):
            trial = np.maximum(vol - alpha * grad, 0.0).astype(np.float32)
            trial_loss, _ = _total(model, trial, tilts, with_gradient=False)
            if trial_loss < loss:
                break
            alpha *= 0.5
        else:
            break  # no step along this gradient lowers the loss: a (projected) stationary point to rounding
        vol, loss, accepted = trial, trial_loss, alpha
        history.append(loss)
        alpha *= 1.5
    return RefineResult(volume=vol, loss=np.array(history), step_size=accepted)
