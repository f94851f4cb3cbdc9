"""make_probe: normalisation, mixed-state orthogonality, shifts, aberration function, bad input."""

import numpy as np
import pytest

import mspt
from mspt.probe import aberration_phase


def test_probe_is_centred_and_normalised():
    p = mspt.make_probe(200e3, 25, (64, 80), 0.15, electrons=250.0)
    assert p.array.shape == (1, 64, 80) and p.array.dtype == np.complex64
    assert p.electrons == pytest.approx(250.0, rel=1e-6)
    intensity = np.abs(p.array[0]) ** 2
    assert np.unravel_index(intensity.argmax(), intensity.shape) == (32, 40)


def test_aperture_limits_the_spectrum():
    p = mspt.make_probe(80e3, 20, 96, 0.1, defocus_A=100)
    spectrum = np.fft.fft2(np.fft.ifftshift(p.array[0].astype(np.complex128)))
    k = np.hypot(np.fft.fftfreq(96, 0.1)[:, None], np.fft.fftfreq(96, 0.1)[None])
    alpha = mspt.wavelength_A(80e3) * k
    outside = alpha >= 20e-3
    assert np.abs(spectrum[outside]).max() < 1e-5 * np.abs(spectrum).max()
    assert np.all(np.abs(spectrum[~outside]) > 0.1 * np.abs(spectrum).max())


def test_mixed_state_modes_are_orthogonal_with_the_requested_weights():
    p = mspt.make_probe(200e3, 25, 64, 0.2, defocus_A=30, modes=4, electrons=10.0, mode_weights=[4, 3, 2, 1])
    a = p.array.reshape(4, -1).astype(np.complex128)
    gram = a.conj() @ a.T
    np.testing.assert_allclose(np.diag(gram).real, [4.0, 3.0, 2.0, 1.0], rtol=1e-5)
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-5
    # The first mode is the coherent probe.
    coherent = mspt.make_probe(200e3, 25, 64, 0.2, defocus_A=30).array[0]
    overlap = abs(np.vdot(coherent, p.array[0])) / (np.linalg.norm(coherent) * np.linalg.norm(p.array[0]))
    assert overlap == pytest.approx(1.0, abs=1e-5)


def test_sub_pixel_shift_is_a_linear_phase_in_fourier_space():
    a = mspt.make_probe(200e3, 30, 64, 0.2).array[0].astype(np.complex128)
    b = mspt.make_probe(200e3, 30, 64, 0.2, shift_px=(0.3, -1.7)).array[0].astype(np.complex128)
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    inside = np.abs(fa) > 1e-3 * np.abs(fa).max()
    k = np.fft.fftfreq(64)
    ramp = np.exp(-2j * np.pi * (k[:, None] * 0.3 + k[None, :] * -1.7))
    np.testing.assert_allclose(fb[inside], (fa * ramp)[inside], rtol=1e-4, atol=1e-5 * np.abs(fa).max())
    # An integer shift is a roll.
    c = mspt.make_probe(200e3, 30, 64, 0.2, shift_px=(2, -3)).array[0]
    np.testing.assert_allclose(c, np.roll(a, (2, -3), axis=(0, 1)), atol=1e-6)


def test_aberration_function_matches_the_textbook_defocus_and_cs_terms():
    lam = mspt.wavelength_A(300e3)
    alpha = np.linspace(0, 0.03, 7)
    chi = aberration_phase(alpha, np.zeros_like(alpha), lam, {"C10": -50.0, "C30": 2e4})
    expected = 2 * np.pi / lam * (-50.0 * alpha**2 / 2 + 2e4 * alpha**4 / 4)
    np.testing.assert_allclose(chi, expected, rtol=1e-12)


def test_aliases_and_defocus_sign():
    a = mspt.make_probe(200e3, 25, 32, 0.2, defocus_A=40, aberrations={"Cs": 1e4})
    assert a.aberrations["C10"] == -40 and a.aberrations["C30"] == 1e4 and a.defocus_A == 40


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(semiangle_mrad=-1), "semiangle_mrad"),
        (dict(gpts=(1, 32)), "gpts"),
        (dict(sampling_A=0.0), "sampling_A"),
        (dict(defocus_A=float("nan")), "defocus_A"),
        (dict(modes=0), "modes"),
        (dict(electrons=-2), "electrons"),
        (dict(aberrations={"C99": 1.0}), "unknown coefficient 'C99'"),
        (dict(aberrations={"C10": 5.0}, defocus_A=3.0), "either defocus_A or C10"),
        (dict(semiangle_mrad=0.01), "passes only the zero frequency"),
        (dict(modes=2, mode_weights=[1.0]), "mode_weights"),
    ],
)
def test_bad_input_names_the_field(kwargs, message):
    args = dict(energy_eV=200e3, semiangle_mrad=25, gpts=32, sampling_A=0.2) | kwargs
    with pytest.raises(ValueError, match=message):
        mspt.make_probe(**args)


def test_bad_energy_names_the_field():
    with pytest.raises(ValueError, match="energy_eV"):
        mspt.make_probe(0.0, 25, 32, 0.2)


def test_aperture_beyond_the_band_limit_warns():
    with pytest.warns(UserWarning, match="semiangle_mrad: 40 mrad exceeds"):
        mspt.make_probe(200e3, 40, 32, 0.5)
