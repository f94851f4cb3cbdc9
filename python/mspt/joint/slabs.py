"""The slab stack: which part of the volume each multislice slice sees at a pose.

A pose ``R`` maps a volume point ``x`` (volume frame, A, from the rotation centre) to ``q = R x``; the beam
runs along ``q_z`` (its depth). The stack holds ``n_slices`` slabs of ``slice_thickness_A`` centred on the
plane ``q_z = 0`` through the rotation centre, entrance (most negative depth) first. Slab ``s`` weighs a
voxel by ``m_s(q_z)``, a soft indicator of its depth range: each boundary ``b`` is a linear ramp of width
``ramp_A`` (one voxel by default), ``H_b(z) = clip((z - b) / ramp + 1/2, 0, 1)``, and
``m_s = H_{b_(s-1)} - H_{b_s}`` with the first slab open towards the source and the last open towards the
detector. The weights therefore sum to one at every voxel: summed over slabs, the slab projections are the
full projection, and matter outside the stack's nominal depth is not lost but lumped into its end slabs.

The weights are piecewise linear in depth, so their derivative (``weight_derivative``) is exact between the
ramp edges; the pose gradient of a slab projection needs it because the slabs move with the pose.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _validate as _v


@dataclasses.dataclass(frozen=True)
class SlabStack:
    """``n_slices`` slabs of ``slice_thickness_A`` (A) along the beam, centred on the rotation centre, with
    boundaries softened over ``ramp_A`` (A)."""

    n_slices: int
    slice_thickness_A: float
    ramp_A: float

    def __post_init__(self):
        _v.positive("n_slices", self.n_slices, integer=True)
        _v.positive("slice_thickness_A", self.slice_thickness_A)
        _v.positive("ramp_A", self.ramp_A)
        if self.ramp_A > self.slice_thickness_A:
            # Wider ramps would let two boundaries' ramps overlap and a weight leave [0, 1].
            raise ValueError(
                f"ramp_A: expected at most slice_thickness_A ({self.slice_thickness_A} A), got {self.ramp_A!r}"
            )

    @property
    def boundaries_A(self) -> np.ndarray:
        """The n_slices - 1 inner boundaries (depths in A), entrance to exit."""
        first = -0.5 * self.n_slices * self.slice_thickness_A
        return first + self.slice_thickness_A * np.arange(1, self.n_slices)

    def _beyond(self, index: int, depth_A: np.ndarray) -> np.ndarray:
        """H_b: the fraction of a voxel past boundary ``index`` (-1: the open entrance, 1 everywhere;
        n_slices - 1: the open exit, 0 everywhere)."""
        if index < 0:
            return np.ones_like(depth_A)
        if index >= self.n_slices - 1:
            return np.zeros_like(depth_A)
        return np.clip((depth_A - self.boundaries_A[index]) / self.ramp_A + 0.5, 0.0, 1.0)

    def _beyond_slope(self, index: int, depth_A: np.ndarray) -> np.ndarray:
        """dH_b / d depth (1/A): 1 / ramp inside the ramp, 0 elsewhere and for the open ends."""
        if index < 0 or index >= self.n_slices - 1:
            return np.zeros_like(depth_A)
        inside = np.abs(depth_A - self.boundaries_A[index]) < 0.5 * self.ramp_A
        return inside / self.ramp_A

    def weight(self, s: int, depth_A: np.ndarray) -> np.ndarray:
        """m_s at the given depths (A): slab s's share of each voxel, in [0, 1]."""
        return self._beyond(s - 1, depth_A) - self._beyond(s, depth_A)

    def weight_derivative(self, s: int, depth_A: np.ndarray) -> np.ndarray:
        """dm_s / d depth (1/A) at the given depths."""
        return self._beyond_slope(s - 1, depth_A) - self._beyond_slope(s, depth_A)


def rotated_coordinates_A(volume_shape, voxel_size_A: float, rotation: np.ndarray) -> np.ndarray:
    """q = R x (A) for every voxel: (3, Z, Y, X) as (q_x, q_y, q_z), x the voxel's position from the rotation
    centre (DESIGN.md's convention: voxel (k, j, i) at ((i - X//2) d, (j - Y//2) d, (k - Z//2) d))."""
    nz, ny, nx = volume_shape
    axes = [(np.arange(n) - n // 2) * voxel_size_A for n in (nx, ny, nz)]
    x = axes[0][None, None, :]
    y = axes[1][None, :, None]
    z = axes[2][:, None, None]
    return np.stack([rotation[a, 0] * x + rotation[a, 1] * y + rotation[a, 2] * z for a in range(3)])


def rotated_depth_A(volume_shape, voxel_size_A: float, rotation: np.ndarray) -> np.ndarray:
    """q_z = (R x)_z (A) for every voxel, (Z, Y, X): the depth along the beam, all the slab weights need (a
    third of :func:`rotated_coordinates_A`'s work, with the same arithmetic, so the same values)."""
    nz, ny, nx = volume_shape
    x, y, z = ((np.arange(n) - n // 2) * voxel_size_A for n in (nx, ny, nz))
    r = rotation[2]
    return (r[0] * x)[None, None, :] + (r[1] * y)[None, :, None] + (r[2] * z)[:, None, None]


def depth_rate_vjp(coordinates_A: np.ndarray, grad_depth: np.ndarray) -> np.ndarray:
    """sum over voxels of grad_depth * d q_z / d w: the rotation-vector gradient (3,) carried by the depths,
    for the tangent update R <- exp([w]x) R at w = 0.

    q_z(w) = e_z . exp([w]x) q, so d q_z / d w = (q_y, -q_x, 0) (A/rad): a rotation about z keeps depths."""
    qx, qy = coordinates_A[0], coordinates_A[1]
    return np.array([np.vdot(qy, grad_depth), -np.vdot(qx, grad_depth), 0.0])
