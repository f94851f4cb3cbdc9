"""The CUDA path of mspt.ops, tested without a GPU: fake CUDA arrays and a fake native module.

``FakeCudaArray`` claims CUDA memory (DLPack device type 2) on a chosen device but holds a NumPy array, and
refuses every way onto the host path (``__dlpack__``, ``__array__``), so a CUDA array that went to the
host would fail loudly. ``FakeFramework`` is its array library (as torch or CuPy would be), counting the
conversions and host reads it is asked for. ``FakeCudaCore`` stands in for mspt._core_cuda: its device
entry points record what they were given (pointers, shapes, dtypes, device, stream, whether to wait) and
compute with the CPU core on the memory behind the pointers (host memory here). So these tests check the
routing, the argument checking and the plumbing of the CUDA path (zero copy, outputs allocated by the
caller's library on the caller's device, the caller's stream, the results equal to the NumPy call bit for
bit); the native CUDA code itself is checked by test_interop_cuda.py on a GPU.
"""

from __future__ import annotations

import collections
import ctypes

import numpy as np
import pytest

import mspt
from mspt import _backend, ops
from mspt._native import core
from mspt.ops import _arrays, _device_arrays

STREAM = 0x5EED0  # the fake "current stream" of device d is STREAM + d
ENERGY, SAMPLING, DZ = 200e3, (0.2, 0.2), 2.0
RNG = np.random.default_rng(11)
PROBE = mspt.make_probe(ENERGY, 22, (16, 16), SAMPLING, defocus_A=20).array  # (1, 16, 16) complex64
SLICES = np.exp(1j * 0.3 * RNG.standard_normal((2, 36, 36))).astype(np.complex64)
POSITIONS = np.array([[17.3, 18.6], [18.2, 16.9], [16.0, 17.5]])
VOLUME = RNG.random((8, 10, 12), dtype=np.float32)
ROTATION = ops.tilt_series_rotations([-30.0, 10.0])


class FakeCudaArray:
    """A NumPy array that claims to live on CUDA device ``index``."""

    def __init__(self, host: np.ndarray, index: int = 0):
        self.host, self.index = host, index

    def __dlpack_device__(self):
        return (2, self.index)

    def __dlpack__(self, **kwargs):
        raise AssertionError("a CUDA array was exported to the host")

    def __array__(self, *args, **kwargs):
        raise AssertionError("a CUDA array was read as a host array")

    @property
    def shape(self):
        return self.host.shape

    def __getitem__(self, key):
        return FakeCudaArray(self.host[key], self.index)

    def __setitem__(self, key, value):
        self.host[key] = value.host if isinstance(value, FakeCudaArray) else value

    def __imul__(self, factor):
        self.host = self.host * factor
        return self

    def __ge__(self, other):
        return FakeCudaArray(self.host >= other, self.index)

    def all(self):
        return bool(self.host.all())


FRAMEWORK = FakeCudaArray.__module__.split(".")[0]  # the framework name mspt gives FakeCudaArray's


class FakeFramework(_device_arrays.Framework):
    """FakeCudaArray's library; ``log`` counts what it was asked to do."""

    log: collections.Counter = collections.Counter()

    def describe(self, name, x):
        h = x.host
        return _device_arrays.Description(h.ctypes.data, h.shape, h.dtype.kind, h.dtype.name, h.flags.c_contiguous)

    def convert(self, x, dtype):
        self.log["convert"] += 1
        return FakeCudaArray(np.ascontiguousarray(x.host, dtype=dtype), self.index)

    def upload(self, host):
        self.log["upload"] += 1
        return FakeCudaArray(np.array(host), self.index)

    def empty(self, shape, dtype):
        self.log["empty"] += 1
        return FakeCudaArray(np.full(shape, np.nan, dtype) if dtype.kind in "fc" else np.empty(shape, dtype), self.index)

    def zeros(self, shape, dtype):
        return FakeCudaArray(np.zeros(shape, dtype), self.index)

    def broadcast(self, x, shape):
        return FakeCudaArray(np.ascontiguousarray(np.broadcast_to(x.host, shape)), self.index)

    def stream(self):
        return STREAM + self.index

    def to_host(self, x):
        self.log["to_host"] += 1
        return x.host.copy()

    def isfinite(self, x):
        return FakeCudaArray(np.isfinite(x.host), self.index)


