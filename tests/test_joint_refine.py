"""refine: the joint refinement on a tiny simulated tilt series (three tilts, Poisson noise). The volume
block lowers the loss to the noise floor (the loss of the true volume) and moves the volume towards the truth;
the acquisition block recovers perturbed poses, positions and a defocused probe with the true volume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import mspt
from mspt import ops
from mspt.joint import JointConfig, JointModel, JointTilt, refine
from mspt.tomo.rotations import rotation_exp

SHAPE = (12, 32, 32)
VOXEL, ENERGY = 0.4, 80e3


def _truth() -> np.ndarray:
    rng = np.random.default_rng(5)
    k, j, i = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    vol = np.zeros(SHAPE)
    for _ in range(10):
        c = rng.uniform([3, 9, 9], [SHAPE[0] - 3, SHAPE[1] - 9, SHAPE[2] - 9])
        vol += rng.uniform(150, 300) * np.exp(-((k - c[0]) ** 2 + (j - c[1]) ** 2 + (i - c[2]) ** 2) / 4.0)
    return vol.astype(np.float32)


@pytest.fixture(scope="module")
def series():
    """Three tilts (-30, 0, 30 degrees about y), 81 positions each, 1e4 electrons per pattern, Poisson noise."""
    rng = np.random.default_rng(6)
    truth = _truth()
    model = JointModel(voxel_size_A=VOXEL, n_slices=3, slice_thickness_A=1.6, energy_eV=ENERGY)
    probe = mspt.make_probe(ENERGY, 25, 16, VOXEL, defocus_A=20, electrons=1e4).array
    yy, xx = np.meshgrid(np.arange(10, 23, 1.5), np.arange(10, 23, 1.5), indexing="ij")
    positions = np.stack([yy.ravel(), xx.ravel()], 1)
    tilts = []
    for tilt_deg in (-30, 0, 30):
        rotation = ops.rotation_about_y(tilt_deg)
        patterns = rng.poisson(model.forward(truth, rotation, (0.0, 0.0), probe, positions)).astype(np.float32)
        tilts.append(JointTilt(rotation, np.zeros(2), probe, positions, patterns))
    return model, truth, tilts


def _total_loss(model, volume, tilts) -> float:
    return sum(
        model.loss_grad(volume, t.rotation, t.shifts_A, t.probe, t.positions_px, t.patterns, wrt=()).loss
        for t in tilts
    )


def _config(**changes) -> JointConfig:
    """The blocks' own tests fit every position (no held-out ones, tested on their own below)."""
    return JointConfig(progress=False, **{"validation_fraction": 0.0, **changes})


def test_volume_block_lowers_the_loss_to_the_noise_floor_and_approaches_the_truth(series, measured):
    """From a blurred, 30 % low start (a stand-in for the sequential result), 12 L-BFGS-B passes. Measured:
    the loss falls to 0.38 of its start and ends 2.5 % below the true volume's loss (three tilts leave much
    of the volume free to fit noise); the relative error to the truth drops from 0.61 to 0.43."""
    ndimage = pytest.importorskip("scipy.ndimage")
    model, truth, tilts = series
    start = (0.7 * ndimage.gaussian_filter(truth, 1.5)).astype(np.float32)
    result = refine(model, start, tilts, _config(outer_iterations=1, volume_evaluations=12, refine=()))
    # L-BFGS-B stops at the first check past its budget: at most one line search (a few passes) beyond
    assert result.blocks == ("start", "volume") and 13 <= result.passes <= 16
    assert result.loss[0] == pytest.approx(_total_loss(model, start, tilts), rel=1e-12)
    assert result.loss[-1] == pytest.approx(_total_loss(model, result.volume, tilts), rel=1e-9)
    floor = _total_loss(model, truth, tilts)
    ratio = measured("joint refine", "final / initial loss", result.loss[-1] / result.loss[0], 0.5)
    above = measured("joint refine", "final loss / true volume's loss", result.loss[-1] / floor, 1.0)
    error = lambda v: np.linalg.norm(v - truth) / np.linalg.norm(truth)  # noqa: E731
    before = measured("joint refine", "relative error to truth, start", error(start), 1.0)
    after = measured("joint refine", "relative error to truth, refined", error(result.volume), 0.8 * before)
    assert ratio < 0.5 and above < 1.0 and after < 0.8 * before
    assert np.all(result.volume >= 0)


