"""mspt.tomo pose updates on noise-free exact projections, from a volume solved at the wrong poses: one
per-tilt Gauss-Newton step at a fixed volume and one joint volume-and-rotation Gauss-Newton step each take
out more than half of the rotation error."""

import numpy as np

from mspt.tomo.joint_step import joint_gauss_newton_step
from mspt.tomo.pose_update import gauss_newton_step
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