def host_view(descriptor) -> np.ndarray:
    """The memory a descriptor (pointer, shape, dtype name) points at, as a NumPy array (fake device memory
    is host memory)."""
    pointer, shape, dtype = descriptor
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.empty(shape, dtype)
    raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(pointer)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


class FakeEngine:
    def __init__(self, native_calls, ny, nx, n_slices, modes, threads=0, device=-1):
        self.calls, self.device = native_calls, device
        self.cpu = core.MultisliceCpu32(ny, nx, n_slices, modes, threads)

    def run_device(self, slices, probe, positions, *scalars, device, stream, synchronize, loss=None, **optional):
        self.calls.append(dict(op="multislice", slices=slices, probe=probe, positions_px=positions, device=device,
                               stream=stream, synchronize=synchronize, loss=loss, **optional))  # fmt: skip
        arrays = {k: host_view(v) if isinstance(v, tuple) else v for k, v in optional.items()}
        total = self.cpu.run(host_view(slices), host_view(probe), host_view(positions), *scalars, **arrays)
        if loss is not None:
            host_view(loss)[0] = total


class FakeCudaCore:
    """mspt._core_cuda's device entry points, computing with the CPU core."""

    def __init__(self):
        self.calls = []

    def current_device(self):
        return 0

    def MultisliceCuda32(self, *args, **kwargs):  # noqa: N802 (the native class's name)
        return FakeEngine(self.calls, *args, **kwargs)

    def _record(self, op, names, descriptors, placement):
        self.calls.append(dict(op=op, **dict(zip(names, descriptors)), **placement))

    def project_device(self, volume, rotation, shifts, voxel, py, px, pixel, step, out, **placement):
        self._record("project", ("volume", "rotation", "shifts_A", "out"), (volume, rotation, shifts, out), placement)
        host_view(out)[...] = core.project(host_view(volume), host_view(rotation), host_view(shifts), voxel, py, px,
                                           pixel, step, 0)  # fmt: skip

    def backproject_device(self, projections, rotation, shifts, voxel, nz, ny, nx, pixel, step, out, **placement):
        names = ("projections", "rotation", "shifts_A", "out")
        self._record("backproject", names, (projections, rotation, shifts, out), placement)
        host_view(out)[...] = core.backproject(host_view(projections), host_view(rotation), host_view(shifts), voxel,
                                               nz, ny, nx, pixel, step, 0)  # fmt: skip

    def project_pose_vjp_device(self, grad, volume, rotation, shifts, voxel, pixel, step, d_rot, d_shift, **placement):
        names = ("grad_projections", "volume", "rotation", "shifts_A", "d_rotation", "d_shifts")
        self._record("pose_vjp", names, (grad, volume, rotation, shifts, d_rot, d_shift), placement)
        rot, shift = core.project_pose_vjp(host_view(grad), host_view(volume), host_view(rotation),
                                           host_view(shifts), voxel, pixel, step, 0)  # fmt: skip
        host_view(d_rot)[...], host_view(d_shift)[...] = rot, shift


@pytest.fixture
def fake_gpu(monkeypatch):
    """The fake framework registered, the fake CUDA module in place of the real one, and an engine cache of
    its own (so no fake engine outlives the test)."""
    native = FakeCudaCore()
    monkeypatch.setitem(_device_arrays.FRAMEWORKS, FRAMEWORK, FakeFramework)
    monkeypatch.setattr(_backend, "cuda_module", lambda: native)
    monkeypatch.setattr(_backend, "_engines", collections.OrderedDict())
    FakeFramework.log = collections.Counter()
    return native


def on_gpu(*arrays, index: int = 0):
    return [FakeCudaArray(np.array(a), index) for a in arrays]


def pointer(x: FakeCudaArray) -> int:
    return x.host.ctypes.data


# ---- results and plumbing --------------------------------------------------------------------------------


