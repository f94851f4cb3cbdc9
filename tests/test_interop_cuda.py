"""CUDA arrays through mspt.ops and mspt.torch on a GPU.

PyTorch CUDA tensors and CuPy arrays go in and the same type comes out on the same device; the inputs are
used in place (the native entry points get the arrays' own data pointers) and every output is a fresh
buffer of the caller's library; the work runs on the caller's current stream (ordered after what the
caller queued there, without the host waiting for it), and the results equal the CPU backend's to float32
rounding. Wrong devices, dtypes and layouts are ValueErrors naming the argument. Every test here needs a
usable GPU (and PyTorch with CUDA or CuPy) and skips without one; test_interop_routing.py checks the same
routing on the CPU with fake CUDA arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

import mspt
from mspt import _backend, ops
from mspt.ops import _arrays

pytestmark = pytest.mark.gpu

ENERGY, SAMPLING, DZ = 200e3, (0.2, 0.2), 2.0
RNG = np.random.default_rng(5)
PROBE = mspt.make_probe(ENERGY, 22, (16, 16), SAMPLING, defocus_A=20).array  # (1, 16, 16) complex64
SLICES = (np.exp(1j * 0.3 * RNG.standard_normal((2, 36, 36))) * (1 - 0.1 * RNG.random((2, 36, 36)))).astype(np.complex64)
POSITIONS = np.array([[17.3, 18.6], [18.2, 16.9], [16.0, 17.5], [19.5, 18.5]])
COTANGENT = RNG.standard_normal((4, 16, 16)).astype(np.float32)
VOLUME = RNG.random((8, 10, 12), dtype=np.float32)
ROTATION = ops.tilt_series_rotations([-30.0, 10.0, 45.0])
FORWARD_RTOL, GRAD_RTOL = 1e-4, 1e-3  # float32 rounding, cuFFT vs FFTW, atomics vs ordered sums


def _rel(got, expected) -> float:
    got, expected = np.asarray(got, dtype=np.complex128), np.asarray(expected, dtype=np.complex128)
    assert got.shape == expected.shape
    return float(np.linalg.norm(got - expected) / max(np.linalg.norm(expected), 1e-30))


def _torch():
    torch = pytest.importorskip("torch")
    if not (_backend.cuda_available() and torch.cuda.is_available()):
        pytest.skip("no usable CUDA backend and torch CUDA device")
    return torch


def _cupy():
    if not _backend.cuda_available():
        pytest.skip("no usable CUDA backend")
    return pytest.importorskip("cupy")


class NativeSpy:
    """Records the descriptors (pointer, shape, dtype), device, stream and waiting flag that the native
    device entry points receive, then calls them."""

    def __init__(self, monkeypatch):
        self.calls = []
        module = _backend.cuda_module()
        spy = self

        class Module:
            def __getattr__(self, name):
                target = getattr(module, name)
                if not name.endswith("_device"):
                    return target

                def record(*args, **kwargs):
                    spy.calls.append((name, args, kwargs))
                    return target(*args, **kwargs)

                return record

        original_engine = _backend.multislice_engine

        def engine(*args, **kwargs):
            native, lock = original_engine(*args, **kwargs)

            class Recording:
                def run_device(self, *a, **k):
                    spy.calls.append(("run_device", a, k))
                    return native.run_device(*a, **k)

            return Recording(), lock

        monkeypatch.setattr(_backend, "cuda_module", lambda: Module())
        monkeypatch.setattr(_backend, "multislice_engine", engine)

    def pointers(self, index: int = -1) -> list[int]:
        """The data pointers of every descriptor in call ``index``."""
        _, args, kwargs = self.calls[index]
        return [v[0] for v in (*args, *kwargs.values()) if isinstance(v, tuple) and len(v) == 3]


# ---- PyTorch --------------------------------------------------------------------------------------------


def test_torch_multislice_in_place_on_its_device_equal_to_the_cpu(monkeypatch, measured):
    torch = _torch()
    spy = NativeSpy(monkeypatch)
    slices, probe, positions = (torch.from_numpy(a).cuda() for a in (SLICES, PROBE, POSITIONS))
    got = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING)
    torch.cuda.synchronize()
    assert isinstance(got, torch.Tensor) and got.device == slices.device and got.dtype == torch.float32
    name, args, kwargs = spy.calls[-1]
    assert name == "run_device" and args[0][0] == slices.data_ptr() and args[1][0] == probe.data_ptr()
    assert args[2][0] == positions.data_ptr() and kwargs["intensities"][0] == got.data_ptr()
    assert got.data_ptr() not in (slices.data_ptr(), probe.data_ptr(), positions.data_ptr())
    assert kwargs["device"] == slices.device.index and kwargs["synchronize"] is False
    assert kwargs["stream"] == torch.cuda.current_stream(slices.device).cuda_stream
    reference = ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    error = measured("torch CUDA multislice_forward", "relative error vs CPU", _rel(got.cpu(), reference), FORWARD_RTOL)
    assert error < FORWARD_RTOL

    grads = ops.multislice_vjp(torch.from_numpy(COTANGENT).cuda(), slices, probe, positions, DZ, ENERGY, SAMPLING,
                               tilt_mrad=(1.0, -2.0))  # fmt: skip
    expected = ops.multislice_vjp(COTANGENT, SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING, tilt_mrad=(1.0, -2.0))
    for field in ("slices", "probe", "positions_px", "tilt_mrad"):
        value = getattr(grads, field)
        assert isinstance(value, torch.Tensor) and value.device == slices.device, field
        error = measured("torch CUDA multislice_vjp", f"{field} relative error vs CPU", _rel(value.cpu(), getattr(expected, field)), GRAD_RTOL)  # fmt: skip
        assert error < GRAD_RTOL, field

    data = torch.from_numpy(np.random.default_rng(1).poisson(reference).astype(np.float32)).cuda()
    fused = ops.multislice_loss_grad(data, slices, probe, positions, DZ, ENERGY, SAMPLING)
    cpu = ops.multislice_loss_grad(data.cpu().numpy(), SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    assert isinstance(fused.loss, float) and isinstance(fused.loss_per_position, torch.Tensor)
    error = measured("torch CUDA multislice_loss_grad", "loss relative error vs CPU", abs(fused.loss - cpu.loss) / abs(cpu.loss), FORWARD_RTOL)  # fmt: skip
    assert error < FORWARD_RTOL
    assert _rel(fused.slices.cpu(), cpu.slices) < GRAD_RTOL and _rel(fused.probe.cpu(), cpu.probe) < GRAD_RTOL


def test_torch_out_and_views_are_used_in_place(monkeypatch):
    torch = _torch()
    spy = NativeSpy(monkeypatch)
    stacked = torch.from_numpy(np.stack([SLICES * 0, SLICES])).cuda()  # the slices live at an offset
    slices = stacked[1]
    probe, positions = torch.from_numpy(PROBE).cuda(), torch.from_numpy(POSITIONS).cuda()
    out = torch.full((4, 16, 16), float("nan"), device="cuda")
    assert ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING, out=out) is out
    _, args, kwargs = spy.calls[-1]
    assert args[0][0] == slices.data_ptr() == stacked.data_ptr() + SLICES.nbytes
    assert kwargs["intensities"][0] == out.data_ptr()
    reference = ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    assert _rel(out.cpu(), reference) < FORWARD_RTOL


def test_torch_projector_in_place_equal_to_the_cpu(monkeypatch, measured):
    torch = _torch()
    spy = NativeSpy(monkeypatch)
    volume, rotation = torch.from_numpy(VOLUME).cuda(), torch.from_numpy(ROTATION).cuda()
    projections = ops.project(volume, rotation, (0.3, -0.2), 0.5)
    assert spy.pointers()[:2] == [volume.data_ptr(), rotation.data_ptr()]
    assert isinstance(projections, torch.Tensor) and projections.device == volume.device
    expected = ops.project(VOLUME, ROTATION, (0.3, -0.2), 0.5)
    error = measured("torch CUDA project", "relative error vs CPU", _rel(projections.cpu(), expected), FORWARD_RTOL)
    assert error < FORWARD_RTOL
    back = ops.backproject(projections, rotation, None, 0.5, VOLUME.shape)
    assert _rel(back.cpu(), ops.backproject(expected, ROTATION, None, 0.5, VOLUME.shape)) < FORWARD_RTOL
    cotangent = torch.from_numpy(RNG.standard_normal(expected.shape).astype(np.float32)).cuda()
    grads = ops.project_vjp(cotangent, volume, rotation, None, 0.5)
    cpu = ops.project_vjp(cotangent.cpu().numpy(), VOLUME, ROTATION, None, 0.5)
    for field in ("volume", "rotation_vector", "shifts_A"):
        value = getattr(grads, field)
        assert isinstance(value, torch.Tensor) and value.device == volume.device, field
        error = measured("torch CUDA project_vjp", f"{field} relative error vs CPU", _rel(value.cpu(), getattr(cpu, field)), GRAD_RTOL)  # fmt: skip
        assert error < GRAD_RTOL, field


def test_work_is_ordered_on_the_callers_stream_without_waiting(measured):
    """The inputs are written on a side stream after a long GPU sleep; the operator is called right after,
    on that stream, and returns while the stream is still busy (no host wait); its result, read on the same
    stream, is right, so its kernels ran after the inputs were written and before the read."""
    torch = _torch()
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is None:
        pytest.skip("this torch has no torch.cuda._sleep")
    slices_src, probe, positions = (torch.from_numpy(a).cuda() for a in (SLICES, PROBE, POSITIONS))
    volume_src, rotation = torch.from_numpy(VOLUME).cuda(), torch.from_numpy(ROTATION).cuda()
    ops.multislice_forward(slices_src, probe, positions, DZ, ENERGY, SAMPLING)  # plans and buffers exist now
    slices, volume = torch.zeros_like(slices_src), torch.zeros_like(volume_src)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        sleep(int(2e8))  # about 0.1 s of spinning on the side stream
        slices.copy_(slices_src)
        volume.copy_(volume_src)
        intensities = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING)
        projections = ops.project(volume, rotation, None, 0.5)
        busy = not side.query()
        got_intensities, got_projections = intensities.cpu(), projections.cpu()  # copies on the side stream
    assert busy, "the operators waited for the stream"
    error = _rel(got_intensities, ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING))
    assert measured("side-stream multislice", "relative error vs CPU", error, FORWARD_RTOL) < FORWARD_RTOL
    error = _rel(got_projections, ops.project(VOLUME, ROTATION, None, 0.5))
    assert measured("side-stream project", "relative error vs CPU", error, FORWARD_RTOL) < FORWARD_RTOL


def test_calls_on_two_streams_do_not_share_scratch_in_flight():
    """One engine serves both calls: the second stream's call waits (on the GPU) for the first's, which is
    held up by a sleep, so neither reads the other's scratch."""
    torch = _torch()
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is None:
        pytest.skip("this torch has no torch.cuda._sleep")
    other = (np.conj(SLICES) * 0.9).astype(np.complex64)
    a, b, probe, positions = (torch.from_numpy(x).cuda() for x in (SLICES, other, PROBE, POSITIONS))
    ops.multislice_forward(a, probe, positions, DZ, ENERGY, SAMPLING)
    first, second = torch.cuda.Stream(), torch.cuda.Stream()
    for s in (first, second):
        s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(first):
        sleep(int(2e8))
        result_a = ops.multislice_forward(a, probe, positions, DZ, ENERGY, SAMPLING)
    with torch.cuda.stream(second):
        result_b = ops.multislice_forward(b, probe, positions, DZ, ENERGY, SAMPLING)
    torch.cuda.synchronize()
    assert _rel(result_a.cpu(), ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)) < FORWARD_RTOL
    assert _rel(result_b.cpu(), ops.multislice_forward(other, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)) < FORWARD_RTOL