@pytest.fixture(scope="module")
def dense_tilt():
    """One tilt (30 degrees) of a volume filled with 80 blobs (so every scan position sees structure), 225
    positions, 1e5 electrons per pattern, Poisson noise."""
    rng = np.random.default_rng(5)
    shape = (16, 32, 32)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    volume = np.zeros(shape)
    for _ in range(80):
        c = rng.uniform([3, 4, 4], [shape[0] - 3, shape[1] - 4, shape[2] - 4])
        volume += rng.uniform(150, 300) * np.exp(-((k - c[0]) ** 2 + (j - c[1]) ** 2 + (i - c[2]) ** 2) / 2.0)
    model = JointModel(voxel_size_A=VOXEL, n_slices=4, slice_thickness_A=1.6, energy_eV=ENERGY)
    probe = mspt.make_probe(ENERGY, 25, 16, VOXEL, defocus_A=20, electrons=1e5).array
    yy, xx = np.meshgrid(np.arange(9, 24, 1.0), np.arange(9, 24, 1.0), indexing="ij")
    positions = np.stack([yy.ravel(), xx.ravel()], 1)
    rotation = ops.rotation_about_y(30)
    patterns = rng.poisson(model.forward(volume.astype(np.float32), rotation, (0.0, 0.0), probe, positions))
    true = JointTilt(rotation, np.zeros(2), probe, positions, patterns.astype(np.float32))
    return model, volume.astype(np.float32), true


def _acquisition_only(model, volume, tilt, block):
    config = _config(outer_iterations=3, volume_evaluations=0, acquisition_evaluations=15, refine=(block,))
    result = refine(model, volume, [tilt], config)
    assert np.all(np.diff(result.loss) <= 0) and result.blocks == ("start",) + ("acquisition",) * 3
    return result.tilts[0], result.loss


def test_pose_block_recovers_the_rotation_and_shifts(dense_tilt, measured):
    """Rotation off by 1.7 deg (0.8 about x, 1.5 about y), shifts by (0.4, -0.3) A; the true volume held.
    Measured: 0.048 deg and 0.0016 A after three blocks of 15 evaluations."""
    model, volume, true = dense_tilt
    wrong = dataclasses.replace(true, rotation=rotation_exp(np.radians([0.8, 1.5, 0.0])) @ true.rotation,
                                shifts_A=np.array([0.4, -0.3]))  # fmt: skip
    got, _ = _acquisition_only(model, volume, wrong, "poses")
    angle = np.degrees(np.arccos(np.clip((np.trace(got.rotation @ true.rotation.T) - 1) / 2, -1, 1)))
    rotation = measured("joint pose block", "rotation error after (deg), from 1.7", angle, 0.1)
    shift = measured("joint pose block", "shift error after (A), from 0.5", np.linalg.norm(got.shifts_A), 0.02)
    assert rotation < 0.1 and shift < 0.02


def test_position_block_recovers_the_positions(dense_tilt, measured):
    """Positions off by 0.3 px rms. Measured: 0.034 px rms after three blocks of 15 evaluations."""
    model, volume, true = dense_tilt
    noise = np.random.default_rng(8).normal(0, 0.3, true.positions_px.shape)
    got, _ = _acquisition_only(model, volume, dataclasses.replace(true, positions_px=true.positions_px + noise),
                               "positions")  # fmt: skip
    error = np.sqrt(np.mean((got.positions_px - true.positions_px) ** 2))
    assert measured("joint position block", "position error after (px rms), from 0.3", error, 0.1) < 0.1


def test_probe_block_fits_the_data_as_well_as_the_true_probe(dense_tilt, measured):
    """A probe defocused by 8 A (0.66 rad of phase at the aperture edge). The probe's components the patterns
    do not constrain (beyond the band limit) make a distance to the true probe a poor score, so the test asks
    the data: the loss falls from twice the true probe's to within the noise of it."""
    model, volume, true = dense_tilt
    defocused = mspt.make_probe(ENERGY, 25, 16, VOXEL, defocus_A=28, electrons=1e5).array
    _, loss = _acquisition_only(model, volume, dataclasses.replace(true, probe=defocused), "probe")
    true_loss = _total_loss(model, volume, [true])
    start = measured("joint probe block", "loss excess over the true probe's, start", loss[0] / true_loss - 1, 0.5, ">")
    after = measured("joint probe block", "loss excess over the true probe's, after", loss[-1] / true_loss - 1, 0.005)
    assert start > 0.5 and after < 0.005


