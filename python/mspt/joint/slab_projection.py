"""Slab projections of a volume at one pose, and their vector-Jacobian product.

Slab s's projection is ``P_s = project(volume * m_s(R), R, shifts)`` with ``m_s`` the slab's weight in the
volume frame (:mod:`.slabs`): the line integral of the rotated volume over the slab's depth range. Its
adjoint is ``m_s * backproject(...)``. The pose gradient has two parts: the projector's own (the rays move
through a fixed weighted volume, :func:`mspt.ops.project_vjp`) and the slab's (the weights move with the
pose): ``<g, project(volume * dm_s/dw, R)> = sum(backproject(g) * volume * m_s'(q_z) * dq_z/dw)``.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from .slabs import SlabStack, depth_rate_vjp, rotated_coordinates_A, rotated_depth_A


def project_slabs(
    volume: np.ndarray,
    rotation: np.ndarray,
    shifts_A: np.ndarray,
    voxel_size_A: float,
    slabs: SlabStack,
    *,
    shape: tuple[int, int],
    pixel_size_A: float,
    device: str = "cpu",
    threads: int | None = None,
) -> np.ndarray:
    """The S slab projections (S, Py, Px) float32 (volume unit x A) of ``volume`` (Z, Y, X) at one pose
    (``rotation`` (3, 3), ``shifts_A`` (2,) as (dy, dx) in A), entrance slab first."""
    depth = rotated_depth_A(volume.shape, voxel_size_A, rotation)
    kw = dict(shape=shape, pixel_size_A=pixel_size_A, device=device, threads=threads)
    return np.concatenate(
        [
            ops.project(volume * slabs.weight(s, depth), rotation[None], shifts_A[None], voxel_size_A, **kw)
            for s in range(slabs.n_slices)
        ]
    )


def project_slabs_vjp(
    grad_slabs: np.ndarray,
    volume: np.ndarray,
    rotation: np.ndarray,
    shifts_A: np.ndarray,
    voxel_size_A: float,
    slabs: SlabStack,
    *,
    pixel_size_A: float,
    wrt: frozenset[str] = frozenset({"volume", "rotation", "shifts"}),
    device: str = "cpu",
    threads: int | None = None,
) -> ops.ProjectionGrads:
    """Gradients through :func:`project_slabs` given ``grad_slabs`` = dL/dP (S, Py, Px): ``volume`` (Z, Y, X)
    float32, ``rotation_vector`` (3,) float64 (1/rad, tangent update ``R <- exp([w]x) R``) and ``shifts_A``
    (2,) float64 (1/A); ``None`` for those not in ``wrt``."""
    # The depths' in-plane partners (q_x, q_y) are only needed for the slabs' part of the rotation gradient.
    coords = rotated_coordinates_A(volume.shape, voxel_size_A, rotation) if "rotation" in wrt else None
    depth = coords[2] if coords is not None else rotated_depth_A(volume.shape, voxel_size_A, rotation)
    # The back-projection is needed by the volume gradient and by the slab part of the rotation gradient.
    needs_backprojection = bool(wrt & {"volume", "rotation"})
    pose_wrt = wrt & {"rotation", "shifts"}
    d_volume = np.zeros(volume.shape, np.float32) if "volume" in wrt else None
    d_rotation = np.zeros(3) if "rotation" in wrt else None
    d_shifts = np.zeros(2) if "shifts" in wrt else None
    for s in range(slabs.n_slices):
        g = np.ascontiguousarray(grad_slabs[s : s + 1], dtype=np.float32)
        weight = slabs.weight(s, depth)
        if pose_wrt:
            part = ops.project_vjp(
                g, volume * weight, rotation[None], shifts_A[None], voxel_size_A, pixel_size_A=pixel_size_A,
                wrt=pose_wrt, device=device, threads=threads,
            )  # fmt: skip
            if d_rotation is not None:
                d_rotation += part.rotation_vector[0]
            if d_shifts is not None:
                d_shifts += part.shifts_A[0]
        if not needs_backprojection:
            continue
        back = ops.backproject(
            g, rotation[None], shifts_A[None], voxel_size_A, volume.shape, pixel_size_A=pixel_size_A,
            device=device, threads=threads,
        )  # fmt: skip
        if d_volume is not None:
            d_volume += weight * back
        if d_rotation is not None:
            d_rotation += depth_rate_vjp(coords, back.astype(np.float64) * volume * slabs.weight_derivative(s, depth))
    return ops.ProjectionGrads(
        volume=d_volume, rotation_vector=d_rotation, shifts_A=d_shifts
    )
