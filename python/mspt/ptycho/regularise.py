"""Constraints and regularisers applied to the object and the probe between iterations."""

from __future__ import annotations

import numpy as np

from .object_step import constrain_object


def apply_object_constraint(slices: np.ndarray, constraint: str, out: np.ndarray | None = None) -> np.ndarray:
    """"amplitude_le_1": a transmission amplitude never exceeds 1 (the sample does not add electrons);
    "phase_only": the amplitude is 1 everywhere; "none": unchanged. The result goes to ``out`` (``slices``
    itself constrains in place, without scratch), else to a new array ("none": ``slices``). The projection
    is the native one the engine's batch steps apply (object_step.py); complex64 or complex128 values."""
    if constraint == "none":
        if out is None or out is slices:
            return slices
        out[...] = slices
        return out
    if out is None:
        out = np.array(slices, order="C")
    elif out is not slices:
        out[...] = slices
    return constrain_object(out, constraint)


def kz_filter(slices: np.ndarray, slice_thickness_A: float, sampling_A, strength: float) -> np.ndarray:
    """Damp structure that varies faster along the beam than across it (the depth direction is the one
    ptychography resolves worst): the complex log of the stack is filtered in 3D Fourier space by
    ``W = 1 - (2 / pi) arctan(strength^2 kz^2 / kr^2)``, which keeps kz = 0 and suppresses a 3D frequency
    the more its direction points along the beam.

    Computed in the slices' precision, in one complex stack that becomes the result (the filter's
    weights, in that precision too, are made one slice at a time: a few planes)."""
    s, h, w = slices.shape
    log_object = np.empty_like(slices)
    np.abs(slices, out=log_object.real)
    np.maximum(log_object.real, 1e-6, out=log_object.real)
    np.log(log_object.real, out=log_object.real)
    np.arctan2(slices.imag, slices.real, out=log_object.imag)  # the phase, as np.angle
    # norm="ortho" both ways: the pair is the identity, and numpy transforms single precision in single
    # precision only with a floating-point normalisation (its default forward pass goes through complex128).
    spectrum = np.fft.fftn(log_object, norm="ortho", out=log_object)
    real = spectrum.real.dtype
    kz = np.fft.fftfreq(s, slice_thickness_A)
    ky = np.fft.fftfreq(h, sampling_A[0]).astype(real)[:, None]
    kx = np.fft.fftfreq(w, sampling_A[1]).astype(real)[None, :]
    kr2 = ky**2 + kx**2
    for k in np.nonzero(kz)[0]:  # the kz = 0 slice keeps weight 1
        with np.errstate(divide="ignore"):
            weight = np.divide(real.type(strength**2 * kz[k] ** 2), kr2)
        np.arctan(weight, out=weight)
        weight *= real.type(-2 / np.pi)
        weight += 1
        weight[kr2 == 0] = 0.0
        spectrum[k] *= weight
    filtered = np.fft.ifftn(spectrum, norm="ortho", out=spectrum)
    return np.exp(filtered, out=filtered)


def orthogonalise_modes(probe: np.ndarray) -> np.ndarray:
    """Mixed-state modes made mutually orthogonal (an SVD of the stacked modes), strongest first; the
    total intensity and the density matrix they represent are unchanged."""
    m = probe.shape[0]
    u, s, vh = np.linalg.svd(probe.reshape(m, -1).astype(np.complex128), full_matrices=False)
    return (s[:, None] * vh).reshape(probe.shape).astype(probe.dtype)


def tv_step(slices: np.ndarray, weight: float, eps: float = 1e-3) -> np.ndarray:
    """One gradient step of total-variation smoothing on each slice's phase (step ``weight`` radians)."""
    phase = np.angle(slices)
    amplitude = np.abs(slices)
    gy = np.diff(phase, axis=1, append=phase[:, -1:, :])
    gx = np.diff(phase, axis=2, append=phase[:, :, -1:])
    norm = np.sqrt(gy**2 + gx**2 + eps**2)
    py, px = gy / norm, gx / norm
    divergence = np.diff(py, axis=1, prepend=0 * py[:, :1, :]) + np.diff(px, axis=2, prepend=0 * px[:, :, :1])
    phase = phase + weight * divergence
    return (amplitude * np.exp(1j * phase)).astype(slices.dtype)


def slice_shear_rate(slices: np.ndarray, mask: np.ndarray | None = None, rounds: int = 3) -> np.ndarray:
    """The lateral drift of the slices' content per slice, (dy, dx) in pixels per slice.

    Each slice's phase is compared with the mean phase: for a small shift d, phase_s ~ mean - d . grad(mean),
    solved for d by least squares over ``mask`` (the scanned region); a straight line through the d of all
    slices gives the drift per slice. The linearisation is refined by Gauss-Newton rounds (undo the drift
    found so far, measure what is left). A beam tilt and a sheared slice stack produce the same data, so this
    drift is where a wrong tilt shows up in the object."""
    if mask is None:
        mask = np.ones(slices.shape[1:], bool)
    depth = np.arange(len(slices)) - (len(slices) - 1) / 2
    total = np.zeros(2)
    current = slices
    for _ in range(rounds):
        phase = np.angle(current).astype(np.float64)
        mean = phase.mean(0)
        gy, gx = np.gradient(mean)
        a = np.stack([gy[mask], gx[mask]], 1)
        normal = a.T @ a
        if np.linalg.cond(normal) > 1e8:
            break
        shifts = np.array([-np.linalg.solve(normal, a.T @ (p[mask] - mean[mask])) for p in phase])
        rate = (depth @ shifts) / (depth @ depth)
        total += rate
        current = shift_slices(slices, -depth[:, None] * total[None, :])
    return total


def shift_slices(slices: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """Shift each slice (S, H, W) by shifts_px (S, 2) pixels (sub-pixel, periodic) with a Fourier ramp, in the
    slices' precision (the ramp is separable: a row ramp times a column ramp per slice)."""
    h, w = slices.shape[1:]
    shifts = np.asarray(shifts_px, dtype=np.float64)
    ramp_y = np.exp(-2j * np.pi * np.fft.fftfreq(h)[None, :] * shifts[:, :1]).astype(slices.dtype)  # (S, H)
    ramp_x = np.exp(-2j * np.pi * np.fft.fftfreq(w)[None, :] * shifts[:, 1:]).astype(slices.dtype)  # (S, W)
    spectrum = np.fft.fft2(slices, norm="ortho")  # "ortho": single precision stays single (see kz_filter)
    spectrum *= ramp_y[:, :, None]
    spectrum *= ramp_x[:, None, :]
    return np.fft.ifft2(spectrum, norm="ortho", out=spectrum)
