"""PyTorch autograd over the native operators (extra ``torch``: ``pip install "mspt[torch]"``).

:func:`multislice` and :func:`project` are ``torch.autograd.Function``\\ s: the forward pass is the native
operator and the backward pass is its native vector-Jacobian product, so they compose with torch
optimisers, losses, regularisers and networks around them.

* Tensors stay where they are: CPU tensors reach the native core without a copy (contiguous ones of the
  dtype the operator computes in); CUDA tensors run on the CUDA backend on their own device, in place, with
  the work queued on the current stream and results allocated by torch on that device: no host round trip
  and no synchronisation in the forward or the backward pass (see :mod:`mspt.ops` and the embedding page).
  The beam tilt is a scalar parameter of the propagator, read on the host: keep ``tilt_mrad`` on the CPU
  (a tuple, or a CPU tensor) to avoid a synchronisation; a tilt that requires grad gets its gradient on
  its own device.
* Complex gradients follow PyTorch's convention: for a real loss L of a complex tensor z = x + iy, the
  gradient is dL/dx + i dL/dy (the conjugate Wirtinger derivative times two), which is what the native
  vector-Jacobian products return, so a plain ``z - lr * z.grad`` step descends.
* Precision: complex128 slices or probe run the native double-precision multislice (the path
  ``torch.autograd.gradcheck`` checks); complex64 runs single precision. The projector computes in float32.
* Memory: on the CPU, :func:`multislice` keeps its forward pass's wavefields for the backward pass (a
  :class:`mspt.ops.MultisliceTape`: B x M x (S + 1) planes of ny x nx complex values, B x M x 2S when the
  tilt needs a gradient; 50 MB for 64 positions, 5 slices, one mode and 128^2 complex64), so the backward
  pass does not run the forward pass again. Above ``SAVE_WAVES_MAX_BYTES`` (1 GiB; or with
  ``save_waves=False``) the backward pass recomputes them instead. The tape is freed with the autograd graph.
* Poses: :func:`project` takes rotation matrices (T, 3, 3). Their gradient is the tangent one: the native
  pose vjp gives g = dL/dw for the update R <- exp([w]x) R, returned as dL/dR = [g]x R / 2, which equals
  the gradient of any parametrisation of R on the rotation group (Euler angles, quaternions, ...) through
  torch's chain rule. The natural parameter is a rotation vector per pose, ``R = rotation_update(w, R0)``
  with ``w = torch.zeros(T, 3, requires_grad=True)``: then ``w.grad`` is exactly the native pose gradient,
  with no gimbal lock at zero tilt.
"""

from __future__ import annotations

try:
    import torch
except ImportError as err:  # pragma: no cover - exercised only without torch
    raise ImportError('mspt.torch needs PyTorch: pip install "mspt[torch]" (torch>=2.1)') from err

import numpy as np

from . import ops
from .ops import _arrays

__all__ = ["SAVE_WAVES_MAX_BYTES", "multislice", "project", "rotation_update", "skew"]

_COMPLEX = (torch.complex64, torch.complex128)

# Largest forward state (bytes) that multislice keeps for its backward pass by default (save_waves=None);
# above it the backward pass recomputes the forward pass.
SAVE_WAVES_MAX_BYTES = 2**30


def _tensor(name: str, value, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value`` as a tensor on ``like``'s device (arrays and lists are wrapped, tensors checked)."""
    if not isinstance(value, torch.Tensor):
        return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=like.device)
    if value.device != like.device:
        raise ValueError(f"{name}: a tensor on {value.device}, but the first tensor argument is on {like.device}")
    if value.is_complex() or not value.is_floating_point():
        raise ValueError(f"{name}: expected a real floating tensor, got dtype {value.dtype}")
    return value


