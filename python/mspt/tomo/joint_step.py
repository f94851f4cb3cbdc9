"""The joint Gauss-Newton step in volume and poses together.

Alternating a volume solve and a pose step converges slowly once the volume can absorb part of each pose
error (a tilt-angle error is largely mimicked by a slightly deformed volume): each pose step only corrects
the part the volume has not absorbed. The joint step solves the linearised problem in both at once,

    min over (dx, dp) of |W^1/2 (A dx + J dp + r)|^2,    r = A x - b,

by CGLS on the operator [A C^1/2, J M] with the SIRT weights W, C of the volume solver (dx restricted to the
free voxels: inside the support and positive, the active set of the non-negativity) and M_t = (J_t^T W J_t)^-1/2
per tilt, so that both blocks are scaled alike. J holds the explicit pose Jacobian columns of
:func:`mspt.tomo.pose_update.jacobian_columns` (unsmoothed). Each CGLS iteration costs one projection and
one back-projection.

Status (measured on the phantom of tests/test_tomo_alignment.py): on noise-free data it converges in far
fewer outer steps than the alternating scheme; with 1-2 % noise its rotation updates become erratic, so it
is an option (``TomoConfig.pose_solver="joint"``), not the default.
"""

from __future__ import annotations

import numpy as np

from .pose_update import apply_pose_delta, jacobian_columns
from .series_operator import SeriesProjector


def _inverse_sqrt(normal: np.ndarray) -> np.ndarray:
    """(T, k, k) symmetric inverse square roots of positive semi-definite matrices (tiny eigenvalues floored)."""
    values, vectors = np.linalg.eigh(normal)
    floor = 1e-9 * np.maximum(values[:, -1:], 1e-300)
    scale = 1.0 / np.sqrt(np.maximum(values, floor))
    return np.einsum("tij,tj,tkj->tik", vectors, scale, vectors)


def joint_gauss_newton_step(op: SeriesProjector, volume, model, data, rotation, shifts_A, weights, support, *,
                            iterations: int, refine_shifts: bool, nonnegative: bool, step: float,
                            max_rotation_rad: float, max_shift_A: float, damping: float):  # fmt: skip
    """One joint Gauss-Newton step -> (rotation, shifts_A). The volume part of the step only serves to let the
    pose part account for what the volume absorbs; it is dropped, since the next (non-negative) volume solve
    does better. Costs 3 + 2 ``iterations`` projector calls."""
    row, column = weights
    free = support & (volume > 0) if nonnegative else support
    col_sqrt = np.sqrt(np.where(free, column, 0.0)).astype(np.float32)
    row_sqrt = np.sqrt(row)
    columns = jacobian_columns(op, volume, model, rotation, shifts_A, True, lambda images: images)
    if not refine_shifts:
        columns = columns[:, :3]
    jw = columns * row_sqrt[:, None]  # W^1/2 J, (T, k, Py, Px)
    flat = jw.reshape(jw.shape[0], jw.shape[1], -1)
    precondition = _inverse_sqrt(np.einsum("tap,tbp->tab", flat, flat))  # M_t
    jm = np.einsum("tkp,tkl->tlp", flat, precondition).reshape(jw.shape)  # W^1/2 J M, (T, k, Py, Px)

    # The damping rows sqrt(damping) q (Levenberg-Marquardt in the preconditioned pose coordinates) keep the
    # pose step finite along the directions the volume can nearly absorb, where noise would otherwise steer it.
    root = np.sqrt(damping)

    def forward(a, q):
        images = row_sqrt * op.forward(col_sqrt * a, rotation, shifts_A) + np.einsum("tkyx,tk->tyx", jm, q)
        return images, root * q

    def adjoint(v_images, v_pose):
        a = col_sqrt * op.adjoint(row_sqrt * v_images, rotation, shifts_A)
        return a, np.einsum("tkyx,tyx->tk", jm, v_images) + root * v_pose

    def norm2(*parts):
        return sum(float(np.sum(np.asarray(p, dtype=np.float64) ** 2)) for p in parts)

    # CGLS (Hestenes-Stiefel form) for min |K z - rhs|^2 from z = 0; rhs has no damping part.
    a = np.zeros_like(volume, dtype=np.float32)
    q = np.zeros((len(rotation), jm.shape[1]))
    res_images, res_pose = -(row_sqrt * (model - data)).astype(np.float32), np.zeros_like(q)
    sa, sq = adjoint(res_images, res_pose)
    pa, pq = sa.copy(), sq.copy()
    gamma = norm2(sa, sq)
    for _ in range(iterations):
        if gamma <= 0:
            break
        kp_images, kp_pose = forward(pa, pq)
        alpha = gamma / max(norm2(kp_images, kp_pose), 1e-300)
        a += alpha * pa
        q += alpha * pq
        res_images, res_pose = res_images - alpha * kp_images, res_pose - alpha * kp_pose
        sa, sq = adjoint(res_images, res_pose)
        gamma_new = norm2(sa, sq)
        pa, pq, gamma = sa + (gamma_new / gamma) * pa, sq + (gamma_new / gamma) * pq, gamma_new
    delta_pose = step * np.einsum("tkl,tl->tk", precondition, q)
    new_rotation, new_shifts = apply_pose_delta(rotation, shifts_A, delta_pose, refine_rotation=True,
                                                refine_shifts=refine_shifts, max_rotation_rad=max_rotation_rad,
                                                max_shift_A=max_shift_A)  # fmt: skip
    return new_rotation, new_shifts
