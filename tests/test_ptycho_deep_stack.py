"""Deep multislice stacks: re-centring along the beam, vacuum padding, the coarse-to-fine slice schedule.

The end-to-end sample is two SrTiO3 slabs, 4 cells (15.6 A) each, the lower one turned 30 degrees in plane,
19.5 A of vacuum between them (abTEM, 26 slices of 1.95 A, 50.8 A in all), reconstructed with 30 slices
of the same thickness: each half of the stack must show its own crystal and not the other one.
"""

import dataclasses

import numpy as np
import pytest

import ptycho_data
from mspt import ops
from mspt.probe import make_probe
from mspt.ptycho import PtychoConfig, ReconstructionWarning, reconstruct
from mspt.ptycho.stack import depth_profile, propagate_probe, recentring_shift, shift_stack, split_slices

ENERGY = 200e3
SAMPLING = (0.2, 0.2)
SLAB_CELLS = 4
GAP_A = 20.0
TWIST_DEG = 30.0
N_SLICES = 30
ITERATIONS = 30
# The stack is given 8 A too far downstream (as from a wrong defocus): the sample starts above its entrance.
MISPLACED_A = 8.0


# -- the stack operations against the multislice model -------------------------------------------------------


def _weak_stack(n_slices=12, filled=slice(4, 8), shape=(48, 48), seed=0):
    """Vacuum slices with a smooth random weak phase object (0.1 rad rms per slice, as a 2 A slice of an
    oxide crystal) in ``filled``."""
    rng = np.random.default_rng(seed)
    phase = np.zeros((n_slices, *shape))
    noise = rng.normal(size=(filled.stop - filled.start, *shape))
    kernel = np.exp(-0.5 * (np.fft.fftfreq(shape[0])[:, None] ** 2 + np.fft.fftfreq(shape[1])[None] ** 2) / 0.08**2)
    field = np.real(np.fft.ifft2(np.fft.fft2(noise) * kernel))
    phase[filled] = 0.1 * field / field.std(axis=(1, 2), keepdims=True)
    return np.exp(1j * phase).astype(np.complex64)


def _intensities(slices, probe, dz):
    positions = np.array([[20.0, 20.0], [24.3, 27.6], [28.0, 22.5]])
    return ops.multislice_forward(slices, probe, positions, dz, ENERGY, SAMPLING)


def test_moving_the_stack_and_refocusing_keeps_the_predictions(measured):
    dz = 2.0
    slices = _weak_stack()
    probe = make_probe(ENERGY, 25.0, (32, 32), SAMPLING, defocus_A=30.0).array
    reference = _intensities(slices, probe, dz)

    def error(shift_slices, refocus=True):
        moved = shift_stack(slices, shift_slices)
        refocused = propagate_probe(probe, -shift_slices * dz, ENERGY, SAMPLING) if refocus else probe
        return float(np.linalg.norm(_intensities(moved, refocused, dz) - reference) / np.linalg.norm(reference))

    whole = measured("deep stack", "relative intensity change, content moved 3 slices + refocused", error(3.0), 1e-4)
    back = measured("deep stack", "relative intensity change, content moved -4 slices + refocused", error(-4.0), 1e-4)
    fractional = measured("deep stack", "relative intensity change, moved 1.5 slices + refocused", error(1.5), 2e-3)
    unfocused = measured("deep stack", "relative intensity change, moved 3 slices, probe kept", error(3.0, False),
                         0.01, ">")  # fmt: skip
    # The negative control: the same move without refocusing changes the predictions far more.
    assert whole < 1e-4 and back < 1e-4 and fractional < 2e-3 and unfocused > 0.01
    # Whole-slice moves are exact: the moved stack holds the same slices.
    np.testing.assert_allclose(shift_stack(slices, 3.0)[7:11], slices[4:8], atol=1e-5)
    np.testing.assert_allclose(shift_stack(slices, 3.0)[:3], 1.0, atol=1e-6)


def test_propagating_the_probe_moves_its_focus():
    probe = make_probe(ENERGY, 25.0, (64, 64), SAMPLING, defocus_A=50.0).array
    expected = make_probe(ENERGY, 25.0, (64, 64), SAMPLING, defocus_A=50.0 - 17.5).array
    moved = propagate_probe(probe, 17.5, ENERGY, SAMPLING)
    assert np.max(np.abs(moved - expected)) < 1e-4 * np.max(np.abs(expected))


