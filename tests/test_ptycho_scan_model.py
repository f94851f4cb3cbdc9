"""Scan-model refinement on an abTEM-simulated SrTiO3 scan (tests/ptycho_data.py, Poisson noise at 1e5
e/A^2) whose true positions are a clean 0.6 A raster plus a drift linear in acquisition time of 0.5 object
pixels over the scan; the engine is given the raster with a 3 % scale error and a 2 degree rotation error in
its calibrations (scan_step_A, scan_rotation_deg). The truth affine is the least-squares map of the given
nominal raster onto the true positions less the drift."""

import dataclasses

import numpy as np
import pytest

pytest.importorskip("abtem")
import ptycho_data as pd  # noqa: E402

from mspt.ptycho import PtychoConfig, ReconstructionWarning, reconstruct  # noqa: E402
from mspt.ptycho.scan_model import ScanModel, acquisition_time, describe_affine  # noqa: E402

N_SLICES = 8
ITERATIONS = 220
DRIFT_PX = np.array([0.3, 0.4])  # 0.5 object pixels over the scan
SCALE_ERROR, ROTATION_ERROR_DEG = 1.03, 2.0


@pytest.fixture(scope="module")
def drifting():
    pixel = pd.CRYSTALS["SrTiO3"][0]()[1] / pd.CRYSTALS["SrTiO3"][1]
    return pd.dataset(drift_A=tuple(DRIFT_PX * pixel))


def miscalibrated_scan(ds):
    """The data with the raster from (wrong) calibrations instead of a list of positions."""
    step = (ds.scan_step_A * SCALE_ERROR,) * 2
    return dataclasses.replace(ds.scan("nominal", "entrance"), positions_A=None, scan_step_A=step,
                               scan_rotation_deg=ROTATION_ERROR_DEG)  # fmt: skip


def true_affine(ds, scan) -> np.ndarray:
    nominal = scan.positions()
    clean = ds.positions_A - acquisition_time(len(nominal))[:, None] * np.array(ds.params.drift_A)
    design = np.column_stack([nominal, np.ones(len(nominal))])
    return np.linalg.lstsq(design, clean, rcond=None)[0][:2].T


def config(ds, **over):
    base = dict(n_slices=N_SLICES, slice_thickness_A=ds.thickness_A / N_SLICES, iterations=ITERATIONS, stop="fixed")
    return PtychoConfig(progress=False, **(base | over))


def test_affine_and_drift_are_recovered_and_the_phase_matches_a_run_given_the_true_positions(drifting, measured):
    from test_ptycho_reconstruction import summed_phase_r

    ds = drifting
    scan = miscalibrated_scan(ds)
    truth = describe_affine(true_affine(ds, scan))
    assert truth["rotation_deg"] == pytest.approx(-ROTATION_ERROR_DEG, abs=1e-9)
    result = reconstruct(scan, config(ds, scan_model="affine+drift"))
    got = describe_affine(result.scan_affine)
    scale_error = abs(np.sqrt(np.linalg.det(result.scan_affine)) / truth["scale_y"] - 1)
    rotation_error = abs(got["rotation_deg"] - truth["rotation_deg"])
    drift_error_px = (result.scan_drift_A - np.array(ds.params.drift_A)) / ds.pixel_size_A
    t = acquisition_time(ds.data.shape[0] * ds.data.shape[1])
    drift_rms_px = float(np.sqrt(np.mean(np.sum((t[:, None] * drift_error_px) ** 2, axis=1))))
    measured("ptycho scan model", "scale error (%) from 3 % off", 100 * scale_error, 0.2)
    measured("ptycho scan model", "rotation error (deg) from 2 deg off", rotation_error, 0.1)
    measured("ptycho scan model", "drift error rms over the scan (px)", drift_rms_px, 0.1)
    measured("ptycho scan model", "drift error |d| (px) of a 0.5 px drift", float(np.hypot(*drift_error_px)), 0.35)
    assert scale_error <= 0.002 and rotation_error <= 0.1 and drift_rms_px <= 0.1
    # The offsets hold no affine part: their least-squares affine map (with a translation) is nil.
    offsets = result.position_offsets_A
    design = np.column_stack([result.nominal_positions_A, np.ones(len(offsets))])
    coefficients = np.linalg.lstsq(design, offsets, rcond=None)[0]
    assert np.abs(coefficients[:2]).max() < 2e-3

    reference = reconstruct(ds.scan("true", "entrance"), config(ds))
    r_model, r_true = summed_phase_r(result, ds), summed_phase_r(reference, ds)
    measured("ptycho scan model", "summed-phase r, scan model", r_model, r_true - 0.005, ">")
    measured("ptycho scan model", "summed-phase r, true positions", r_true, 0.98, ">")
    assert r_model >= r_true - 0.005


