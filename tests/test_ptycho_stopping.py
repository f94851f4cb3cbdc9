"""The stopping rule: held-out positions never steer the reconstruction, the run stops near its best
fidelity, and more iterations never cost fidelity (abTEM-simulated SrTiO3 at a low dose, 2e3 e/A^2, where
a long run starts to fit the noise)."""

import dataclasses

import numpy as np
import pytest

from mspt.ptycho import PtychoConfig, PtychoEngine, reconstruct
from mspt.ptycho.stopping import expected_poisson_deviance

pytest.importorskip("abtem")
import ptycho_data as pd  # noqa: E402

N_SLICES = 8


def config(ds, **over):
    return PtychoConfig(**(dict(n_slices=N_SLICES, slice_thickness_A=ds.thickness_A / N_SLICES, progress=False,
                                likelihood="poisson") | over))  # fmt: skip


def fidelity(phase, positions_px, ds) -> float:
    phase = pd.bandlimit(phase, ds.pixel_size_A, ds.phase_cutoff_invA)
    return pd.register_phase(phase, ds, offset_px=(positions_px - ds.positions_px).mean(0), search_px=1.0).r


@pytest.fixture(scope="module")
def low_dose():
    return pd.dataset(dose_e_per_A2=2e3)


@pytest.fixture(scope="module")
def long_run(low_dose):
    """Fidelity after every iteration of a long fixed run: the best anywhere along it."""
    scan = low_dose.scan("nominal", "entrance")
    engine = PtychoEngine.start(scan, config(low_dose, stop="fixed"), scan.check_patterns())
    rs = []
    for _ in range(60):
        engine.run_iteration()
        rs.append(fidelity(engine.summed_phase(), engine.positions_px, low_dose))
    return np.array(rs)


def result_fidelity(result, ds):
    positions_px = (result.positions_A - result.object_origin_A) / np.array(result.pixel_size_A)
    return fidelity(result.summed_phase, positions_px, ds)


def test_default_run_stops_near_the_best_fidelity(low_dose, long_run, measured):
    result = reconstruct(low_dose.scan("nominal", "entrance"), config(low_dose))
    r = result_fidelity(result, low_dose)
    measured("stopping", f"best r along 60 fixed iterations (at {int(np.argmax(long_run)) + 1})", long_run.max(), 0.97, ">")
    measured("stopping", f"r of the default run (stopped after {result.iterations_run}, best {result.best_iteration})", r, long_run.max() - 0.002, ">")
    measured("stopping", "r after 60 fixed iterations", long_run[-1], long_run.max())
    assert r >= long_run.max() - 0.002
    assert "validation loss has not improved" in result.stop_reason
    assert result.iterations_run < 60 and len(result.validation_loss) == result.iterations_run
    # Five times the iterations the default chose: it stops again (or keeps its best state).
    longer = reconstruct(low_dose.scan("nominal", "entrance"), config(low_dose, iterations=5 * result.iterations_run))
    assert result_fidelity(longer, low_dose) >= r - 0.002


def test_held_out_patterns_never_reach_the_object_or_probe(low_dose):
    scan = low_dose.scan("nominal", "entrance")
    cfg = config(low_dose, refine_positions_from=1)
    a = PtychoEngine.start(scan, cfg, scan.check_patterns())
    held_out = a.validation
    assert len(held_out) == round(0.05 * scan.n_positions)
    corrupted = scan.data.reshape(-1, *scan.data.shape[-2:]).copy()
    corrupted[held_out] = np.random.default_rng(1).poisson(50.0, corrupted[held_out].shape)
    b = PtychoEngine.start(dataclasses.replace(scan, data=corrupted.reshape(scan.data.shape)), cfg, scan.check_patterns())
    for _ in range(8):
        a.run_iteration()
        b.run_iteration()
    np.testing.assert_array_equal(a.slices, b.slices)
    np.testing.assert_array_equal(a.probe, b.probe)
    np.testing.assert_array_equal(a.positions_px[a.training], b.positions_px[b.training])
    assert a.stop.validation_history != b.stop.validation_history  # the held-out data did matter to the score


