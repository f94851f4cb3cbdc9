"""mspt.tomo end to end: a phantom of atom-like blobs, a tilt series with perturbed poses and noise, exact
(analytic) projections; the reconstruction must recover the poses (gauge removed) and the volume.

Issue 5's targets: rotations within 0.1 degree rms and shifts within 0.1 A rms, the volume correlated at
0.95 or better inside the support. With the voxel volume alone the rotations stop at 0.17 degree (0.17-0.66
over 10 noise seeds): the voxels absorb most of what a tilt angle does to a projection. The atom-model polish
(``TomoConfig(atom_polish=True)``, the setting recommended for volumes of separate atoms) gets there.

Run as a script for the multi-seed study (``python tests/test_tomo_alignment.py 1 2 3``): each seed's rotation
error (deg rms, gauge removed; the part about the tilt axis), shift error, volume correlation and projector
calls, with the voxel volume alone and with the atom polish.
"""

import sys

import numpy as np
import pytest

from mspt.tomo import TomoConfig, reconstruct

from test_tomo_phantom import (blob_positions, blob_projections, blob_volume, perturbed_poses, pose_errors,
                               rotation_errors)  # fmt: skip

N, VOXEL_A, SIGMA_A = 48, 1.0, 1.1
TILTS_DEG = np.linspace(-60, 60, 19)
NOISE = 0.01  # Gaussian noise, standard deviation as a fraction of the largest projection value
RECOMMENDED = TomoConfig(progress=False, atom_polish=True)
VOXELS_ONLY = TomoConfig(progress=False)


def alignment_series(seed: int):
    """(data, clean projections, phantom volume, nominal rotations, true rotations, true shifts) of one seed."""
    rng = np.random.default_rng(seed)
    centres = blob_positions(rng, 40, 14.0, 3.5)
    amplitudes = rng.uniform(0.6, 1.0, len(centres))
    nominal, rotation, shifts = perturbed_poses(rng, TILTS_DEG, 2.0, 2.0)
    clean = blob_projections(centres, amplitudes, SIGMA_A, rotation, shifts, (N, N), VOXEL_A)
    data = clean + rng.normal(0.0, NOISE * clean.max(), clean.shape)
    phantom = blob_volume(centres, amplitudes, SIGMA_A, (N, N, N), VOXEL_A)
    return data, clean, phantom, nominal, rotation, shifts


def tilt_axis_error(result, rotation) -> float:
    """rms error (deg) of the rotations' component about the tilt axis (y), gauge removed."""
    return float(np.sqrt(np.mean(rotation_errors(result.rotation, rotation)[:, 1] ** 2)))


@pytest.fixture(scope="module")
def alignment_case():
    data, clean, phantom, nominal, rotation, shifts = alignment_series(1)
    result = reconstruct(data, nominal, pixel_size_A=VOXEL_A, config=RECOMMENDED)
    noise_floor = np.sum((data - clean) ** 2) / np.sum(data**2)
    return result, phantom, nominal, rotation, shifts, noise_floor, data


def test_poses_are_recovered(alignment_case, measured):
    result, _, nominal, rotation, shifts, *_ = alignment_case
    start_rotation, start_shift = pose_errors(nominal, np.zeros_like(shifts), rotation, shifts)
    rotation_error, shift_error = pose_errors(result.rotation, result.shifts_A, rotation, shifts)
    measured("tomo alignment", "initial rotation error (deg rms)", start_rotation, 1.0, ">")
    measured("tomo alignment", "initial shift error (A rms)", start_shift, 0.5, ">")
    # Issue 5 also wants few projector calls: the voxel schedule alone takes 654, the polish adds 126-168.
    assert measured("tomo alignment", "projector calls", result.projector_calls, 1000) < 1000
    assert measured("tomo alignment", "shift error (A rms)", shift_error, 0.1) <= 0.1
    assert measured("tomo alignment", "rotation error (deg rms)", rotation_error, 0.1) <= 0.1


