"""Multislice forward + vjp per probe position against the pure-FFT floor of the same transforms.

The floor is FFTW (through pyfftw, planned with the same planner flag and thread count) running exactly
the transforms one fused forward + vjp needs: per position and mode 2 S transforms forward and 2 S
backward. Engine and floor are timed alternately in the same run; the ratio is the figure to read.
"""

import os

import numpy as np
import pytest

import mspt
from mspt import _backend, ops
from timing import best_of  # noqa: E402

pyfftw = pytest.importorskip("pyfftw")

CASES = [(n, s, m) for n in (64, 128, 256) for s in (5, 10) for m in (1, 4)]
THREADS = os.cpu_count()


def batch_for(n: int, s: int, m: int) -> int:
    # Enough positions to fill the cores, few enough that a round stays short on a laptop.
    return max(4 * THREADS, int(4096 * 64 * 64 // (n * n * s * m)))


def make_case(n, s, m, rng):
    b = batch_for(n, s, m)
    probe = mspt.make_probe(200e3, 25, n, 0.1, defocus_A=50, modes=m, electrons=1e4)
    h = w = n + 32
    slices = np.exp(1j * 0.3 * rng.standard_normal((s, h, w))).astype(np.complex64)
    positions = rng.uniform(n // 2 + 1, h - n // 2 - 2, (b, 2))
    data = rng.poisson(1e4 / (n * n), (b, n, n)).astype(np.float32)
    return probe, slices, positions, data


def fft_floor(n: int, transforms: int) -> callable:
    chunk = min(transforms, 256)
    a = pyfftw.empty_aligned((chunk, n, n), "complex64")
    out = pyfftw.empty_aligned((chunk, n, n), "complex64")
    a[:] = 1
    plan = pyfftw.FFTW(a, out, axes=(1, 2), threads=THREADS, flags=("FFTW_MEASURE",))
    full, rest = divmod(transforms, chunk)
    rest_plan = None
    if rest:
        ar = pyfftw.empty_aligned((rest, n, n), "complex64")
        ar[:] = 1
        rest_plan = pyfftw.FFTW(ar, pyfftw.empty_aligned((rest, n, n), "complex64"), axes=(1, 2), threads=THREADS, flags=("FFTW_MEASURE",))

    def run():
        for _ in range(full):
            plan()
        if rest_plan is not None:
            rest_plan()

    return run


@pytest.mark.parametrize("n,s,m", CASES, ids=[f"{n}px-{s}slices-{m}modes" for n, s, m in CASES])
def test_forward_vjp_over_fft_floor(benchmark, report, n, s, m):
    rng = np.random.default_rng(0)
    probe, slices, positions, data = make_case(n, s, m, rng)
    b = len(positions)

    def engine():
        ops.multislice_loss_grad(data, slices, probe, positions, 2.0)

    floor = fft_floor(n, b * m * 4 * s)
    for _ in range(2):  # plans FFTW, allocates the engine's buffers, warms caches and clocks
        engine()
        floor()
    rounds = 5
    t_engine, t_floor = [], []
    for _ in range(rounds):
        t_engine.append(best_of(engine, 1))
        t_floor.append(best_of(floor, 1))
    ratio = min(t_engine) / min(t_floor)
    eng, _ = _backend.multislice_engine("cpu", "single", n, n, s, m)
    benchmark.extra_info.update(
        positions=b, floor_s=min(t_floor), engine_s=min(t_engine), ratio_to_fft_floor=ratio,
        scratch_MiB=eng.scratch_bytes / 2**20, threads=THREADS,
    )  # fmt: skip
    benchmark.pedantic(engine, rounds=2, iterations=1)
    report(
        f"forward+vjp {n}px S={s} M={m}",
        us_per_position=1e6 * min(t_engine) / b,
        ratio_to_fft_floor=ratio,
        scratch_MiB=eng.scratch_bytes / 2**20,
    )


LOSS_ONLY_CASES = [(64, 5, 1), (128, 5, 1), (128, 10, 4)]


@pytest.mark.parametrize("n,s,m", LOSS_ONLY_CASES, ids=[f"{n}px-{s}slices-{m}modes" for n, s, m in LOSS_ONLY_CASES])
def test_loss_only_over_forward_and_full_gradient(benchmark, report, n, s, m):
    """The likelihood without a gradient (``wrt=()``: a position search's or a validation set's loss) against
    the forward pass alone and against the fused loss and full gradient, timed alternately in one run. The
    loss-only call runs the forward pass and the likelihood, so its ratio to the forward pass should be near
    1 and its ratio to the full gradient near the forward pass's share of it."""
    rng = np.random.default_rng(3)
    probe, slices, positions, data = make_case(n, s, m, rng)
    b = len(positions)
    intensities = np.empty(data.shape, np.float32)
    calls = {
        "forward": lambda: ops.multislice_forward(slices, probe, positions, 2.0, out=intensities),
        "loss_only": lambda: ops.multislice_loss_grad(data, slices, probe, positions, 2.0, wrt=()),
        "full": lambda: ops.multislice_loss_grad(data, slices, probe, positions, 2.0),
    }
    for fn in calls.values():  # plans FFTW, allocates the engine's buffers, warms caches and clocks
        fn()
    times = {name: [] for name in calls}
    for _ in range(5):
        for name, fn in calls.items():
            times[name].append(best_of(fn, 1))
    best = {name: min(t) for name, t in times.items()}
    figures = dict(
        loss_only_over_forward=best["loss_only"] / best["forward"],
        loss_only_over_full=best["loss_only"] / best["full"],
        us_per_position_loss_only=1e6 * best["loss_only"] / b,
        us_per_position_forward=1e6 * best["forward"] / b,
        us_per_position_full=1e6 * best["full"] / b,
    )
    benchmark.extra_info.update(positions=b, threads=THREADS, **figures)
    benchmark.pedantic(calls["loss_only"], rounds=2, iterations=1)
    report(f"loss only {n}px S={s} M={m}", **figures)


@pytest.mark.parametrize("n,s,m", [(128, 5, 1), (128, 10, 4)], ids=["128px-5slices-1mode", "128px-10slices-4modes"])
def test_scaling_across_cores(benchmark, report, n, s, m):
    """Speed-up of the engine from 1 thread to all cores on the same batch."""
    if THREADS < 2:
        pytest.skip("one core")
    rng = np.random.default_rng(1)
    probe, slices, positions, data = make_case(n, s, m, rng)
    times = {}
    for threads in (1, THREADS):
        fn = lambda: ops.multislice_loss_grad(data, slices, probe, positions, 2.0, threads=threads)  # noqa: E731
        fn()
        times[threads] = best_of(fn, 3)
    speedup = times[1] / times[THREADS]
    benchmark.extra_info.update(speedup=speedup, threads=THREADS)
    benchmark.pedantic(lambda: ops.multislice_loss_grad(data, slices, probe, positions, 2.0), rounds=1, iterations=1)
    report(f"scaling {n}px S={s} M={m}", threads=THREADS, speedup=speedup, efficiency=speedup / THREADS)


@pytest.mark.gpu
@pytest.mark.parametrize("n,s,m", [(64, 5, 1), (128, 10, 4), (256, 10, 4)])
def test_gpu_throughput(benchmark, report, n, s, m):
    """GPU: probe positions x slices x modes per second for forward + vjp."""
    if not _backend.cuda_available():
        pytest.skip("no usable CUDA GPU")
    rng = np.random.default_rng(2)
    b = 1024 if n <= 128 else 256
    probe = mspt.make_probe(200e3, 25, n, 0.1, defocus_A=50, modes=m, electrons=1e4)
    slices = np.exp(1j * 0.3 * rng.standard_normal((s, n + 64, n + 64))).astype(np.complex64)
    positions = rng.uniform(n // 2 + 1, n // 2 + 62, (b, 2))
    data = rng.poisson(1.0, (b, n, n)).astype(np.float32)
    fn = lambda: ops.multislice_loss_grad(data, slices, probe, positions, 2.0, device="cuda")  # noqa: E731
    fn()
    t = best_of(fn, 5)
    benchmark.pedantic(fn, rounds=2, iterations=1)
    report(f"gpu forward+vjp {n}px S={s} M={m}", position_slice_modes_per_s=b * s * m / t)
