"""Gauss-Newton pose updates in the tangent space, one independent 5x5 system per tilt.

Parameters per tilt: the rotation vector w (rad; R <- exp([w]x) R) and the shift (dy, dx) (A).

The loss of the pose step is the misfit of Gaussian-smoothed projections, 1/2 |G (A(pose) x - b)|^2 with G a
blur of ``smoothing_px`` pixels. Trilinear interpolation makes the plain misfit piecewise quadratic in the
pose, with kinks wherever a ray sample crosses a voxel plane; on coarse pyramid levels those kinks are as
large as the features and a Newton step bounces between them. Blurring over neighbouring pixels, whose kinks
sit at different poses, smooths them out, and it leaves the minimum of consistent data where it was.

The gradient J^T G^T G r is exact (``project_vjp`` of the cotangent G^T G r). The Gauss-Newton matrix
(G J)^T (G J) is built from Jacobian columns: the shift columns are the image derivatives of the smoothed
model (P(y - dy, x - dx), so dP/d(dy) = -dP/dy), the rotation columns secants of the smoothed projection over
a rotation that moves the field of view's edge by a fifth of a pixel (three projector calls). J^T J only sets
the step's metric, so its approximations change the rate, not the fixed point.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .resample import apply_separable, gaussian_matrix
from .rotations import rotation_exp
from .series_operator import SeriesProjector

_PROBE_PIXELS = 0.2  # secant step of the rotation columns: the largest displacement it causes, in pixels
MIN_DAMPING = 1e-3  # Levenberg-Marquardt damping relative to the diagonal: the floor, and the plain step's
MAX_DAMPING = 1e4  # where a step is about 1e-4 of the Gauss-Newton step: the tilt is effectively held


def _smoother(shape, smoothing_px: float):
    if smoothing_px <= 0:
        return lambda images: images
    matrices = [gaussian_matrix(n, smoothing_px) for n in shape]
    return lambda images: apply_separable(images, matrices, (1, 2)).astype(np.float32)


def jacobian_columns(op: SeriesProjector, volume, model, rotation, shifts_A, with_rotation: bool, smooth) -> np.ndarray:
    """(T, 5 or 2, Py, Px) d(G P)/dparameter per tilt: (w_x, w_y, w_z, dy, dx) or (dy, dx)."""
    g = op.geometry
    smooth_model = smooth(model)
    d_y, d_x = np.gradient(smooth_model, g.pixel_A, axis=(1, 2))
    columns = [-d_y, -d_x]
    if with_rotation:
        radius_A = 0.5 * np.hypot(*g.projection_shape) * g.pixel_A
        probe = _PROBE_PIXELS * g.pixel_A / radius_A
        rotated = []
        for axis in range(3):
            w = np.zeros((len(rotation), 3))
            w[:, axis] = probe
            moved = op.forward(volume, rotation_exp(w) @ rotation, shifts_A)
            rotated.append((smooth(moved) - smooth_model) / probe)
        columns = rotated + columns
    return np.stack(columns, axis=1)


@dataclasses.dataclass
class PoseSystem:
    """Each tilt's Gauss-Newton model of the smoothed misfit about the current pose:
    m(pose + delta) ~ m(pose) + gradient . delta + 1/2 delta^T normal delta, delta in (w (rad), dy, dx (A)) or a
    subset (``refine_rotation`` / ``refine_shifts``)."""

    gradient: np.ndarray  # (T, P)
    normal: np.ndarray  # (T, P, P) (G J)^T (G J)

    def solve(self, damping) -> np.ndarray:
        """(T, P) the Levenberg-Marquardt step -(N + damping_t diag N)^-1 g; ``damping`` scalar or (T,)."""
        diagonal = np.einsum("taa->ta", self.normal)
        diagonal = diagonal + 1e-12 * diagonal.max()
        scale = np.broadcast_to(np.asarray(damping, dtype=float), (len(diagonal),))
        damped = self.normal + np.einsum("ta,ab->tab", scale[:, None] * diagonal, np.eye(diagonal.shape[1]))
        return -np.linalg.solve(damped, self.gradient[..., None])[..., 0]


def pose_system(op: SeriesProjector, volume, model, data, rotation, shifts_A, *, refine_rotation: bool,
                refine_shifts: bool, smoothing_px: float) -> PoseSystem:  # fmt: skip
    """The Gauss-Newton model of 1/2 |G (A(pose) x - b)|^2 per tilt at the current poses (volume fixed)."""
    smooth = _smoother(model.shape[1:], smoothing_px)
    cotangent = smooth(smooth(model - data))  # G^T G r (G is symmetric)
    d_rot, d_shift = op.pose_gradient(cotangent.astype(np.float32), volume, rotation, shifts_A)
    columns = jacobian_columns(op, volume, model, rotation, shifts_A, refine_rotation, smooth)
    flat = columns.reshape(columns.shape[0], columns.shape[1], -1)
    normal = np.einsum("tap,tbp->tab", flat, flat)
    gradient = np.concatenate([d_rot, d_shift], axis=1) if refine_rotation else d_shift
    keep = np.arange(normal.shape[1]) if refine_shifts else np.arange(3)
    return PoseSystem(gradient[:, keep], normal[:, keep][:, :, keep])


def tilt_misfit(model, data) -> np.ndarray:
    """(T,) each tilt's plain misfit 1/2 |model - data|^2: the data's likelihood for white noise (the smoothed
    misfit the step minimises has correlated residuals, which would overstate the evidence)."""
    residual = np.asarray(model, dtype=np.float64) - data
    return 0.5 * np.sum(residual**2, axis=(1, 2))


def gauss_newton_step(op: SeriesProjector, volume, model, data, rotation, shifts_A, *, refine_rotation: bool,
                      refine_shifts: bool, step: float, max_rotation_rad: float, max_shift_A: float,
                      smoothing_px: float):  # fmt: skip
    """One damped Gauss-Newton update of the poses for 1/2 |G (A(pose) x - b)|^2 -> (rotation, shifts_A)."""
    system = pose_system(op, volume, model, data, rotation, shifts_A, refine_rotation=refine_rotation,
                         refine_shifts=refine_shifts, smoothing_px=smoothing_px)  # fmt: skip
    delta = step * system.solve(MIN_DAMPING)
    return apply_pose_delta(rotation, shifts_A, delta, refine_rotation=refine_rotation, refine_shifts=refine_shifts,
                            max_rotation_rad=max_rotation_rad, max_shift_A=max_shift_A)


def apply_pose_delta(rotation, shifts_A, delta, *, refine_rotation: bool, refine_shifts: bool, max_rotation_rad: float,
                     max_shift_A: float):  # fmt: skip
    """Apply per-tilt updates ``delta`` (T, 5), (T, 3) or (T, 2) ((w, dy, dx), w or (dy, dx)) with each tilt's
    rotation and shift capped -> (rotation, shifts_A)."""
    new_rotation, new_shifts = np.array(rotation), np.array(shifts_A, dtype=float)
    if refine_rotation:
        w = delta[:, :3]
        norm = np.linalg.norm(w, axis=1, keepdims=True)
        w = w * np.minimum(1.0, max_rotation_rad / np.maximum(norm, 1e-30))
        new_rotation = rotation_exp(w) @ new_rotation
        delta = delta[:, 3:]
    if refine_shifts:
        norm = np.linalg.norm(delta, axis=1, keepdims=True)
        new_shifts = new_shifts + delta * np.minimum(1.0, max_shift_A / np.maximum(norm, 1e-30))
    return new_rotation, new_shifts


@dataclasses.dataclass
class PoseTrial:
    """Pose steps on trial, judged against the poses before them after the volume has been re-solved at each:
    the volume absorbs part of any pose error, and on a crystal a rotation that makes the fixed volume fit
    better (lattice fringes are self-similar under small rotations) may not fit the data better once the
    volume has followed. Holds each tilt's pose before the step and the volume and model there, so that the
    step's outcome is compared with the same volume iterations run at the old poses (a paired comparison:
    the volume's own progress cancels, though not the difference in how fast it converges at either pose).

    A step of tilt t is kept when it lowers that tilt's misfit plus a Gaussian prior on the rotation's
    deviation w_t from the input pose, in units of the tilt's residual variance s_t^2 (mean square of the
    residual per pixel at the poses before the step: noise and model error together):
        m_t + s_t^2 |w_t|^2 / (2 sigma_w^2),
    so a rotation away from the input pose has to pay for itself in misfit; ``sigma_w`` is the expected size of
    the rotation errors. On crystals it curbs the drift of the rotations from correct poses, but does not stop
    it (tests/test_tomo_crystal.py)."""

    rotation: np.ndarray  # (T, 3, 3) poses before the step
    shifts_A: np.ndarray  # (T, 2)
    volume: np.ndarray  # (Z, Y, X) the volume before the step
    model: np.ndarray  # (T, Py, Px) its projection at those poses

    def accepted(self, misfit_before, misfit_after, deviation_before, deviation_after, prior_rad: float) -> np.ndarray:
        """(T,) bool: tilts whose step lowered misfit + prior. ``misfit_*`` (T,) :func:`tilt_misfit` after the
        paired volume solves, ``deviation_*`` (T, 3) rotation vectors from the input poses (rad)."""
        pixels = self.model[0].size
        variance = 2.0 * np.asarray(misfit_before, dtype=float) / pixels
        prior = 0.5 * variance / prior_rad**2
        before = misfit_before + prior * np.sum(np.square(deviation_before), axis=1)
        after = misfit_after + prior * np.sum(np.square(deviation_after), axis=1)
        return after < before


def updated_damping(damping, accepted) -> np.ndarray:
    """Levenberg-Marquardt damping per tilt: x10 after a rejected step, /3 after an accepted one, within
    [MIN_DAMPING, MAX_DAMPING]."""
    return np.clip(np.where(accepted, damping / 3.0, damping * 10.0), MIN_DAMPING, MAX_DAMPING)