def test_discrepancy_rule_stops_when_the_deviance_reaches_the_noise_level(low_dose, long_run, measured):
    """Split-free: the training deviance over its counting-noise expectation, every iteration. It is the
    conservative rule (the residual reaches the noise level before the fine detail is in), which is why
    validation is the default; it stops at the first iteration at or below 1."""
    result = reconstruct(low_dose.scan("nominal", "entrance"), config(low_dose, stop="discrepancy"))
    ratio = result.discrepancy
    assert "discrepancy principle" in result.stop_reason
    assert len(ratio) == result.iterations_run and np.all(np.isfinite(ratio))
    assert ratio[-1] <= 1.0 and np.all(ratio[:-1] > 1.0) and ratio[0] > 1.2
    measured("stopping", f"discrepancy ratio per iteration {np.round(ratio, 3).tolist()}", ratio[-1], 1.0)
    measured("stopping", f"r of the discrepancy-rule run (stopped after {result.iterations_run})", result_fidelity(result, low_dose), 0.9, ">")


@pytest.mark.parametrize("mean", [0.01, 0.3, 1.0, 4.0, 25.0, 29.9, 30.0, 200.0])
def test_expected_poisson_deviance_matches_sampling(mean):
    d = np.random.default_rng(7).poisson(mean, 2_000_000).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        sample = np.where(d > 0, d * np.log(d / mean), 0.0) - (d - mean)
    assert expected_poisson_deviance(np.array([mean]))[0] == pytest.approx(sample.mean(), abs=4 * sample.std() / np.sqrt(d.size))


def test_regularisation_weight_chosen_by_the_held_out_patterns(low_dose, measured):
    result = reconstruct(low_dose.scan("nominal", "entrance"), config(low_dose, kz_strength="auto"))
    choice = result.regularisation["kz_strength"]
    scores = choice["validation_loss"]
    assert set(scores) == {0.0, 30.0, 100.0, 300.0}
    assert choice["value"] == min(scores, key=scores.get) == result.config.kz_strength
    measured("stopping", f"kz strength chosen {choice['value']} from validation losses {scores}", result_fidelity(result, low_dose), 0.97, ">")
    with pytest.raises(ValueError, match='kz_strength: expected a non-negative number or "auto"'):
        config(low_dose, kz_strength="strong")


def test_the_over_relaxed_object_step_ends_where_the_validation_loss_stalls(low_dose):
    """While a validation set is held out the object takes OVERRELAXATION times its step; once the validation
    loss has not improved for `patience` iterations the run goes back to its best state, takes the configured
    step from there, and the stopping rule's patience starts again. A run without a validation set never
    over-relaxes."""
    scan = low_dose.scan("nominal", "entrance")
    cfg = config(low_dose)
    assert not PtychoEngine.start(scan, config(low_dose, stop="fixed"), scan.check_patterns()).overrelaxed
    engine = PtychoEngine.start(scan, cfg, scan.check_patterns())
    assert engine.overrelaxed
    while engine.overrelaxed:
        engine.run_iteration()
        assert engine.iteration < 60, "the over-relaxed phase never ended"
    assert engine.iteration - engine.stop.best_iteration > cfg.patience  # it ended on a stall
    assert engine.stop.patience_from == engine.iteration
    np.testing.assert_array_equal(engine.slices, engine.best["slices"])  # from the best state
    np.testing.assert_array_equal(engine.positions_px, engine.best["positions_px"])
    assert not np.any(engine.position_velocity)
    assert not engine.stop.should_stop("validation", engine.iteration, cfg.patience)
    resumed = PtychoEngine.from_state(scan, cfg, engine.state())  # the phase survives a checkpoint
    assert not resumed.overrelaxed and resumed.stop.patience_from == engine.iteration
