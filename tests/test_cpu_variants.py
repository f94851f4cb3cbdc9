"""The CPU core is built for the baseline instruction set and, on x86-64, for AVX2 + FMA; mspt picks the
second where the processor allows. Both builds compute the same model (FMA changes rounding only)."""

import importlib
import subprocess
import sys

import numpy as np
import pytest

import mspt
from mspt import _native


def run_engine(module, slices, probe, positions, data):
    engine = module.MultisliceCpu32(probe.shape[1], probe.shape[2], slices.shape[0], probe.shape[0])
    grad_slices = np.empty_like(slices)
    grad_probe = np.empty_like(probe)
    grad_positions = np.empty((len(positions), 2))
    intensities = np.empty((len(positions), *probe.shape[1:]), np.float32)
    loss = engine.run(slices, probe, positions, 2.0, mspt.wavelength_A(200e3), 0.2, 0.2, 0.002, -0.001, 1.6, True,
                      intensities=intensities, source=2, data=data, grad_slices=grad_slices, grad_probe=grad_probe,
                      grad_positions=grad_positions)  # fmt: skip
    return loss, intensities, grad_slices, grad_probe, grad_positions


def test_avx2_build_matches_the_baseline_build():
    try:
        avx2 = importlib.import_module("mspt._core_avx2")
    except ImportError:
        pytest.skip("no AVX2 build on this platform")
    if not (mspt._core.cpu_supports("avx2") and mspt._core.cpu_supports("fma")):
        pytest.skip("this processor lacks AVX2/FMA")
    rng = np.random.default_rng(3)
    slices = np.exp(1j * 0.3 * rng.standard_normal((3, 60, 60))).astype(np.complex64)
    probe = mspt.make_probe(200e3, 25, 32, 0.2, defocus_A=30, modes=2, electrons=1e3).array
    positions = rng.uniform(20, 40, (10, 2))
    data = rng.poisson(1e3 / 1024, (10, 32, 32)).astype(np.float32)
    base = run_engine(mspt._core, slices, probe, positions, data)
    fast = run_engine(avx2, slices, probe, positions, data)
    assert fast[0] == pytest.approx(base[0], rel=1e-5)
    for a, b in zip(fast[1:], base[1:]):
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-5


def test_the_processor_decides_which_build_runs():
    expected = "mspt._core_avx2" if mspt._core.cpu_supports("avx2") and mspt._core.cpu_supports("fma") else "mspt._core"
    try:
        importlib.import_module("mspt._core_avx2")
    except ImportError:
        expected = "mspt._core"
    assert _native.core.__name__ == expected


def test_isa_can_be_forced_and_bad_values_are_named():
    code = "import mspt._native as n; print(n.core.__name__)"
    out = subprocess.run([sys.executable, "-c", code], env={"MSPT_CPU_ISA": "baseline", "PATH": ""}, capture_output=True, text=True)
    assert out.stdout.strip() == "mspt._core", out.stderr
    bad = subprocess.run([sys.executable, "-c", code], env={"MSPT_CPU_ISA": "sse9", "PATH": ""}, capture_output=True, text=True)
    assert "MSPT_CPU_ISA: expected 'auto', 'avx2' or 'baseline', got 'sse9'" in bad.stderr
