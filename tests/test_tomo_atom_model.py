"""The Gaussian-atom model of mspt.tomo's atom polish: its projections against the analytic blob projections of
test_tomo_phantom (an independent code), its Jacobian against finite differences and its transpose against
the dot-product test; the joint refinement on exact data; the atom detection; the completion of a model
that missed an atom and the refusal of a sample that atoms alone do not describe."""

import math

import numpy as np
import pytest

from mspt.tomo.atom_model import AtomProjections, Atoms
from mspt.tomo.atom_polish import detect_atoms, polish_poses_with_atoms
from mspt.tomo.atom_refine import refine_atoms_and_poses
from mspt.tomo.misfit_consistency import phase_randomised
from mspt.tomo.rotations import rotation_exp
from mspt.tomo.series_operator import LevelGeometry, SeriesProjector

from test_tomo_phantom import blob_positions, blob_projections, blob_volume, perturbed_poses, pose_errors

SHAPE, PIXEL_A = (36, 40), 0.8


def random_atoms(rng, count=10, radius_A=9.0, min_distance_A=3.0) -> Atoms:
    return Atoms(blob_positions(rng, count, radius_A, min_distance_A), rng.uniform(0.5, 1.0, count),
                 rng.uniform(0.8, 1.4, count))  # fmt: skip


def exact_projections(atoms: Atoms, rotation, shifts_A, shape=SHAPE, pixel_A=PIXEL_A) -> np.ndarray:
    return sum(blob_projections(atoms.positions_A[n : n + 1], atoms.amplitudes[n : n + 1], atoms.widths_A[n], rotation,
                                shifts_A, shape, pixel_A) for n in range(len(atoms)))  # fmt: skip


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    atoms = random_atoms(rng)
    _, rotation, shifts = perturbed_poses(rng, np.linspace(-60, 60, 5), 2.0, 2.0)
    return rng, atoms, rotation, shifts, AtomProjections(atoms, rotation, shifts, SHAPE, PIXEL_A)


def test_projections_match_the_analytic_blobs(model, measured):
    _, atoms, rotation, shifts, projections = model
    reference = exact_projections(atoms, rotation, shifts)
    error = np.max(np.abs(projections.images() - reference)) / reference.max()
    # Each atom is drawn within 4 widths of its centre: the tails beyond (3e-4 of its peak at the edge) are left out.
    assert measured("atom model", "projections vs analytic blobs (max rel.)", error, 2e-4) < 2e-4


def test_jacobian_products_match_finite_differences(model, measured):
    rng, atoms, rotation, shifts, projections = model
    atom_step, tilt_step = rng.normal(size=(len(atoms), 5)), rng.normal(size=(len(rotation), 5))
    tilt_step[:, :3] *= 0.02  # rad
    eps = 1e-3

    def images(sign):
        moved_rotation = rotation_exp(sign * eps * tilt_step[:, :3]) @ rotation
        moved = AtomProjections(atoms.moved(sign * eps * atom_step), moved_rotation,
                                shifts + sign * eps * tilt_step[:, 3:], SHAPE, PIXEL_A)  # fmt: skip
        return moved.images()

    difference = (images(1) - images(-1)) / (2 * eps)
    error = np.max(np.abs(projections.apply(atom_step, tilt_step) - difference)) / np.max(np.abs(difference))
    assert measured("atom model", "J v vs central differences (max rel.)", error, 1e-4) < 1e-4


def test_transpose_is_the_adjoint(model, measured):
    rng, atoms, rotation, _, projections = model
    atom_step, tilt_step = rng.normal(size=(len(atoms), 5)), rng.normal(size=(len(rotation), 5))
    images = rng.normal(size=(len(rotation), *SHAPE))
    atom_part, tilt_part = projections.apply_transpose(images)
    lhs = float(np.sum(projections.apply(atom_step, tilt_step) * images))
    rhs = float(np.sum(atom_part * atom_step) + np.sum(tilt_part * tilt_step))
    assert measured("atom model", "dot-product test (rel.)", abs(lhs - rhs) / abs(lhs), 1e-5) < 1e-5


