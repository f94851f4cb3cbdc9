"""The published method's schedule (Romanov et al. 2025), run through mspt's operators for comparison: at
every outer step the volume is re-zeroed and rebuilt by ``reference_volume_steps`` Adam steps on the MSE
(fresh moments each time), then the poses take one Adam step (moments kept across the outer steps of a level).
The rates are the published code's (TomoConfig's reference_* defaults), carried over to mspt's units.
Costs 2 ``reference_volume_steps`` + 2 projector calls per outer step."""

from __future__ import annotations

import numpy as np

from .rotations import rotation_exp
from .series_operator import SeriesProjector

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


class Adam:
    """Adam moments for one parameter array (Kingma & Ba 2015)."""

    def __init__(self, shape, m=None, v=None, count: int = 0):
        self.m = np.zeros(shape) if m is None else np.array(m, dtype=float)
        self.v = np.zeros(shape) if v is None else np.array(v, dtype=float)
        self.count = int(count)

    def direction(self, gradient: np.ndarray) -> np.ndarray:
        """The step direction m_hat / (sqrt(v_hat) + eps) after taking ``gradient`` in (to be scaled by -rate)."""
        self.count += 1
        self.m = _BETA1 * self.m + (1 - _BETA1) * gradient
        self.v = _BETA2 * self.v + (1 - _BETA2) * gradient**2
        m_hat = self.m / (1 - _BETA1**self.count)
        v_hat = self.v / (1 - _BETA2**self.count)
        return m_hat / (np.sqrt(v_hat) + _EPS)


def adam_volume(op: SeriesProjector, data, rotation, shifts_A, support, steps: int, rate: float,
                nonnegative: bool):  # fmt: skip
    """A volume rebuilt from zero by ``steps`` Adam steps on 1/2 |A x - b|^2 -> (volume, its projection)."""
    x = np.zeros(op.geometry.volume_shape, dtype=np.float32)
    adam = Adam(x.shape)
    for _ in range(steps):
        model = op.forward(x, rotation, shifts_A)
        gradient = op.adjoint(model - data, rotation, shifts_A)
        x = (x - rate * adam.direction(gradient.astype(np.float64))).astype(np.float32)
        x *= support
        if nonnegative:
            np.maximum(x, 0.0, out=x)
    return x, op.forward(x, rotation, shifts_A)


def adam_pose_step(op: SeriesProjector, volume, model, data, rotation, shifts_A, adam: Adam, *, refine_rotation: bool,
                   refine_shifts: bool, rotation_rate_rad: float, shift_rate_A: float):  # fmt: skip
    """One Adam step of the poses (moments in ``adam``, shape (T, 5)) -> (rotation, shifts_A)."""
    d_rot, d_shift = op.pose_gradient(model - data, volume, rotation, shifts_A)
    direction = adam.direction(np.concatenate([d_rot, d_shift], axis=1))
    new_rotation, new_shifts = np.array(rotation), np.array(shifts_A, dtype=float)
    if refine_rotation:
        new_rotation = rotation_exp(-rotation_rate_rad * direction[:, :3]) @ new_rotation
    if refine_shifts:
        new_shifts = new_shifts - shift_rate_A * direction[:, 3:]
    return new_rotation, new_shifts
