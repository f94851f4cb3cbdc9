"""The CUDA path of the operators, for arrays that live on a GPU (routed here by ``_arrays``).

Each function has its operator's parameters plus ``call``, the :class:`~._device_arrays.DeviceCall` of the
caller's framework and device. The caller's arrays are used in place on their own device (converted once
by the caller's library where their dtype or layout is not the operator's), outputs are allocated by the
caller's library on that device, and the work is queued on the caller's current stream through the native
device entry points (mspt._core_cuda: MultisliceCuda32.run_device, project_device, ...). Shapes, dtypes and
scalars follow the CPU path's rules, with its messages (``multislice`` and ``projector`` share their
checks). Checks of values need the data on the host, so they run only where the call waits anyway: inside
:func:`mspt.ops.synchronous`, and in :func:`multislice_loss_grad`, whose loss is a Python float. Elsewhere
the kernels guard memory (a probe window outside the object turns that position's results into NaN) and
NaN inputs give NaN outputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _backend
from ..probe import Probe
from . import multislice as _ms
from . import projector as _pj
from ._device_arrays import DeviceArray, DeviceCall, native

# ---- multislice ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Multislice:
    """The inputs of one multislice call on device arrays, in the engine's shapes, and its scalars."""

    call: DeviceCall
    slices: DeviceArray  # (S, H, W) complex64
    probe: DeviceArray  # (M, ny, nx) complex64
    positions: DeviceArray  # (B, 2) float64
    scalars: _ms._Scalars

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        M, ny, nx = self.probe.shape
        return self.positions.shape[0], self.slices.shape[0], M, ny, nx

    def run(self, *, synchronize: bool | None = None, **arrays) -> None:
        """Queue the engine's work; ``arrays`` are its optional arguments (DeviceArrays, None, or scalars)."""
        B, S, M, ny, nx = self.shape
        engine, lock = _backend.multislice_engine("cuda", "single", ny, nx, S, M, self.scalars.threads,
                                                  index=self.call.index)  # fmt: skip
        placement = self.call.placement_kwargs()
        if synchronize is not None:
            placement["synchronize"] = synchronize
        optional = {k: native(v) if v is None or isinstance(v, DeviceArray) else v for k, v in arrays.items()}
        with lock:
            engine.run_device(
                self.slices.native, self.probe.native, self.positions.native, *self.scalars.native(), **optional,
                **placement,
            )  # fmt: skip


def _multislice(call: DeviceCall, slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit,
                threads) -> _Multislice:  # fmt: skip
    from_probe = isinstance(probe, Probe)
    probe, energy_eV, sampling_A = _ms._probe_defaults(probe, energy_eV, sampling_A)
    slices = call.input("slices", slices, "complex", np.complex64, single_precision=True)
    if from_probe:  # an mspt.Probe's modes live on the host
        probe = call.upload(probe, np.complex64)
    else:
        probe = call.input("probe", probe, "complex", np.complex64, single_precision=True)
    positions = call.input("positions_px", positions_px, "real", np.float64)
    slices_shape, probe_shape, positions_shape = _ms._engine_shapes(slices.shape, probe.shape, positions.shape)
    slices = slices if slices.shape == slices_shape else slices.with_leading_axis()
    probe = probe if probe.shape == probe_shape else probe.with_leading_axis()
    positions = positions if positions.shape == positions_shape else positions.with_leading_axis()
    if call.synchronize and not call.all_finite(positions):
        raise ValueError("positions_px: expected finite positions")
    scalars = _ms._scalars(dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, threads)
    return _Multislice(call, slices, probe, positions, scalars)


def multislice_forward(slices, probe, positions_px, dz_A, energy_eV=None, sampling_A=None, *, tilt_mrad=(0.0, 0.0),
                       bandlimit=True, return_exit_waves=False, record_tape=False, tape_with_tilt=False, device="cuda",
                       threads=None, out=None, call: DeviceCall):  # fmt: skip
    """:func:`mspt.ops.multislice_forward` on CUDA arrays."""
    if record_tape:
        raise ValueError("record_tape: the CUDA backend keeps no tape (its vjp reruns the forward pass cheaply)")
    m = _multislice(call, slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, threads)
    B, S, M, ny, nx = m.shape
    intensities = call.empty((B, ny, nx), np.float32) if out is None else call.output("out", out, (B, ny, nx), np.float32)
    exit_waves = call.empty((B, M, ny, nx), np.complex64) if return_exit_waves else None
    m.run(intensities=intensities, exit_waves=exit_waves)
    result = call.result(intensities) if out is None else out
    return (result, call.result(exit_waves)) if return_exit_waves else result


