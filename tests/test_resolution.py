"""Resolution from the 3D power spectrum and the Fourier shell correlation, against analytic cut-offs of
volumes whose signal and noise spectra are known exactly."""

import numpy as np
import pytest

from mspt.analysis import FSC, fsc, half_bit_threshold, resolution, save_resolution_report

VOXEL_A = 0.2
SIDE = 128
ATOMS = 2000
ATOM_SIGMA_A = 0.2
BLUR_SIGMA_A = {"z": 0.66, "y": 0.22, "x": 0.22}  # a reconstruction blurred three times more along the beam
NOISE = 0.004  # per-voxel standard deviation, against atoms of unit integrated weight per voxel


def frequencies(shape, voxel_A):
    """k_z, k_y, k_x (1/A) of an rfftn spectrum, broadcastable."""
    z, y, x = shape
    return (
        np.fft.fftfreq(z, voxel_A)[:, None, None],
        np.fft.fftfreq(y, voxel_A)[None, :, None],
        np.fft.rfftfreq(x, voxel_A)[None, None, :],
    )


def gaussian_transfer(shape, voxel_A, sigmas_A):
    """Fourier transform of a unit-integral Gaussian with standard deviations (z, y, x) in A."""
    k = frequencies(shape, voxel_A)
    return np.exp(-2 * np.pi**2 * sum((s * kk) ** 2 for s, kk in zip(sigmas_A, k)))


def total_sigma_A(axis):
    return float(np.hypot(ATOM_SIGMA_A, BLUR_SIGMA_A[axis]))


@pytest.fixture(scope="module")
def blurred_atoms():
    """Gaussian atoms at uniformly random voxel positions (periodic), blurred by the anisotropic Gaussian,
    plus white noise. Each atom's weight 1 sits on one voxel before the (exact, Fourier-space) blur, so
    for k != 0 the signal power per Fourier coefficient is (ATOMS / voxels) |G(k)|^2 times the number of
    voxels, and the noise power NOISE^2 times the number of voxels."""
    rng = np.random.default_rng(11)
    shape = (SIDE,) * 3
    atoms = np.zeros(shape)
    np.add.at(atoms, tuple(rng.integers(0, SIDE, (3, ATOMS))), 1.0)
    sigmas = [total_sigma_A(axis) for axis in "zyx"]
    signal = np.fft.irfftn(np.fft.rfftn(atoms) * gaussian_transfer(shape, VOXEL_A, sigmas), s=shape, axes=(0, 1, 2))
    return signal + rng.normal(0.0, NOISE, shape)


def analytic_cutoff_A(sigma_A, snr_threshold=1.0):
    """Where the blurred signal's power along an axis, (ATOMS / voxels) exp(-4 pi^2 sigma^2 k^2) per voxel,
    falls to snr_threshold times the noise power NOISE^2: 1 / k there."""
    signal_over_noise = ATOMS / SIDE**3 / NOISE**2
    k = np.sqrt(np.log(signal_over_noise / snr_threshold) / (4 * np.pi**2 * sigma_A**2))
    return 1.0 / k