def test_window_outside_the_object_is_nan_or_a_value_error():
    torch = _torch()
    slices, probe = torch.from_numpy(SLICES).cuda(), torch.from_numpy(PROBE).cuda()
    outside = POSITIONS.copy()
    outside[2] = (2.0, 18.0)  # the 16-row window would start at row -6
    positions = torch.from_numpy(outside).cuda()
    got = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING).cpu().numpy()
    assert np.isnan(got[2]).any() and np.isfinite(got[[0, 1, 3]]).all()
    keep = [0, 1, 3]
    reference = ops.multislice_forward(SLICES, PROBE, POSITIONS[keep], DZ, ENERGY, SAMPLING)
    assert _rel(got[keep], reference) < FORWARD_RTOL
    grads = ops.multislice_vjp(torch.ones((4, 16, 16), device="cuda"), slices, probe, positions, DZ, ENERGY, SAMPLING)
    assert torch.isnan(grads.probe).any() and torch.isnan(grads.positions_px[2]).all()
    with ops.synchronous(), pytest.raises(ValueError, match=r"positions_px\[2\].*pad the object"):
        ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING)


def test_torch_autograd_on_cuda_tensors_never_visits_the_host(monkeypatch, measured):
    torch = _torch()
    import mspt.torch as mt

    results = {}
    for device in ("cpu", "cuda"):
        if device == "cuda":  # from here on, any host round trip of an array fails the test
            monkeypatch.setattr(_arrays, "to_numpy", lambda *a, **k: pytest.fail("a CUDA tensor went to the host"))
        s, p = (torch.from_numpy(a).to(device).requires_grad_() for a in (SLICES, PROBE))
        q = torch.from_numpy(POSITIONS).to(device).requires_grad_()
        intensities = mt.multislice(s, p, q, DZ, ENERGY, SAMPLING)
        v = torch.from_numpy(VOLUME).to(device).requires_grad_()
        w = torch.zeros(len(ROTATION), 3, dtype=torch.float64, device=device, requires_grad=True)
        projections = mt.project(v, mt.rotation_update(w, torch.from_numpy(ROTATION).to(device)), None, 0.5)
        assert intensities.device.type == device and projections.device.type == device
        (intensities.square().sum() + projections.square().sum()).backward()
        results[device] = [t.detach().cpu() for t in (intensities, s.grad, p.grad, q.grad, projections, v.grad, w.grad)]
    names = ("intensities", "slices.grad", "probe.grad", "positions.grad", "projections", "volume.grad", "w.grad")
    for name, cpu, gpu in zip(names, results["cpu"], results["cuda"]):
        error = measured("mspt.torch on CUDA", f"{name} relative error vs CPU", _rel(gpu.numpy(), cpu.numpy()), GRAD_RTOL)
        assert error < GRAD_RTOL, name