def test_multislice_forward_uses_the_arrays_in_place_and_allocates_on_their_device(fake_gpu):
    slices, probe, positions = on_gpu(SLICES, PROBE, POSITIONS, index=1)
    result, waves = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING, return_exit_waves=True)
    expected, expected_waves = ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING,
                                                      return_exit_waves=True)  # fmt: skip
    assert isinstance(result, FakeCudaArray) and result.index == 1 and isinstance(waves, FakeCudaArray)
    np.testing.assert_array_equal(result.host, expected)
    np.testing.assert_array_equal(waves.host, expected_waves)
    (call,) = fake_gpu.calls
    assert call["slices"] == (pointer(slices), (2, 36, 36), "complex64")  # the caller's memory, no copy
    assert call["probe"][0] == pointer(probe) and call["positions_px"][0] == pointer(positions)
    assert call["intensities"] == (pointer(result), (3, 16, 16), "float32")  # a fresh buffer, returned
    assert call["exit_waves"] == (pointer(waves), (3, 1, 16, 16), "complex64")
    assert len({pointer(x) for x in (slices, probe, positions, result, waves)}) == 5
    assert (call["device"], call["stream"], call["synchronize"]) == (1, STREAM + 1, False)
    assert FakeFramework.log == {"empty": 2}  # no conversion, no upload, no host read


def test_out_is_written_in_place_and_returned(fake_gpu):
    slices, probe, positions = on_gpu(SLICES, PROBE, POSITIONS)
    (out,) = on_gpu(np.zeros((3, 16, 16), np.float32))
    assert ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING, out=out) is out
    assert fake_gpu.calls[0]["intensities"][0] == pointer(out)
    np.testing.assert_array_equal(out.host, ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING))


def test_multislice_gradients_equal_the_cpu_path(fake_gpu):
    slices, probe, positions = on_gpu(SLICES, PROBE, POSITIONS)
    tilt = (1.5, -2.0)  # the tilt gradient is converted from d/dtan(t) to d/dmrad on the device
    cotangent = RNG.standard_normal((3, 16, 16)).astype(np.float32)
    grads = ops.multislice_vjp(*on_gpu(cotangent), slices, probe, positions, DZ, ENERGY, SAMPLING, tilt_mrad=tilt)
    expected = ops.multislice_vjp(cotangent, SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING, tilt_mrad=tilt)
    for field in ("slices", "probe", "positions_px", "tilt_mrad"):
        got = getattr(grads, field)
        assert isinstance(got, FakeCudaArray), field
        np.testing.assert_array_equal(got.host, getattr(expected, field), err_msg=field)
    assert fake_gpu.calls[0]["source"] == 1 and fake_gpu.calls[0]["synchronize"] is False

    counts = np.random.default_rng(2).poisson(ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING))
    data = counts.astype(np.float32)
    for likelihood in ("poisson", "amplitude"):
        got = ops.multislice_loss_grad(*on_gpu(data), slices, probe, positions, DZ, ENERGY, SAMPLING,
                                       likelihood=likelihood, wrt=("probe", "positions"))  # fmt: skip
        cpu = ops.multislice_loss_grad(data, SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING, likelihood=likelihood,
                                       wrt=("probe", "positions"))  # fmt: skip
        assert isinstance(got.loss, float) and got.loss == cpu.loss
        np.testing.assert_array_equal(got.loss_per_position.host, cpu.loss_per_position)
        np.testing.assert_array_equal(got.probe.host, cpu.probe)
        assert got.slices is None and got.tilt_mrad is None
    # The loss is a Python float: the likelihood gradient waits for its work, and reads the loss back.
    assert fake_gpu.calls[-1]["synchronize"] is True and fake_gpu.calls[-1]["loss"][1:] == ((1,), "float64")


