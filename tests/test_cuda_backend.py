"""The CUDA backend against the CPU backend, through the public operators.

Both backends run the same kernel bodies in float32; they differ in FFT library (cuFFT vs FFTW) and in
the order of sums (atomics and tree reductions on the GPU), so they agree to float32 rounding, not
bitwise. The `gpu` tests skip without a usable GPU; the last tests run everywhere and check what a user
without one sees.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mspt import _backend
from mspt.ops import multislice_forward, multislice_loss_grad, multislice_vjp

ENERGY_EV = 200e3
DZ_A = 7.0
FORWARD_RTOL = 1e-4
GRAD_RTOL = 1e-3


def _require_cuda():
    try:
        _backend.cuda_module()
    except RuntimeError as err:
        pytest.skip(f"no usable CUDA backend: {err}")


@dataclasses.dataclass(frozen=True)
class Case:
    ny: int
    nx: int
    slices: int
    modes: int
    batch: int
    sampling_A: tuple[float, float] = (0.2, 0.2)
    tilt_mrad: tuple[float, float] = (3.0, -2.0)

    @property
    def object_shape(self):
        return self.ny + 28, self.nx + 34

    def __str__(self):
        return f"{self.ny}x{self.nx}-S{self.slices}-M{self.modes}-B{self.batch}"


CASES = [
    Case(32, 32, 1, 1, 9),
    Case(24, 40, 3, 3, 13, sampling_A=(0.21, 0.17)),  # non-square window and pixels, mixed state
    Case(40, 28, 4, 2, 300, tilt_mrad=(-4.0, 1.5)),  # more positions than one GPU chunk
]


def _problem(case: Case, seed: int = 0):
    """Random slices (weak phase and amplitude), smooth random probe modes, sub-pixel positions."""
    rng = np.random.default_rng(seed)
    S, M, ny, nx = case.slices, case.modes, case.ny, case.nx
    H, W = case.object_shape
    phase = rng.normal(scale=0.4, size=(S, H, W))
    amplitude = 1.0 - 0.2 * rng.random((S, H, W))
    slices = (amplitude * np.exp(1j * phase)).astype(np.complex64)
    yy, xx = np.mgrid[:ny, :nx]
    envelope = np.exp(-((yy - ny // 2) ** 2 / (2 * (ny / 6) ** 2) + (xx - nx // 2) ** 2 / (2 * (nx / 6) ** 2)))
    probe = envelope * (rng.normal(size=(M, ny, nx)) + 1j * rng.normal(size=(M, ny, nx)))
    probe *= np.sqrt(1e3 / np.sum(np.abs(probe) ** 2))  # about 1000 electrons per pattern
    probe = probe.astype(np.complex64)
    positions = np.stack(
        [rng.uniform(ny / 2 + 1, H - ny / 2 - 2, case.batch), rng.uniform(nx / 2 + 1, W - nx / 2 - 2, case.batch)],
        axis=1,
    )
    positions[0] = (H // 2 + 0.5, W // 2 - 0.5)  # exact halves: both backends must round them alike
    return slices, probe, positions


def _kwargs(case: Case, device: str, **extra):
    return dict(sampling_A=case.sampling_A, tilt_mrad=case.tilt_mrad, device=device, **extra)


def _rel(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    scale = np.linalg.norm(expected.ravel())
    return float(np.linalg.norm((actual - expected).ravel()) / (scale if scale > 0 else 1.0))


def _assert_grads_close(gpu, cpu, rtol=GRAD_RTOL):
    for name in ("slices", "probe", "positions_px", "tilt_mrad"):
        g, c = getattr(gpu, name), getattr(cpu, name)
        assert (g is None) == (c is None), name
        if c is not None:
            assert np.all(np.isfinite(g)), name
            assert _rel(g, c) < rtol, f"{name}: relative error {_rel(g, c):.2e}"


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_cpu(case):
    _require_cuda()
    slices, probe, positions = _problem(case)
    results = {
        device: multislice_forward(slices, probe, positions, DZ_A, ENERGY_EV, return_exit_waves=True, **_kwargs(case, device))
        for device in ("cpu", "cuda")
    }  # fmt: skip
    (i_cpu, w_cpu), (i_gpu, w_gpu) = results["cpu"], results["cuda"]
    assert i_gpu.dtype == np.float32 and i_gpu.shape == (case.batch, case.ny, case.nx)
    assert _rel(i_gpu, i_cpu) < FORWARD_RTOL
    assert _rel(w_gpu, w_cpu) < FORWARD_RTOL
    # Pure transmission inside the band: total intensity is the probe's, on either backend.
    np.testing.assert_allclose(i_gpu.sum(axis=(1, 2)), i_cpu.sum(axis=(1, 2)), rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=str)
def test_vjp_matches_cpu(case):
    _require_cuda()
    slices, probe, positions = _problem(case, seed=1)
    g = np.random.default_rng(2).normal(size=(case.batch, case.ny, case.nx)).astype(np.float32)
    cpu = multislice_vjp(g, slices, probe, positions, DZ_A, ENERGY_EV, **_kwargs(case, "cpu"))
    gpu = multislice_vjp(g, slices, probe, positions, DZ_A, ENERGY_EV, **_kwargs(case, "cuda"))
    _assert_grads_close(gpu, cpu)
    assert gpu.loss is None and gpu.loss_per_position is None


@pytest.mark.gpu
@pytest.mark.parametrize("likelihood", ["poisson", "amplitude"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_loss_grad_matches_cpu(case, likelihood):
    _require_cuda()
    slices, probe, positions = _problem(case, seed=3)
    # Counts from a slightly different object, so that the residuals are realistic.
    truth = slices * np.exp(0.05j).astype(np.complex64)
    expected = multislice_forward(truth, probe, positions, DZ_A, ENERGY_EV, **_kwargs(case, "cpu"))
    data = np.random.default_rng(4).poisson(np.maximum(expected, 0)).astype(np.float32)
    args = (data, slices, probe, positions, DZ_A, ENERGY_EV)
    cpu = multislice_loss_grad(*args, likelihood=likelihood, **_kwargs(case, "cpu"))
    gpu = multislice_loss_grad(*args, likelihood=likelihood, **_kwargs(case, "cuda"))
    assert abs(gpu.loss - cpu.loss) <= FORWARD_RTOL * abs(cpu.loss)
    assert _rel(gpu.loss_per_position, cpu.loss_per_position) < FORWARD_RTOL
    _assert_grads_close(gpu, cpu)


@pytest.mark.gpu
@pytest.mark.parametrize("wrt", [("slices",), ("probe",), ("positions",), ("tilt",), ("probe", "positions")])
def test_partial_gradients_match_cpu(wrt):
    _require_cuda()
    case = CASES[1]
    slices, probe, positions = _problem(case, seed=5)
    g = np.random.default_rng(6).normal(size=(case.batch, case.ny, case.nx)).astype(np.float32)
    cpu = multislice_vjp(g, slices, probe, positions, DZ_A, ENERGY_EV, wrt=wrt, **_kwargs(case, "cpu"))
    gpu = multislice_vjp(g, slices, probe, positions, DZ_A, ENERGY_EV, wrt=wrt, **_kwargs(case, "cuda"))
    _assert_grads_close(gpu, cpu)


@pytest.mark.gpu
def test_far_field_without_band_limit_matches_cpu():
    _require_cuda()
    case = CASES[1]
    slices, probe, positions = _problem(case, seed=7)
    kwargs = dict(bandlimit=False)
    i_cpu = multislice_forward(slices, probe, positions, DZ_A, ENERGY_EV, **_kwargs(case, "cpu", **kwargs))
    i_gpu = multislice_forward(slices, probe, positions, DZ_A, ENERGY_EV, **_kwargs(case, "cuda", **kwargs))
    assert _rel(i_gpu, i_cpu) < FORWARD_RTOL
    data = np.random.default_rng(8).poisson(i_cpu).astype(np.float32)
    args = (data, slices, probe, positions, DZ_A, ENERGY_EV)
    cpu = multislice_loss_grad(*args, **_kwargs(case, "cpu", **kwargs))
    gpu = multislice_loss_grad(*args, **_kwargs(case, "cuda", **kwargs))
    assert abs(gpu.loss - cpu.loss) <= FORWARD_RTOL * abs(cpu.loss)
    _assert_grads_close(gpu, cpu)


@pytest.mark.gpu
def test_engine_reuses_its_buffers():
    """A long batch, a short one, the long one again: same answers, and no growth after the first call."""
    _require_cuda()
    case = CASES[2]
    slices, probe, positions = _problem(case, seed=9)
    g = np.random.default_rng(10).normal(size=(case.batch, case.ny, case.nx)).astype(np.float32)
    engine, _ = _backend.multislice_engine("cuda", "single", case.ny, case.nx, case.slices, case.modes)
    held = []
    for b in (case.batch, 5, case.batch):
        cpu = multislice_vjp(g[:b], slices, probe, positions[:b], DZ_A, ENERGY_EV, **_kwargs(case, "cpu"))
        gpu = multislice_vjp(g[:b], slices, probe, positions[:b], DZ_A, ENERGY_EV, **_kwargs(case, "cuda"))
        _assert_grads_close(gpu, cpu)
        held.append(engine.scratch_bytes)
    assert held[0] > 0 and held[1] == held[0] and held[2] == held[0]


@pytest.mark.gpu
def test_empty_batch_matches_cpu():
    _require_cuda()
    case = CASES[0]
    slices, probe, _ = _problem(case)
    positions = np.zeros((0, 2))
    g = np.zeros((0, case.ny, case.nx), np.float32)
    assert multislice_forward(slices, probe, positions, DZ_A, ENERGY_EV, **_kwargs(case, "cuda")).shape == (0, 32, 32)
    cpu = multislice_vjp(g, slices, probe, positions, DZ_A, ENERGY_EV, **_kwargs(case, "cpu"))
    gpu = multislice_vjp(g, slices, probe, positions, DZ_A, ENERGY_EV, **_kwargs(case, "cuda"))
    assert not np.any(gpu.slices) and not np.any(gpu.probe) and not np.any(gpu.tilt_mrad)
    assert not np.any(cpu.slices) and gpu.positions_px.shape == (0, 2)


@pytest.mark.gpu
def test_window_outside_object_is_a_value_error():
    _require_cuda()
    case = CASES[0]
    slices, probe, positions = _problem(case)
    positions[3] = (2.0, 40.0)  # the 32-row window would start at row -14
    with pytest.raises(ValueError, match=r"positions_px\[3\].*pad the object"):
        multislice_forward(slices, probe, positions, DZ_A, ENERGY_EV, **_kwargs(case, "cuda"))


# ---- without a GPU ----


def test_cuda_request_without_gpu_says_what_is_missing():
    if _backend.cuda_available():
        pytest.skip("a CUDA GPU is available here")
    case = CASES[0]
    slices, probe, positions = _problem(case)
    with pytest.raises(RuntimeError) as info:
        multislice_forward(slices, probe, positions, DZ_A, ENERGY_EV, **_kwargs(case, "cuda"))
    message = str(info.value)
    assert "CUDA" in message
    # Either the module was not built, or it cannot load, or it sees no driver / GPU: the message says which.
    assert any(word in message for word in ("built without", "cannot be loaded", "no usable GPU", "library")), message


def test_cuda_module_imports_without_gpu():
    """Where the CUDA module was built, importing it and asking for devices never needs a GPU."""
    try:
        import mspt._core_cuda as core_cuda
    except ImportError as err:
        pytest.skip(f"the CUDA module is not importable here: {err}")
    count = core_cuda.device_count()
    assert isinstance(count, int) and count >= 0
    status = core_cuda.device_status()
    assert isinstance(status, str) and status
    info = core_cuda.device_info()
    assert isinstance(info, list) and len(info) == count
    for device in info:
        assert set(device) >= {"name", "compute_capability", "total_memory_bytes"}
    if count == 0:
        assert "no" in status.lower()