def test_without_a_scan_model_the_calibration_error_stays(drifting, measured):
    """Negative control: the default (positions' global part removed) cannot learn the 3 % / 2 deg error."""
    from test_ptycho_reconstruction import summed_phase_r

    ds = drifting
    result = reconstruct(miscalibrated_scan(ds), config(ds, iterations=40))
    r = measured("ptycho scan model", "summed-phase r without a scan model (40 it)", summed_phase_r(result, ds), 0.98)
    assert np.allclose(result.scan_affine, np.eye(2)) and r < 0.98


def test_a_raster_drift_is_an_affine_map_and_the_similarity_plus_drift_model_separates_it():
    """On a raster, t is affine in the grid (so 'affine' absorbs a drift exactly), and 'affine+drift' maps a
    similarity plus a drift onto its parameters exactly (a least-squares step from a quadratic's gradient)."""
    iy, ix = np.meshgrid(np.arange(7.0), np.arange(9.0), indexing="ij")
    nominal = np.column_stack([iy.ravel(), ix.ravel()]) * 3.0
    everyone = np.arange(len(nominal))
    model = ScanModel("affine+drift", nominal, fit_on=everyone)
    angle, scale, drift = np.radians(1.5), 0.98, np.array([0.7, -0.4])
    a_true = scale * np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    target = (nominal - model.centre) @ a_true.T + model.time[:, None] * drift + model.centre
    # Loss 1/2 sum h (p - target)^2 at the nominal positions: gradient h (nominal - target).
    curvature = np.array([2.0, 3.0])
    theta = model.gauss_newton_step(curvature * (nominal - target), curvature)
    np.testing.assert_allclose(model.affine(theta), a_true, atol=1e-12)
    np.testing.assert_allclose(model.drift_px(theta), drift, atol=1e-10)
    general = ScanModel("affine", nominal, fit_on=everyone)
    drift_only = model.time[:, None] * drift
    np.testing.assert_allclose(general.global_part(drift_only), drift_only, atol=1e-10)
    # "affine" takes the whole map, the drift folded in: target = c + M (n - c), M a general 2 x 2.
    sheared = a_true @ np.array([[1.01, 0.02], [0.0, 0.995]])
    target = (nominal - general.centre) @ sheared.T + drift_only + general.centre
    theta = general.gauss_newton_step(curvature * (nominal - target), curvature)
    folded = np.linalg.lstsq(nominal - general.centre, target - general.centre, rcond=None)[0].T
    np.testing.assert_allclose(general.affine(theta), folded, atol=1e-12)
    assert describe_affine(general.affine(theta))["shear"] != 0


def test_scan_model_settings_are_validated():
    with pytest.raises(ValueError, match="scan_model"):
        PtychoConfig(scan_model="spline")
    with pytest.raises(ValueError, match="position_constraint"):
        PtychoConfig(scan_model="affine", position_constraint="mean")
    with pytest.raises(ValueError, match="refine_scan_model_from"):
        PtychoConfig(refine_scan_model_from=-2)


def test_a_resumed_run_ends_with_the_scan_model_and_warnings_of_an_uninterrupted_one(drifting, tmp_path):
    ds = drifting
    scan = miscalibrated_scan(ds)

    def cfg(folder, iterations):
        # probe_step 2 with batches of 64 makes the loss diverge within 9 iterations: its warning must
        # survive the resume.
        return config(ds, n_slices=4, slice_thickness_A=ds.thickness_A / 4, iterations=iterations,
                      scan_model="affine+drift", refine_scan_model_from=1, probe_step=2.0, batch_size=64,
                      checkpoint_every=3,
                      checkpoint_path=str(tmp_path / folder / "run.h5"))  # fmt: skip

    with pytest.warns(ReconstructionWarning):
        full = reconstruct(scan, cfg("a", 11))
        reconstruct(scan, cfg("b", 9))  # interrupted after 9 iterations; the warning fired by then
    resumed = reconstruct(scan, cfg("b", 11), resume=True)
    np.testing.assert_array_equal(resumed.scan_affine, full.scan_affine)
    np.testing.assert_array_equal(resumed.scan_drift_A, full.scan_drift_A)
    np.testing.assert_array_equal(resumed.position_offsets_A, full.position_offsets_A)
    np.testing.assert_array_equal(resumed.slices, full.slices)
    assert [c for c, _ in full.warnings] == ["loss_diverging"] and resumed.warnings == full.warnings
    assert not np.allclose(full.scan_affine, np.eye(2))