def test_atom_polish_recovers_what_the_voxel_volume_absorbs(alignment_case, measured):
    """The voxels' surplus freedom takes up the tilt-axis information: alone they leave a rotation error well
    above the issue's 0.1 degree, mostly about the tilt axis; the atoms, refined with the poses, leave one
    whose tilt-axis part is no larger than the others."""
    polished, _, nominal, rotation, shifts, _, data = alignment_case
    voxels = reconstruct(data, nominal, pixel_size_A=VOXEL_A, config=VOXELS_ONLY)
    voxel_error, _ = pose_errors(voxels.rotation, voxels.shifts_A, rotation, shifts)
    polished_error, _ = pose_errors(polished.rotation, polished.shifts_A, rotation, shifts)
    voxel_tilt_axis = measured("tomo alignment", "voxels only: tilt-axis rotation error (deg rms)",
                               tilt_axis_error(voxels, rotation), 0.1, ">")  # fmt: skip
    assert measured("tomo alignment", "voxels only: rotation error (deg rms)", voxel_error, 0.1, ">") > 0.1
    assert voxel_tilt_axis > 0.8 * voxel_error  # the tilt axis carries most of it
    polished_tilt_axis = tilt_axis_error(polished, rotation)
    bound = voxel_tilt_axis / 3
    assert measured("tomo alignment", "atom polish: tilt-axis rotation error (deg rms)", polished_tilt_axis,
                    bound) < bound  # fmt: skip
    assert polished_error < voxel_error / 2
    measured("tomo alignment", "voxels only: projector calls", voxels.projector_calls, 1000)


def test_volume_matches_the_phantom_inside_the_support(alignment_case, measured):
    result, phantom, *_ = alignment_case
    inside = result.support
    assert inside.mean() < 0.5  # a real restriction
    assert phantom[inside].sum() / phantom.sum() > 0.99  # that keeps the atoms
    correlation = np.corrcoef(result.volume[inside], phantom[inside])[0, 1]
    assert measured("tomo alignment", "volume correlation in support", correlation, 0.95, ">") >= 0.95


def test_misfit_falls_to_the_noise_level(alignment_case, measured):
    result, *_, noise_floor, _ = alignment_case
    # Consistent poses and volume leave the noise, |noise|^2 / |b|^2, and little more; wrong poses leave
    # a misfit well above it (the first full-resolution steps).
    ratio = result.loss[-1] / noise_floor
    first_fine = result.loss[np.argmax(result.levels == 1)]
    measured("tomo alignment", "misfit at first full-resolution step / noise", first_fine / noise_floor, 2.0, ">")
    assert measured("tomo alignment", "final misfit / noise", ratio, 1.5) < 1.5
    per_tilt = result.residuals**2 / noise_floor
    assert measured("tomo alignment", "worst per-tilt misfit / noise", per_tilt.max(), 3.0) < 3.0


def seed_study(seeds) -> None:
    """Print the figures of each seed with the voxel volume alone and with the atom polish."""
    print("seed  setting      rotation  tilt axis  shift   volume r  calls")
    for seed in seeds:
        data, _, phantom, nominal, rotation, shifts = alignment_series(seed)
        for name, config in (("voxels only", VOXELS_ONLY), ("atom polish", RECOMMENDED)):
            result = reconstruct(data, nominal, pixel_size_A=VOXEL_A, config=config)
            rotation_error, shift_error = pose_errors(result.rotation, result.shifts_A, rotation, shifts)
            inside = result.support
            correlation = np.corrcoef(result.volume[inside], phantom[inside])[0, 1]
            print(f"{seed:4d}  {name:11s}  {rotation_error:8.4f}  {tilt_axis_error(result, rotation):9.4f}  "
                  f"{shift_error:6.4f}  {correlation:8.4f}  {result.projector_calls:5.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    seed_study([int(seed) for seed in sys.argv[1:]] or range(1, 11))
