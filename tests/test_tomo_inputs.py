"""mspt.tomo: bad inputs and settings raise errors naming the field; the small helpers (rotation vectors,
the gauge, resampling) against their definitions."""

import math

import numpy as np
import pytest

from mspt.ops import tilt_series_rotations
from mspt.tomo import TomoConfig, reconstruct
from mspt.tomo.gauge import remove_rotation_gauge, remove_translation_gauge, translation_gauge_rows
from mspt.tomo.resample import downsample_images, linear_resample_matrix, resample_volume
from mspt.tomo.rotations import rotation_exp, rotation_log

QUICK = TomoConfig(levels=(1,), iterations=1, volume_iterations=1, final_iterations=0, progress=False)


def good_inputs(t=3, n=8):
    return np.ones((t, n, n), dtype=np.float32), tilt_series_rotations(np.linspace(-30, 30, t))


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(projections=np.ones((3, 8))), "projections"),
        (dict(projections=np.full((3, 8, 8), np.nan)), "projections"),
        (dict(rotation=tilt_series_rotations([0, 10])), "rotation"),
        (dict(rotation=np.ones((3, 3))), "rotation"),
        (dict(rotation=2 * tilt_series_rotations([0, 10, 20])), "rotation"),
        (dict(shifts_A=np.zeros((3, 3))), "shifts_A"),
        (dict(shifts_A=np.full((3, 2), np.inf)), "shifts_A"),
        (dict(pixel_size_A=0.0), "pixel_size_A"),
        (dict(pixel_size_A=float("nan")), "pixel_size_A"),
    ],
)
def test_bad_inputs_name_the_field(change, field):
    projections, rotation = good_inputs()
    args = dict(projections=projections, rotation=rotation, shifts_A=None, pixel_size_A=1.0) | change
    with pytest.raises(ValueError, match=field):
        reconstruct(args["projections"], args["rotation"], args["shifts_A"], pixel_size_A=args["pixel_size_A"],
                    config=QUICK)  # fmt: skip


def test_config_must_be_a_tomo_config():
    projections, rotation = good_inputs()
    with pytest.raises(TypeError, match="config"):
        reconstruct(projections, rotation, pixel_size_A=1.0, config={"levels": (1,)})


@pytest.mark.parametrize(
    "settings, field",
    [
        (dict(volume_shape=(8, 8)), "volume_shape"),
        (dict(volume_shape="big"), "volume_shape"),
        (dict(voxel_size_A=-1.0), "voxel_size_A"),
        (dict(levels=(1, 2)), "levels"),
        (dict(levels=()), "levels"),
        (dict(iterations=(1, 2)), "iterations"),
        (dict(volume_iterations=0), "volume_iterations"),
        (dict(align_rotation_from=3), "align_rotation_from"),
        (dict(threshold=1.5), "threshold"),
        (dict(support="yes"), "support"),
        (dict(blur_sigma_voxel=-0.5), "blur_sigma_voxel"),
        (dict(solver="adam"), "solver"),
        (dict(pre_align="phase"), "pre_align"),
        (dict(schedule="fast"), "schedule"),
        (dict(batch_size=0), "batch_size"),
        (dict(threads=0), "threads"),
        (dict(checkpoint_every=2), "checkpoint_path"),
        (dict(joint_damping=-1.0), "joint_damping"),
        (dict(pose_trust_region="yes"), "pose_trust_region"),
        (dict(rotation_prior_deg=0.0), "rotation_prior_deg"),
        (dict(atom_polish="yes"), "atom_polish"),
        (dict(atom_threshold=0.0), "atom_threshold"),
        (dict(atom_threshold=1.5), "atom_threshold"),
        (dict(atom_separation_A=-1.0), "atom_separation_A"),
        (dict(atom_iterations=2.5), "atom_iterations"),
        (dict(atom_iterations=0), "atom_iterations"),
    ],
)
def test_bad_settings_name_the_field(settings, field):
    with pytest.raises(ValueError, match=field):
        TomoConfig(**settings)


def test_rotation_vectors_round_trip_and_compose():
    rng = np.random.default_rng(0)
    w = rng.uniform(-1.0, 1.0, (20, 3))
    r = rotation_exp(w)
    assert np.max(np.abs(r @ np.swapaxes(r, 1, 2) - np.eye(3))) < 1e-12
    assert np.max(np.abs(rotation_log(r) - w)) < 1e-10
    # A rotation about y by a tilt equals the tilt series' pose for that tilt.
    assert np.max(np.abs(rotation_exp([[0.0, math.radians(25.0), 0.0]]) - tilt_series_rotations([25.0]))) < 1e-12


def test_gauge_removal_takes_out_a_common_rotation_and_translation_only():
    rng = np.random.default_rng(1)
    nominal = tilt_series_rotations(np.linspace(-60, 60, 9))
    own = rotation_exp(rng.normal(0, 0.01, (9, 3)))
    own_shifts = rng.normal(0, 0.5, (9, 2))
    # Subtract the gauge part of the own corrections so that they are gauge-free by construction.
    own_rotation = remove_rotation_gauge(own @ nominal, nominal)
    own_shifts = remove_translation_gauge(own_shifts, np.zeros((9, 2)), own_rotation)
    common = rotation_exp([0.02, -0.03, 0.01])
    c = np.array([0.7, -0.4, 1.1])
    moved_rotation = own_rotation @ common
    moved_shifts = own_shifts + np.einsum("tab,b->ta", translation_gauge_rows(moved_rotation), c)
    back = remove_rotation_gauge(moved_rotation, nominal)
    back_shifts = remove_translation_gauge(moved_shifts, np.zeros((9, 2)), back)
    assert np.max(np.abs(back - own_rotation)) < 1e-9
    assert np.max(np.abs(back_shifts - own_shifts)) < 1e-9


def test_resampling_keeps_the_centre_and_linear_functions():
    # A linear ramp in x (A) is reproduced exactly by linear interpolation inside the grid.
    matrix = linear_resample_matrix(16, 0.5, 6, 1.25)
    x_in = (np.arange(16) - 8) * 0.5
    x_out = (np.arange(6) - 3) * 1.25
    assert np.max(np.abs(matrix @ (2.0 * x_in + 1.0) - (2.0 * x_out + 1.0))) < 1e-12
    volume = np.zeros((9, 9, 9), dtype=np.float32)
    volume[4, 4, 4] = 1.0
    assert resample_volume(volume, 1.0, (5, 5, 5), 2.0)[2, 2, 2] == pytest.approx(1.0)
    # Downsampling keeps a constant image constant (units are preserved).
    assert np.allclose(downsample_images(np.full((2, 12, 12), 3.0), 4), 3.0, atol=1e-5)
