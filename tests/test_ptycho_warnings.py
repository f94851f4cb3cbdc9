"""Self-check warnings (mspt.ReconstructionWarning) on abTEM-simulated SrTiO3 scans (tests/ptycho_data.py):
each check is provoked by the mistake it is meant to catch and must fire alone; a clean run fires none.
The figures each check measured are recorded beside its threshold."""

import dataclasses
import warnings

import numpy as np
import pytest

pytest.importorskip("abtem")
import ptycho_data as pd  # noqa: E402

import mspt  # noqa: E402
from mspt.ptycho import PtychoConfig, ReconstructionWarning, reconstruct  # noqa: E402
from mspt.ptycho import diagnostics  # noqa: E402

N_SLICES = 8


@pytest.fixture(scope="module")
def clean():
    return pd.dataset()


def run(ds, scan=None, n_slices=N_SLICES, slice_thickness_A=None, **over):
    """Reconstruct; return the result and the codes of the ReconstructionWarnings raised."""
    scan = scan or ds.scan("nominal", "entrance")
    config = PtychoConfig(n_slices=n_slices, slice_thickness_A=slice_thickness_A or ds.thickness_A / n_slices,
                          progress=False, **{"iterations": 20, "stop": "fixed", **over})  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = reconstruct(scan, config)
    raised = [w.message.code for w in caught if issubclass(w.category, ReconstructionWarning)]
    assert raised == [code for code, _ in result.warnings], "every warning raised is recorded, once"
    return result, raised


def test_one_warning_class_exported_from_mspt_and_ptycho():
    assert mspt.ReconstructionWarning is ReconstructionWarning and issubclass(ReconstructionWarning, Warning)


def test_a_clean_run_fires_none(clean, measured):
    scan = clean.scan("nominal", "entrance")
    result, raised = run(clean, scan, iterations=30)
    assert raised == [] and result.warnings == []
    # How far the clean run's figures sit from each threshold.
    pixel = np.array(result.pixel_size_A)
    nominal_px = (result.nominal_positions_A - result.object_origin_A) / pixel
    steps_px = np.array([[clean.scan_step_A, 0.0], [0.0, clean.scan_step_A]]) / pixel
    inside = np.zeros(result.slices.shape[1:], bool)
    lo, hi = np.floor(nominal_px.min(0)).astype(int), np.ceil(nominal_px.max(0)).astype(int)
    inside[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1] = True
    name = "ptycho self-checks, clean run"
    probe_ratio = diagnostics.probe_intensity_ratio(result.probe, scan.check_patterns())
    measured(name, "probe intensity / mean counts", probe_ratio, diagnostics.PROBE_INTENSITY_RANGE[1])
    measured(name, "grid peak / ring median", diagnostics.grid_peak_ratio(result.summed_phase, nominal_px, steps_px),
             diagnostics.GRID_PEAK_RATIO)  # fmt: skip
    measured(name, "|depth centre offset| (stack thicknesses)",
             abs(diagnostics.depth_centre_offset(result.slices, inside)), diagnostics.STACK_DRIFT_FRACTION)  # fmt: skip
    distance = np.hypot(*(result.position_offsets_A / pixel).T) / steps_px[0, 0]
    measured(name, "largest position offset (scan steps)", distance.max(), diagnostics.RUNAWAY_MAX_STEPS)
    measured(name, "last loss / lowest loss", result.loss[-1] / result.loss.min(), diagnostics.LOSS_RISE)


def test_a_step_too_large_makes_the_loss_diverge(clean):
    # Within the steps the configuration accepts, only a full-scan-sized batch diverges on this scan: the
    # batches "auto" picks (16) converge even at probe and object steps of 2.
    _, raised = run(clean, iterations=12, probe_step=2.0, batch_size=64)
    assert raised == ["loss_diverging"]


def test_an_oversized_position_step_makes_positions_run_away(clean):
    _, raised = run(clean, position_step=2.0, max_position_step_px=5.0, stop="validation", patience=20)
    assert raised == ["positions_runaway"]


def test_an_impossible_detector_calibration_makes_the_probe_intensity_leave_the_data(clean):
    doubled = (2 * clean.reciprocal_sampling_invA,) * 2
    scan = dataclasses.replace(clean.scan("nominal", "entrance"), reciprocal_sampling_invA=doubled)
    _, raised = run(clean, scan)
    assert raised == ["probe_intensity"]


def test_a_scan_step_beyond_the_probe_prints_the_raster_into_the_object():
    sparse = pd.dataset(scan_shape=(10, 10), scan_step_A=2.0, defocus_A=0.0)  # in focus, 2 A steps: no overlap
    _, raised = run(sparse, refine_positions_from=-1)
    assert raised == ["raster_grid_artefact"]


@pytest.mark.parametrize("defocus_error_A", [-40.0, 40.0])
def test_a_wrong_defocus_moves_the_sample_out_of_the_stack_centre(clean, defocus_error_A):
    """A stack twice the sample's thickness, placed by a defocus 40 A off: the contrast gathers where the
    sample really is, towards the entrance or the exit."""
    # The stack (twice the sample) starts half a sample above it: centred on it with the right defocus.
    defocus = clean.defocus_A + clean.thickness_A / 2 + defocus_error_A
    scan = dataclasses.replace(clean.scan("nominal", "entrance"), defocus_A=defocus)
    result, raised = run(clean, scan, n_slices=2 * N_SLICES, slice_thickness_A=clean.thickness_A / N_SLICES)
    assert raised == ["stack_drift"]
    offset = diagnostics.depth_centre_offset(result.slices, np.ones(result.slices.shape[1:], bool))
    assert np.sign(offset) == np.sign(defocus_error_A)