def test_bad_torch_arguments_name_the_argument():
    torch = _torch()
    slices, probe, positions = (torch.from_numpy(a).cuda() for a in (SLICES, PROBE, POSITIONS))
    cases = [
        (dict(probe=torch.from_numpy(PROBE)), "probe: a torch array on cpu, but slices is a torch array on cuda:0"),
        (dict(slices=torch.ones((2, 36, 36), dtype=torch.int32, device="cuda")), "slices: expected a complex array"),
        (dict(slices=slices.to(torch.complex128)), "slices: complex128, but the CUDA backend runs in single precision"),
        (dict(out=torch.empty((16, 16, 4), device="cuda").permute(2, 0, 1)), "out: expected a C-contiguous float32"),
        (dict(out=torch.empty((4, 16, 16), dtype=torch.float64, device="cuda")), "out: expected a C-contiguous float32"),
        (dict(device="cpu"), "device: 'cpu', but slices is a torch array on cuda:0"),
    ]
    if torch.cuda.device_count() > 1:
        cases.append((dict(positions_px=positions.to("cuda:1")), "positions_px: a torch array on cuda:1, but slices"))
    for change, message in cases:
        args = dict(slices=slices, probe=probe, positions_px=positions) | change
        with pytest.raises(ValueError, match=message):
            ops.multislice_forward(args.pop("slices"), args.pop("probe"), args.pop("positions_px"), DZ, ENERGY,
                                   SAMPLING, **args)  # fmt: skip


