"""Checks of the simulated ptychography datasets (tests/ptycho_data.py): the glue between abTEM and mspt's
conventions that the ptychography engine's tests rely on, not the engine.

* The abTEM slice loop that makes the patterns is abTEM's own multislice (Probe.multislice agrees with it).
* mspt.ops.multislice_forward with the dataset's transmission slices, probe parameters, TRUE positions and
  tilt reproduces the noise-free patterns to < 1e-3: the position frame, window convention, defocus
  reference, tilt sign and mixed-state definition line up. Negative controls (nominal positions, the opposite
  tilt, no tilt, a coherent probe for partially coherent data) must land far off.
* Counts follow the dose, the truth sits on the reconstruction grid, the registration helper recovers a
  known shift.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

abtem = pytest.importorskip("abtem")
pytest.importorskip("ase")
pytest.importorskip("scipy")

import mspt  # noqa: E402
import ptycho_data  # noqa: E402
from abtem.core.energy import energy2sigma  # noqa: E402
from mspt.constants import wavelength_A  # noqa: E402

TOL = 1e-3

# The "glue" dataset: everything that could be mis-signed at once, on a small scan.
GLUE = ptycho_data.SimParams(
    scan_shape=(6, 6), scan_step_A=0.7, tilt_mrad=(5.0, -3.0), position_rms_A=0.5, source_size_A=0.3,
    source_samples=3, aberrations={"C30": 1e4, "C12": 20.0, "phi12": 0.4}, defocus_A=60.0, dose_e_per_A2=2e4,
    seed=3,
)  # fmt: skip


# A spinel with vacancies on a tiny scan: the second crystal, and slabs that differ in depth.
SPINEL = ptycho_data.SimParams(crystal="Co3O4", thickness_cells=2, scan_shape=(3, 3), vacancy_fraction=0.05, seed=1)


@pytest.fixture(scope="session")
def spinel_ds():
    return ptycho_data.dataset(SPINEL)


@pytest.fixture(scope="session")
def default_ds():
    return ptycho_data.dataset()


@pytest.fixture(scope="session")
def glue_ds():
    return ptycho_data.dataset(GLUE)


def rel_l2(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def mspt_patterns(ds, positions_px=None, tilt_mrad=None, coherent=False) -> np.ndarray:
    """mspt's model of the dataset's noise-free counts: the incoherent sum over the source samples of the
    probe shifted inside its window (one window per scan position), each carrying its share of the dose."""
    positions_px = ds.positions_px if positions_px is None else positions_px
    tilt_mrad = ds.tilt_mrad if tilt_mrad is None else tilt_mrad
    offsets = np.zeros((1, 2)) if coherent else ds.source_offsets_A / ds.pixel_size_A
    out = 0.0
    for shift in offsets:
        probe = mspt.make_probe(
            ds.energy_eV, ds.semiangle_mrad, ds.gpts_k, ds.pixel_size_A, defocus_A=ds.defocus_A,
            aberrations=ds.aberrations, shift_px=shift, electrons=ds.electrons_per_pattern / len(offsets),
        )  # fmt: skip
        out = out + mspt.ops.multislice_forward(
            ds.transmission_slices, probe, positions_px, ds.slice_thickness_A, tilt_mrad=tilt_mrad
        )
    return out


def test_window_loop_is_abtems_multislice(glue_ds, measured):
    # ptycho_data.abtem_window_patterns runs abTEM's multislice step by step (so that it can take
    # transmission functions); on potential slices it must equal abTEM's Probe.multislice, tilt and
    # aberrations included.
    ds = glue_ds
    p = ds.params
    w = ds.gpts_k
    with abtem.config.set(ptycho_data.ABTEM_SETTINGS):
        probe = abtem.Probe(semiangle_cutoff=p.semiangle_mrad, energy=p.energy_eV, soft=False, defocus=p.defocus_A,
                            tilt=(p.tilt_mrad[1], p.tilt_mrad[0]), gpts=w, sampling=ds.pixel_size_A,
                            **ds.aberrations)  # fmt: skip
        potential_xy = np.swapaxes(ds.potential_slices[:, 30 : 30 + w, 40 : 40 + w], -1, -2).astype(np.float64)
        positions_xy = np.array([[6.1, 6.4], [5.7, 6.0]])
        ours = ptycho_data.abtem_window_patterns(probe, potential_xy, ds.slice_thickness_A, positions_xy)
        crop = abtem.PotentialArray(potential_xy, slice_thickness=ds.slice_thickness_A, sampling=ds.pixel_size_A)
        ref = probe.multislice(crop, scan=abtem.CustomScan(positions_xy),
                               detectors=abtem.PixelatedDetector(max_angle="full"), lazy=False)  # fmt: skip
        ref = np.asarray(ref.array).reshape(ours.shape)
    err = measured("ptycho_data", "abTEM slice loop vs Probe.multislice", rel_l2(ours, ref), 1e-9)
    assert err < 1e-9


@pytest.mark.parametrize("which", ["default", "glue", "spinel"])
def test_mspt_forward_reproduces_abtem_patterns(default_ds, glue_ds, spinel_ds, which, measured):
    ds = {"default": default_ds, "glue": glue_ds, "spinel": spinel_ds}[which]
    ref = ds.intensities.reshape(-1, ds.gpts_k, ds.gpts_k)
    ours = mspt_patterns(ds)
    per_position = [rel_l2(o, r) for o, r in zip(ours, ref)]
    err = measured("ptycho_data", f"{which}: mspt forward vs abTEM patterns (worst position)", max(per_position), TOL)
    assert err < TOL


def test_glue_comparison_sees_each_convention(glue_ds, measured):
    # The same comparison with one convention wrong at a time must fail by far: it has the power to catch them.
    ds = glue_ds
    ref = ds.intensities.reshape(-1, ds.gpts_k, ds.gpts_k)
    ty, tx = ds.tilt_mrad
    wrong = {
        "nominal positions": dict(positions_px=ds.nominal_positions_px),
        "opposite tilt": dict(tilt_mrad=(-ty, -tx)),
        "tilt axes swapped": dict(tilt_mrad=(tx, ty)),
        "no tilt": dict(tilt_mrad=(0.0, 0.0)),
        "coherent probe": dict(coherent=True),
        "positions 0.1 px off": dict(positions_px=ds.positions_px + [0.1, 0.0]),
    }
    for name, kwargs in wrong.items():
        err = rel_l2(mspt_patterns(ds, **kwargs), ref)
        measured("ptycho_data", f"glue with {name} (must differ)", err, 10 * TOL, ">")
        assert err > 10 * TOL, name


def test_tilt_walks_the_wave_towards_plus_x(glue_ds, measured):
    # The sign in words: with tx > 0 a probe's exit wave after S propagations through vacuum is its untilted
    # exit wave moved by S dz tan(tx) towards +x (a Fourier shift, exact on the periodic window).
    from mspt.probe import fourier_shift

    ds = glue_ds
    n, S, dz, tx = 64, 16, 2.0, 20.0
    probe = mspt.make_probe(ds.energy_eV, ds.semiangle_mrad, n, ds.pixel_size_A, defocus_A=0.0)
    ones = np.ones((S + 1, n, n), np.complex128)
    waves = {}
    for t in (0.0, tx):
        _, w = mspt.ops.multislice_forward(
            ones, probe.array.astype(np.complex128), [[n // 2, n // 2]], dz, ds.energy_eV, ds.pixel_size_A,
            tilt_mrad=(0.0, t), return_exit_waves=True,
        )  # fmt: skip
        waves[t] = w[0, 0]
    shift = S * dz * math.tan(tx * 1e-3) / ds.pixel_size_A
    err = measured("ptycho_data", "tilted vacuum exit wave vs untilted moved +x", rel_l2(np.abs(waves[tx]),
                   np.abs(fourier_shift(waves[0.0], (0.0, shift)))), 1e-4)  # fmt: skip
    assert err < 1e-4
    assert rel_l2(np.abs(waves[tx]), np.abs(fourier_shift(waves[0.0], (0.0, -shift)))) > 0.1


def test_counts_follow_the_dose(default_ds, glue_ds, measured):
    for name, ds in (("default", default_ds), ("glue", glue_ds)):
        expected = ds.intensities.sum((-2, -1), dtype=np.float64)
        counts = ds.data.sum((-2, -1), dtype=np.float64)
        # Noise-free: dose * step area, less the 1-2 % that scatters beyond the band limit.
        ratio = float(expected.mean() / ds.electrons_per_pattern)
        measured("ptycho_data", f"{name}: 1 - mean expected counts / (dose * step^2)", 1 - ratio, 0.03)
        assert 0.97 < ratio <= 1.0 + 1e-6
        # Poisson: the total over the scan within 5 sigma of its expectation, and the data are integers.
        z = abs(counts.sum() - expected.sum()) / math.sqrt(expected.sum())
        measured("ptycho_data", f"{name}: total counts deviation (sigmas)", z, 5.0)
        assert z < 5.0
        assert np.array_equal(ds.data, np.round(ds.data)) and ds.data.min() >= 0 and ds.data.dtype == np.float32
        # Per-pixel variance ~ mean where counts are high (the bright field).
        bright = ds.intensities > 50
        normalised = (ds.data[bright] - ds.intensities[bright]) / np.sqrt(ds.intensities[bright])
        assert 0.9 < float(normalised.var()) < 1.1


def test_geometry_and_calibrations(default_ds):
    ds = default_ds
    p = ds.params
    ny, nx = p.scan_shape
    assert ds.data.shape == (ny, nx, p.gpts_k, p.gpts_k) and ds.data.dtype == np.float32
    assert ds.intensities.shape == ds.data.shape
    # Reconstruction pixel = 1 / (n_k dk) = the potential's pixel; detector mrad = dk * lambda.
    assert math.isclose(ds.pixel_size_A, 1.0 / (p.gpts_k * ds.reciprocal_sampling_invA), rel_tol=1e-12)
    assert math.isclose(ds.detector_sampling_mrad, ds.reciprocal_sampling_invA * ds.wavelength_A * 1e3, rel_tol=1e-12)
    assert math.isclose(ds.wavelength_A, wavelength_A(p.energy_eV), rel_tol=1e-6)
    # The truth is on the reconstruction grid.
    Y, X = ds.object_shape
    assert ds.potential_slices.shape == (ds.num_slices, Y, X) == ds.transmission_slices.shape
    assert ds.phase_truth.shape == ds.potential_sum.shape == (Y, X)
    assert math.isclose(ds.pixel_size_A, 3.905 / 20, rel_tol=1e-12) and Y == X and Y % 20 == 0  # whole SrTiO3 cells
    assert math.isclose(ds.thickness_A, ds.num_slices * ds.slice_thickness_A, rel_tol=1e-12)
    assert math.isclose(ds.defocus_centre_A, ds.defocus_A - ds.thickness_A / 2)
    # Nominal raster: row-major (scan_y, scan_x), step scan_step_A, centred on pixel (Y // 2, X // 2).
    grid = ds.nominal_positions_A.reshape(ny, nx, 2)
    assert np.allclose(np.diff(grid[:, :, 0], axis=0), p.scan_step_A)
    assert np.allclose(np.diff(grid[:, :, 1], axis=1), p.scan_step_A)
    assert np.allclose(np.diff(grid[:, :, 0], axis=1), 0) and np.allclose(np.diff(grid[:, :, 1], axis=0), 0)
    assert np.allclose(ds.nominal_positions_px.mean(0), (Y // 2, X // 2))
    assert np.array_equal(ds.positions_A, ds.nominal_positions_A)  # default: no position errors
    # Patterns centred: the mean pattern's centre of mass is the zero frequency (ky // 2, kx // 2).
    mean = ds.intensities.mean((0, 1))
    k = np.arange(p.gpts_k)
    cy = float((mean.sum(1) * k).sum() / mean.sum())
    cx = float((mean.sum(0) * k).sum() / mean.sum())
    assert abs(cy - p.gpts_k // 2) < 0.2 and abs(cx - p.gpts_k // 2) < 0.2


def test_dataset_as_mspt_scan(glue_ds):
    ds = glue_ds
    scan = ds.scan(positions="true", defocus_reference="centre")
    assert np.allclose(scan.sampling_A, ds.pixel_size_A, rtol=1e-12)
    assert np.allclose(scan.positions(), ds.positions_A) and scan.defocus_A == ds.defocus_centre_A
    assert abs(scan.check_patterns() / ds.electrons_per_pattern - 1) < 0.03


def test_perturbed_positions_and_source(glue_ds):
    ds = glue_ds
    dev = ds.positions_A - ds.nominal_positions_A
    assert 0.3 < float(dev.std()) < 0.7 and abs(float(dev.mean())) < 0.2  # rms 0.5 A per axis
    assert ds.source_offsets_A.shape == (3, 2) and np.allclose(ds.source_offsets_A.mean(0), 0, atol=1e-12)
    # Every probe window (all source samples) lies inside the object.
    w = ds.gpts_k
    every = (ds.positions_px[:, None] + ds.source_offsets_A[None] / ds.pixel_size_A).reshape(-1, 2)
    lo = np.floor(every + 0.5) - w // 2
    assert lo.min() >= 0 and (lo + w).max() <= min(ds.object_shape)


def test_ground_truth_phase(default_ds, measured):
    ds = default_ds
    assert math.isclose(ds.sigma, float(energy2sigma(ds.energy_eV)), rel_tol=1e-12)
    cutoff_aperture = 2 * ds.semiangle_mrad * 1e-3 / ds.wavelength_A
    cutoff_aa = 2.0 / 3.0 / (2.0 * ds.pixel_size_A)
    assert math.isclose(ds.phase_cutoff_invA, min(cutoff_aperture, cutoff_aa))
    assert np.allclose(ds.potential_sum, ds.potential_slices.sum(0), rtol=1e-5, atol=1e-3)
    expected = ds.sigma * ds.potential_sum.astype(np.float64)
    expected = ptycho_data.bandlimit(expected, ds.pixel_size_A, ds.phase_cutoff_invA)
    assert np.allclose(ds.phase_truth, expected, atol=1e-5)
    spectrum = np.abs(np.fft.fft2(ds.phase_truth))
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(ds.object_shape[0], ds.pixel_size_A),
                              np.fft.fftfreq(ds.object_shape[1], ds.pixel_size_A), indexing="ij"))  # fmt: skip
    assert spectrum[k >= ds.phase_cutoff_invA * 1.001].max() < 1e-4 * spectrum.max()
    # The transmission slices are the object the data came from: unit modulus up to the band-limit ripple,
    # and their summed phase is the truth (a weak-phase check, so only a correlation).
    assert abs(float(np.abs(ds.transmission_slices).mean()) - 1) < 0.01
    fov = ptycho_data.scan_fov(ds)
    summed = np.angle(ds.transmission_slices).sum(0)
    r = ptycho_data.pearson_r(summed[fov], ds.phase_truth[fov])
    measured("ptycho_data", "1 - r(summed angle of transmission slices, phase_truth)", 1 - r, 0.02)
    assert r > 0.98


def test_phase_truth_slabs(default_ds, spinel_ds):
    for ds in (default_ds, spinel_ds):
        slabs = ptycho_data.phase_truth_slabs(ds, 4)
        assert slabs.shape == (4, *ds.object_shape)
        assert np.allclose(slabs.sum(0), ds.phase_truth, atol=1e-4)
    with pytest.raises(ValueError):
        ptycho_data.phase_truth_slabs(default_ds, 5)
    # A perfect crystal's slabs are identical; vacancies make them differ.
    perfect = ptycho_data.phase_truth_slabs(default_ds, 4)
    assert np.allclose(perfect, perfect[:1], atol=1e-4)
    defective = ptycho_data.phase_truth_slabs(spinel_ds, 4)
    assert np.abs(defective - defective[:1]).max() > 0.1 * np.abs(defective).max()
    assert len(spinel_ds.phase_truth) % 40 == 0 and math.isclose(spinel_ds.pixel_size_A, 8.084 / 40)


def test_register_phase_recovers_a_known_shift(default_ds, measured):
    from scipy import ndimage

    ds = default_ds
    # A "reconstruction" on a padded frame of its own: the truth moved by (7.3, 10.4) px onto a larger grid.
    Y, X = ds.object_shape
    frame = np.zeros((Y + 30, X + 30))
    offset = np.array([7.3, 10.4])
    yy, xx = np.meshgrid(np.arange(Y + 30), np.arange(X + 30), indexing="ij")
    frame = ndimage.map_coordinates(ds.phase_truth.astype(np.float64), [yy - offset[0], xx - offset[1]], order=3,
                                    mode="nearest")  # fmt: skip
    reg = ptycho_data.register_phase(frame, ds, offset_px=offset + [0.6, -0.45], pixel_size_A=ds.pixel_size_A)
    measured("ptycho_data", "register_phase: 1 - r of the shifted truth", 1 - reg.r, 1e-3)
    assert reg.r > 0.999
    assert np.allclose(reg.shift_px, offset, atol=0.06), reg.shift_px
    assert reg.phase.shape == reg.truth.shape == ds.phase_truth[reg.fov].shape
    # Offset and scale do not matter to r; noise does.
    assert math.isclose(ptycho_data.pearson_r(3 * reg.truth + 2, reg.truth), 1.0, rel_tol=1e-9)
    noisy = reg.truth + np.random.default_rng(0).normal(scale=reg.truth.std(), size=reg.truth.shape)
    assert 0.6 < ptycho_data.pearson_r(noisy, reg.truth) < 0.8
    with pytest.raises(ValueError):
        ptycho_data.register_phase(frame, ds, pixel_size_A=0.2)


def test_scan_fov_is_the_scanned_box(default_ds):
    ds = default_ds
    rows, cols = ptycho_data.scan_fov(ds)
    pos = ds.positions_px
    assert rows.start == math.ceil(pos[:, 0].min()) and rows.stop == math.floor(pos[:, 0].max()) + 1
    assert cols.start == math.ceil(pos[:, 1].min()) and cols.stop == math.floor(pos[:, 1].max()) + 1
    inner = ptycho_data.scan_fov(ds, margin_A=-1.0)
    assert inner[0].start > rows.start and inner[0].stop < rows.stop


def test_cache_round_trip(default_ds, tmp_path):
    path = default_ds.save_npz(tmp_path / "ds.npz")
    back = ptycho_data.PtychoDataset.load_npz(path)
    assert back.params == default_ds.params
    for field in dataclasses.fields(back):
        a, b = getattr(back, field.name), getattr(default_ds, field.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), field.name
        else:
            assert a == b, field.name
    # The key changes with any parameter; a cached load returns the same dataset.
    assert default_ds.params.key() != dataclasses.replace(default_ds.params, seed=1).key()
    again = ptycho_data.dataset()
    assert np.array_equal(again.data, default_ds.data)


def test_default_dataset_is_small(default_ds):
    # Tests and CI simulate it once per cache; it must stay cheap on 2 cores.
    assert default_ds.simulation_time_s < 60
