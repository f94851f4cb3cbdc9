"""The volume block of the joint refinement: L-BFGS-B on the potential, non-negative, against every tilt.

The loss is a smooth function of the volume (multislice of exp(i sigma P), slab projections linear in the
volume), and its curvature differs by orders of magnitude between directions (low against high spatial
frequencies, well-sampled against missing-wedge ones): plain projected gradient crawls there, a limited-memory
quasi-Newton method follows the curvature from the gradients it has seen. Each evaluation is one pass over
every tilt's data (loss and volume gradient together), streamed one tilt and one batch of positions at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import optimize

from .model import JointModel
from .tilt import JointTilt


def total_loss_grad(model: JointModel, volume: np.ndarray, tilts: Sequence[JointTilt]) -> tuple[float, np.ndarray]:
    """The loss summed over ``tilts`` and its gradient w.r.t. the volume (float64)."""
    loss, grad = 0.0, np.zeros(volume.shape, np.float64)
    for tilt in tilts:
        part = model.tilt_loss_grad(volume, tilt, wrt=("volume",))
        loss += part.loss
        grad += part.volume
    return loss, grad


def refine_volume_block(model: JointModel, volume: np.ndarray, tilts: Sequence[JointTilt], *, evaluations: int,
                        memory_vectors: int = 8) -> tuple[np.ndarray, float, int]:  # fmt: skip
    """(volume, loss, passes): at most ``evaluations`` loss-and-gradient passes of L-BFGS-B from ``volume``
    (clipped to non-negative first), keeping ``memory_vectors`` correction pairs."""
    shape = volume.shape
    passes = 0

    def objective(x):
        nonlocal passes
        passes += 1
        loss, grad = total_loss_grad(model, x.reshape(shape).astype(np.float32), tilts)
        return loss, grad.ravel()

    start = np.maximum(np.asarray(volume, dtype=np.float64), 0.0).ravel()
    result = optimize.minimize(
        objective, start, jac=True, method="L-BFGS-B", bounds=optimize.Bounds(0.0, np.inf),
        options=dict(maxfun=int(evaluations), maxiter=int(evaluations), maxcor=int(memory_vectors)),
    )  # fmt: skip
    return result.x.reshape(shape).astype(np.float32), float(result.fun), passes
