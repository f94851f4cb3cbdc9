"""Convergent-beam probes: aperture, aberrations (abTEM / Krivanek conventions) and mixed states.

The probe wave in Fourier space is ``A(k) exp(-i chi(k))`` with a hard aperture ``A`` (``alpha <
semiangle``, alpha = lambda |k|) and the aberration function

    chi(alpha, phi) = 2 pi / lambda * sum_{n,m} C_nm alpha^(n+1) / (n+1) * cos(m (phi - phi_nm)),

coefficients ``C_nm`` in angstrom and angles ``phi_nm`` in radians, exactly as abTEM defines them;
``defocus_A = -C10``. In real space the probe is centred at pixel ``(ny // 2, nx // 2)`` of its window.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Mapping

import numpy as np

from .constants import wavelength_A

# Krivanek coefficients up to fifth order: (n, m) -> symbol; the angle of C_nm is phi_nm (m > 0).
POLAR_ORDERS: dict[str, tuple[int, int]] = {
    "C10": (1, 0), "C12": (1, 2),
    "C21": (2, 1), "C23": (2, 3),
    "C30": (3, 0), "C32": (3, 2), "C34": (3, 4),
    "C41": (4, 1), "C43": (4, 3), "C45": (4, 5),
    "C50": (5, 0), "C52": (5, 2), "C54": (5, 4), "C56": (5, 6),
}  # fmt: skip
POLAR_ANGLES = {"phi" + s[1:] for s, (n, m) in POLAR_ORDERS.items() if m > 0}
ALIASES = {
    "Cs": "C30", "C5": "C50", "astigmatism": "C12", "astigmatism_angle": "phi12",
    "coma": "C21", "coma_angle": "phi21",
}  # fmt: skip


def _canonical_aberrations(defocus_A: float, aberrations: Mapping[str, float] | None) -> dict[str, float]:
    coeffs: dict[str, float] = {}
    for key, value in dict(aberrations or {}).items():
        name = ALIASES.get(key, key)
        if key == "defocus":
            raise ValueError("aberrations: give defocus as defocus_A (it is -C10), not inside aberrations")
        if name not in POLAR_ORDERS and name not in POLAR_ANGLES:
            known = ", ".join(sorted([*POLAR_ORDERS, *POLAR_ANGLES, *ALIASES]))
            raise ValueError(f"aberrations: unknown coefficient {key!r}; expected one of {known}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"aberrations[{key!r}]: expected a finite number, got {value!r}")
        coeffs[name] = value
    if "C10" in coeffs and defocus_A:
        raise ValueError("aberrations: give either defocus_A or C10, not both")
    if "C10" not in coeffs:
        coeffs["C10"] = -float(defocus_A)
    return coeffs


def aberration_phase(alpha: np.ndarray, phi: np.ndarray, wavelength: float, coefficients: Mapping[str, float]) -> np.ndarray:
    """chi(alpha, phi) in radians for scattering angles alpha (rad) and azimuths phi (rad)."""
    chi = np.zeros(np.broadcast(alpha, phi).shape)
    for symbol, (n, m) in POLAR_ORDERS.items():
        c = coefficients.get(symbol, 0.0)
        if c == 0.0:
            continue
        angle = coefficients.get("phi" + symbol[1:], 0.0)
        chi += c * alpha ** (n + 1) / (n + 1) * np.cos(m * (phi - angle))
    return 2 * np.pi / wavelength * chi


@dataclasses.dataclass(frozen=True)
class Probe:
    """A (mixed-state) probe on a real-space window.

    Attributes
    ----------
    array : complex64 array (modes, ny, nx); mode k carries ``weights[k]`` of the total intensity
        ``electrons``. Centred at pixel ``(ny // 2, nx // 2)``.
    energy_eV, semiangle_mrad, defocus_A : beam energy (eV), aperture semiangle (mrad), defocus (A).
    sampling_A : real-space pixel size (dy, dx) in angstrom.
    aberrations : Krivanek coefficients used (C_nm in A, phi_nm in rad), C10 = -defocus_A included.
    """

    array: np.ndarray
    energy_eV: float
    semiangle_mrad: float
    sampling_A: tuple[float, float]
    defocus_A: float
    aberrations: dict
    weights: tuple[float, ...]

    @property
    def modes(self) -> int:
        return self.array.shape[0]

    @property
    def gpts(self) -> tuple[int, int]:
        return self.array.shape[1], self.array.shape[2]

    @property
    def wavelength_A(self) -> float:
        return wavelength_A(self.energy_eV)

    @property
    def electrons(self) -> float:
        return float(np.sum(np.abs(self.array.astype(np.complex128)) ** 2))


def _check_pair(name: str, value, kind=float) -> tuple:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name}: expected one value or a pair (y, x), got {value!r}")
    pair = tuple(kind(v) for v in pair)
    return pair


def coherent_probe_spectrum(
    energy_eV: float,
    semiangle_mrad: float,
    gpts: tuple[int, int],
    sampling_A: tuple[float, float],
    coefficients: Mapping[str, float],
) -> np.ndarray:
    """The probe's spectrum A(k) exp(-i chi(k)) on the unshifted FFT grid of the window (complex128)."""
    lam = wavelength_A(energy_eV)
    ky = np.fft.fftfreq(gpts[0], sampling_A[0])[:, None]
    kx = np.fft.fftfreq(gpts[1], sampling_A[1])[None, :]
    alpha = lam * np.sqrt(ky**2 + kx**2)
    phi = np.arctan2(ky, kx)
    aperture = alpha < semiangle_mrad * 1e-3
    return aperture * np.exp(-1j * aberration_phase(alpha, phi, lam, coefficients))


def _shift_ramp(gpts: tuple[int, int], shift_px: tuple[float, float]) -> np.ndarray:
    ky = np.fft.fftfreq(gpts[0])[:, None]
    kx = np.fft.fftfreq(gpts[1])[None, :]
    return np.exp(-2j * np.pi * (ky * shift_px[0] + kx * shift_px[1]))


def fourier_shift(array: np.ndarray, shift_px) -> np.ndarray:
    """Shift the last two axes by (dy, dx) pixels (periodic, sub-pixel) with a Fourier phase ramp."""
    ramp = _shift_ramp(array.shape[-2:], _check_pair("shift_px", shift_px, float))
    return np.fft.ifft2(np.fft.fft2(array, axes=(-2, -1)) * ramp, axes=(-2, -1))


def _mixed_state_modes(spectrum: np.ndarray, modes: int) -> np.ndarray:
    """Orthonormal mixed-state modes, as spectra: the coherent probe, then the probe's spectrum times
    low-order polynomials in (ky, kx), Gram-Schmidt orthogonalised in that order. These span the probe and
    its derivatives w.r.t. position, the leading modes of a finite source size, and stay inside the
    aperture (so inside the band limit)."""
    ny, nx = spectrum.shape
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    inside = np.abs(spectrum) > 0
    radius = float(np.sqrt((ky**2 + kx**2)[inside].max())) or 1.0
    Ky, Kx = ky / radius, kx / radius
    candidates = [np.ones_like(Ky * Kx)]
    order = 1
    while len(candidates) < 4 * modes:
        candidates += [Ky ** (order - j) * Kx**j for j in range(order + 1)]
        order += 1
    basis: list[np.ndarray] = []
    for poly in candidates:
        v = spectrum * poly
        for b in basis:
            v = v - np.vdot(b, v) * b
        norm = np.linalg.norm(v)
        if norm > 1e-6 * np.linalg.norm(spectrum * poly):
            basis.append(v / norm)
        if len(basis) == modes:
            break
    if len(basis) < modes:
        raise ValueError(f"modes: cannot build {modes} independent modes on a {ny}x{nx} window")
    return np.stack(basis)


def make_probe(
    energy_eV: float,
    semiangle_mrad: float,
    gpts,
    sampling_A,
    defocus_A: float = 0.0,
    aberrations: Mapping[str, float] | None = None,
    modes: int = 1,
    shift_px=(0.0, 0.0),
    electrons: float = 1.0,
    mode_weights=None,
) -> Probe:
    """A convergent probe on a ``gpts`` window of pixel size ``sampling_A``.

    Parameters
    ----------
    energy_eV : beam energy (eV).
    semiangle_mrad : convergence semiangle of the hard aperture (mrad).
    gpts : window size (ny, nx) or one int.
    sampling_A : pixel size (dy, dx) in angstrom, or one float.
    defocus_A : defocus in angstrom (= -C10, abTEM's sign: positive puts the crossover downstream).
    aberrations : Krivanek coefficients, e.g. ``{"C30": 1e4, "C12": 20, "phi12": 0.3}`` (A, rad);
        aliases Cs, C5, astigmatism, coma accepted.
    modes : number of mutually orthogonal mixed-state modes.
    shift_px : sub-pixel shift (dy, dx) of the probe inside its window, in pixels.
    electrons : total intensity (sum of |psi|^2 over pixels and modes), e.g. the dose per pattern.
    mode_weights : intensity fraction per mode (normalised); default halves from one mode to the next.
    """
    gpts = _check_pair("gpts", gpts, int)
    sampling_A = _check_pair("sampling_A", sampling_A, float)
    if min(gpts) < 2:
        raise ValueError(f"gpts: expected at least 2 pixels per axis, got {gpts}")
    if not all(s > 0 and math.isfinite(s) for s in sampling_A):
        raise ValueError(f"sampling_A: expected positive pixel sizes in angstrom, got {sampling_A}")
    if not (semiangle_mrad > 0 and math.isfinite(semiangle_mrad)):
        raise ValueError(f"semiangle_mrad: expected a positive angle in mrad, got {semiangle_mrad!r}")
    if not math.isfinite(defocus_A):
        raise ValueError(f"defocus_A: expected a finite defocus in angstrom, got {defocus_A!r}")
    if int(modes) != modes or modes < 1:
        raise ValueError(f"modes: expected a positive integer, got {modes!r}")
    if not (electrons > 0 and math.isfinite(electrons)):
        raise ValueError(f"electrons: expected a positive intensity, got {electrons!r}")
    shift_px = _check_pair("shift_px", shift_px, float)
    coefficients = _canonical_aberrations(defocus_A, aberrations)

    spectrum = coherent_probe_spectrum(energy_eV, semiangle_mrad, gpts, sampling_A, coefficients)
    max_alpha_mrad = wavelength_A(energy_eV) * 2.0 / 3.0 / (2.0 * max(sampling_A)) * 1e3
    if semiangle_mrad > max_alpha_mrad:
        warnings.warn(
            f"semiangle_mrad: {semiangle_mrad} mrad exceeds the {max_alpha_mrad:.1f} mrad that the multislice band "
            f"limit (2/3 Nyquist) of {sampling_A} A pixels passes; the propagator will cut the aperture. "
            "Use smaller pixels.",
            stacklevel=2,
        )
    if np.count_nonzero(spectrum) < 2:
        raise ValueError(
            f"semiangle_mrad: the {semiangle_mrad} mrad aperture passes only the zero frequency of the {gpts} "
            f"window at {sampling_A} A pixels (a plane wave, not a probe); use a larger window"
        )
    if any(shift_px):
        spectrum = spectrum * _shift_ramp(gpts, shift_px)
    spectra = _mixed_state_modes(spectrum, int(modes)) if modes > 1 else spectrum[None] / np.linalg.norm(spectrum)
    # Orthonormal spectra -> orthonormal waves (unitary FFT), centred in the window.
    basis = np.fft.fftshift(np.fft.ifft2(spectra, norm="ortho"), axes=(-2, -1))

    if mode_weights is None:
        mode_weights = 0.5 ** np.arange(modes)
    mode_weights = np.asarray(mode_weights, dtype=float)
    if mode_weights.shape != (modes,) or np.any(mode_weights < 0) or mode_weights.sum() <= 0:
        raise ValueError(f"mode_weights: expected {modes} non-negative weights, got {mode_weights!r}")
    mode_weights = mode_weights / mode_weights.sum()
    array = basis * np.sqrt(mode_weights * electrons)[:, None, None]
    return Probe(
        array=array.astype(np.complex64),
        energy_eV=float(energy_eV),
        semiangle_mrad=float(semiangle_mrad),
        sampling_A=sampling_A,
        defocus_A=-coefficients["C10"],
        aberrations=coefficients,
        weights=tuple(float(w) for w in mode_weights),
    )
