"""The object update after each batch: the step over the union of the batch's windows (object_step.py)
against the whole-object update it replaced (clear an object-sized gradient, the batch's illumination on the
whole object, the preconditioned step and the constraint over every pixel), on objects from 512^2 to
2048^2 pixels (8 slices) with one batch of 32 windows of 64^2. The windowed step's time should not grow
with the object; the whole-object update's grows with its area. Both are also set against the batch's own
multislice gradient (the native call), the work the update follows. Ratios from one run, 1 thread."""

import time

import numpy as np
import pytest

from mspt import ops
from mspt.ptycho.engine import ILLUMINATION_FLOOR
from mspt.ptycho.object_step import windowed_object_step
from mspt.ptycho.regularise import apply_object_constraint

SLICES, WINDOW, BATCH = 8, 64, 32
CURVATURE = 2 * 2.0 * SLICES


def whole_object_update(slices, grad_shape, probe_intensity, positions):
    """The per-batch object work before the windowed step (the gradient's clearing included: the native
    call cleared an object-sized array every batch)."""
    grad = np.zeros(grad_shape, np.complex64)
    weight = ops.illumination(probe_intensity, positions, slices.shape[1:])
    # The preconditioned step in place, object-sized temporaries avoided as the engine's NumPy step did.
    weight += ILLUMINATION_FLOOR * weight.max()
    weight *= CURVATURE
    np.divide(1.0, weight, out=weight)
    grad *= weight
    slices -= grad
    apply_object_constraint(slices, "amplitude_le_1", out=slices)


def best_of(fn, rounds=5):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@pytest.mark.parametrize("side", [512, 1024, 2048])
def test_object_step_follows_the_batch(benchmark, report, side):
    rng = np.random.default_rng(0)
    slices = np.exp(0.1j * rng.standard_normal((SLICES, side, side))).astype(np.complex64)
    probe = (rng.standard_normal((1, WINDOW, WINDOW)) + 1j * rng.standard_normal((1, WINDOW, WINDOW))).astype(np.complex64)
    probe_intensity = np.sum(np.abs(probe) ** 2, axis=0)
    positions = rng.uniform(WINDOW, side - WINDOW, (BATCH, 2))
    data = rng.poisson(10.0, (BATCH, WINDOW, WINDOW)).astype(np.float32)
    grad = np.zeros_like(slices)

    def gradient():
        ops.multislice_loss_grad(data, slices, probe, positions, 2.0, 200e3, (0.2, 0.2), wrt=("slices",), threads=1,
                                 check_data=False, accumulate_slices=grad)  # fmt: skip

    def windowed():
        windowed_object_step(slices, grad, probe_intensity, positions, step=1.0, curvature=CURVATURE,
                             floor_fraction=ILLUMINATION_FLOOR, constraint="amplitude_le_1", threads=1)  # fmt: skip

    gradient()
    windowed()
    t_gradient = best_of(gradient)
    windowed()  # the gradient timed above was added 5 times: clear it through the step
    t_windowed = best_of(windowed)
    t_whole = best_of(lambda: whole_object_update(slices, slices.shape, probe_intensity, positions))
    benchmark.extra_info.update(windowed_s=t_windowed, whole_s=t_whole, gradient_s=t_gradient)
    benchmark.pedantic(windowed, rounds=1, iterations=1)
    report(f"MSP object update per batch, {SLICES} x {side}^2 object, {BATCH} windows of {WINDOW}^2, 1 thread",
           windowed_ms=1e3 * t_windowed, whole_object_ms=1e3 * t_whole, speedup=t_whole / t_windowed,
           windowed_over_gradient=t_windowed / t_gradient, whole_over_gradient=t_whole / t_gradient)  # fmt: skip
