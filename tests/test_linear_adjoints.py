"""Dot-product identities <A x, y> = <x, A^H y> for the linear parts of the multislice model, in float32."""

import numpy as np
import pytest

import mspt
from mspt import ops

RNG = np.random.default_rng(1234)


def crandn(*shape, dtype=np.complex64):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(dtype)


def assert_adjoint(forward, adjoint, x, y, rtol=1e-5):
    lhs = np.vdot(forward(x).astype(np.complex128), y.astype(np.complex128))
    rhs = np.vdot(x.astype(np.complex128), adjoint(y).astype(np.complex128))
    scale = np.linalg.norm(forward(x)) * np.linalg.norm(y)
    assert abs(lhs - rhs) <= rtol * scale, (lhs, rhs)


@pytest.mark.parametrize("shape", [(4, 32, 32), (3, 24, 40), (2, 33, 17)])
@pytest.mark.parametrize("tilt", [(0.0, 0.0), (4.0, -7.0)])
def test_propagation_adjoint(shape, tilt):
    kw = dict(dz_A=3.0, energy_eV=200e3, sampling_A=(0.15, 0.2), tilt_mrad=tilt)
    assert_adjoint(lambda w: ops.propagate(w, **kw), lambda w: ops.propagate_adjoint(w, **kw), crandn(*shape), crandn(*shape))


def test_propagation_matches_numpy_formula():
    """Propagation is an independent numpy formula away from the kernels: F^-1(H F psi)."""
    w = crandn(2, 32, 48).astype(np.complex128)
    dz, lam, s, tilt = 5.0, mspt.wavelength_A(300e3), (0.1, 0.12), (2.0, 3.0)
    ky = np.fft.fftfreq(32, s[0])[:, None]
    kx = np.fft.fftfreq(48, s[1])[None, :]
    cutoff = 2 / 3 / (2 * max(s))
    H = np.exp(-1j * np.pi * lam * dz * (ky**2 + kx**2) - 2j * np.pi * dz * (ky * np.tan(2e-3) + kx * np.tan(3e-3)))
    H = H * (ky**2 + kx**2 < cutoff**2)
    expected = np.fft.ifft2(np.fft.fft2(w) * H)
    got = ops.propagate(w, dz, 300e3, s, tilt_mrad=tilt)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-12


@pytest.mark.parametrize("shape", [(5, 32, 32), (3, 21, 30)])
def test_fourier_shift_adjoint(shape):
    shifts = RNG.uniform(-3, 3, (shape[0], 2))
    assert_adjoint(
        lambda w: ops.fourier_shift(w, shifts), lambda w: ops.fourier_shift_adjoint(w, shifts), crandn(*shape), crandn(*shape)
    )


def test_fourier_shift_by_integer_is_a_roll():
    w = crandn(1, 16, 20)
    got = ops.fourier_shift(w, [[3.0, -5.0]])
    np.testing.assert_allclose(got, np.roll(w, (3, -5), axis=(1, 2)), atol=1e-5)


@pytest.mark.parametrize("window", [(16, 16), (12, 20)])
def test_window_extraction_adjoint_is_overlap_add(window):
    H, W = 50, 61
    positions = RNG.uniform(12, 38, (37, 2))
    x = crandn(H, W)
    y = crandn(len(positions), *window)
    assert_adjoint(
        lambda o: ops.extract_windows(o, positions, window),
        lambda p: ops.extract_windows_adjoint(p, positions, (H, W)),
        x,
        y,
    )


def test_window_placement_convention():
    """The window of (y, x) covers rows [round(y) - ny//2, + ny): check against slicing."""
    obj = crandn(40, 40)
    got = ops.extract_windows(obj, [[20.4, 17.6]], (8, 10))
    np.testing.assert_array_equal(got[0], obj[20 - 4 : 20 - 4 + 8, 18 - 5 : 18 - 5 + 10])


def test_window_outside_object_is_a_value_error():
    with pytest.raises(ValueError, match=r"positions_px\[1\].*outside the 40x40 object"):
        ops.extract_windows(crandn(40, 40), [[20, 20], [3.0, 20]], (16, 16))


def test_illumination_and_window_power_equal_their_compositions():
    positions = RNG.uniform(10, 30, (23, 2))
    patch = RNG.uniform(0, 1, (12, 14)).astype(np.float32)
    tiles = np.broadcast_to(patch.astype(np.complex64), (23, 12, 14))
    expected = ops.extract_windows_adjoint(tiles, positions, (44, 46)).real
    np.testing.assert_allclose(ops.illumination(patch, positions, (44, 46)), expected, rtol=1e-6, atol=1e-6)
    obj = crandn(44, 46)
    power = np.sum(np.abs(ops.extract_windows(obj, positions, (12, 14))) ** 2, axis=0)
    np.testing.assert_allclose(ops.window_power(obj, positions, (12, 14)), power, rtol=1e-5)