def _native(name: str, tensor: torch.Tensor):
    """A tensor as the operators take it: a CPU tensor as a NumPy view (the CPU path, which can keep a
    forward tape), a CUDA tensor as itself (the CUDA path: in place on its device, on the current stream)."""
    tensor = tensor.detach()
    return tensor if tensor.device.type == "cuda" else _arrays.to_numpy(name, tensor)


def _tilt(tilt_mrad, like: torch.Tensor) -> torch.Tensor:
    """The beam tilt (ty, tx) in mrad as a float64 tensor: on the CPU unless given as a tensor on ``like``'s
    device (it is read on the host, so a CUDA tensor costs a synchronisation per call)."""
    if not isinstance(tilt_mrad, torch.Tensor):
        return torch.as_tensor(np.asarray(tilt_mrad, dtype=np.float64))
    if tilt_mrad.device.type != "cpu" and tilt_mrad.device != like.device:
        raise ValueError(f"tilt_mrad: a tensor on {tilt_mrad.device}, but slices is on {like.device}; use the CPU or that device")
    if tilt_mrad.is_complex() or not tilt_mrad.is_floating_point():
        raise ValueError(f"tilt_mrad: expected a real floating tensor, got dtype {tilt_mrad.dtype}")
    return tilt_mrad


def _as_tensor(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))


def _device(tensor: torch.Tensor) -> str:
    return "cuda" if tensor.device.type == "cuda" else "cpu"


def _back(value, like: torch.Tensor) -> torch.Tensor | None:
    """An operator's result (NumPy from the CPU path, a tensor from the CUDA path) as a tensor of ``like``'s
    dtype on its device."""
    if value is None:
        return None
    return _as_tensor(value).to(device=like.device, dtype=like.dtype)


def _keeps_waves(save_waves: bool | None, slices, probe, positions, with_tilt: bool) -> bool:
    """Whether the forward pass records a tape for the backward pass (CPU tensors only)."""
    if save_waves is False or slices.device.type != "cpu":
        return False
    if save_waves is None:
        precision = "double" if torch.complex128 in (slices.dtype, probe.dtype) else "single"
        modes, ny, nx = probe.shape if probe.ndim == 3 else (1, *probe.shape)
        nbytes = ops.multislice_tape_bytes(
            positions.shape[0] if positions.ndim == 2 else 1, slices.shape[0] if slices.ndim == 3 else 1, modes, ny,
            nx, precision=precision, with_tilt=with_tilt,
        )  # fmt: skip
        return nbytes <= SAVE_WAVES_MAX_BYTES
    return True


def _tilt_values(tilt: torch.Tensor) -> np.ndarray:
    return tilt.detach().cpu().numpy()


class _Multislice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, slices, probe, positions, tilt, settings):
        ctx.settings = settings
        ctx.save_for_backward(slices, probe, positions, tilt)
        with_tilt = ctx.needs_input_grad[3]
        record = any(ctx.needs_input_grad) and _keeps_waves(settings["save_waves"], slices, probe, positions, with_tilt)
        result = ops.multislice_forward(
            _native("slices", slices), _native("probe", probe), _native("positions_px", positions), settings["dz_A"],
            settings["energy_eV"], settings["sampling_A"], tilt_mrad=_tilt_values(tilt),
            record_tape=record, tape_with_tilt=with_tilt, **settings["native"],
        )  # fmt: skip
        intensities, ctx.tape = result if record else (result, None)
        return _as_tensor(intensities).to(slices.device)

    @staticmethod
    def backward(ctx, grad_intensities):
        slices, probe, positions, tilt = ctx.saved_tensors
        settings = ctx.settings
        names = ("slices", "probe", "positions", "tilt")
        wrt = tuple(n for n, needed in zip(names, ctx.needs_input_grad) if needed)
        grads = ops.multislice_vjp(
            _native("grad_intensities", grad_intensities), _native("slices", slices), _native("probe", probe),
            _native("positions_px", positions), settings["dz_A"], settings["energy_eV"], settings["sampling_A"],
            tilt_mrad=_tilt_values(tilt), wrt=wrt, tape=ctx.tape, **settings["native"],
        )  # fmt: skip
        return (
            _back(grads.slices, slices), _back(grads.probe, probe), _back(grads.positions_px, positions),
            _back(grads.tilt_mrad, tilt), None,
        )  # fmt: skip