def test_diagonal_blocks_are_those_of_the_explicit_jacobian(measured):
    rng = np.random.default_rng(1)
    # Atoms 9 A apart along the tilt axis and narrow: no two windows (4 widths = 4 pixels) overlap at any tilt,
    # so the tilt blocks are exact too.
    atoms = Atoms(np.array([[-3.0, -9.0, 2.0], [4.0, 0.0, -3.0], [1.0, 9.0, 5.0]]), np.array([1.0, 0.7, 0.8]),
                  np.array([0.6, 0.7, 0.8]))  # fmt: skip
    _, rotation, shifts = perturbed_poses(rng, np.linspace(-45, 45, 3), 2.0, 1.0)
    projections = AtomProjections(atoms, rotation, shifts, SHAPE, PIXEL_A)
    atom_blocks, tilt_blocks = projections.block_diagonal()

    def columns(which, index):
        out = []
        for k in range(5):
            atom_step, tilt_step = np.zeros((len(atoms), 5)), np.zeros((len(rotation), 5))
            (atom_step if which == "atom" else tilt_step)[index, k] = 1.0
            out.append(projections.apply(atom_step, tilt_step).ravel())
        return np.array(out)

    errors = []
    for which, blocks, count in (("atom", atom_blocks, len(atoms)), ("tilt", tilt_blocks, len(rotation))):
        for index in range(count):
            explicit = columns(which, index) @ columns(which, index).T
            errors.append(np.max(np.abs(blocks[index] - explicit)) / np.max(np.abs(explicit)))
    assert measured("atom model", "diagonal blocks vs explicit J^T J (max rel.)", max(errors), 1e-5) < 1e-5


def test_removal_cost_is_the_rise_of_the_misfit(model):
    rng, atoms, rotation, shifts, projections = model
    data = projections.images() + rng.normal(0, 0.05, (len(rotation), *SHAPE))
    residual = projections.images() - data
    cost = projections.removal_cost(residual)
    for n in (0, 3, 7):
        keep = np.arange(len(atoms)) != n
        without = AtomProjections(atoms.subset(keep), rotation, shifts, SHAPE, PIXEL_A).images()
        rise = 0.5 * np.sum((without - data) ** 2) - 0.5 * np.sum(residual**2)
        assert cost[n] == pytest.approx(rise, rel=1e-4)


def test_refinement_recovers_atoms_and_poses_from_exact_data(measured):
    rng = np.random.default_rng(2)
    atoms = random_atoms(rng, count=12)
    nominal, rotation, shifts = perturbed_poses(rng, np.linspace(-60, 60, 9), 1.0, 0.5)
    data = exact_projections(atoms, rotation, shifts)
    start = Atoms(atoms.positions_A + rng.uniform(-0.3, 0.3, (12, 3)), atoms.amplitudes * rng.uniform(0.8, 1.2, 12),
                  atoms.widths_A * rng.uniform(0.85, 1.15, 12))  # fmt: skip
    fit = refine_atoms_and_poses(start, data, nominal, np.zeros_like(shifts), PIXEL_A, iterations=30,
                                 width_bounds_A=(0.4, 3.0))  # fmt: skip
    rotation_error, shift_error = pose_errors(fit.rotation, fit.shifts_A, rotation, shifts)
    start_error, _ = pose_errors(nominal, 0 * shifts, rotation, shifts)
    measured("atom refinement", "initial rotation error (deg rms)", start_error, 0.5, ">")
    assert measured("atom refinement", "exact data: rotation error (deg rms)", rotation_error, 1e-3) < 1e-3
    assert measured("atom refinement", "exact data: shift error (A rms)", shift_error, 1e-3) < 1e-3
    assert np.max(np.abs(fit.atoms.widths_A - atoms.widths_A)) < 1e-3
    assert fit.misfit / (0.5 * np.sum(data**2)) < 1e-8


def test_detection_finds_sampled_atoms_with_their_widths(measured):
    rng = np.random.default_rng(3)
    centres = blob_positions(rng, 15, 10.0, 3.5)
    amplitudes = rng.uniform(0.6, 1.0, 15)
    volume = blob_volume(centres, amplitudes, 1.1, (32, 32, 32), 1.0).astype(np.float32)
    atoms = detect_atoms(volume, 1.0, threshold=0.2, min_separation_A=1.5)
    assert len(atoms) == 15
    distance = np.linalg.norm(centres[:, None] - atoms.positions_A[None], axis=-1)
    nearest = distance.argmin(axis=1)
    # A start for the refinement, not its result: a neighbour's tail (atoms 3.5 A apart) pulls the Gaussian fit
    # to a peak's 3 x 3 x 3 neighbourhood by up to a sixth of a voxel and widens it by up to a tenth; the joint
    # refinement removes both.
    assert measured("atom detection", "position error (A, max)", distance.min(axis=1).max(), 0.25) < 0.25
    width_error = np.max(np.abs(atoms.widths_A[nearest] / 1.1 - 1))
    assert measured("atom detection", "width error (rel., max)", width_error, 0.15) < 0.15
    amplitude_error = np.max(np.abs(atoms.amplitudes[nearest] / amplitudes - 1))
    assert measured("atom detection", "amplitude error (rel., max)", amplitude_error, 0.15) < 0.15


N, VOXEL_A, SIGMA_A = 32, 1.0, 1.1
POLISH_TILTS = np.linspace(-60, 60, 9)