def _gradient_outputs(call: DeviceCall, m: _Multislice, wrt: set[str], slices_into=None) -> dict:
    """The gradient arrays a call fills; the slice gradient goes to ``slices_into`` where one is given."""
    B, S, M, ny, nx = m.shape
    if "slices" in wrt and slices_into is None:
        slices_into = call.empty(m.slices.shape, np.complex64)
    return dict(
        grad_slices=slices_into if "slices" in wrt else None,
        grad_probe=call.empty((M, ny, nx), np.complex64) if "probe" in wrt else None,
        grad_positions=call.empty((B, 2), np.float64) if "positions" in wrt else None,
        grad_tilt=call.empty((2,), np.float64) if "tilt" in wrt else None,
    )


def _grads(call: DeviceCall, m: _Multislice, outputs: dict, **extra) -> _ms.MultisliceGrads:
    if outputs["grad_tilt"] is not None:
        call.scale_elements(outputs["grad_tilt"], m.scalars.tilt_mrad_factors)
    return _ms.MultisliceGrads(
        slices=call.result(outputs["grad_slices"]), probe=call.result(outputs["grad_probe"]),
        positions_px=call.result(outputs["grad_positions"]), tilt_mrad=call.result(outputs["grad_tilt"]), **extra,
    )  # fmt: skip


def multislice_vjp(grad_intensities, slices, probe, positions_px, dz_A, energy_eV=None, sampling_A=None, *,
                   tilt_mrad=(0.0, 0.0), bandlimit=True, wrt=_ms._WRT, tape=None, device="cuda", threads=None,
                   call: DeviceCall):  # fmt: skip
    """:func:`mspt.ops.multislice_vjp` on CUDA arrays."""
    m = _multislice(call, slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, threads)
    wrt = _ms._wrt_set(wrt)
    if tape is not None:
        raise ValueError("tape: the CUDA backend keeps no tape; pass tape=None")
    B, S, M, ny, nx = m.shape
    g = call.input("grad_intensities", grad_intensities, "real", np.float32)
    if g.shape != (B, ny, nx):
        raise ValueError(f"grad_intensities: expected shape {(B, ny, nx)}, got {g.shape}")
    if call.synchronize and not call.all_finite(g):
        raise ValueError("grad_intensities: expected finite values")
    outputs = _gradient_outputs(call, m, wrt)
    m.run(source=1, grad_intensities=g, **outputs)
    return _grads(call, m, outputs)


def multislice_loss_grad(data, slices, probe, positions_px, dz_A, energy_eV=None, sampling_A=None, *,
                         likelihood="poisson", eps=1e-6, tilt_mrad=(0.0, 0.0), bandlimit=True, wrt=_ms._WRT,
                         device="cuda", threads=None, check_data=True, accumulate_slices=None,
                         call: DeviceCall):  # fmt: skip
    """:func:`mspt.ops.multislice_loss_grad` on CUDA arrays. Returns a Python float loss, so it waits for
    its work (and checks positions and counts on the host, as the CPU path does)."""
    if likelihood not in _ms.LIKELIHOODS:
        raise ValueError(f"likelihood: expected one of {tuple(_ms.LIKELIHOODS)}, got {likelihood!r}")
    m = _multislice(call, slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, threads)
    B, S, M, ny, nx = m.shape
    d = call.input("data", data, "real", np.float32)
    if d.shape != (B, ny, nx):
        raise ValueError(f"data: expected shape {(B, ny, nx)} (positions, ky, kx), got {d.shape}")
    if check_data and not (call.all_finite(d) and call.all_nonnegative(d)):
        raise ValueError("data: expected finite, non-negative counts")
    wrt = _ms._wrt_set(wrt)
    accumulate = accumulate_slices is not None and "slices" in wrt
    into = call.output("accumulate_slices", accumulate_slices, m.slices.shape, np.complex64) if accumulate else None
    outputs = _gradient_outputs(call, m, wrt, slices_into=into)
    per_position = call.empty((B,), np.float64)
    loss = call.empty((1,), np.float64)
    m.run(source=2, data=d, likelihood=_ms.LIKELIHOODS[likelihood], eps=float(eps), loss=loss,
          loss_per_position=per_position, synchronize=True, accumulate_slices=accumulate, **outputs)  # fmt: skip
    return _grads(call, m, outputs, loss=float(call.to_host(loss)[0]), loss_per_position=call.result(per_position))


# ---- projector ----------------------------------------------------------------------------------------


def _poses(call: DeviceCall, rotation, shifts_A) -> tuple[DeviceArray, DeviceArray]:
    """Rotations (T, 3, 3) and shifts (T, 2) float64 on the device (a (2,) shift repeated for every pose,
    no shift zeros); with synchronous semantics their values are checked as on the CPU."""
    rot = call.input("rotation", rotation, "real", np.float64)
    n = _pj._rotation_count(rot.shape)
    if shifts_A is None:
        shifts = call.zeros((n, 2), np.float64)
    else:
        shifts = call.input("shifts_A", shifts_A, "real", np.float64)
        _pj._check_shifts_shape(shifts.shape, n)
        shifts = shifts if shifts.shape == (n, 2) else call.broadcast(shifts, (n, 2))
    if call.synchronize:
        _pj._rotations(call.to_host(rot))
        _pj._shifts(call.to_host(shifts), n)
    return rot, shifts