def test_arrays_on_a_second_gpu_run_there():
    torch = _torch()
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU")
    with torch.cuda.device(0):
        slices, probe, positions = (torch.from_numpy(a).to("cuda:1") for a in (SLICES, PROBE, POSITIONS))
        got = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING)
        assert got.device == torch.device("cuda:1") and torch.cuda.current_device() == 0
    assert _rel(got.cpu(), ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)) < FORWARD_RTOL


def test_native_entry_points_refuse_host_memory():
    torch = _torch()
    module = _backend.cuda_module()
    volume = torch.from_numpy(VOLUME).cuda()
    rotation = torch.from_numpy(ROTATION).cuda()
    shifts = torch.zeros((3, 2), dtype=torch.float64, device="cuda")
    host_out = np.empty((3, 10, 12), np.float32)
    descriptor = (host_out.ctypes.data, host_out.shape, "float32")
    with pytest.raises(ValueError, match="out: expected memory of cuda:0, got host memory"):
        module.project_device((volume.data_ptr(), tuple(volume.shape), "float32"),
                              (rotation.data_ptr(), (3, 3, 3), "float64"), (shifts.data_ptr(), (3, 2), "float64"),
                              0.5, 10, 12, 0.5, 0.5, descriptor, device=0)  # fmt: skip


