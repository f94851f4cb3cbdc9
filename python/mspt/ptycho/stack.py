"""The slice stack along the beam: vacuum padding, re-centring on the sample, and the coarse-to-fine split.

A multislice model cannot tell an object moved downstream by a distance d (its slices shifted by d / dz,
vacuum coming in at the entrance) from a probe focused d further upstream: after d of vacuum the probe
reaches the sample exactly as before, and what leaves the stack is only propagated a different distance in
free space, which the far-field intensities do not see. Re-centring uses that freedom to keep the sample in
the middle of the stack, away from its ends (where content would be cut off and where vacuum slices are
wasted), and moves the probe's focus by the same distance so the model's predictions stay put.
"""

from __future__ import annotations

import numpy as np

from ..constants import wavelength_A

# Re-centre every RECENTRE_EVERY iterations, once the object has formed, when the depth centre of the
# phase contrast is more than RECENTRE_TOLERANCE_SLICES slices from the stack centre.
RECENTRE_EVERY = 3
RECENTRE_FROM = 3
RECENTRE_TOLERANCE_SLICES = 0.5
# "auto" re-centres deep stacks, of at least this many slices. A thinner stack usually spans just the
# sample, and where it does not, the stack_drift warning reports the misplacement rather than hiding it.
RECENTRE_MIN_SLICES = 30


def pad_slice_count(pad_slices_A: float, slice_thickness_A: float) -> int:
    """Whole vacuum slices added on each side of the stack for ``pad_slices_A`` of vacuum (A)."""
    return int(round(pad_slices_A / slice_thickness_A))


def complex_log(slices: np.ndarray) -> np.ndarray:
    """log of transmission slices: log-amplitude + i phase (the phase wrapped to (-pi, pi])."""
    return np.log(np.maximum(np.abs(slices), 1e-6)) + 1j * np.angle(slices)


def shift_stack(slices: np.ndarray, shift_slices: float) -> np.ndarray:
    """The stack's content moved ``shift_slices`` slices downstream (negative: upstream), by linear
    interpolation of the complex log between neighbouring slices; vacuum (t = 1) comes in at the end the
    content leaves, and what passes the other end is dropped."""
    n = len(slices)
    source = np.arange(n) - shift_slices  # the (fractional) old slice each new slice takes its content from
    below = np.floor(source).astype(int)
    weight = (source - below)[:, None, None]
    log_object = complex_log(slices)
    padded = np.concatenate([np.zeros_like(log_object[:1]), log_object, np.zeros_like(log_object[:1])])
    lo = padded[np.clip(below + 1, 0, n + 1)]
    hi = padded[np.clip(below + 2, 0, n + 1)]
    return np.exp((1 - weight) * lo + weight * hi).astype(slices.dtype)


def propagate_probe(
    probe: np.ndarray, distance_A: float, energy_eV: float, sampling_A, tilt_mrad=(0.0, 0.0)
) -> np.ndarray:
    """Probe modes (M, Ny, Nx) propagated ``distance_A`` downstream in vacuum with the engine's Fresnel
    propagator (beam tilt included): a probe of defocus f becomes one of defocus f - distance."""
    ky = np.fft.fftfreq(probe.shape[-2], sampling_A[0])[:, None]
    kx = np.fft.fftfreq(probe.shape[-1], sampling_A[1])[None, :]
    ty, tx = np.tan(np.asarray(tilt_mrad, dtype=float) * 1e-3)
    defocus_term = -np.pi * wavelength_A(energy_eV) * distance_A * (ky**2 + kx**2)
    phase = defocus_term - 2 * np.pi * distance_A * (ky * ty + kx * tx)
    return np.fft.ifft2(np.fft.fft2(probe) * np.exp(1j * phase)).astype(probe.dtype)


def depth_profile(slices: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each slice's phase contrast: the variance of its phase over ``mask`` (rad^2), entrance first."""
    return np.array([np.var(np.angle(s)[mask]) for s in slices])


def recentring_shift(slices: np.ndarray, mask: np.ndarray) -> float:
    """How many slices the content must move downstream (negative: upstream) to bring the depth centre of
    its phase contrast to the stack centre. Each slice is weighted by its contrast above the stack's
    faintest slice: the floor that noise and the depth blur spread over every slice, vacuum included, would
    otherwise pull the estimate towards the stack centre and leave the sample off it."""
    contrast = depth_profile(slices, mask)
    weight = contrast - contrast.min()
    if len(slices) < 3 or weight.sum() <= 0:
        return 0.0
    depth = np.arange(len(slices)) - (len(slices) - 1) / 2
    return -float(np.sum(weight * depth) / weight.sum())


def recentre(slices, probe, mask, slice_thickness_A, energy_eV, sampling_A, tilt_mrad):
    """The stack re-centred on its phase contrast and the probe refocused to match, when the centre is off by
    more than RECENTRE_TOLERANCE_SLICES; returns (slices, probe, distance moved downstream in A)."""
    shift = recentring_shift(slices, mask)
    if abs(shift) <= RECENTRE_TOLERANCE_SLICES:
        return slices, probe, 0.0
    distance = shift * slice_thickness_A
    # Content moved downstream by d meets the probe after d more of vacuum: start the probe d further up.
    return shift_stack(slices, shift), propagate_probe(probe, -distance, energy_eV, sampling_A, tilt_mrad), distance


def split_slices(slices: np.ndarray) -> np.ndarray:
    """Each slice replaced by two of half its thickness, each with half its complex log (phase and
    log-amplitude): the coarse-to-fine step; the pair transmits what the slice did, less the propagation
    between them."""
    half = np.exp(0.5 * complex_log(slices)).astype(slices.dtype)
    return np.repeat(half, 2, axis=0)
