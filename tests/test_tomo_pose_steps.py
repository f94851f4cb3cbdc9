"""mspt.tomo pose updates on noise-free exact projections, from a volume solved at the wrong poses: one
per-tilt Gauss-Newton step at a fixed volume and one joint volume-and-rotation Gauss-Newton step each take
out more than half of the rotation error. The trust region's decision (misfit + rotation prior) and its
damping schedule against hand-computed values."""

import math

import numpy as np

from mspt.tomo.joint_step import joint_gauss_newton_step
from mspt.tomo.pose_update import MAX_DAMPING, MIN_DAMPING, PoseTrial, gauss_newton_step, updated_damping
from mspt.tomo.series_operator import LevelGeometry, SeriesProjector
from mspt.tomo.volume_solver import sirt_weights, solve_volume

from test_tomo_phantom import blob_positions, blob_projections, perturbed_poses, pose_errors


def test_one_pose_step_halves_the_rotation_error(measured):
    rng = np.random.default_rng(4)
    n = 32
    centres = blob_positions(rng, 20, 10.0, 3.0)
    nominal, rotation, shifts = perturbed_poses(rng, np.linspace(-60, 60, 13), 1.5, 0.0)
    data = blob_projections(centres, np.ones(len(centres)), 1.1, rotation, shifts, (n, n), 1.0).astype(np.float32)
    op = SeriesProjector(LevelGeometry(1, (n, n, n), 1.0, (n, n), 1.0), 16, None, [0.0])
    support = np.ones((n, n, n), dtype=bool)
    weights = sirt_weights(op, support, nominal, shifts)
    solution = solve_volume(op, data, np.zeros((n, n, n), np.float32), np.zeros_like(data), nominal, shifts,
                            weights, 30, True)  # fmt: skip
    start, _ = pose_errors(nominal, shifts, rotation, shifts)
    common = dict(step=1.0, max_rotation_rad=np.radians(2.0), max_shift_A=1.0)
    fixed_rotation, _ = gauss_newton_step(op, solution.volume, solution.model, data, nominal, shifts,
                                          refine_rotation=True, refine_shifts=False, smoothing_px=1.0,
                                          **common)  # fmt: skip
    joint_rotation, _ = joint_gauss_newton_step(op, solution.volume, solution.model, data, nominal, shifts, weights,
                                                support, iterations=10, refine_shifts=False, nonnegative=True,
                                                damping=0.3, **common)  # fmt: skip
    fixed, _ = pose_errors(fixed_rotation, shifts, rotation, shifts)
    joint, _ = pose_errors(joint_rotation, shifts, rotation, shifts)
    measured("pose steps", "start rotation error (deg rms)", start, 0.5, ">")
    assert measured("pose steps", "after one fixed-volume step / start", fixed / start, 0.5) < 0.5
    assert measured("pose steps", "after one joint step / start", joint / start, 0.5) < 0.5


def test_trust_region_weighs_the_misfit_against_the_rotation_prior():
    # 3 tilts of 4 x 5 pixels with misfit 10 before the step: residual variance 2 * 10 / 20 = 1 per pixel, so a
    # prior of 1 degree costs 0.5 |w / 1 degree|^2 in misfit units.
    trial = PoseTrial(np.eye(3)[None].repeat(3, 0), np.zeros((3, 2)), np.zeros((2, 2, 2)), np.zeros((3, 4, 5)))
    one = math.radians(1.0)
    before = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, one, 0.0]])
    after = np.array([[0.0, one, 0.0], [0.0, 0.5 * one, 0.0], [0.0, 0.0, 0.0]])
    misfit_after = np.array([9.0, 9.99, 10.3])
    # tilt 0: gains 1.0 for a prior cost of 0.5 (kept); tilt 1: gains 0.01 for 0.125 (undone);
    # tilt 2: loses 0.3 but returns to the input pose, which saves 0.5 (kept).
    accepted = trial.accepted(np.full(3, 10.0), misfit_after, before, after, one)
    assert accepted.tolist() == [True, False, True]
    # Without the prior's pull (a very wide prior) tilt 1 is kept and tilt 2 undone.
    assert trial.accepted(np.full(3, 10.0), misfit_after, before, after, 1e3).tolist() == [True, True, False]


def test_damping_rises_tenfold_on_rejection_and_falls_threefold_on_acceptance():
    damping = np.array([MIN_DAMPING, 0.3, 3.0, MAX_DAMPING])
    out = updated_damping(damping, np.array([True, True, False, False]))
    assert np.allclose(out, [MIN_DAMPING, 0.1, 30.0, MAX_DAMPING])