def test_split_slices_transmit_what_the_coarse_slice_did():
    slices = _weak_stack(n_slices=4, filled=slice(0, 4)) * np.float32(0.9)
    fine = split_slices(slices)
    assert fine.shape == (8, *slices.shape[1:])
    np.testing.assert_allclose(fine[0::2] * fine[1::2], slices, atol=2e-6)
    np.testing.assert_allclose(fine[0::2], fine[1::2])


def test_recentring_shift_finds_the_content():
    slices = _weak_stack(n_slices=20, filled=slice(2, 8))  # centre at 4.5, the stack's at 9.5
    shift = recentring_shift(slices, np.ones(slices.shape[1:], bool))
    assert abs(shift - 5.0) < 0.05
    profile = depth_profile(slices, np.ones(slices.shape[1:], bool))
    assert np.all(profile[8:] < 1e-10) and np.all(profile[2:8] > 1e-3)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(pad_slices_A=-1.0), "pad_slices_A"),
        (dict(recentre_stack="yes"), "recentre_stack"),
        (dict(slice_schedule="thick_first"), "slice_schedule"),
        (dict(slice_schedule="coarse_to_fine", n_slices=5), "even number"),
        (dict(split_slices_at=-2), "split_slices_at"),
        (dict(slice_schedule="coarse_to_fine", n_slices=6, split_slices_at=60, iterations=60), "split_slices_at"),
    ],
)
def test_bad_stack_settings_name_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        PtychoConfig(**changes)


def test_padding_and_recentring_settings():
    config = PtychoConfig(n_slices=26, slice_thickness_A=2.0, pad_slices_A=4.1)
    assert config.pad_slices == 2 and config.stack_slices == 30 and config.thickness_A == pytest.approx(60.0)
    assert config.recentres and not PtychoConfig(n_slices=16).recentres  # "auto": deep stacks only
    assert PtychoConfig(n_slices=8, recentre_stack=True).recentres
    assert not config.replace(recentre_stack=False).recentres


# -- two crystals one above the other ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_slabs():
    return ptycho_data.dataset(thickness_cells=SLAB_CELLS, second_slab_twist_deg=TWIST_DEG, slab_gap_A=GAP_A)


def _run(ds, **changes):
    config = PtychoConfig(
        n_slices=N_SLICES, slice_thickness_A=ds.slice_thickness_A, stack_centre_A=MISPLACED_A,
        iterations=ITERATIONS, stop="fixed", progress=False,
    ).replace(**changes)  # fmt: skip
    return reconstruct(ds.scan("nominal", defocus_reference="centre"), config)


@pytest.fixture(scope="module")
def recentred(two_slabs):
    return _run(two_slabs)


def _scanned_mask(result):
    positions = (result.positions_A - result.object_origin_A) / np.array(result.pixel_size_A)
    lo, hi = np.floor(positions.min(0)).astype(int), np.ceil(positions.max(0)).astype(int)
    mask = np.zeros(result.slices.shape[1:], bool)
    mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1] = True
    return mask


def _part_r(ds, result, phase, truth) -> float:
    """Pearson r of a part of the stack's summed phase with a truth, registered as the summed phase is."""
    offset = -np.asarray(result.object_origin_A) / np.array(result.pixel_size_A)  # truth pixel (0, 0) on the grid
    scored = dataclasses.replace(ds, phase_truth=truth)
    return ptycho_data.register_phase(phase, scored, offset_px=offset, search_px=1.0).r


def _depth_resolved_r(ds, result) -> dict[str, float]:
    slab = ds.num_slices // 2 - int(round(GAP_A / ds.slice_thickness_A)) // 2  # abTEM slices per slab
    upper_truth = ptycho_data.phase_truth_range(ds, 0, slab)
    lower_truth = ptycho_data.phase_truth_range(ds, ds.num_slices - slab, ds.num_slices)
    phase = np.angle(result.slices)
    half = len(phase) // 2
    upper, lower = phase[:half].sum(0), phase[half:].sum(0)
    return {
        "upper~upper": _part_r(ds, result, upper, upper_truth), "upper~lower": _part_r(ds, result, upper, lower_truth),
        "lower~lower": _part_r(ds, result, lower, lower_truth), "lower~upper": _part_r(ds, result, lower, upper_truth),
    }  # fmt: skip


def _check_depth_resolved(ds, result, label, measured):
    r = _depth_resolved_r(ds, result)
    for pair, value in r.items():
        same = pair in ("upper~upper", "lower~lower")
        measured(label, f"r {pair} crystal", value, 0.8 if same else 0.3, ">" if same else "<")
    assert r["upper~upper"] >= 0.8 and r["lower~lower"] >= 0.8
    assert r["upper~lower"] <= 0.3 and r["lower~upper"] <= 0.3
    # Not diverging: a finite loss that fell, and no self-check warning.
    assert np.all(np.isfinite(result.loss))
    drop = measured(label, "final / first loss", result.loss[-1] / result.loss[0], 0.5)
    assert drop < 0.5
    assert result.warnings == []


