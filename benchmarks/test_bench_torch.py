"""mspt.torch.multislice in a PyTorch training step, against the direct native call and against the same
model written in plain PyTorch (torch.fft), on the same CPU in one run.

One step = forward intensities, a quadratic loss against data, and the gradients w.r.t. slices, probe and
positions. Four versions of that step are timed alternately (best of several rounds each):

* native: ``mspt.ops.multislice_forward(..., record_tape=True)`` + ``mspt.ops.multislice_vjp(..., tape=)``
  on NumPy arrays, the native path mspt.torch takes (the vjp starts from the recorded forward pass);
* native, recomputing: the same without the tape, so the vjp runs the forward pass again (for reference:
  the saving of the tape);
* mspt.torch: ``mspt.torch.multislice`` + ``loss.backward()`` on torch tensors (target: <= 5 % over native;
  this includes torch's own graph for the loss, which the native step evaluates in NumPy). The wrapper alone
  is measured twice: both sides given the same cotangent (no loss graph), at this size, and its fixed cost per
  step on a tiny problem, where it is not lost in the noise of a shared machine;
* plain torch: window gather, Fourier shift, transmission and Fresnel propagation with ``torch.fft`` and
  torch's autograd (target: mspt.torch >= 3x faster). Its intensities are checked against mspt's first, so
  both compute the same model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import mspt
from mspt import ops
from timing import best_of  # noqa: E402

torch = pytest.importorskip("torch")
mt = pytest.importorskip("mspt.torch")

N, BATCH, SLICES, ENERGY, SAMPLING, DZ = 128, 64, 5, 200e3, 0.1, 2.0
ROUNDS = 6


def fresnel(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The band-limited Fresnel propagator (unshifted frequencies) and the band mask."""
    k = torch.fft.fftfreq(n, SAMPLING, dtype=torch.float64)
    k2 = k[:, None] ** 2 + k[None] ** 2
    band = k2 < (2.0 / 3.0 / (2.0 * SAMPLING)) ** 2
    propagator = torch.exp(-1j * math.pi * mspt.wavelength_A(ENERGY) * DZ * k2) * band
    return propagator.to(torch.complex64), band