def multislice(
    slices: torch.Tensor,
    probe: torch.Tensor,
    positions_px,
    dz_A: float,
    energy_eV: float,
    sampling_A,
    *,
    tilt_mrad=(0.0, 0.0),
    bandlimit: bool = True,
    save_waves: bool | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """Differentiable far-field intensities of the multislice model (:func:`mspt.ops.multislice_forward`).

    Parameters
    ----------
    slices : torch.Tensor
        (S, H, W) complex transmission functions, entrance to exit; complex128 runs the double-precision core.
    probe : torch.Tensor
        (M, ny, nx) or (ny, nx) complex probe modes, on the device of ``slices``.
    positions_px : torch.Tensor or array_like
        (B, 2) window centres (y, x) in object pixels.
    dz_A : float
        Slice thickness in angstrom.
    energy_eV : float
        Beam energy in eV.
    sampling_A : float or tuple of float
        Object pixel size (dy, dx) in angstrom.
    tilt_mrad : torch.Tensor or tuple of float
        Beam tilt (ty, tx) in mrad; a tensor that requires grad gets dL/dtilt (1/mrad).
    bandlimit : bool
        Also cut the far field at 2/3 of Nyquist (the propagator always is).
    save_waves : bool, optional
        Keep the forward pass's wavefields for the backward pass (CPU tensors; see the module docstring for
        the memory) instead of recomputing them there. Default: keep them when they take at most
        ``SAVE_WAVES_MAX_BYTES``. Either way the gradients are the same, bit for bit.
    threads : int, optional
        CPU threads (default: OpenMP's).

    Returns
    -------
    torch.Tensor
        (B, ny, nx) intensities, float32 (float64 for complex128 inputs), zero frequency at (ny//2, nx//2),
        on the device of ``slices``. Gradients flow to ``slices``, ``probe``, ``positions_px`` and
        ``tilt_mrad`` wherever they require grad.
    """
    for name, value in (("slices", slices), ("probe", probe)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
        if value.dtype not in _COMPLEX:
            raise ValueError(f"{name}: expected a complex64 or complex128 tensor, got dtype {value.dtype}")
    if probe.device != slices.device:
        raise ValueError(f"probe: a tensor on {probe.device}, but slices is on {slices.device}")
    positions = _tensor("positions_px", positions_px, slices, torch.float64)
    tilt = _tilt(tilt_mrad, slices)
    if save_waves is not None and not isinstance(save_waves, bool):
        raise ValueError(f"save_waves: expected None, True or False, got {save_waves!r}")
    settings = dict(
        dz_A=dz_A, energy_eV=energy_eV, sampling_A=sampling_A, save_waves=save_waves,
        native=dict(bandlimit=bandlimit, threads=threads, device=_device(slices)),
    )  # fmt: skip
    return _Multislice.apply(slices, probe, positions, tilt, settings)


def skew(w: torch.Tensor) -> torch.Tensor:
    """The cross-product matrices [w]x (..., 3, 3) of vectors w (..., 3): [w]x v = w x v."""
    zero = torch.zeros_like(w[..., 0])
    x, y, z = w[..., 0], w[..., 1], w[..., 2]
    rows = (torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1))
    return torch.stack(rows, -2)


def rotation_update(w: torch.Tensor, rotation) -> torch.Tensor:
    """``exp([w]x) @ rotation``: the rotations (T, 3, 3) reached from ``rotation`` by rotation vectors w
    (T, 3) in radians (axis times angle, applied on the left: an active rotation of the rotated volume).
    Differentiable in w; at w = 0 its gradient is the native tangent-space pose gradient."""
    rotation = torch.as_tensor(rotation, dtype=w.dtype, device=w.device)
    return torch.linalg.matrix_exp(skew(w)) @ rotation


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, volume, rotation, shifts, settings):
        ctx.settings = settings
        ctx.save_for_backward(volume, rotation, shifts)
        projections = ops.project(
            _native("volume", volume), _native("rotation", rotation), _native("shifts_A", shifts),
            settings["voxel_size_A"], **settings["native"],
        )  # fmt: skip
        return _back(projections, volume)

    @staticmethod
    def backward(ctx, grad_projections):
        volume, rotation, shifts = ctx.saved_tensors
        names = ("volume", "rotation", "shifts")
        wrt = tuple(n for n, needed in zip(names, ctx.needs_input_grad) if needed)
        grads = ops.project_vjp(
            _native("grad_projections", grad_projections), _native("volume", volume), _native("rotation", rotation),
            _native("shifts_A", shifts), ctx.settings["voxel_size_A"], wrt=wrt, **ctx.settings["native"],
        )  # fmt: skip
        d_rotation = None
        if grads.rotation_vector is not None:
            # The tangent gradient g (dL/dw of R <- exp([w]x) R) as a matrix: <[g]x R / 2, [v]x R> = g . v.
            g = _as_tensor(grads.rotation_vector)
            d_rotation = _back(0.5 * skew(g) @ rotation.detach().to(device=g.device, dtype=torch.float64), rotation)
        d_shifts = grads.shifts_A
        if d_shifts is not None and shifts.ndim == 1:
            d_shifts = _as_tensor(d_shifts).sum(0)  # one shift broadcast to every pose
        return _back(grads.volume, volume), d_rotation, _back(d_shifts, shifts), None


