"""The engine's object step over the union of a batch's windows equals the whole-object step it replaces,
and a gradient accumulated into a buffer equals the buffer plus a fresh gradient."""

import numpy as np
import pytest

from mspt import ops
from mspt.ptycho.object_step import windowed_object_step

NY, NX = 12, 10


def whole_object_step(slices, grad, probe_intensity, positions, step, curvature, floor_fraction, constraint):
    """The reference: every array object-sized, in NumPy (the update before it moved to the windows)."""
    illumination = np.zeros(slices.shape[1:], probe_intensity.dtype)
    for y, x in positions:
        r0, c0 = int(np.floor(y + 0.5)) - NY // 2, int(np.floor(x + 0.5)) - NX // 2
        illumination[r0 : r0 + NY, c0 : c0 + NX] += probe_intensity
    gain = step / ((illumination + floor_fraction * illumination.max()) * curvature)
    out = slices - grad * gain
    if constraint != "none":
        floor = 1e-12 if constraint == "phase_only" else 1.0
        out = out / np.maximum(np.abs(out), floor)
    return out, illumination.max()


def batch_problem(rng, dtype, positions):
    """Slices near 1 (some amplitudes above it), a gradient that is zero outside the windows."""
    real = np.float64 if dtype == np.complex128 else np.float32
    shape = (3, 40, 36)
    slices = (1 + 0.2 * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))).astype(dtype)
    patches = (rng.standard_normal((3, len(positions), NY, NX)) + 1j * rng.standard_normal((3, len(positions), NY, NX)))
    grad = np.stack([ops.extract_windows_adjoint(p.astype(np.complex64), positions, shape[1:]) for p in patches]).astype(dtype)
    probe_intensity = rng.uniform(0.0, 2.0, (NY, NX)).astype(real)
    return slices, grad, probe_intensity


@pytest.mark.parametrize("constraint", ["amplitude_le_1", "phase_only", "none"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_windowed_step_equals_whole_object_step(constraint, dtype):
    rng = np.random.default_rng(3)
    # Overlapping windows, a repeated one, half-pixel positions (round half up), windows at the edges.
    positions = np.array([[6.0, 5.0], [9.5, 7.4], [9.5, 7.4], [20.2, 18.7], [33.0, 30.0], [14.0, 29.0], [27.6, 6.5]])
    slices, grad, probe_intensity = batch_problem(rng, dtype, positions)
    expected, expected_peak = whole_object_step(slices, grad, probe_intensity, positions, 0.7, 4.0, 0.1, constraint)
    untouched = np.abs(grad).sum(0) == 0
    if constraint != "none":  # the step leaves pixels outside the windows alone: they must already hold it
        slices[:, untouched] = expected[:, untouched]
    peak = windowed_object_step(slices, grad, probe_intensity, positions, step=0.7, curvature=4.0,
                                floor_fraction=0.1, constraint=constraint)  # fmt: skip
    tolerance = 1e-6 if dtype == np.complex64 else 1e-14
    np.testing.assert_allclose(slices, expected, rtol=tolerance, atol=tolerance)
    assert peak == pytest.approx(expected_peak, rel=tolerance)
    assert not np.any(grad)  # cleared where it was read, and it was zero elsewhere


def test_windowed_step_refuses_windows_outside_the_object():
    rng = np.random.default_rng(0)
    positions = np.array([[6.0, 5.0]])
    slices, grad, probe_intensity = batch_problem(rng, np.complex64, positions)
    with pytest.raises(ValueError, match=r"positions_px\[0\].*outside"):
        windowed_object_step(slices, grad, probe_intensity, np.array([[2.0, 5.0]]), step=1.0, curvature=1.0,
                             floor_fraction=0.1, constraint="none")  # fmt: skip
    with pytest.raises(ValueError, match="grad"):
        windowed_object_step(slices, grad[:2], probe_intensity, positions, step=1.0, curvature=1.0,
                             floor_fraction=0.1, constraint="none")  # fmt: skip
    with pytest.raises(ValueError, match="constraint"):
        windowed_object_step(slices, grad, probe_intensity, positions, step=1.0, curvature=1.0,
                             floor_fraction=0.1, constraint="amplitude")  # fmt: skip


def test_slice_gradient_accumulates_into_a_buffer():
    rng = np.random.default_rng(5)
    slices = np.exp(1j * 0.3 * rng.standard_normal((2, 48, 48))).astype(np.complex64)
    probe = (rng.standard_normal((1, 16, 16)) + 1j * rng.standard_normal((1, 16, 16))).astype(np.complex64)
    positions = rng.uniform(10, 38, (5, 2))
    data = rng.poisson(5.0, (5, 16, 16)).astype(np.float32)
    args = (data, slices, probe, positions, 2.0, 200e3, (0.2, 0.2))
    fresh = ops.multislice_loss_grad(*args)
    buffer = (rng.standard_normal(slices.shape) + 1j * rng.standard_normal(slices.shape)).astype(np.complex64)
    before = buffer.copy()
    grads = ops.multislice_loss_grad(*args, accumulate_slices=buffer)
    assert grads.slices is buffer
    np.testing.assert_allclose(buffer, before + fresh.slices, rtol=1e-6, atol=1e-6 * np.abs(fresh.slices).max())
    np.testing.assert_array_equal(grads.probe, fresh.probe)
    assert grads.loss == fresh.loss
    with pytest.raises(ValueError, match=r"accumulate_slices: expected a complex64 array of shape \(2, 48, 48\)"):
        ops.multislice_loss_grad(*args, accumulate_slices=np.zeros((2, 48, 47), np.complex64))
