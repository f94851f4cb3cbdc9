"""Half-data Fourier ring correlation (mspt.ptycho.half_data_frc): the correlation and its thresholds against
analytic cases, and the resolution it estimates without ground truth against the resolution measured with
the ground truth on the same reconstructions.

"The same criterion". Each half reconstruction is the object plus its own error (the halves share no
pattern, so their counting-noise errors are independent): h_i = s + n_i. Then per ring
FRC(h_1, h_2) = S / (S + N) and FRC(h_i, truth) = sqrt(S / (S + N)), so the frequency where the half-data
FRC crosses 1/7 is the one where each half's FRC against the truth crosses sqrt(1/7) = 0.378. The
ground-truth resolution is that crossing, of the two halves' FRC against the band-limited ground-truth
summed phase (mean of the two curves), on the very maps the half-data FRC correlated, with the same rings,
window and crossing rule. (For the full-data map the same criterion is Rosenthal & Henderson's 0.5.) A
common error of both halves (a model error, a shared start) would make the half-data estimate optimistic:
that is what the comparison catches.
"""

import numpy as np
import pytest

from mspt.ops import bandlimit_cutoff_invA
from mspt.ptycho import PtychoConfig, half_data_frc, load_result, reconstruct, save_report, save_result
from mspt.ptycho.frc import (
    ONE_SEVENTH, RING_WIDTH_PX, fourier_ring_correlation, fourier_shift_image, half_bit_threshold, interleaved_halves,
    register_shift, resolution_A, subset_scan,
)  # fmt: skip


def smooth_random_image(shape, seed, scale_px=2.0):
    rng = np.random.default_rng(seed)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.fftfreq(shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(rng.normal(size=shape)) * np.exp(-((ky**2 + kx**2) * (scale_px * np.pi) ** 2))).real


def test_frc_of_signal_plus_independent_noise_is_the_signal_fraction(measured):
    """White signal of power 1 plus independent white noise of power 1 in each map: FRC = 1 / (1 + 1) in
    every ring, to the ring's sampling error; identical maps give 1."""
    rng = np.random.default_rng(1)
    signal = rng.normal(size=(128, 128))
    a, b = signal + rng.normal(size=signal.shape), signal + rng.normal(size=signal.shape)
    k, frc, pixels = fourier_ring_correlation(a, b, 0.2)
    rings = slice(4, None)  # enough Fourier pixels per ring for a tight estimate
    error = np.abs(frc[rings] - 0.5) * np.sqrt(pixels[rings])
    measured("FRC white signal + noise", "max |FRC - 0.5| in units of 1/sqrt(ring pixels)", error.max(), 3.0)
    assert error.max() < 3.0
    assert np.allclose(fourier_ring_correlation(a, a, 0.2)[1][1:], 1.0)
    assert k[1] == pytest.approx(RING_WIDTH_PX / (128 * 0.2)) and k[-1] == pytest.approx(0.5 / 0.2)


def test_half_bit_threshold_and_the_crossing():
    assert half_bit_threshold([1])[0] == pytest.approx(1.0, abs=1e-4)
    assert half_bit_threshold([1e12])[0] == pytest.approx(0.2071 / 1.2071, rel=1e-5)
    # A curve 1 - k falls through 1/7 at k = 6/7: resolution 7/6 A, interpolated between rings.
    k = np.linspace(0, 1, 11)
    assert resolution_A(k, 1 - k, ONE_SEVENTH) == (pytest.approx(7 / 6), False)
    # Signal-free rings below the peak (a crystal's gaps) and a single ring dipping below do not end it.
    gaps = np.where(k < 0.15, 0.0, 1 - k)
    dip = np.where(np.abs(k - 0.5) < 0.01, 0.0, 1 - k)
    assert resolution_A(k, gaps, ONE_SEVENTH)[0] == pytest.approx(7 / 6)
    assert resolution_A(k, dip, ONE_SEVENTH)[0] == pytest.approx(7 / 6)
    assert resolution_A(k, np.ones_like(k), ONE_SEVENTH) == (pytest.approx(1.0), True)


def test_sub_pixel_registration_recovers_a_known_shift():
    image = smooth_random_image((96, 96), 2)
    shifted = fourier_shift_image(image, (-2.35, 1.6))
    assert np.allclose(register_shift(image, shifted), (2.35, -1.6), atol=0.05)