def test_power_spectrum_resolution_recovers_the_known_cutoffs(blurred_atoms, measured):
    result = resolution(blurred_atoms, VOXEL_A)
    for axis, measured_A in zip("zyx", result.resolution_A):
        expected_A = analytic_cutoff_A(total_sigma_A(axis))
        error = abs(measured_A / expected_A - 1)
        measured("power_spectrum_resolution", f"relative error along {axis} (expected {expected_A:.2f} A)", error, 0.1)
        assert error < 0.1, (axis, measured_A, expected_A)
    assert result.axial_A == result.resolution_A[0]
    assert result.axial_A > 2 * result.transverse_A  # the anisotropy is seen
    assert result.at_nyquist == (False, False, False)
    assert result.spectra.shape == (3, SIDE // 2) and result.k_invA[-1] == pytest.approx(1 / (2 * VOXEL_A))


def test_noise_floor_is_the_true_noise_power(blurred_atoms, measured):
    """Without the edge taper the expected noise power per coefficient is exactly NOISE^2 times the voxel
    count (the volume is periodic, so the taper is not needed here)."""
    result = resolution(blurred_atoms, VOXEL_A, taper=0.0)
    error = abs(result.noise_power / (NOISE**2 * SIDE**3) - 1)
    assert measured("power_spectrum_resolution", "noise floor relative error", error, 0.02) < 0.02
    # The same cut-offs without the taper, and a stricter criterion gives a coarser resolution as predicted.
    strict = resolution(blurred_atoms, VOXEL_A, taper=0.0, snr_threshold=4.0)
    for axis in range(3):
        sigma = total_sigma_A("zyx"[axis])
        assert result.resolution_A[axis] == pytest.approx(analytic_cutoff_A(sigma), rel=0.1)
        assert strict.resolution_A[axis] == pytest.approx(analytic_cutoff_A(sigma, 4.0), rel=0.1)


def test_information_up_to_nyquist_is_flagged():
    rng = np.random.default_rng(2)
    sharp = rng.normal(size=(32, 32, 32))  # white signal, no noise floor of its own beyond a given one
    result = resolution(sharp, 0.5, noise_power=1e-3 * np.mean(np.abs(np.fft.rfftn(sharp)) ** 2))
    assert result.at_nyquist == (True, True, True)
    assert result.resolution_A == pytest.approx((1.0, 1.0, 1.0))  # 2 d


def two_halves(rng, sigmas_A, noise, side=96, voxel_A=0.25):
    """A Gaussian random signal whose power spectrum per coefficient is voxels * |G(k)|^2 (white unit noise
    blurred by G), plus independent white noise of standard deviation ``noise`` in each half."""
    shape = (side,) * 3
    transfer = gaussian_transfer(shape, voxel_A, sigmas_A)
    signal = np.fft.irfftn(np.fft.rfftn(rng.normal(size=shape)) * transfer, s=shape, axes=(0, 1, 2))
    return signal + rng.normal(0, noise, shape), signal + rng.normal(0, noise, shape)


def expected_fsc(sigmas_A, noise, side, voxel_A, k_bins, cone_axis=None, half_angle_deg=30.0):
    """SNR / (1 + SNR) per shell, with the SNR summed over the shell's coefficients (those in the cone),
    computed on the full (not half) spectrum."""
    k = np.meshgrid(*(np.fft.fftfreq(side, voxel_A),) * 3, indexing="ij")
    k_abs = np.sqrt(sum(kk**2 for kk in k))
    signal = np.exp(-4 * np.pi**2 * sum((s * kk) ** 2 for s, kk in zip(sigmas_A, k)))
    keep = np.ones(k_abs.shape, bool)
    if cone_axis is not None:
        keep = np.abs(k["zyx".index(cone_axis)]) >= np.cos(np.radians(half_angle_deg)) * k_abs
    width = k_bins[0]
    shell = np.rint(k_abs / width).astype(int)
    out = []
    for index in range(1, len(k_bins) + 1):
        members = keep & (shell == index)
        mean_signal = signal[members].mean()
        out.append(mean_signal / (mean_signal + noise**2))
    return np.array(out)


def crossing_A(k, curve, threshold):
    """1 / k where ``curve`` first falls below ``threshold`` (a constant or one value per shell)."""
    gap = curve - np.broadcast_to(threshold, curve.shape)
    below = np.flatnonzero(gap < 0)[0]
    t = gap[below - 1] / (gap[below - 1] - gap[below])
    return 1 / (k[below - 1] + t * (k[below] - k[below - 1]))


def test_fsc_follows_the_analytic_snr_curve(measured):
    rng = np.random.default_rng(4)
    sigmas, noise, side, voxel = (0.3, 0.3, 0.3), 0.02, 96, 0.25
    a, b = two_halves(rng, sigmas, noise, side, voxel)
    result = fsc(a, b, voxel)
    expected = expected_fsc(sigmas, noise, side, voxel, result.k_invA)
    well_sampled = result.n_coefficients >= 500
    deviation = np.abs(result.fsc - expected)[well_sampled].max()
    assert measured("fsc", "largest |FSC - SNR/(1+SNR)| (shells >= 500 coefficients)", deviation, 0.05) < 0.05
    # Shells tile the full spectrum inside the Nyquist sphere.
    k_abs = np.sqrt(sum(kk**2 for kk in np.meshgrid(*(np.fft.fftfreq(side, voxel),) * 3, indexing="ij")))
    inside = np.rint(k_abs / result.k_invA[0]).astype(int)
    np.testing.assert_array_equal(result.n_coefficients, np.bincount(inside.ravel())[1 : len(result.k_invA) + 1])

    for label, found, threshold in [
        ("1/7", result.resolution_one_seventh_A, 1 / 7),
        ("half-bit", result.resolution_half_bit_A, half_bit_threshold(result.n_coefficients)),
    ]:
        reference = crossing_A(result.k_invA, expected, threshold)
        error = abs(found / reference - 1)
        assert measured("fsc", f"{label} crossing relative error", error, 0.03) < 0.03
    # The 1/7 crossing of the analytic curve itself: SNR = 1/6 at k = sqrt(ln(6 / noise^2)) / (2 pi sigma).
    analytic = 2 * np.pi * sigmas[0] / np.sqrt(np.log(6 / noise**2))
    assert result.resolution_one_seventh_A == pytest.approx(analytic, rel=0.03)


def test_conical_fsc_separates_axial_from_transverse(measured):
    rng = np.random.default_rng(9)
    sigmas, noise, side, voxel = (0.6, 0.3, 0.3), 0.02, 96, 0.25
    a, b = two_halves(rng, sigmas, noise, side, voxel)
    found = {}
    for axis in "zx":
        result = fsc(a, b, voxel, cone_axis=axis, cone_half_angle_deg=30.0)
        expected = expected_fsc(sigmas, noise, side, voxel, result.k_invA, axis, 30.0)
        # A shell of n coefficients estimates the FSC to within about (1 - FSC^2) / sqrt(n) (one sigma).
        well_sampled = result.n_coefficients >= 100
        spread = (1 - expected**2) / np.sqrt(result.n_coefficients)
        deviation = (np.abs(result.fsc - expected) / spread)[well_sampled].max()
        assert measured("fsc_cone", f"largest deviation about {axis} (sigmas)", deviation, 4.0) < 4.0
        reference = crossing_A(result.k_invA, expected, 1 / 7)
        error = abs(result.resolution_one_seventh_A / reference - 1)
        assert measured("fsc_cone", f"1/7 crossing relative error about {axis}", error, 0.05) < 0.05
        found[axis] = result.resolution_one_seventh_A
    assert found["z"] > 1.6 * found["x"]  # twice the blur along z: a coarser axial resolution


def test_report_figure(blurred_atoms, tmp_path):
    result = resolution(blurred_atoms[:64, :64, :64], VOXEL_A)
    halves = fsc(blurred_atoms[:64, :64, :64], blurred_atoms[64:, 64:, 64:], VOXEL_A)
    path = save_resolution_report(result, tmp_path / "resolution.png", fsc=[halves])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert isinstance(halves, FSC)


def test_bad_inputs_name_the_argument():
    volume = np.zeros((32, 32, 32))
    with pytest.raises(ValueError, match="volume: expected a volume"):
        resolution(np.zeros((32, 32)), 0.2)
    with pytest.raises(ValueError, match="voxel_size_A: expected a positive"):
        resolution(volume, -0.2)
    with pytest.raises(ValueError, match="cone_half_angle_deg: expected an angle"):
        resolution(volume, 0.2, cone_half_angle_deg=120)
    with pytest.raises(ValueError, match="smoothing_shells: expected an odd"):
        resolution(volume, 0.2, smoothing_shells=2)
    with pytest.raises(ValueError, match="volume: contains NaN"):
        resolution(np.full((32, 32, 32), np.nan), 0.2)
    with pytest.raises(ValueError, match=r"b: expected the shape of a \(32, 32, 32\)"):
        fsc(volume, np.zeros((32, 32, 16)), 0.2)
    with pytest.raises(ValueError, match="cone_axis: expected one of"):
        fsc(volume, volume, 0.2, cone_axis="w")
    with pytest.raises(TypeError, match="result: expected an mspt.analysis.Resolution"):
        save_resolution_report({}, "unused.png")