def polish_case(rng):
    centres = blob_positions(rng, 14, 9.0, 3.5)
    amplitudes = rng.uniform(0.6, 1.0, len(centres))
    nominal, rotation, shifts = perturbed_poses(rng, POLISH_TILTS, 0.5, 0.5)
    clean = blob_projections(centres, amplitudes, SIGMA_A, rotation, shifts, (N, N), VOXEL_A)
    data = clean + rng.normal(0.0, 0.005 * clean.max(), clean.shape)
    op = SeriesProjector(LevelGeometry(1, (N, N, N), VOXEL_A, (N, N), VOXEL_A), 16, None, [0.0])
    return centres, amplitudes, nominal, rotation, shifts, data, op


def rigidly_fitted(points, targets) -> np.ndarray:
    """``points`` moved by the rotation and translation that bring them closest to ``targets`` (Kabsch)."""
    p, q = points - points.mean(0), targets - targets.mean(0)
    u, _, vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return p @ rotation + targets.mean(0)


def test_polish_completes_a_model_that_missed_an_atom(measured):
    rng = np.random.default_rng(4)
    centres, amplitudes, nominal, rotation, shifts, data, op = polish_case(rng)
    # The volume handed over lacks atom 0 (as a weak atom merged with a neighbour by the missing wedge would).
    volume = blob_volume(centres[1:], amplitudes[1:], SIGMA_A, (N, N, N), VOXEL_A).astype(np.float32)
    support = np.ones((N, N, N), dtype=bool)
    polish = polish_poses_with_atoms(op, volume, support, data, nominal, np.zeros_like(shifts), threshold=0.2,
                                     min_separation_A=1.5, iterations=20, volume_iterations=10)  # fmt: skip
    assert polish.accepted
    assert len(polish.atoms) == len(centres)
    # The atoms sit in the frame of the refined poses, the truth's up to the gauge (a common rigid motion):
    # matched to the true atoms by a rigid fit, the one that was missed must be where it is too.
    found = polish.atoms.positions_A
    matched = found[np.linalg.norm(centres[:, None] - found[None], axis=-1).argmin(axis=1)]
    error = np.linalg.norm(rigidly_fitted(matched, centres) - centres, axis=1)
    assert measured("atom polish", "completed model: missed atom's position error (A)", error[0], 0.1) < 0.1
    assert error.max() < 0.1
    rotation_error, shift_error = pose_errors(polish.rotation, polish.shifts_A, rotation, shifts)
    measured("atom polish", "completed model: structured fraction of the misfit", polish.structured_fraction, 0.2)
    assert measured("atom polish", "completed model: rotation error (deg rms)", rotation_error, 0.1) < 0.1
    assert measured("atom polish", "completed model: shift error (A rms)", shift_error, 0.02) < 0.02


def test_polish_keeps_the_voxel_poses_of_atoms_on_a_smooth_support(measured):
    rng = np.random.default_rng(5)
    centres, amplitudes, nominal, rotation, shifts, data, op = polish_case(rng)
    # A broad density under the atoms (an amorphous support, say) that no set of atoms describes.
    support_centre, support_amplitude, support_width_A = np.zeros((1, 3)), [0.05], 5.0
    background = blob_projections(support_centre, support_amplitude, support_width_A, rotation, shifts, (N, N), VOXEL_A)
    volume = (blob_volume(centres, amplitudes, SIGMA_A, (N, N, N), VOXEL_A)
              + blob_volume(support_centre, support_amplitude, support_width_A, (N, N, N), VOXEL_A))  # fmt: skip
    start_shifts = np.zeros_like(shifts)
    measured("atom polish", "smooth support: its maximum / the data's", background.max() / data.max(), 0.1, ">")
    with pytest.warns(RuntimeWarning, match="atom_polish"):
        polish = polish_poses_with_atoms(op, volume.astype(np.float32), np.ones((N, N, N), dtype=bool),
                                         data + background, nominal, start_shifts, threshold=0.2,
                                         min_separation_A=1.5, iterations=20, volume_iterations=10)  # fmt: skip
    assert not polish.accepted
    structured = polish.structured_fraction
    assert measured("atom polish", "smooth support: structured fraction of the misfit", structured, 0.5, ">") > 0.5
    assert np.array_equal(polish.rotation, nominal) and np.array_equal(polish.shifts_A, start_shifts)


def test_phase_randomised_keeps_each_power_spectrum():
    rng = np.random.default_rng(6)
    images = rng.normal(size=(3, 16, 20)) + np.linspace(0, 4, 20)
    surrogate = phase_randomised(images)
    assert np.allclose(np.abs(np.fft.rfft2(surrogate)), np.abs(np.fft.rfft2(images)), rtol=1e-9, atol=1e-9)
    assert abs(np.corrcoef(surrogate.ravel(), images.ravel())[0, 1]) < 0.5
    assert math.isclose(np.sum(surrogate**2), np.sum(images**2), rel_tol=1e-9)
