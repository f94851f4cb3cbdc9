"""mspt.tomo end to end: a phantom of atom-like blobs, a tilt series with perturbed poses and noise, exact
(analytic) projections; the reconstruction must recover the poses (gauge removed) and the volume."""


import numpy as np
import pytest

from mspt.tomo import TomoConfig, reconstruct

from test_tomo_phantom import blob_positions, blob_projections, blob_volume, perturbed_poses, pose_errors

N, VOXEL_A, SIGMA_A = 48, 1.0, 1.1
TILTS_DEG = np.linspace(-60, 60, 19)
NOISE = 0.01  # Gaussian noise, standard deviation as a fraction of the largest projection value


@pytest.fixture(scope="module")
def alignment_case():
    rng = np.random.default_rng(1)
    centres = blob_positions(rng, 40, 14.0, 3.5)
    amplitudes = rng.uniform(0.6, 1.0, len(centres))
    nominal, rotation, shifts = perturbed_poses(rng, TILTS_DEG, 2.0, 2.0)
    clean = blob_projections(centres, amplitudes, SIGMA_A, rotation, shifts, (N, N), VOXEL_A)
    data = clean + rng.normal(0.0, NOISE * clean.max(), clean.shape)
    phantom = blob_volume(centres, amplitudes, SIGMA_A, (N, N, N), VOXEL_A)
    result = reconstruct(data, nominal, pixel_size_A=VOXEL_A, config=TomoConfig(progress=False))
    noise_floor = np.sum((data - clean) ** 2) / np.sum(data**2)
    return result, phantom, nominal, rotation, shifts, noise_floor


def test_poses_are_recovered(alignment_case, measured):
    result, _, nominal, rotation, shifts, _ = alignment_case
    start_rotation, start_shift = pose_errors(nominal, np.zeros_like(shifts), rotation, shifts)
    rotation_error, shift_error = pose_errors(result.rotation, result.shifts_A, rotation, shifts)
    measured("tomo alignment", "initial rotation error (deg rms)", start_rotation, 1.0, ">")
    measured("tomo alignment", "initial shift error (A rms)", start_shift, 0.5, ">")
    measured("tomo alignment", "projector calls", result.projector_calls, 1000)
    assert measured("tomo alignment", "shift error (A rms)", shift_error, 0.1) <= 0.1
    # Rotations: a tenfold improvement at least (the issue's target, 0.1 degree, is the next test).
    bound = start_rotation / 10
    assert measured("tomo alignment", "rotation error (deg rms)", rotation_error, bound) <= bound


@pytest.mark.xfail(strict=True, reason="the issue's 0.1 degree rms is not reached: 0.17 degree remains, 0.15 of it "
                   "about the tilt axis, and it looks noise-limited rather than a stall: started from the true poses "
                   "the refinement settles at 0.17-0.18 degree too (noise-free data from our own projector: 0.07 "
                   "with 40 volume iterations per step), and the poses it finds fit the data better than the true "
                   "ones once the volume is re-solved (chi^2 lower by about 84 for 95 pose parameters); no step "
                   "smoothing, 4x volume iterations, momentum off, a tighter support or a blurred volume basis "
                   "leave 0.15-0.31")  # fmt: skip
def test_rotations_reach_the_issue_target(alignment_case):
    result, _, nominal, rotation, shifts, _ = alignment_case
    rotation_error, _ = pose_errors(result.rotation, result.shifts_A, rotation, shifts)
    assert rotation_error <= 0.1


def test_volume_matches_the_phantom_inside_the_support(alignment_case, measured):
    result, phantom, *_ = alignment_case
    inside = result.support
    assert inside.mean() < 0.5  # a real restriction
    assert phantom[inside].sum() / phantom.sum() > 0.99  # that keeps the atoms
    correlation = np.corrcoef(result.volume[inside], phantom[inside])[0, 1]
    assert measured("tomo alignment", "volume correlation in support", correlation, 0.95, ">") >= 0.95


def test_misfit_falls_to_the_noise_level(alignment_case, measured):
    result, *_, noise_floor = alignment_case
    # Consistent poses and volume leave the noise, |noise|^2 / |b|^2, and little more; wrong poses leave
    # a misfit well above it (the first full-resolution steps).
    ratio = result.loss[-1] / noise_floor
    first_fine = result.loss[np.argmax(result.levels == 1)]
    measured("tomo alignment", "misfit at first full-resolution step / noise", first_fine / noise_floor, 2.0, ">")
    assert measured("tomo alignment", "final misfit / noise", ratio, 1.5) < 1.5
    per_tilt = result.residuals**2 / noise_floor
    assert measured("tomo alignment", "worst per-tilt misfit / noise", per_tilt.max(), 3.0) < 3.0
