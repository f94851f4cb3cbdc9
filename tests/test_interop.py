"""Array interop of mspt.ops: PyTorch tensors, JAX arrays (and any DLPack producer) in, the same kind out; CPU arrays of
the right dtype reach the native core in place (checked by data pointers); results equal the NumPy call
bit for bit; bad devices, dtypes and layouts are ValueErrors naming the argument. GPU tests (torch CUDA
tensors, CuPy) skip without a usable GPU."""

from __future__ import annotations

import numpy as np
import pytest

import mspt
from mspt import _backend, ops
from mspt.ops import projector as projector_module

torch = pytest.importorskip("torch")

ENERGY, SAMPLING, DZ = 200e3, (0.2, 0.2), 2.0
RNG = np.random.default_rng(3)
PROBE = mspt.make_probe(ENERGY, 22, (16, 16), SAMPLING, defocus_A=20).array  # (1, 16, 16) complex64
SLICES = np.exp(1j * 0.3 * RNG.standard_normal((2, 36, 36))).astype(np.complex64)
POSITIONS = np.array([[17.3, 18.6], [18.2, 16.9], [16.0, 17.5]])


def pointer(arr: np.ndarray) -> int:
    return arr.__array_interface__["data"][0]


class EngineSpy:
    """Wraps the cached multislice engines and records the buffers the native ``run`` receives."""

    def __init__(self, monkeypatch):
        self.seen = {}
        original = _backend.multislice_engine

        def engine(*args, **kwargs):
            native, lock = original(*args, **kwargs)
            spy = self

            class Recording:
                def run(self, slices, probe, positions, *rest, **outputs):
                    spy.seen.update(slices=pointer(slices), probe=pointer(probe), positions=pointer(positions))
                    spy.seen.update({k: pointer(v) for k, v in outputs.items() if isinstance(v, np.ndarray)})
                    return native.run(slices, probe, positions, *rest, **outputs)

            return Recording(), lock

        monkeypatch.setattr(_backend, "multislice_engine", engine)


def test_numpy_inputs_reach_the_native_call_in_place(monkeypatch):
    spy = EngineSpy(monkeypatch)
    out = np.empty((3, 16, 16), np.float32)
    result = ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING, out=out)
    assert result is out
    assert spy.seen == dict(
        slices=pointer(SLICES), probe=pointer(PROBE), positions=pointer(POSITIONS), intensities=pointer(out)
    )


def test_torch_cpu_tensors_reach_the_native_call_in_place(monkeypatch):
    spy = EngineSpy(monkeypatch)
    slices, probe, positions = (torch.from_numpy(a.copy()) for a in (SLICES, PROBE, POSITIONS))
    out = torch.empty((3, 16, 16), dtype=torch.float32)
    result = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING, out=out)
    assert result is out  # the caller's own tensor, written in place
    assert spy.seen == dict(
        slices=slices.data_ptr(), probe=probe.data_ptr(), positions=positions.data_ptr(), intensities=out.data_ptr()
    )
    np.testing.assert_array_equal(out.numpy(), ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING))


def test_torch_volume_reaches_the_projector_in_place(monkeypatch):
    seen = {}
    core = projector_module._module("cpu")

    class Recording:
        def project(self, volume, rotation, shifts, *rest):
            seen.update(volume=pointer(volume), rotation=pointer(rotation))
            return core.project(volume, rotation, shifts, *rest)

    monkeypatch.setattr(projector_module, "_module", lambda device: Recording())
    volume = torch.rand((8, 10, 12), dtype=torch.float32)
    rotation = torch.from_numpy(ops.tilt_series_rotations([-30.0, 10.0]))
    result = ops.project(volume, rotation, None, 0.5)
    assert seen == dict(volume=volume.data_ptr(), rotation=rotation.data_ptr())
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float32
    np.testing.assert_array_equal(
        result.numpy(), core.project(volume.numpy(), rotation.numpy(), np.zeros((2, 2)), 0.5, 10, 12, 0.5, 0.5, 0)
    )