def test_held_out_positions_choose_the_returned_state(series, measured):
    """10 % of each tilt's positions held out: the training loss excludes them, the state returned is the
    one with their lowest loss (checked by recomputing both losses there), and every position comes back."""
    from mspt.joint.holdout import split_tilt

    ndimage = pytest.importorskip("scipy.ndimage")
    model, truth, tilts = series
    start = (0.7 * ndimage.gaussian_filter(truth, 1.5)).astype(np.float32)
    config = JointConfig(progress=False, outer_iterations=5, volume_evaluations=4, refine=(), validation_fraction=0.1,
                         patience=2)  # fmt: skip
    result = refine(model, start, tilts, config)
    rng = np.random.default_rng(config.seed)
    splits = [split_tilt(t, 0.1, rng, model.grid_shape(start)) for t in tilts]
    assert all(s.validation.positions_px.shape[0] == 8 for s in splits)
    train = [s.train for s in splits]
    held = [s.validation for s in splits]
    assert result.loss[0] == pytest.approx(_total_loss(model, start, train), rel=1e-12)
    assert result.validation_loss[0] == pytest.approx(_total_loss(model, start, held), rel=1e-12)
    best = int(np.argmin(result.validation_loss))
    assert result.best_block == best
    assert _total_loss(model, result.volume, held) == pytest.approx(result.validation_loss[best], rel=1e-9)
    assert _total_loss(model, result.volume, train) == pytest.approx(result.loss[best], rel=1e-9)
    assert [t.positions_px.shape for t in result.tilts] == [t.positions_px.shape for t in tilts]
    measured("joint held-out", "held-out loss, returned / start", result.validation_loss[best] / result.validation_loss[0], 1.0)
    assert result.validation_loss[best] < result.validation_loss[0]
    assert result.stop_reason in ("iterations", "validation")


def test_held_out_positions_follow_their_neighbours(dense_tilt, measured):
    """Every position off by a common (0.4, -0.3) px: the held-out ones are never fitted, but follow their
    training neighbours' corrections back, and come back merged in scan order."""
    model, volume, true = dense_tilt
    start = dataclasses.replace(true, positions_px=true.positions_px + np.array([0.4, -0.3]))
    config = JointConfig(progress=False, outer_iterations=2, volume_evaluations=0, acquisition_evaluations=15,
                         refine=("positions",), validation_fraction=0.1)  # fmt: skip
    result = refine(model, volume, [start], config)
    held = result.validation_indices[0]
    assert held.size == 22 and result.tilts[0].positions_px.shape == true.positions_px.shape
    error = np.sqrt(np.mean((result.tilts[0].positions_px[held] - true.positions_px[held]) ** 2))
    assert measured("joint held-out", "held-out position error after (px rms), from 0.5", error, 0.1) < 0.1


def test_refine_rejects_bad_arguments(series):
    model, truth, tilts = series
    with pytest.raises(TypeError, match="model"):
        refine("model", truth, tilts)
    with pytest.raises(TypeError, match="tilts"):
        refine(model, truth, [])
    with pytest.raises(TypeError, match="config"):
        refine(model, truth, tilts, {"outer_iterations": 1})
    with pytest.raises(ValueError, match="outer_iterations"):
        JointConfig(outer_iterations=0)
    with pytest.raises(ValueError, match="refine"):
        JointConfig(refine=("pose",))
    with pytest.raises(ValueError, match="validation_fraction"):
        JointConfig(validation_fraction=0.8)
    with pytest.raises(ValueError, match="volume_evaluations"):
        JointConfig(volume_evaluations=0, refine=())
    with pytest.raises(ValueError, match="patterns"):
        JointTilt(tilts[0].rotation, np.zeros(2), tilts[0].probe, tilts[0].positions_px, np.zeros((3, 16, 16)))
    with pytest.raises(ValueError, match="likelihood"):
        JointModel(voxel_size_A=VOXEL, n_slices=3, slice_thickness_A=1.6, energy_eV=ENERGY, likelihood="gauss")