def plain_torch_model(slices: torch.Tensor, probe: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The multislice model of mspt.ops.multislice_forward (one mode, no tilt) in plain PyTorch."""
    n = probe.shape[-1]
    propagator, band = fresnel(n)
    corner = torch.round(positions.detach()).long() - n // 2
    frac = positions - torch.round(positions.detach())
    f = torch.fft.fftfreq(n, dtype=torch.float64)
    ramp = torch.exp(-2j * math.pi * (frac[:, 0, None, None] * f[:, None] + frac[:, 1, None, None] * f[None]))
    psi = torch.fft.ifft2(torch.fft.fft2(probe) * ramp.to(torch.complex64))  # (B, n, n)
    rows = corner[:, 0, None, None] + torch.arange(n)[None, :, None]
    cols = corner[:, 1, None, None] + torch.arange(n)[None, None, :]
    for s in range(slices.shape[0]):
        psi = psi * slices[s][rows, cols]
        if s < slices.shape[0] - 1:
            psi = torch.fft.ifft2(torch.fft.fft2(psi) * propagator)
    far = torch.fft.fft2(psi, norm="ortho")
    return torch.fft.fftshift((far.real**2 + far.imag**2) * band, dim=(-2, -1))


def wrapper_cost_s() -> float:
    """The fixed cost mspt.torch adds to one step (autograd bookkeeping, tensor <-> array views), measured on a
    problem so small that the native work is negligible: best-of-many, so it is steady on a busy machine."""
    probe = mspt.make_probe(ENERGY, 25, 16, SAMPLING).array
    slices = np.ones((2, 24, 24), np.complex64)
    positions = np.array([[12.0, 12.0]])

    def native():
        intensities, tape = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING, record_tape=True)
        ops.multislice_vjp(
            intensities, slices, probe, positions, DZ, ENERGY, SAMPLING, wrt=("slices", "probe"), tape=tape
        )

    t_slices, t_probe = (torch.from_numpy(a).requires_grad_() for a in (slices, probe))
    t_positions = torch.from_numpy(positions)

    def wrapped():
        (0.5 * mt.multislice(t_slices, t_probe, t_positions, DZ, ENERGY, SAMPLING).square().sum()).backward()

    native(), wrapped()
    return best_of(wrapped, 200) - best_of(native, 200)


def test_torch_step_overhead_and_speed_over_plain_torch(benchmark, report):
    rng = np.random.default_rng(0)
    probe = mspt.make_probe(ENERGY, 25, N, SAMPLING, defocus_A=50, electrons=1e4).array  # (1, N, N) complex64
    size = N + 32
    slices = np.exp(1j * 0.3 * rng.standard_normal((SLICES, size, size))).astype(np.complex64)
    positions = rng.uniform(N // 2 + 1, size - N // 2 - 2, (BATCH, 2))
    data = rng.poisson(1e4 / N**2, (BATCH, N, N)).astype(np.float32)

    wrt = ("slices", "probe", "positions")

    # Like the torch steps, the native ones evaluate the loss as well as its gradient.
    def native():
        intensities, tape = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING, record_tape=True)
        residual = intensities - data
        loss = 0.5 * float(np.square(residual).sum())
        return loss, ops.multislice_vjp(residual, slices, probe, positions, DZ, ENERGY, SAMPLING, wrt=wrt, tape=tape)

    def native_recomputing():
        residual = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING) - data
        loss = 0.5 * float(np.square(residual).sum())
        return loss, ops.multislice_vjp(residual, slices, probe, positions, DZ, ENERGY, SAMPLING, wrt=wrt)

    t_slices, t_probe, t_pos = (torch.from_numpy(a).requires_grad_() for a in (slices, probe, positions))
    t_data = torch.from_numpy(data)

    def step(model):
        def run():
            for t in (t_slices, t_probe, t_pos):
                t.grad = None
            intensities = model(t_slices, t_probe, t_pos)
            (0.5 * (intensities - t_data).square().sum()).backward()

        return run

    wrapped = step(lambda s, p, q: mt.multislice(s, p, q, DZ, ENERGY, SAMPLING))
    plain = step(lambda s, p, q: plain_torch_model(s, p[0], q))

    # The wrapper alone, without a loss graph on either side: the same cotangent handed to the native vjp
    # and to torch's backward (what is left is mspt.torch's own cost at this size).
    cotangent = np.ascontiguousarray(data - 1.0)
    t_cotangent = torch.from_numpy(cotangent)

    def native_given_cotangent():
        intensities, tape = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING, record_tape=True)
        return ops.multislice_vjp(cotangent, slices, probe, positions, DZ, ENERGY, SAMPLING, wrt=wrt, tape=tape)

    def wrapped_given_cotangent():
        for t in (t_slices, t_probe, t_pos):
            t.grad = None
        mt.multislice(t_slices, t_probe, t_pos, DZ, ENERGY, SAMPLING).backward(t_cotangent)

    # Same model first: the plain-torch intensities and gradient equal mspt's to float32 rounding.
    with torch.no_grad():
        reference = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING)
        mismatch = np.linalg.norm(plain_torch_model(t_slices, t_probe[0], t_pos).numpy() - reference) / np.linalg.norm(
            reference
        )
    assert mismatch < 1e-4, mismatch
    plain()
    plain_grad = t_slices.grad.clone()
    wrapped()
    grad_mismatch = (torch.linalg.norm(plain_grad - t_slices.grad) / torch.linalg.norm(t_slices.grad)).item()
    assert grad_mismatch < 1e-3, grad_mismatch

    native(), native_recomputing()  # warm: engine plans and buffers
    versions = {"native": native, "native recomputing": native_recomputing, "mspt.torch": wrapped, "plain torch": plain,
                "native, given cotangent": native_given_cotangent, "mspt.torch, given cotangent": wrapped_given_cotangent}
    times = {name: [] for name in versions}
    for _ in range(ROUNDS):  # alternate, so a slow spell on a shared machine hits all of them alike
        for name, fn in versions.items():
            times[name].append(best_of(fn, 1))
    best = {name: min(t) for name, t in times.items()}
    overhead = best["mspt.torch"] / best["native"] - 1.0
    wrapper_overhead = best["mspt.torch, given cotangent"] / best["native, given cotangent"] - 1.0
    fixed_cost = wrapper_cost_s()
    speedup = best["plain torch"] / best["mspt.torch"]
    tape_saving = best["native recomputing"] / best["native"]
    benchmark.extra_info.update(
        native_s=best["native"], native_recomputing_s=best["native recomputing"], tape_speedup=tape_saving,
        mspt_torch_s=best["mspt.torch"], plain_torch_s=best["plain torch"],
        overhead=overhead, wrapper_overhead=wrapper_overhead, wrapper_cost_s=fixed_cost, speedup_over_plain_torch=speedup, torch_threads=torch.get_num_threads(),
        intensity_mismatch=mismatch, gradient_mismatch=grad_mismatch,
    )  # fmt: skip
    benchmark.pedantic(wrapped, rounds=1, iterations=1)
    report(
        f"torch step {N}px B={BATCH} S={SLICES}",
        native_s=best["native"], native_recomputing_s=best["native recomputing"], tape_speedup=tape_saving,
        mspt_torch_s=best["mspt.torch"], plain_torch_s=best["plain torch"], overhead_pct=100 * overhead,
        wrapper_overhead_pct=100 * wrapper_overhead,
        wrapper_cost_us=1e6 * fixed_cost, wrapper_cost_pct=100 * fixed_cost / best["native"], speedup_over_plain_torch=speedup,
    )  # fmt: skip