def test_two_crystals_land_in_their_own_half_of_the_stack(two_slabs, recentred, measured):
    assert recentred.slices.shape[0] == N_SLICES
    _check_depth_resolved(two_slabs, recentred, "deep stack 30 slices", measured)
    truth = ptycho_data.phase_truth_range(two_slabs, 0, two_slabs.num_slices)
    summed = _part_r(two_slabs, recentred, recentred.summed_phase, truth)
    assert measured("deep stack 30 slices", "summed-phase r", summed, 0.98, ">") > 0.98


def test_recentring_keeps_the_sample_in_the_middle_of_the_stack(two_slabs, recentred, measured):
    off = abs(recentring_shift(recentred.slices, _scanned_mask(recentred)))
    measured("deep stack 30 slices", "depth centre off the stack centre, re-centred (slices)", off, 1.0)
    unmoved = _run(two_slabs, recentre_stack=False)
    off_unmoved = abs(recentring_shift(unmoved.slices, _scanned_mask(unmoved)))
    measured("deep stack 30 slices", "depth centre off the stack centre, not re-centred (slices)", off_unmoved,
             2.0, ">")  # fmt: skip
    assert off < 1.0 < 2.0 < off_unmoved


def test_coarse_to_fine_with_vacuum_padding(two_slabs, measured):
    # 26 sample slices and 2 vacuum slices each side: 30 slices, 15 of twice the thickness until iteration 10.
    result = _run(two_slabs, n_slices=26, pad_slices_A=2 * two_slabs.slice_thickness_A,
                  slice_schedule="coarse_to_fine", split_slices_at=10)  # fmt: skip
    assert result.slices.shape[0] == N_SLICES
    _check_depth_resolved(two_slabs, result, "deep stack coarse-to-fine", measured)


def test_a_large_recentring_is_reported_as_stack_drift(two_slabs, measured):
    # Stack 25 A too far downstream, probe kept as the calibration gives it (its refinement would absorb
    # part of the misplacement as a focus change): re-centring moves the sample more than a quarter of the
    # stack, which says the defocus was wrong. The 8 A case above fires nothing.
    with pytest.warns(ReconstructionWarning, match="re-centred") as caught:
        result = _run(two_slabs, stack_centre_A=25.0, refine_probe_from=-1, iterations=20)
    assert [code for code, _ in result.warnings] == ["stack_drift"]
    assert [w.message.code for w in caught if issubclass(w.category, ReconstructionWarning)] == ["stack_drift"]
    off = abs(recentring_shift(result.slices, _scanned_mask(result)))
    assert measured("deep stack 25 A misplaced", "depth centre off the stack centre (slices)", off, 1.0) < 1.0


def test_a_resumed_run_keeps_its_recentring_and_split(two_slabs, tmp_path):
    from mspt.ptycho.checkpoint import load_state, save_state
    from mspt.ptycho.engine import PtychoEngine

    config = PtychoConfig(
        n_slices=26, slice_thickness_A=two_slabs.slice_thickness_A, pad_slices_A=2 * two_slabs.slice_thickness_A,
        stack_centre_A=15.0, slice_schedule="coarse_to_fine", split_slices_at=5, iterations=8, stop="fixed",
        progress=False,
    )  # fmt: skip
    scan = two_slabs.scan("nominal", defocus_reference="centre")
    counts = scan.check_patterns()
    whole = PtychoEngine.start(scan, config, counts)
    for _ in range(8):
        whole.run_iteration()
    first = PtychoEngine.start(scan, config, counts)
    for _ in range(4):  # re-centred at iteration 3 (15 A misplaced), still coarse
        first.run_iteration()
    assert first.slices.shape[0] == 15 and first.stack_shift_A != 0.0
    save_state(tmp_path / "state.h5", first.state())
    state, _ = load_state(tmp_path / "state.h5")
    resumed = PtychoEngine.from_state(scan, config, state)
    for _ in range(4):
        resumed.run_iteration()
    assert resumed.slices.shape[0] == 30 and resumed.stack_shift_A == whole.stack_shift_A
    np.testing.assert_allclose(resumed.slices, whole.slices, atol=1e-5)
    np.testing.assert_allclose(resumed.loss_history, whole.loss_history, rtol=1e-6)