def test_torch_results_come_back_as_tensors_equal_to_numpy():
    t = {name: torch.from_numpy(a.copy()) for name, a in dict(s=SLICES, p=PROBE, q=POSITIONS).items()}
    forward = ops.multislice_forward(t["s"], t["p"], t["q"], DZ, ENERGY, SAMPLING)
    reference = ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    assert isinstance(forward, torch.Tensor) and forward.dtype == torch.float32 and forward.device.type == "cpu"
    np.testing.assert_array_equal(forward.numpy(), reference)

    cotangent = RNG.standard_normal(reference.shape).astype(np.float32)
    grads = ops.multislice_vjp(torch.from_numpy(cotangent), t["s"], t["p"], t["q"], DZ, ENERGY, SAMPLING)
    expected = ops.multislice_vjp(cotangent, SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    for field in ("slices", "probe", "positions_px", "tilt_mrad"):
        got = getattr(grads, field)
        assert isinstance(got, torch.Tensor), field
        np.testing.assert_array_equal(got.numpy(), getattr(expected, field))

    loss, dldi = ops.likelihood(forward, torch.from_numpy(reference * 0.9))
    assert isinstance(loss, float) and isinstance(dldi, torch.Tensor)
    assert loss == ops.likelihood(reference, reference * 0.9)[0]

    waves = torch.from_numpy(SLICES)
    np.testing.assert_array_equal(
        ops.propagate(waves, DZ, ENERGY, SAMPLING).numpy(), ops.propagate(SLICES, DZ, ENERGY, SAMPLING)
    )


def test_strided_and_conjugated_tensors_are_converted_once():
    wide = torch.from_numpy(np.ascontiguousarray(np.stack([SLICES, SLICES], axis=-1)))
    strided = wide[..., 0]  # every other element: not contiguous
    assert not strided.is_contiguous()
    lazily_conjugated = torch.from_numpy(np.conj(SLICES)).conj()  # torch's conjugate bit set
    reference = ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    for slices in (strided, lazily_conjugated):
        got = ops.multislice_forward(slices, torch.from_numpy(PROBE), POSITIONS, DZ, ENERGY, SAMPLING)
        np.testing.assert_array_equal(got.numpy(), reference)


class Producer:
    """A minimal DLPack producer of no known framework: it gets NumPy arrays back."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def test_any_dlpack_producer_is_read_in_place(monkeypatch):
    spy = EngineSpy(monkeypatch)
    result = ops.multislice_forward(Producer(SLICES), PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    assert spy.seen["slices"] == pointer(SLICES)
    assert type(result) is np.ndarray
    np.testing.assert_array_equal(result, ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING))


@pytest.mark.parametrize(
    "over, message",
    [
        (dict(slices=torch.from_numpy(SLICES).requires_grad_()), "slices: a torch tensor that requires grad"),
        (dict(slices=torch.ones((2, 36, 36), dtype=torch.int32)), "slices: expected a complex array, got dtype int32"),
        (dict(positions_px=torch.from_numpy(POSITIONS.astype(np.complex128))), "positions_px: expected a real array"),
        (
            dict(probe=torch.empty((1, 16, 16), dtype=torch.complex64, device="meta")),
            "probe: a torch array on a device",
        ),
        (dict(probe=Producer(PROBE)), r"probe: a test_interop array on cpu, but slices is a torch array on cpu"),
        (dict(out=torch.empty((16, 16, 3), dtype=torch.float32).permute(2, 0, 1)), "out: expected a C-contiguous"),
        (dict(positions_px=np.array([[1 + 1j, 2.0]])), "positions_px: expected a real array"),
    ],
)
def test_bad_arrays_name_the_argument(over, message):
    args = dict(slices=torch.from_numpy(SLICES), probe=torch.from_numpy(PROBE), positions_px=POSITIONS) | over
    with pytest.raises(ValueError, match=message):
        ops.multislice_forward(
            args.pop("slices"), args.pop("probe"), args.pop("positions_px"), DZ, ENERGY, SAMPLING, **args
        )


class CudaProducer(Producer):
    """Claims CUDA memory: enough to reach the routing checks, which run before any data is read."""

    def __dlpack_device__(self):
        return (2, 0)


def test_cuda_arrays_are_routed_or_named_errors_before_any_data_moves():
    with pytest.raises(ValueError, match="waves: a test_interop array on cuda:0, but propagate runs on the CPU only"):
        ops.propagate(CudaProducer(SLICES), DZ, ENERGY, SAMPLING)
    with pytest.raises(ValueError, match="device: 'cpu', but slices is a test_interop array on cuda:0"):
        ops.multislice_forward(CudaProducer(SLICES), PROBE, POSITIONS, DZ, ENERGY, SAMPLING, device="cpu")
    with pytest.raises(ValueError, match="slices: a numpy array on cpu, but probe is a test_interop array on cuda:0"):
        ops.multislice_forward(SLICES, CudaProducer(PROBE), POSITIONS, DZ, ENERGY, SAMPLING)


def test_projector_rejects_a_complex_volume_by_name():
    with pytest.raises(ValueError, match="volume: expected a real array, got dtype complex64"):
        ops.project(torch.ones((4, 4, 4), dtype=torch.complex64), ops.tilt_series_rotations([0.0]))


# ---------------------------------------------------------------------------------------------------------------
# GPU: CUDA arrays run on the CUDA backend and come back on their device.


def _require_gpu():
    if not (_backend.cuda_available() and torch.cuda.is_available()):
        pytest.skip("no usable CUDA backend and torch CUDA device")


@pytest.mark.gpu
def test_torch_cuda_tensors_come_back_on_the_device_equal_to_the_cpu():
    _require_gpu()
    cuda = [torch.from_numpy(a).cuda() for a in (SLICES, PROBE, POSITIONS)]
    got = ops.multislice_forward(*cuda, DZ, ENERGY, SAMPLING)
    assert isinstance(got, torch.Tensor) and got.device == cuda[0].device
    reference = ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    assert np.linalg.norm(got.cpu().numpy() - reference) / np.linalg.norm(reference) < 1e-4
    volume = torch.rand((8, 10, 12), device="cuda")
    rotation = torch.from_numpy(ops.tilt_series_rotations([-30.0, 10.0])).cuda()
    projections = ops.project(volume, rotation, None, 0.5)
    assert isinstance(projections, torch.Tensor) and projections.device == volume.device
    expected = ops.project(volume.cpu().numpy(), rotation.cpu().numpy(), None, 0.5)
    assert np.linalg.norm(projections.cpu().numpy() - expected) / np.linalg.norm(expected) < 1e-4
    with pytest.raises(ValueError, match="device: 'cpu', but slices is a torch array on cuda"):
        ops.multislice_forward(*cuda, DZ, ENERGY, SAMPLING, device="cpu")
    with pytest.raises(ValueError, match="probe: a torch array on cpu, but slices is a torch array on cuda"):
        ops.multislice_forward(cuda[0], torch.from_numpy(PROBE), POSITIONS, DZ, ENERGY, SAMPLING)


@pytest.mark.gpu
def test_cupy_arrays_come_back_as_cupy_equal_to_the_cpu():
    _require_gpu()
    cupy = pytest.importorskip("cupy")
    got = ops.multislice_forward(
        cupy.asarray(SLICES), cupy.asarray(PROBE), cupy.asarray(POSITIONS), DZ, ENERGY, SAMPLING
    )
    assert isinstance(got, cupy.ndarray)
    reference = ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING)
    assert np.linalg.norm(cupy.asnumpy(got) - reference) / np.linalg.norm(reference) < 1e-4


def _jax_x64():
    """JAX with 64-bit arrays (positions are float64), whichever spelling this JAX version has."""
    jax = pytest.importorskip("jax")
    if hasattr(jax, "enable_x64"):
        return jax, jax.enable_x64(True)
    from jax.experimental import enable_x64

    return jax, enable_x64()


def test_jax_cpu_arrays_reach_the_native_call_in_place_and_come_back_as_jax(monkeypatch):
    jax, x64 = _jax_x64()
    spy = EngineSpy(monkeypatch)
    with x64:
        slices, probe, positions = (jax.numpy.asarray(a) for a in (SLICES, PROBE, POSITIONS))
        result = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING)
    assert spy.seen["slices"] == slices.unsafe_buffer_pointer()
    assert spy.seen["probe"] == probe.unsafe_buffer_pointer()
    assert spy.seen["positions"] == positions.unsafe_buffer_pointer()
    assert isinstance(result, jax.Array) and result.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(result), ops.multislice_forward(SLICES, PROBE, POSITIONS, DZ, ENERGY, SAMPLING))


def test_jax_volume_projects_and_back_projects_equal_to_numpy():
    jax, x64 = _jax_x64()
    volume = np.random.default_rng(4).random((8, 10, 12), dtype=np.float32)
    rotation = ops.tilt_series_rotations([-30.0, 10.0])
    with x64:
        projections = ops.project(jax.numpy.asarray(volume), jax.numpy.asarray(rotation), None, 0.5)
        back = ops.backproject(projections, jax.numpy.asarray(rotation), None, 0.5, volume.shape)
    assert isinstance(projections, jax.Array) and isinstance(back, jax.Array)
    np.testing.assert_array_equal(np.asarray(projections), ops.project(volume, rotation, None, 0.5))
    np.testing.assert_array_equal(np.asarray(back), ops.backproject(ops.project(volume, rotation, None, 0.5), rotation,
                                                                   None, 0.5, volume.shape))  # fmt: skip
