"""The defocus of a probe, read off its phase: what a reconstruction refined the nominal defocus to.

The probe's spectrum is ``A(k) exp(-i chi(k))`` with ``chi = -pi lambda defocus k^2`` for defocus alone
(probe.py). The product ``P(k) P(-k)`` keeps twice the even part of the phase and drops a linear ramp, so a
probe that drifted off the window's centre (or the shifted modes of a partially coherent source) fits the
same: the defocus is the one whose quadratic phase, taken off, leaves that product most in phase,
``argmax_f | sum_k P(k) P(-k) exp(-2 pi i lambda f k^2) |``, found on a grid fine enough to resolve it and
refined by a parabola. A mixed-state probe is read from its strongest mode: the weaker ones of a partially
coherent source are derivative-like (odd), and their products flip sign across the aperture. Other even aberrations (C30, C12) the fit does not model
pull it slightly (C30 by about -3/4 C30 alpha^2 over the aperture).
"""

from __future__ import annotations

import math

import numpy as np

from .constants import wavelength_A
from .probe import Probe


def probe_defocus_A(probe, energy_eV: float | None = None, sampling_A=None, *, search_A: float | None = None) -> float:
    """The defocus (A, ``-C10``, positive: crossover downstream of the probe's plane) that best describes
    the phase of ``probe``: an :class:`mspt.Probe`, or an array of modes (M, ny, nx) or one (ny, nx) in real
    space centred in its window, with ``energy_eV`` and ``sampling_A`` (A per pixel).

    Searched within +-``search_A`` (default: a quarter of the window's period in defocus, ``L^2 / lambda``
    for a window L A wide, beyond which the sampled phase repeats; a probe defocused that far would long
    since have spread past its window)."""
    if isinstance(probe, Probe):
        energy_eV = probe.energy_eV if energy_eV is None else energy_eV
        sampling_A = probe.sampling_A if sampling_A is None else sampling_A
        probe = probe.array
    modes = np.asarray(probe)
    modes = modes[None] if modes.ndim == 2 else modes
    if modes.ndim != 3 or not np.iscomplexobj(modes):
        raise ValueError(f"probe: expected complex modes (M, ny, nx) or (ny, nx), got shape {modes.shape} of {modes.dtype}")
    if energy_eV is None or sampling_A is None:
        raise ValueError("energy_eV, sampling_A: required unless probe is an mspt.Probe")
    dy, dx = (float(v) for v in np.broadcast_to(np.asarray(sampling_A, dtype=float), (2,)))
    lam = wavelength_A(float(energy_eV))
    strongest = modes[int(np.argmax(np.sum(np.abs(modes) ** 2, axis=(1, 2))))]
    spectrum = np.fft.fft2(np.fft.ifftshift(strongest.astype(np.complex128)))
    product = spectrum * np.roll(spectrum[::-1, ::-1], 1, axis=(0, 1))  # P(k) P(-k)
    k2 = np.fft.fftfreq(modes.shape[1], dy)[:, None] ** 2 + np.fft.fftfreq(modes.shape[2], dx)[None, :] ** 2
    keep = np.abs(product) > 1e-3 * np.abs(product).max()  # the aperture
    if np.count_nonzero(keep) < 2:
        raise ValueError("probe: its spectrum has no aperture to read a defocus from")
    product, k2 = product[keep], k2[keep]
    # On the window's frequency grid the phase exp(-2 pi i lambda f k^2) repeats in f with period L^2 / lambda.
    period = min(modes.shape[1] * dy, modes.shape[2] * dx) ** 2 / lam
    search_A = period / 4 if search_A is None else min(float(search_A), period / 4)
    # Grid step: the defocus that turns the phase at the aperture's edge by a quarter of a radian.
    step = 0.25 / (2 * math.pi * lam * k2.max())
    grid = np.arange(-search_A, search_A + step, step)
    scores = np.array([abs(np.sum(product * np.exp(-2j * math.pi * lam * f * k2))) for f in grid])
    best = int(np.argmax(scores))
    if best in (0, len(grid) - 1):
        return float(grid[best])
    s0, s1, s2 = scores[best - 1 : best + 2]
    curvature = s0 - 2 * s1 + s2
    offset = 0.5 * (s0 - s2) / curvature if curvature < 0 else 0.0
    return float(grid[best] + offset * step)
