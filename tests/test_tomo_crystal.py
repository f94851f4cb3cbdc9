"""mspt.tomo on crystalline data: a 3x3x3-cell cubic lattice of atom-like blobs (a = 3.9 A, corner and body-centre
sites), 13 tilts over +-60 degrees, 3 % noise and projections slightly blurrier than the volume's atoms (a
projection-model mismatch, like ptychography's). The projections of a crystal are nearly self-similar under
small rotations, so the rotations are weakly determined; a refinement must not wander off correct poses."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from mspt.ops import tilt_series_rotations
from mspt.tomo import TomoConfig, reconstruct
from mspt.tomo.series_operator import LevelGeometry, SeriesProjector
from mspt.tomo.volume_solver import sirt_weights, solve_volume

from test_tomo_phantom import blob_projections, perturbed_poses, pose_errors, rotation_errors

N, VOXEL_A, SIGMA_A, LATTICE_A = 40, 0.5, 0.55, 3.9
TILTS_DEG = np.linspace(-60, 60, 13)
NOISE, BLUR_PX = 0.03, 0.6  # noise std as a fraction of the largest projection value; extra blur of the data


def lattice_sites(cells: int, a_A: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, z) of the corner sites ((cells + 1)^3, amplitude 1) and body centres (cells^3, amplitude 0.6) of a
    cube of ``cells`` cubic cells centred on the origin."""
    corners = np.stack(np.meshgrid(*[np.arange(cells + 1)] * 3, indexing="ij"), -1).reshape(-1, 3) - cells / 2
    centres = np.stack(np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"), -1).reshape(-1, 3) - (cells - 1) / 2
    sites = np.concatenate([corners, centres]) * a_A
    return sites, np.concatenate([np.ones(len(corners)), np.full(len(centres), 0.6)])


def crystal_series(rotation, shifts_A, seed: int, noise: float = NOISE, blur_px: float = BLUR_PX) -> np.ndarray:
    sites, amplitudes = lattice_sites(3, LATTICE_A)
    clean = gaussian_filter(blob_projections(sites, amplitudes, SIGMA_A, rotation, shifts_A, (N, N), VOXEL_A),
                            (0, blur_px, blur_px))  # fmt: skip
    return clean + np.random.default_rng(seed).normal(0.0, noise * clean.max(), clean.shape)


def test_lattice_sites_form_the_stated_crystal():
    sites, amplitudes = lattice_sites(3, LATTICE_A)
    assert sites.shape == (64 + 27, 3) and amplitudes.sum() == pytest.approx(64 + 0.6 * 27)
    assert np.allclose(sites.mean(axis=0), 0.0)
    distances = np.linalg.norm(sites[:, None] - sites[None], axis=-1)[np.triu_indices(len(sites), 1)]
    assert distances.min() == pytest.approx(LATTICE_A * np.sqrt(3) / 2)  # corner to body centre
    assert np.ptp(sites[:64], axis=0) == pytest.approx([3 * LATTICE_A] * 3)


def test_misfit_does_not_pin_the_tilt_angles_near_a_zone_axis(measured):
    """Why the exact-pose drift is not an optimiser fault alone: on noise-free, unblurred data, moving the tilts at
    +-40 and +-50 degrees 3.6 degrees towards the [101] zone axis (45 degrees) fits the data as well as the exact
    tilts once the volume is re-solved, while the same errors at +-10 and +-20 degrees cost about 400 times
    the misfit. A refinement that only lowers the misfit has nothing to hold those four tilt angles with."""
    data = crystal_series(tilt_series_rotations(TILTS_DEG), np.zeros((len(TILTS_DEG), 2)), 0, 0.0, 0.0)
    op = SeriesProjector(LevelGeometry(1, (N, N, N), VOXEL_A, (N, N), VOXEL_A), 16, None, [0.0])
    support = np.ones((N, N, N), dtype=bool)

    def misfit(tilts_deg):
        rotation, shifts = tilt_series_rotations(tilts_deg), np.zeros((len(tilts_deg), 2))
        weights = sirt_weights(op, support, rotation, shifts)
        zero = np.zeros((N, N, N), np.float32)
        solution = solve_volume(op, data, zero, np.zeros_like(data), rotation, shifts, weights, 100, True)
        return 2.0 * solution.loss / float(np.sum(data.astype(np.float64) ** 2))

    def moved(pair):  # the inner tilt of the pair out by 3.6 degrees, the outer one in
        inner, outer = pair
        step = np.where(np.abs(TILTS_DEG) == inner, 3.6, np.where(np.abs(TILTS_DEG) == outer, -3.6, 0.0))
        return TILTS_DEG + np.sign(TILTS_DEG) * step

    exact = misfit(TILTS_DEG)
    towards_zone_axis = measured("tomo crystal", "misfit, 4 tilts 3.6 deg towards [101] / exact",
                                 misfit(moved((40, 50))) / exact, 1.0)  # fmt: skip
    elsewhere = measured("tomo crystal", "misfit, 4 tilts 3.6 deg off at +-10, +-20 / exact",
                         misfit(moved((10, 20))) / exact, 100.0, ">")  # fmt: skip
    assert towards_zone_axis < 1.0
    assert elsewhere > 100.0


@pytest.fixture(scope="module")
def exact_runs():
    """The same exact-pose data refined with the plain Gauss-Newton pose steps, then the atom polish (the poses
    before the polish come from the last outer step's callback), and with the trust region."""
    nominal = tilt_series_rotations(TILTS_DEG)
    data = crystal_series(nominal, np.zeros((len(nominal), 2)), seed=3)
    steps = []
    polished = reconstruct(data, nominal, pixel_size_A=VOXEL_A, config=TomoConfig(atom_polish=True, progress=False),
                           callback=steps.append)  # fmt: skip
    trust = TomoConfig(pose_trust_region=True, progress=False)
    trusted = reconstruct(data, nominal, pixel_size_A=VOXEL_A, config=trust)
    return nominal, {"plain": steps[-1], "polished": polished, "trust": trusted}


def test_trust_region_curbs_the_rotation_drift_on_exact_poses(exact_runs, measured):
    nominal, runs = exact_runs
    zero = np.zeros((len(nominal), 2))
    plain, _ = pose_errors(runs["plain"].rotation, runs["plain"].shifts_A, nominal, zero)
    trusted, shift_error = pose_errors(runs["trust"].rotation, runs["trust"].shifts_A, nominal, zero)
    # The failure this captures: plain Gauss-Newton steps wander by degrees from poses that were exact.
    measured("tomo crystal", "exact poses, plain steps: rotation drift (deg rms)", plain, 1.0, ">")
    assert plain > 1.0
    bound = 0.8 * plain
    assert measured("tomo crystal", "exact poses, trust region: rotation drift (deg rms)", trusted, bound) < bound
    assert measured("tomo crystal", "exact poses, trust region: shift error (A rms)", shift_error, 0.05) < 0.05


def test_atom_polish_undoes_the_drift_towards_the_zone_axis(exact_runs, measured):
    """The plain steps move the tilts at +-40 and +-50 degrees some 3 degrees towards the [101] zone axis, which
    a voxel volume follows at no cost in misfit; atoms refined with the poses cannot follow, and bring them back."""
    nominal, runs = exact_runs
    zero = np.zeros((len(nominal), 2))
    near_zone_axis = np.isin(np.abs(TILTS_DEG), (40, 50))
    plain_tilt_axis = np.abs(rotation_errors(runs["plain"].rotation, nominal)[near_zone_axis, 1])
    polished_tilt_axis = np.abs(rotation_errors(runs["polished"].rotation, nominal)[near_zone_axis, 1])
    what = "tilt-axis error at +-40, +-50 deg"
    assert measured("tomo crystal", f"plain steps: {what} (deg, min)", plain_tilt_axis.min(), 2.0, ">") > 2.0
    assert measured("tomo crystal", f"atom polish: {what} (deg, max)", polished_tilt_axis.max(), 0.3) < 0.3
    plain, _ = pose_errors(runs["plain"].rotation, runs["plain"].shifts_A, nominal, zero)
    polished, shift_error = pose_errors(runs["polished"].rotation, runs["polished"].shifts_A, nominal, zero)
    bound = plain / 3
    assert measured("tomo crystal", "exact poses, atom polish: rotation drift (deg rms)", polished, bound) < bound
    assert measured("tomo crystal", "exact poses, atom polish: shift error (A rms)", shift_error, 0.05) < 0.05


@pytest.mark.xfail(strict=True, reason="the issue's 0.2 degree rms on exact poses is not reached: the plain steps "
                   "drift by 1.9 degree rms, the trust region with the rotation prior by 1.2 (30 volume iterations per "
                   "step: 0.54; the joint step: 0.76), both about the tilt axis at +-40 and +-50 degrees, which move "
                   "some 3 degrees towards the [101] zone axis (the misfit does not pin those angles: "
                   "test_misfit_does_not_pin_the_tilt_angles_near_a_zone_axis). The atom polish undoes that but leaves "
                   "0.36, most of it a 1.0 degree rotation about x of the 0 degree tilt: there the beam runs down the "
                   "[001] columns, and a rotation about an axis across the beam moves a column's atoms above and below "
                   "its centre in opposite directions, so the projection changes only to second order and 3 % noise "
                   "sets the angle; refined from the exact poses, the atoms end at 0.20-0.22")  # fmt: skip
def test_rotations_stay_at_exact_poses(exact_runs):
    nominal, runs = exact_runs
    drift, _ = pose_errors(runs["polished"].rotation, runs["polished"].shifts_A, nominal, np.zeros((len(nominal), 2)))
    assert drift <= 0.2


def test_perturbed_rotations_are_recovered(measured):
    """With the atom polish; the voxel volume alone ends further off than it started (1.24 degree rms before,
    2.05 after), for the reason given at test_rotations_stay_at_exact_poses."""
    nominal, rotation, shifts = perturbed_poses(np.random.default_rng(3), TILTS_DEG, 1.5, 1.5)
    data = crystal_series(rotation, shifts, seed=4)
    result = reconstruct(data, nominal, pixel_size_A=VOXEL_A, config=TomoConfig(atom_polish=True, progress=False))
    start, _ = pose_errors(nominal, np.zeros_like(shifts), rotation, shifts)
    error, shift_error = pose_errors(result.rotation, result.shifts_A, rotation, shifts)
    measured("tomo crystal", "perturbed poses: initial rotation error (deg rms)", start, 1.0, ">")
    measured("tomo crystal", "perturbed poses: shift error (A rms)", shift_error, 0.1)
    assert measured("tomo crystal", "perturbed poses: rotation error (deg rms)", error, start / 2) <= start / 2
