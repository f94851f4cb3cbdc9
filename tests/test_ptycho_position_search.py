"""The stuck-position search (ptycho/position_search.py and PtychoEngine._search_stuck_positions): a position
knocked into a wrong basin of its pattern's loss comes back; the two-stage grid finds the point one half-pixel
grid over the whole disk finds; an outlier the search left alone is not searched again."""

import numpy as np
import pytest

from mspt import ops
from mspt.constants import wavelength_A
from mspt.ptycho import PtychoConfig, PtychoEngine
from mspt.ptycho.position_search import coarse_step_px, disk_offsets, refine_offsets

import ptycho_data

pytest.importorskip("abtem")

KNOCK_A = np.array([0.9, -0.7])  # well beyond the gradient's reach (the basins are about 0.5 A wide)


def test_coarse_step_is_a_quarter_of_the_probe_feature():
    # lambda / alpha at 200 keV and 25 mrad is 1.003 A: a quarter is 0.251 A, 1.28 pixels of 0.195 A -> 1.0.
    assert coarse_step_px(wavelength_A(200e3), 25.0, (0.195, 0.195)) == 1.0
    # At 60 keV and 20 mrad the feature is 2.44 A: 0.61 A, 6.2 pixels of 0.1 A -> 6.0.
    assert coarse_step_px(wavelength_A(60e3), 20.0, (0.1, 0.1)) == 6.0
    assert coarse_step_px(wavelength_A(300e3), 40.0, (0.5, 0.5)) == 0.5  # never below half a pixel


@pytest.mark.parametrize("radius, step", [(7.68, 1.0), (7.68, 0.5), (3.2, 1.5)])
def test_disk_offsets_are_the_grid_points_in_the_disk(radius, step):
    offsets = disk_offsets(radius, step)
    wide = step * np.arange(-40, 41)  # brute force: every grid point of a larger square, kept if inside
    brute = np.stack(np.meshgrid(wide, wide, indexing="ij"), -1).reshape(-1, 2)
    brute = brute[np.sum(brute**2, 1) <= radius**2]
    assert sorted(map(tuple, offsets)) == sorted(map(tuple, brute))
    assert len(refine_offsets(step)) == (0 if step == 0.5 else (4 * step + 1) ** 2 - 1)


@pytest.fixture(scope="module")
def converged_engine():
    ds = ptycho_data.dataset()
    scan = ds.scan("true", "entrance")
    config = PtychoConfig(n_slices=4, slice_thickness_A=ds.thickness_A / 4, refine_positions_from=-1,
                          stop="fixed", progress=False)  # fmt: skip
    engine = PtychoEngine.start(scan, config, scan.check_patterns())
    for _ in range(12):
        engine.run_iteration()
    return engine


def _losses(engine):
    fit = ops.multislice_loss_grad(
        engine._read(np.arange(engine.scan.n_positions)), engine.slices, engine.probe, engine.positions_px,
        engine.slice_thickness_A, engine.scan.energy_eV, engine.sampling_A, tilt_mrad=engine.tilt_mrad, wrt=(),
    )  # fmt: skip
    return fit.loss_per_position


def test_a_knocked_position_comes_back(converged_engine, measured):
    engine = converged_engine
    saved = engine.positions_px.copy(), engine.searched_px.copy()
    try:
        b = int(np.argmin(np.linalg.norm(engine.positions_px - engine.positions_px.mean(0), axis=1)))  # central
        home = engine.positions_px[b].copy()
        engine.positions_px[b] += KNOCK_A / np.array(engine.sampling_A)
        engine.loss_per_position = _losses(engine)
        calls = []
        search = engine._best_candidate
        engine._best_candidate = lambda pattern, candidates: calls.append(len(candidates)) or search(pattern, candidates)
        engine._search_stuck_positions()
        error_A = np.linalg.norm((engine.positions_px[b] - home) * engine.sampling_A)
        assert calls, "the knocked position was not searched"
        measured("position search", "knocked 1.14 A, error after (A)", error_A, 0.1)
        assert error_A <= 0.1

        # One half-pixel grid over the whole disk (what the two stages replace) finds the same point.
        radius = engine.config.position_search_A / min(engine.sampling_A)
        knocked = home + KNOCK_A / np.array(engine.sampling_A)
        pattern = engine._read(np.array([b]))
        exhaustive, _ = search(pattern, np.clip(knocked + disk_offsets(radius, 0.5), *engine._position_bounds()))
        assert np.allclose(exhaustive, engine.positions_px[b])
        measured("position search", "candidates, two stages / one half-pixel grid", sum(calls) / len(disk_offsets(radius, 0.5)), 0.5)
        assert sum(calls) < len(disk_offsets(radius, 0.5)) / 3

        # The position is home and fits again: a second search does not touch it; nor does one of an outlier
        # the search has already left where it was.
        calls.clear()
        engine.loss_per_position = _losses(engine)
        engine._search_stuck_positions()
        engine.loss_per_position[b] = 1e9  # an outlier for another reason, searched where it is now
        engine.searched_px[b] = engine.positions_px[b]
        engine._search_stuck_positions()
        assert calls == []
    finally:
        engine.positions_px, engine.searched_px = saved
        del engine._best_candidate