# ---- CuPy -----------------------------------------------------------------------------------------------


def test_cupy_arrays_in_place_on_the_current_stream_equal_to_the_cpu(monkeypatch, measured):
    cupy = _cupy()
    spy = NativeSpy(monkeypatch)
    slices, probe, positions = (cupy.asarray(a) for a in (SLICES, PROBE, POSITIONS))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        got = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING)
        volume, rotation = cupy.asarray(VOLUME), cupy.asarray(ROTATION)
        projections = ops.project(volume, rotation, None, 0.5)
    stream.synchronize()
    assert isinstance(got, cupy.ndarray) and got.device.id == slices.device.id and got.dtype == np.float32
    _, args, kwargs = spy.calls[0]
    assert [a[0] for a in args[:3]] == [slices.data.ptr, probe.data.ptr, positions.data.ptr]
    assert kwargs["intensities"][0] == got.data.ptr and kwargs["stream"] == stream.ptr
    assert spy.calls[-1][2]["stream"] == stream.ptr and isinstance(projections, cupy.ndarray)
    reference = ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    error = measured("CuPy multislice_forward", "relative error vs CPU", _rel(cupy.asnumpy(got), reference), FORWARD_RTOL)
    assert error < FORWARD_RTOL
    expected = ops.project(VOLUME, ROTATION, None, 0.5)
    assert _rel(cupy.asnumpy(projections), expected) < FORWARD_RTOL
    grads = ops.multislice_vjp(cupy.asarray(COTANGENT), slices, probe, positions, DZ, ENERGY, SAMPLING)
    cpu = ops.multislice_vjp(COTANGENT, SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    for field in ("slices", "probe", "positions_px", "tilt_mrad"):
        assert isinstance(getattr(grads, field), cupy.ndarray), field
        assert _rel(cupy.asnumpy(getattr(grads, field)), getattr(cpu, field)) < GRAD_RTOL, field
    with pytest.raises(ValueError, match="slices: expected a complex array"):
        ops.multislice_forward(cupy.ones((2, 36, 36), cupy.int32), probe, positions, DZ, ENERGY, SAMPLING)
