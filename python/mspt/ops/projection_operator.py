"""The projector as a ``scipy.sparse.linalg.LinearOperator``, for scipy's iterative solvers (lsqr, cg, ...).

This module imports scipy; ``mspt.ops.ProjectionOperator`` loads it on first use, so scipy stays optional.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .projector import _common, _shape, _threads, backproject, project


class ProjectionOperator(LinearOperator):
    """A = :func:`project` on raveled volumes: shape (T * Py * Px, Z * Y * X), with ``A.H`` (``rmatvec``) the
    exact adjoint :func:`backproject`.

    The projector runs in float32; the operator takes and returns float64 vectors (its ``dtype``) so that
    solvers keep their own iterates in double precision.

    Parameters
    ----------
    volume_shape : (Z, Y, X).
    rotation, shifts_A, voxel_size_A : the poses and voxel size, as in :func:`project`.
    **kw : ``shape`` (Py, Px), ``pixel_size_A``, ``step_A``, ``threads``, as in :func:`project`.
    """

    def __init__(self, volume_shape, rotation, shifts_A=None, voxel_size_A: float = 1.0, **kw):
        unknown = set(kw) - {"shape", "pixel_size_A", "step_A", "threads"}
        if unknown:
            raise TypeError(f"ProjectionOperator: unexpected keyword arguments {sorted(unknown)}")
        self.volume_shape = _shape("volume_shape", volume_shape, 3)
        rot, shifts, voxel, pixel, step = _common(
            rotation, shifts_A, voxel_size_A, kw.get("pixel_size_A"), kw.get("step_A")
        )
        shape = kw.get("shape")
        self.projection_shape = (
            (rot.shape[0], *self.volume_shape[1:])
            if shape is None
            else (rot.shape[0], *_shape("shape", shape, 2))
        )
        _threads(kw.get("threads"))
        self.rotation, self.shifts_A, self.voxel_size_A = rot, shifts, voxel
        self._kw = dict(pixel_size_A=pixel, step_A=step, threads=kw.get("threads"))
        super().__init__(np.float64, (int(np.prod(self.projection_shape)), int(np.prod(self.volume_shape))))

    def _matvec(self, x):
        vol = np.asarray(x, dtype=np.float32).reshape(self.volume_shape)
        proj = project(
            vol, self.rotation, self.shifts_A, self.voxel_size_A, shape=self.projection_shape[1:], **self._kw
        )
        return proj.reshape(-1).astype(np.float64)

    def _rmatvec(self, y):
        proj = np.asarray(y, dtype=np.float32).reshape(self.projection_shape)
        vol = backproject(proj, self.rotation, self.shifts_A, self.voxel_size_A, self.volume_shape, **self._kw)
        return vol.reshape(-1).astype(np.float64)
