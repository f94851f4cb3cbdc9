"""The engine's native probe step equals its definition in NumPy: gains from the entrance slice's power over
the batch's windows, the preconditioned step of every mode."""

import numpy as np
import pytest

from mspt.ptycho.probe_step import windowed_probe_step

NY, NX = 12, 10


def numpy_probe_step(probe, grad, entrance_slice, positions, step, curvature, floor_fraction):
    coverage = np.zeros((NY, NX), probe.real.dtype)
    for y, x in positions:
        r0, c0 = int(np.floor(y + 0.5)) - NY // 2, int(np.floor(x + 0.5)) - NX // 2
        coverage += np.abs(entrance_slice[r0 : r0 + NY, c0 : c0 + NX]) ** 2
    gain = step / ((coverage + floor_fraction * coverage.max()) * curvature)
    return probe - grad * gain, coverage.max()


def problem(rng, dtype, modes):
    real = rng.standard_normal((2, modes, NY, NX))
    probe = (real[0] + 1j * real[1]).astype(dtype)
    grad = (rng.standard_normal((modes, NY, NX)) + 1j * rng.standard_normal((modes, NY, NX))).astype(dtype)
    entrance = (rng.uniform(0.5, 1.0, (40, 36)) * np.exp(1j * rng.uniform(0, 2 * np.pi, (40, 36)))).astype(dtype)
    return probe, grad, entrance


@pytest.mark.parametrize("modes", [1, 3])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_probe_step_equals_its_numpy_definition(dtype, modes):
    rng = np.random.default_rng(5)
    positions = np.array([[6.0, 5.0], [9.5, 7.4], [9.5, 7.4], [20.2, 18.7], [33.0, 30.0], [27.6, 6.5]])
    probe, grad, entrance = problem(rng, dtype, modes)
    expected, expected_peak = numpy_probe_step(probe, grad, entrance, positions, 0.8, 3.0, 0.1)
    grad_before = grad.copy()
    peak = windowed_probe_step(probe, grad, entrance, positions, step=0.8, curvature=3.0, floor_fraction=0.1, threads=1)
    tolerance = 1e-6 if dtype == np.complex64 else 1e-14
    np.testing.assert_allclose(probe, expected, rtol=tolerance, atol=tolerance)
    assert peak == pytest.approx(expected_peak, rel=tolerance)
    np.testing.assert_array_equal(grad, grad_before)  # read only


def test_probe_step_checks_its_arrays():
    rng = np.random.default_rng(0)
    probe, grad, entrance = problem(rng, np.complex64, 2)
    with pytest.raises(ValueError, match="outside the 40x36 object"):
        windowed_probe_step(probe, grad, entrance, np.array([[3.0, 5.0]]), step=1, curvature=1, floor_fraction=0.1)
    with pytest.raises(ValueError, match="grad"):
        windowed_probe_step(probe, grad[:1], entrance, np.array([[9.0, 9.0]]), step=1, curvature=1, floor_fraction=0.1)
    with pytest.raises(ValueError, match="finite"):
        windowed_probe_step(probe, grad, entrance, np.array([[np.nan, 9.0]]), step=1, curvature=1, floor_fraction=0.1)