def test_projector_on_device_equals_the_cpu_path(fake_gpu):
    volume, rotation = on_gpu(VOLUME, ROTATION)
    projections = ops.project(volume, rotation, None, 0.5)
    expected = ops.project(VOLUME, ROTATION, None, 0.5)
    np.testing.assert_array_equal(projections.host, expected)
    call = fake_gpu.calls[-1]
    assert call["volume"][0] == pointer(volume) and call["rotation"][0] == pointer(rotation)
    np.testing.assert_array_equal(host_view(call["shifts_A"]), np.zeros((2, 2)))  # no shifts: zeros on the device

    shift = (0.4, -0.7)  # one (dy, dx) for every pose: repeated on the device
    back = ops.backproject(projections, rotation, *on_gpu(np.array(shift)), 0.5, VOLUME.shape)
    np.testing.assert_array_equal(back.host, ops.backproject(expected, ROTATION, np.array(shift), 0.5, VOLUME.shape))
    np.testing.assert_array_equal(host_view(fake_gpu.calls[-1]["shifts_A"]), np.array([shift, shift]))

    cotangent = RNG.standard_normal(expected.shape).astype(np.float32)
    grads = ops.project_vjp(*on_gpu(cotangent), volume, rotation, None, 0.5)
    cpu = ops.project_vjp(cotangent, VOLUME, ROTATION, None, 0.5)
    for field in ("volume", "rotation_vector", "shifts_A"):
        np.testing.assert_array_equal(getattr(grads, field).host, getattr(cpu, field), err_msg=field)
    only = ops.project_vjp(*on_gpu(cotangent), volume, rotation, None, 0.5, wrt=("shifts",))
    assert only.volume is None and only.rotation_vector is None
    np.testing.assert_array_equal(only.shifts_A.host, cpu.shifts_A)
    assert all(c["stream"] == STREAM and c["synchronize"] is False for c in fake_gpu.calls)
    assert FakeFramework.log["to_host"] == 0 and FakeFramework.log["convert"] == 0


def test_other_dtypes_and_layouts_are_converted_once_by_the_callers_library(fake_gpu):
    wide = np.ascontiguousarray(np.stack([SLICES, SLICES], axis=-1))
    strided = FakeCudaArray(wide)[..., 0]  # every other element: a view, not contiguous
    positions32 = FakeCudaArray(POSITIONS.astype(np.float32))  # the engine takes float64 positions
    probe2d = FakeCudaArray(PROBE[0].copy())  # one mode without its axis
    result = ops.multislice_forward(strided, probe2d, positions32, DZ, ENERGY, SAMPLING)
    assert FakeFramework.log["convert"] == 2
    expected = ops.multislice_forward(SLICES, PROBE[0], POSITIONS.astype(np.float32), DZ, ENERGY, SAMPLING)
    np.testing.assert_array_equal(result.host, expected)
    call = fake_gpu.calls[0]
    assert call["probe"] == (pointer(probe2d), (1, 16, 16), "complex64")  # in place, seen with a mode axis
    assert call["slices"][0] != pointer(strided) and call["positions_px"][2] == "float64"

    FakeFramework.log.clear()
    volume64 = FakeCudaArray(VOLUME.astype(np.float64))
    ops.project(volume64, list(ROTATION), None, 0.5)  # a list of poses is copied to the device once
    assert FakeFramework.log["convert"] == 1 and FakeFramework.log["upload"] == 1


def test_mspt_probe_supplies_energy_and_sampling_and_is_copied_to_the_device(fake_gpu):
    probe = mspt.make_probe(ENERGY, 22, (16, 16), SAMPLING, defocus_A=20)
    slices, positions = on_gpu(SLICES, POSITIONS)
    got = ops.multislice_forward(slices, probe, positions, DZ)
    np.testing.assert_array_equal(got.host, ops.multislice_forward(SLICES, probe, POSITIONS, DZ))
    assert FakeFramework.log["upload"] == 1


def test_synchronous_calls_wait_and_check_values_on_the_host(fake_gpu):
    slices, probe, positions = on_gpu(SLICES, PROBE, POSITIONS)
    with ops.synchronous():
        ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING)
    assert fake_gpu.calls[-1]["synchronize"] is True
    ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING)
    assert fake_gpu.calls[-1]["synchronize"] is False  # the context ended

    bad_positions = FakeCudaArray(np.array([[17.0, np.nan]]))
    skewed = FakeCudaArray(ROTATION * np.array([1.0, 1.0, 1.1]))  # not orthonormal
    (volume,) = on_gpu(VOLUME)
    with ops.synchronous():
        with pytest.raises(ValueError, match="positions_px: expected finite positions"):
            ops.multislice_forward(slices, probe, bad_positions, DZ, ENERGY, SAMPLING)
        with pytest.raises(ValueError, match=r"rotation\[0\]: expected an orthonormal matrix"):
            ops.project(volume, skewed, None, 0.5)
        with pytest.raises(ValueError, match="grad_intensities: expected finite values"):
            ops.multislice_vjp(FakeCudaArray(np.full((3, 16, 16), np.inf, np.float32)), slices, probe, positions, DZ,
                               ENERGY, SAMPLING)  # fmt: skip
    # Without the context nothing is read back: the values go to the device unchecked.
    FakeFramework.log.clear()
    ops.project(volume, skewed, None, 0.5)
    assert FakeFramework.log["to_host"] == 0
    with pytest.raises(ValueError, match="data: expected finite, non-negative counts"):
        ops.multislice_loss_grad(FakeCudaArray(-np.ones((3, 16, 16), np.float32)), slices, probe, positions, DZ,
                                 ENERGY, SAMPLING)  # fmt: skip


