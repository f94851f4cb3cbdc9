"""The projector over a whole tilt series at one pyramid level, streamed in batches of poses, counting its
use: one "projector call" is one pass of project, backproject or the pose vector-Jacobian product over all
T projections (the unit the schedules are compared in).

Working memory of one call: the volume (Z Y X float32), the T projections (T Py Px float32) and one batch's
back-projection (Z Y X float32) being summed; never a T x Z Y X intermediate.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..ops import backproject, project, project_vjp


@dataclasses.dataclass(frozen=True)
class LevelGeometry:
    """One pyramid level: volume (Z, Y, X) of voxel ``voxel_A``, projections (Py, Px) of pixel ``pixel_A``."""

    factor: int
    volume_shape: tuple[int, int, int]
    voxel_A: float
    projection_shape: tuple[int, int]
    pixel_A: float


class SeriesProjector:
    """project / backproject / pose gradients of all tilts at the current poses, in batches of ``batch_size``."""

    def __init__(self, geometry: LevelGeometry, batch_size: int, threads: int | None, calls: list[float]):
        self.geometry = geometry
        self.batch_size = batch_size
        self.threads = threads
        self._calls = calls  # shared one-element counter, so every level adds to the run's total

    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(n, start + self.batch_size))

    def _count(self, fraction: float) -> None:
        self._calls[0] += fraction

    def _kw(self):
        g = self.geometry
        return dict(pixel_size_A=g.pixel_A, threads=self.threads)

    def forward(self, volume, rotation, shifts_A) -> np.ndarray:
        """(T, Py, Px) projections of ``volume`` at the poses."""
        g = self.geometry
        out = np.empty((len(rotation), *g.projection_shape), dtype=np.float32)
        for b in self._batches(len(rotation)):
            out[b] = project(volume, rotation[b], shifts_A[b], g.voxel_A, shape=g.projection_shape, **self._kw())
        self._count(1.0)
        return out

    def adjoint(self, projections, rotation, shifts_A) -> np.ndarray:
        """The back-projection (Z, Y, X) of all projections, summed over batches."""
        g = self.geometry
        total = np.zeros(g.volume_shape, dtype=np.float32)
        for b in self._batches(len(rotation)):
            total += backproject(projections[b], rotation[b], shifts_A[b], g.voxel_A, g.volume_shape, **self._kw())
        self._count(1.0)
        return total

    def pose_gradient(self, residual, volume, rotation, shifts_A) -> tuple[np.ndarray, np.ndarray]:
        """d(1/2 |residual|^2)/d(pose) for residual = model - data: rotation vectors (T, 3) in 1/rad and
        shifts (T, 2) in 1/A."""
        g = self.geometry
        d_rot = np.empty((len(rotation), 3))
        d_shift = np.empty((len(rotation), 2))
        for b in self._batches(len(rotation)):
            grads = project_vjp(residual[b], volume, rotation[b], shifts_A[b], g.voxel_A,
                                wrt=("rotation", "shifts"), **self._kw())  # fmt: skip
            d_rot[b], d_shift[b] = grads.rotation_vector, grads.shifts_A
        self._count(1.0)
        return d_rot, d_shift