def _backproject(call: DeviceCall, projections: DeviceArray, rot: DeviceArray, shifts: DeviceArray, voxel: float,
                 volume_shape: tuple[int, int, int], pixel: float, step: float) -> DeviceArray:  # fmt: skip
    out = call.empty(volume_shape, np.float32)
    _backend.cuda_module().backproject_device(
        projections.native, rot.native, shifts.native, voxel, *volume_shape, pixel, step, out.native,
        **call.placement_kwargs(),
    )  # fmt: skip
    return out


def project(volume, rotation, shifts_A=None, voxel_size_A=1.0, *, shape=None, pixel_size_A=None, step_A=None,
            threads=None, device="cuda", call: DeviceCall):  # fmt: skip
    """:func:`mspt.ops.project` on CUDA arrays."""
    module = _backend.cuda_module()
    vol = call.input("volume", volume, "real", np.float32)
    _pj._check_stack("volume", vol.shape, "(Z, Y, X)")
    rot, shifts = _poses(call, rotation, shifts_A)
    voxel, pixel, step = _pj._sizes(voxel_size_A, pixel_size_A, step_A)
    py, px = vol.shape[1:] if shape is None else _pj._shape("shape", shape, 2)
    _pj._threads(threads)  # checked as on the CPU; the GPU's parallelism is its grid
    out = call.empty((rot.shape[0], py, px), np.float32)
    module.project_device(vol.native, rot.native, shifts.native, voxel, py, px, pixel, step, out.native,
                          **call.placement_kwargs())  # fmt: skip
    return call.result(out)


def backproject(projections, rotation, shifts_A=None, voxel_size_A=1.0, volume_shape=None, *, pixel_size_A=None,
                step_A=None, threads=None, device="cuda", call: DeviceCall):  # fmt: skip
    """:func:`mspt.ops.backproject` on CUDA arrays."""
    _backend.cuda_module()
    proj = call.input("projections", projections, "real", np.float32)
    _pj._check_stack("projections", proj.shape, "(T, Py, Px)")
    volume_shape = _pj._volume_shape(volume_shape)
    rot, shifts = _poses(call, rotation, shifts_A)
    voxel, pixel, step = _pj._sizes(voxel_size_A, pixel_size_A, step_A)
    _pj._check_count("projections", proj.shape[0], rot.shape[0])
    _pj._threads(threads)
    return call.result(_backproject(call, proj, rot, shifts, voxel, volume_shape, pixel, step))


def project_vjp(grad_projections, volume, rotation, shifts_A=None, voxel_size_A=1.0, *, shape=None, pixel_size_A=None,
                step_A=None, wrt=_pj._POSE_WRT, threads=None, device="cuda", call: DeviceCall):  # fmt: skip
    """:func:`mspt.ops.project_vjp` on CUDA arrays."""
    module = _backend.cuda_module()
    wrt = _pj._pose_wrt(wrt)
    grad = call.input("grad_projections", grad_projections, "real", np.float32)
    _pj._check_stack("grad_projections", grad.shape, "(T, Py, Px)")
    _pj._check_vjp_shape(shape, grad.shape[1:])
    vol = call.input("volume", volume, "real", np.float32)
    _pj._check_stack("volume", vol.shape, "(Z, Y, X)")
    rot, shifts = _poses(call, rotation, shifts_A)
    voxel, pixel, step = _pj._sizes(voxel_size_A, pixel_size_A, step_A)
    _pj._check_count("grad_projections", grad.shape[0], rot.shape[0])
    _pj._threads(threads)
    d_volume = _backproject(call, grad, rot, shifts, voxel, vol.shape, pixel, step) if "volume" in wrt else None
    d_rot = d_shift = None
    if wrt & {"rotation", "shifts"}:
        n = rot.shape[0]
        d_rot, d_shift = call.empty((n, 3), np.float64), call.empty((n, 2), np.float64)
        module.project_pose_vjp_device(grad.native, vol.native, rot.native, shifts.native, voxel, pixel, step,
                                       d_rot.native, d_shift.native, **call.placement_kwargs())  # fmt: skip
    return _pj.ProjectionGrads(
        volume=call.result(d_volume), rotation_vector=call.result(d_rot) if "rotation" in wrt else None,
        shifts_A=call.result(d_shift) if "shifts" in wrt else None,
    )  # fmt: skip