# ---- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(probe=FakeCudaArray(PROBE, 1)), f"probe: a {FRAMEWORK} array on cuda:1, but slices is a {FRAMEWORK} array on cuda:0"),
        (dict(positions_px=POSITIONS), f"positions_px: a numpy array on cpu, but slices is a {FRAMEWORK} array on cuda:0"),
        (dict(slices=FakeCudaArray(np.ones((2, 36, 36), np.int32))), "slices: expected a complex array, got dtype int32"),
        (dict(slices=FakeCudaArray(SLICES.astype(np.complex128))), "slices: complex128, but the CUDA backend runs in single precision"),
        (dict(positions_px=FakeCudaArray(POSITIONS.astype(np.complex64))), "positions_px: expected a real array"),
        (dict(out=FakeCudaArray(np.zeros((3, 16, 16), np.float64))), "out: expected a C-contiguous float32"),
        (dict(out=FakeCudaArray(np.zeros((16, 16, 3), np.float32).transpose(2, 0, 1))), "out: expected a C-contiguous"),
        (dict(out=FakeCudaArray(np.zeros((2, 16, 16), np.float32))), r"out: .* of shape \(3, 16, 16\)"),
        (dict(out=np.zeros((3, 16, 16), np.float32)), f"out: a numpy array on cpu, but slices is a {FRAMEWORK} array"),
        (dict(device="cpu"), f"device: 'cpu', but slices is a {FRAMEWORK} array on cuda:0"),
        (dict(record_tape=True), "record_tape: the CUDA backend keeps no tape"),
        (dict(slices=FakeCudaArray(SLICES[0, 0].copy())), r"slices: expected shape \(S, H, W\)"),
    ],
)
def test_bad_cuda_arguments_name_the_argument(fake_gpu, change, message):
    args = dict(zip(("slices", "probe", "positions_px"), on_gpu(SLICES, PROBE, POSITIONS))) | change
    with pytest.raises(ValueError, match=message):
        ops.multislice_forward(args.pop("slices"), args.pop("probe"), args.pop("positions_px"), DZ, ENERGY, SAMPLING,
                               **args)  # fmt: skip
    assert fake_gpu.calls == []  # refused before any work was queued


def test_cuda_arrays_never_reach_the_host_path(fake_gpu):
    (waves,) = on_gpu(SLICES)
    with pytest.raises(ValueError, match=f"waves: a {FRAMEWORK} array on cuda:0, but propagate runs on the CPU only"):
        ops.propagate(waves, DZ, ENERGY, SAMPLING)
    with pytest.raises(ValueError, match="CUDA arrays stay on their device"):
        _arrays.to_numpy("x", waves)
    tape_owner = ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING, record_tape=True)[1]
    with pytest.raises(ValueError, match="tape: the CUDA backend keeps no tape"):
        ops.multislice_vjp(*on_gpu(np.zeros((3, 16, 16), np.float32), SLICES, PROBE, POSITIONS), DZ, ENERGY,
                           SAMPLING, tape=tape_owner)  # fmt: skip
    assert fake_gpu.calls == []


