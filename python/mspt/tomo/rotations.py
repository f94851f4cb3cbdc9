"""Rotation vectors <-> rotation matrices (the tangent-space parametrisation of a pose, DESIGN.md):
``R <- exp([w]x) R`` with ``w`` the axis times the angle in radians."""

from __future__ import annotations

import numpy as np


def _cross_matrix(w: np.ndarray) -> np.ndarray:
    """[w]x for each row of w (..., 3) -> (..., 3, 3)."""
    zero = np.zeros(w.shape[:-1])
    x, y, z = w[..., 0], w[..., 1], w[..., 2]
    return np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)


def rotation_exp(w) -> np.ndarray:
    """exp([w]x) (Rodrigues) for rotation vectors w (..., 3) in radians -> (..., 3, 3)."""
    w = np.asarray(w, dtype=float)
    angle = np.linalg.norm(w, axis=-1)[..., None, None]
    k = _cross_matrix(w)
    small = angle < 1e-8
    safe = np.where(small, 1.0, angle)
    # Series limits below 1e-8 rad: sin(a)/a -> 1, (1 - cos a)/a^2 -> 1/2.
    a = np.where(small, 1.0, np.sin(safe) / safe)
    b = np.where(small, 0.5, (1.0 - np.cos(safe)) / safe**2)
    return np.eye(3) + a * k + b * (k @ k)


def rotation_log(rotation) -> np.ndarray:
    """The rotation vector w (..., 3) in radians with exp([w]x) = R, for rotations R (..., 3, 3) by less
    than pi."""
    r = np.asarray(rotation, dtype=float)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    axis = np.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin = np.sin(angle)
    scale = np.where(angle < 1e-8, 0.5, angle / (2.0 * np.where(angle < 1e-8, 1.0, sin)))
    return axis * scale[..., None]


def rotation_angle_deg(rotation) -> np.ndarray:
    """The angle (degrees) of each rotation (..., 3, 3)."""
    return np.degrees(np.linalg.norm(rotation_log(rotation), axis=-1))


def left_jacobian(w) -> np.ndarray:
    """J(w) (3, 3) with exp([w + d]x) = exp([J(w) d]x) exp([w]x) to first order in d (w in radians): turns a
    tangent gradient g at exp([w]x) R0 into the gradient w.r.t. w, J(w)^T g."""
    w = np.asarray(w, dtype=float)
    angle = float(np.linalg.norm(w))
    k = _cross_matrix(w)
    if angle < 1e-8:
        return np.eye(3) + k / 2
    return np.eye(3) + (1 - np.cos(angle)) / angle**2 * k + (angle - np.sin(angle)) / angle**3 * (k @ k)
