"""The tomographic projector and its exact adjoint, the back-projector.

A pose is an active rotation ``R`` (3x3, (x, y, z) order, about the rotation centre) and an in-plane shift
``(dy, dx)`` in angstrom applied to the projection. The projection of a volume ``f`` (Z, Y, X) is the line
integral of the rotated volume along z::

    P(y, x) = integral over z of f(R^T (x - dx, y - dy, z)) dz

with trilinear interpolation (zero outside the volume) and samples every ``step_A`` along the ray; the
result is in volume units x angstrom. Voxel (k, j, i) sits at ((i - X//2) d, (j - Y//2) d, (k - Z//2) d)
and projection pixel (j, i) at ((i - Px//2) p, (j - Py//2) p), both from the rotation centre.

A plain tilt series about y uses ``tilt_series_rotations(tilts_deg)``: a point on +z moves towards +x for a
positive tilt.

:func:`project_vjp` gives the gradients of a loss through :func:`project` w.r.t. the volume and the pose; a
pose is refined in the tangent space, ``R <- exp([w]x) R`` with ``w`` a rotation vector in radians.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np

from .. import _backend
from .._native import core as _core
from ._arrays import accepts_arrays
from .multislice import _finite_positive

_ORTHONORMAL_TOL = 1e-4


def rotation_about_y(tilt_deg: float) -> np.ndarray:
    """The active rotation (3, 3) by ``tilt_deg`` degrees about y: +z moves towards +x for a positive tilt."""
    a = math.radians(float(tilt_deg))
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def tilt_series_rotations(tilts_deg) -> np.ndarray:
    """The poses (T, 3, 3) of a tilt series about y, one per tilt angle in degrees."""
    tilts = np.asarray(tilts_deg, dtype=float).reshape(-1)
    if tilts.size == 0 or not np.all(np.isfinite(tilts)):
        raise ValueError(f"tilts_deg: expected finite tilt angles in degrees, got {tilts_deg!r}")
    return np.stack([rotation_about_y(t) for t in tilts])


def _rotation_count(shape) -> int:
    """T of a (T, 3, 3) stack of rotations; ValueError otherwise."""
    shape = tuple(shape)
    if len(shape) != 3 or shape[1:] != (3, 3) or shape[0] < 1:
        raise ValueError(f"rotation: expected shape (T, 3, 3) of rotation matrices, got {shape}")
    return int(shape[0])


def _check_shifts_shape(shape, n: int) -> None:
    if tuple(shape) not in ((n, 2), (2,)):
        raise ValueError(f"shifts_A: expected shape ({n}, 2) of (dy, dx) in angstrom, got {tuple(shape)}")


def _rotations(rotation) -> np.ndarray:
    rot = np.ascontiguousarray(rotation, dtype=np.float64)
    _rotation_count(rot.shape)
    if not np.all(np.isfinite(rot)):
        raise ValueError("rotation: expected finite matrices")
    gram = np.einsum("tab,tcb->tac", rot, rot) - np.eye(3)
    bad = np.max(np.abs(gram), axis=(1, 2)) > _ORTHONORMAL_TOL
    bad |= np.abs(np.linalg.det(rot) - 1.0) > _ORTHONORMAL_TOL
    if np.any(bad):
        raise ValueError(
            f"rotation[{int(np.argmax(bad))}]: expected an orthonormal matrix with determinant +1 "
            f"(within {_ORTHONORMAL_TOL:g})"
        )
    return rot


def _shifts(shifts_A, n: int) -> np.ndarray:
    if shifts_A is None:
        return np.zeros((n, 2))
    shifts = np.asarray(shifts_A, dtype=np.float64)
    _check_shifts_shape(shifts.shape, n)
    if not np.all(np.isfinite(shifts)):
        raise ValueError("shifts_A: expected finite shifts")
    return np.ascontiguousarray(np.broadcast_to(shifts, (n, 2)))


def _shape(name: str, value, ndim: int) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in value)
        ok = len(shape) == ndim and all(v >= 1 and v == w for v, w in zip(shape, value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected {ndim} positive integers, got {value!r}")
    return shape


def _threads(threads) -> int:
    if threads is None:
        return 0
    try:
        ok = int(threads) == threads and threads >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"threads: expected a positive integer, got {threads!r}")
    return int(threads)


def _module(device: str):
    """The backend module for ``device``: the CPU core, or the CUDA core (RuntimeError saying what is missing
    where there is no usable GPU). Both take the same arguments."""
    _backend.check_device(device)
    return _core if device == "cpu" else _backend.cuda_module()


def _sizes(voxel_size_A, pixel_size_A, step_A) -> tuple[float, float, float]:
    """(voxel, pixel, step) in A; the pixel size and the ray step default to the voxel size."""
    voxel = _finite_positive("voxel_size_A", voxel_size_A)
    pixel = voxel if pixel_size_A is None else _finite_positive("pixel_size_A", pixel_size_A)
    step = voxel if step_A is None else _finite_positive("step_A", step_A)
    return voxel, pixel, step


def _common(rotation, shifts_A, voxel_size_A, pixel_size_A, step_A):
    rot = _rotations(rotation)
    shifts = _shifts(shifts_A, rot.shape[0])
    return (rot, shifts, *_sizes(voxel_size_A, pixel_size_A, step_A))


def _check_stack(name: str, shape, axes: str) -> None:
    """ValueError unless ``shape`` is 3D (``axes`` names them, e.g. "(Z, Y, X)")."""
    if len(shape) != 3:
        raise ValueError(f"{name}: expected shape {axes}, got {tuple(shape)}")


def _check_count(name: str, count: int, n: int) -> None:
    if count != n:
        raise ValueError(f"{name}: expected {n} projections (one per rotation), got {count}")


def _volume_shape(volume_shape) -> tuple[int, int, int]:
    if volume_shape is None:
        raise ValueError("volume_shape: expected (Z, Y, X), got None")
    return _shape("volume_shape", volume_shape, 3)


def _check_vjp_shape(shape, projection_shape) -> None:
    """``shape``, where given, must be the cotangents' (Py, Px)."""
    if shape is not None and _shape("shape", shape, 2) != tuple(projection_shape):
        raise ValueError(f"shape: {tuple(shape)} differs from the projections' {tuple(projection_shape)}")