def test_cuda_array_interface_alone_needs_cupy_to_find_its_device():
    class InterfaceOnly:
        __cuda_array_interface__ = {"data": (1 << 20, False), "shape": (2, 36, 36), "typestr": "<c8", "version": 3}

    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="need CuPy"):
            ops.multislice_forward(InterfaceOnly(), PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    else:
        pytest.skip("CuPy is installed here: it can place the array")


# ---- the native boundary, where the CUDA module is built --------------------------------------------------


def test_native_device_entry_points_check_descriptors_before_touching_the_gpu():
    """mspt._core_cuda's device entry points check each descriptor (dtype, shape, pointer) and name the
    argument before any CUDA call; descriptors that pass reach the runtime (a RuntimeError without a GPU)."""
    try:
        import mspt._core_cuda as core_cuda
    except ImportError as err:
        pytest.skip(f"the CUDA module is not built here: {err}")
    volume, rotation, shifts = (0x10000, (8, 8, 8), "float32"), (0x20000, (2, 3, 3), "float64"), (0x30000, (2, 2), "float64")
    out = (0x40000, (2, 8, 8), "float32")
    bad = [
        (dict(volume=(0x10000, (8, 8, 8), "float64")), "volume: expected dtype float32, got float64"),
        (dict(rotation=(0x20000, (3, 3), "float64")), r"rotation: expected shape \(\*, 3, 3\), got \(3, 3\)"),
        (dict(shifts_A=(0x30000, (1, 2), "float64")), r"shifts_A: expected shape \(2, 2\), got \(1, 2\)"),
        (dict(out=(0x40000, (2, 8, 9), "float32")), r"out: expected shape \(2, 8, 8\), got \(2, 8, 9\)"),
        (dict(volume=(0x10002, (8, 8, 8), "float32")), "volume: device pointer not aligned"),
        (dict(volume=(0, (8, 8, 8), "float32")), "volume: a null device pointer"),
        (dict(volume=np.zeros((8, 8, 8), np.float32)), r"volume: expected a device array \(pointer, shape, dtype name\)"),
    ]
    for change, message in bad:
        args = dict(volume=volume, rotation=rotation, shifts_A=shifts, out=out) | change
        with pytest.raises(ValueError, match=message):
            core_cuda.project_device(args["volume"], args["rotation"], args["shifts_A"], 1.0, 8, 8, 1.0, 1.0,
                                     args["out"], device=0)  # fmt: skip
    if core_cuda.device_count() == 0:
        with pytest.raises(RuntimeError, match="CUDA"):
            core_cuda.project_device(volume, rotation, shifts, 1.0, 8, 8, 1.0, 1.0, out, device=0)


# ---- the adapters' own logic ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["multislice_forward", "multislice_vjp", "multislice_loss_grad", "project",
                                  "backproject", "project_vjp"])  # fmt: skip
def test_each_cuda_path_takes_its_operators_parameters(name):
    import inspect

    from mspt.ops import _on_device

    operator = inspect.signature(getattr(ops, name)).parameters
    device_path = inspect.signature(getattr(_on_device, name)).parameters
    assert list(device_path) == [*operator, "call"]
    for parameter, spec in operator.items():
        if parameter != "device":  # the router always passes device="cuda"
            assert device_path[parameter].default == spec.default, parameter
        assert device_path[parameter].kind == spec.kind, parameter


def test_torch_adapter_describes_tensors_as_the_native_code_needs_them():
    """The PyTorch adapter's description and conversion, on CPU tensors (they need no GPU): a lazily
    conjugated view is not usable in place and its conversion holds the conjugated values."""
    torch = pytest.importorskip("torch")
    adapter = _device_arrays.TorchCuda(0)
    plain = torch.from_numpy(SLICES.copy())
    d = adapter.describe("slices", plain)
    assert (d.pointer, d.shape, d.kind, d.dtype, d.contiguous) == (plain.data_ptr(), (2, 36, 36), "c", "complex64", True)
    conjugated = torch.from_numpy(np.conj(SLICES)).conj()
    assert not adapter.describe("slices", conjugated).contiguous
    resolved = adapter.convert(conjugated, np.dtype(np.complex64))
    assert not resolved.is_conj() and resolved.is_contiguous()
    np.testing.assert_array_equal(resolved.numpy(), SLICES)
    assert not adapter.describe("p", torch.from_numpy(POSITIONS).T).contiguous
    assert [adapter.describe("x", torch.zeros(2, dtype=t)).kind for t in (torch.float16, torch.int64, torch.bool)] == ["f", "i", "b"]
    with pytest.raises(ValueError, match="probe: a torch tensor that requires grad"):
        adapter.describe("probe", torch.zeros(2, requires_grad=True))