def test_interleaved_halves_are_a_checkerboard_of_the_raster():
    import ptycho_data as pd

    scan = pd.dataset().scan()  # (16, 16, ky, kx) data
    a, b = interleaved_halves(scan)
    assert len(np.intersect1d(a, b)) == 0 and len(a) == len(b) == scan.n_positions // 2
    rows, cols = np.divmod(a, scan.data.shape[1])
    assert np.all((rows + cols) % 2 == 0)
    listed = subset_scan(scan, np.arange(scan.n_positions))  # (N, ky, kx) data: alternate positions
    a, b = interleaved_halves(listed)
    assert np.array_equal(a, np.arange(0, scan.n_positions, 2)) and np.array_equal(b, a + 1)
    assert np.array_equal(listed.read(b[:3]), scan.read(b[:3]))


N_SLICES = 8


@pytest.fixture(scope="module")
def low_dose():
    """SrTiO3 [001], 31 A, 24 x 24 positions 0.6 A apart at 100 e/A^2: noise limits the resolution below
    the multislice band limit (0.58 A), so the estimate is not simply the band limit."""
    pytest.importorskip("abtem")
    import ptycho_data as pd

    return pd.dataset(dose_e_per_A2=100.0, scan_shape=(24, 24))


def test_half_data_resolution_matches_the_ground_truth_resolution(low_dose, measured):
    ds = low_dose
    config = PtychoConfig(n_slices=N_SLICES, slice_thickness_A=ds.thickness_A / N_SLICES, iterations=20, progress=False)
    frc = half_data_frc(ds.scan("nominal", "entrance"), config)
    pixel = ds.pixel_size_A
    cutoff = bandlimit_cutoff_invA((pixel, pixel))
    shape = frc.maps.shape[1:]
    # The truth on the maps' grid (the simulated object is periodic: a Fourier shift moves it exactly).
    truth = fourier_shift_image(ds.phase_truth.astype(np.float64), -frc.maps_origin_A / pixel)[: shape[0], : shape[1]]
    curves = []
    for half in frc.maps:
        aligned = fourier_shift_image(half, register_shift(truth, half))
        k, curve, _ = fourier_ring_correlation(aligned, truth, pixel, cutoff)
        curves.append(curve)
    truth_resolution, bounded = resolution_A(k, np.mean(curves, 0), np.sqrt(ONE_SEVENTH))
    assert not bounded and not frc.resolution_bounded, "noise, not the band limit, must set the resolution"
    error = frc.resolution_A / truth_resolution - 1
    what = "half-data FRC, SrTiO3 100 e/A^2"
    measured(what, f"1/7: {frc.resolution_A:.3f} A vs truth {truth_resolution:.3f} A, rel. error", abs(error), 0.15)
    half_bit_truth, _ = resolution_A(k, np.mean(curves, 0), np.sqrt(frc.half_bit))
    half_bit_error = abs(frc.resolution_half_bit_A / half_bit_truth - 1)
    measured(what, f"half-bit: {frc.resolution_half_bit_A:.3f} A vs truth {half_bit_truth:.3f} A, rel. error",
             half_bit_error, 0.15)  # fmt: skip
    assert abs(error) <= 0.15
    assert 1 / cutoff < frc.resolution_A < 2.0  # inside the band, and atomic resolution


def test_reconstruct_fills_saves_and_draws_the_frc(tmp_path):
    pytest.importorskip("abtem")
    pytest.importorskip("matplotlib")
    import ptycho_data as pd

    ds = pd.dataset()
    config = PtychoConfig(n_slices=4, slice_thickness_A=ds.thickness_A / 4, iterations=4, progress=False,
                          self_check="frc")  # fmt: skip
    result = reconstruct(ds.scan("nominal", "entrance"), config)
    direct = half_data_frc(ds.scan("nominal", "entrance"), config.replace(self_check="none"))
    assert result.frc_resolution_A == pytest.approx(direct.resolution_A)
    assert result.frc["resolution_half_bit_A"] == pytest.approx(direct.resolution_half_bit_A)
    save_result(tmp_path / "results.h5", result)
    again = load_result(tmp_path / "results.h5")
    assert again.frc_resolution_A == pytest.approx(result.frc_resolution_A)
    assert np.allclose(again.frc["frc"], direct.frc)
    assert save_report(result, tmp_path / "report.png").stat().st_size > 0


def test_bad_input_is_rejected():
    import ptycho_data as pd

    scan = pd.dataset().scan()
    with pytest.raises(TypeError, match="scan"):
        half_data_frc(object(), PtychoConfig())
    with pytest.raises(ValueError, match="self_check"):
        PtychoConfig(self_check="fsc")
    with pytest.raises(ValueError, match="a, b"):
        fourier_ring_correlation(np.zeros((16, 16)), np.zeros((16, 12)), 0.2)
    with pytest.raises(ValueError, match="at least 8 positions"):
        half_data_frc(subset_scan(scan, np.arange(4)), PtychoConfig())