@accepts_arrays(device_path="project", volume="real", rotation="real", shifts_A="real")
def project(
    volume,
    rotation,
    shifts_A=None,
    voxel_size_A: float = 1.0,
    *,
    shape=None,
    pixel_size_A: float | None = None,
    step_A: float | None = None,
    threads: int | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Project a volume (Z, Y, X) at each pose -> (T, Py, Px) float32 line integrals (volume value x A).

    Parameters
    ----------
    volume : (Z, Y, X) real array (computed in float32).
    rotation : (T, 3, 3) active rotation matrices, (x, y, z) order.
    shifts_A : (T, 2) or (2,) in-plane shifts (dy, dx) in angstrom applied to the projections; default zero.
    voxel_size_A : voxel size d in angstrom.
    shape : (Py, Px) of the projections; default the volume's (Y, X).
    pixel_size_A : projection pixel size; default the voxel size.
    step_A : sample spacing along each ray; default the voxel size.
    threads : CPU threads (default: OpenMP's); ignored on the GPU.
    device : "cpu" or "cuda" (NumPy arrays on the current CUDA device; float32 like the CPU, agreeing with it
        to rounding). CUDA arrays (PyTorch, CuPy, ...) run on their own GPU, in place, on the caller's
        current stream, and come back as the caller's type (docs: embedding).
    """
    module = _module(device)
    vol = np.ascontiguousarray(volume, dtype=np.float32)
    _check_stack("volume", vol.shape, "(Z, Y, X)")
    rot, shifts, voxel, pixel, step = _common(rotation, shifts_A, voxel_size_A, pixel_size_A, step_A)
    py, px = vol.shape[1:] if shape is None else _shape("shape", shape, 2)
    return module.project(vol, rot, shifts, voxel, py, px, pixel, step, _threads(threads))


@accepts_arrays(device_path="backproject", projections="real", rotation="real", shifts_A="real")
def backproject(
    projections,
    rotation,
    shifts_A=None,
    voxel_size_A: float = 1.0,
    volume_shape=None,
    *,
    pixel_size_A: float | None = None,
    step_A: float | None = None,
    threads: int | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """The exact adjoint of :func:`project`: projections (T, Py, Px) -> volume ``volume_shape`` (Z, Y, X)
    float32. Deterministic on the CPU: the same bits for any number of threads. On ``device="cuda"`` the
    samples are accumulated with atomic additions, so the result agrees with the CPU to float32 rounding but
    is not bitwise reproducible from run to run."""
    module = _module(device)
    proj = np.ascontiguousarray(projections, dtype=np.float32)
    _check_stack("projections", proj.shape, "(T, Py, Px)")
    nz, ny, nx = _volume_shape(volume_shape)
    rot, shifts, voxel, pixel, step = _common(rotation, shifts_A, voxel_size_A, pixel_size_A, step_A)
    _check_count("projections", proj.shape[0], rot.shape[0])
    return module.backproject(proj, rot, shifts, voxel, nz, ny, nx, pixel, step, _threads(threads))


project_adjoint = backproject


_POSE_WRT = ("volume", "rotation", "shifts")


@dataclasses.dataclass(frozen=True)
class ProjectionGrads:
    """Gradients of a real loss through :func:`project`. ``None`` where not requested.

    volume : (Z, Y, X) float32, dL/dvolume (the back-projection of the cotangents).
    rotation_vector : (T, 3) float64, dL/dw of the update ``R <- exp([w]x) R`` at w = 0 (1/rad).
    shifts_A : (T, 2) float64, dL/d(dy, dx) (1/A).
    """

    volume: np.ndarray | None = None
    rotation_vector: np.ndarray | None = None
    shifts_A: np.ndarray | None = None


def _pose_wrt(wrt) -> set[str]:
    wrt = {wrt} if isinstance(wrt, str) else set(wrt)
    unknown = wrt - set(_POSE_WRT)
    if unknown:
        raise ValueError(f"wrt: unknown {sorted(unknown)}; expected a subset of {_POSE_WRT}")
    return wrt


@accepts_arrays(
    device_path="project_vjp", grad_projections="real", volume="real", rotation="real", shifts_A="real"
)
def project_vjp(
    grad_projections,
    volume,
    rotation,
    shifts_A=None,
    voxel_size_A: float = 1.0,
    *,
    shape=None,
    pixel_size_A: float | None = None,
    step_A: float | None = None,
    wrt: Iterable[str] = _POSE_WRT,
    threads: int | None = None,
    device: str = "cpu",
) -> ProjectionGrads:
    """The vector-Jacobian product of :func:`project` at (volume, rotation, shifts_A).

    ``grad_projections`` (T, Py, Px) is dL/dprojections; ``wrt`` picks among "volume", "rotation" and
    "shifts". The volume part is the back-projection of ``grad_projections``. The pose part differentiates
    the trilinear interpolant (piecewise linear, so its gradient is piecewise constant between voxel planes)
    along every ray sample: with R(w) = exp([w]x) R the sample at q = (x - dx, y - dy, z) reads the volume at
    R(w)^T q, whose derivative at w = 0 is R^T [q]x. ``shape``, if given, must equal the projections' (Py, Px).
    On ``device="cuda"`` the pose part is summed per projection in double in a fixed order (run-to-run
    reproducible, equal to the CPU up to summation order) and the volume part is the GPU back-projection.
    Other arguments as in :func:`project`."""
    module = _module(device)
    wrt = _pose_wrt(wrt)
    grad = np.ascontiguousarray(grad_projections, dtype=np.float32)
    _check_stack("grad_projections", grad.shape, "(T, Py, Px)")
    _check_vjp_shape(shape, grad.shape[1:])
    vol = np.ascontiguousarray(volume, dtype=np.float32)
    _check_stack("volume", vol.shape, "(Z, Y, X)")
    rot, shifts, voxel, pixel, step = _common(rotation, shifts_A, voxel_size_A, pixel_size_A, step_A)
    _check_count("grad_projections", grad.shape[0], rot.shape[0])
    n_threads = _threads(threads)
    d_volume = d_rot = d_shift = None
    if "volume" in wrt:
        d_volume = backproject(
            grad, rot, shifts, voxel, vol.shape, pixel_size_A=pixel, step_A=step, threads=threads, device=device
        )
    if wrt & {"rotation", "shifts"}:
        d_rot, d_shift = module.project_pose_vjp(grad, vol, rot, shifts, voxel, pixel, step, n_threads)
        d_rot = d_rot if "rotation" in wrt else None
        d_shift = d_shift if "shifts" in wrt else None
    return ProjectionGrads(volume=d_volume, rotation_vector=d_rot, shifts_A=d_shift)