def project(
    volume: torch.Tensor,
    rotation,
    shifts_A=None,
    voxel_size_A: float = 1.0,
    *,
    shape=None,
    pixel_size_A: float | None = None,
    step_A: float | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """Differentiable tomographic projection (:func:`mspt.ops.project`): volume (Z, Y, X) -> (T, Py, Px).

    Parameters
    ----------
    volume : torch.Tensor
        (Z, Y, X) real volume (computed in float32; the projections come back in its dtype).
    rotation : torch.Tensor or array_like
        (T, 3, 3) active rotation matrices, (x, y, z) order. If it requires grad it gets the tangent
        gradient dL/dR = [g]x R / 2 (see the module docstring); build it with :func:`rotation_update`.
    shifts_A : torch.Tensor or array_like, optional
        (T, 2) or (2,) in-plane shifts (dy, dx) in angstrom; default zero.
    voxel_size_A : float
        Voxel size in angstrom.
    shape : tuple of int, optional
        (Py, Px) of the projections; default the volume's (Y, X).
    pixel_size_A, step_A : float, optional
        Projection pixel size and ray step in angstrom; default the voxel size.
    threads : int, optional
        CPU threads (default: OpenMP's).

    Returns
    -------
    torch.Tensor
        (T, Py, Px) line integrals (volume value x A) on the device of ``volume``.
    """
    if not isinstance(volume, torch.Tensor):
        raise TypeError(f"volume: expected a torch.Tensor, got {type(volume).__name__}")
    if volume.is_complex() or not volume.is_floating_point():
        raise ValueError(f"volume: expected a real floating tensor, got dtype {volume.dtype}")
    rotation = _tensor("rotation", rotation, volume, torch.float64)
    shifts = _tensor("shifts_A", np.zeros(2) if shifts_A is None else shifts_A, volume, torch.float64)
    settings = dict(
        voxel_size_A=voxel_size_A,
        native=dict(shape=shape, pixel_size_A=pixel_size_A, step_A=step_A, threads=threads, device=_device(volume)),
    )  # fmt: skip
    return _Project.apply(volume, rotation, shifts, settings)
