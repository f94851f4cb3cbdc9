"""Joint least-squares refinement of Gaussian atoms and the poses against the projections.

    min over atoms and poses of 1/2 |P(atoms; poses) - b|^2

with P the exact projections of :mod:`mspt.tomo.atom_model`, by Levenberg-Marquardt: each step solves
(J^T J + lambda diag(J^T J)) delta = -J^T r by conjugate gradients preconditioned with the diagonal blocks of
J^T J (one 5 x 5 block per atom and per tilt), on the Jacobian's products (no J^T J is formed, so the cost
grows with atoms x tilts x window). Atoms and poses move together, so no tilt's error is half absorbed
by the volume as in an alternating scheme, and a volume of a few parameters per atom has far less room to
absorb one than a voxel grid has: this is what makes its poses accurate (issue 5: 0.056-0.077 degree rms
against 0.17-0.66 from the voxel volume on the blob phantom of tests/test_tomo_alignment.py, 10 noise seeds).

The common rotation and 3D translation of atoms and poses together (the gauge) are not fixed here; the
damping keeps the steps finite along them and the caller removes them from the poses.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .atom_model import ATOM_PARAMETERS, TILT_PARAMETERS, AtomProjections, Atoms
from .rotations import rotation_exp

MIN_DAMPING, MAX_DAMPING = 1e-6, 1e6  # Levenberg-Marquardt damping relative to the diagonal of J^T J
CG_TOLERANCE = 1e-3  # relative residual of the normal equations at which a step's CG stops


@dataclasses.dataclass
class AtomRefinement:
    atoms: Atoms
    rotation: np.ndarray  # (T, 3, 3)
    shifts_A: np.ndarray  # (T, 2) (dy, dx)
    misfit: float  # 1/2 |P - b|^2 at the result
    steps: int  # accepted Levenberg-Marquardt steps


def _misfit(model: np.ndarray, data: np.ndarray) -> float:
    return 0.5 * float(np.sum((model - data) ** 2))


def _preconditioned_cg(projections: AtomProjections, gradient, blocks, damping: float, iterations: int):
    """Solve (J^T J + damping diag) delta = -gradient for (atom (N, 5), tilt (T, 5)) parts by preconditioned CG."""
    atom_blocks, tilt_blocks = blocks
    atom_diag = np.einsum("naa->na", atom_blocks)
    tilt_diag = np.einsum("taa->ta", tilt_blocks)
    # A floor on the diagonal keeps blocks of parameters that no pixel sees (an atom outside every image) invertible.
    atom_floor = 1e-12 * max(float(atom_diag.max(initial=0.0)), 1e-300)
    tilt_floor = 1e-12 * max(float(tilt_diag.max(initial=0.0)), 1e-300)
    atom_extra = damping * atom_diag + atom_floor
    tilt_extra = damping * tilt_diag + tilt_floor
    atom_inverse = np.linalg.inv(atom_blocks + atom_extra[:, :, None] * np.eye(ATOM_PARAMETERS))
    tilt_inverse = np.linalg.inv(tilt_blocks + tilt_extra[:, :, None] * np.eye(TILT_PARAMETERS))

    def operator(atom, tilt):
        images = projections.apply(atom, tilt)
        a, t = projections.apply_transpose(images)
        return a + atom_extra * atom, t + tilt_extra * tilt

    def precondition(atom, tilt):
        return np.einsum("nab,nb->na", atom_inverse, atom), np.einsum("tab,tb->ta", tilt_inverse, tilt)

    def dot(a, b):
        return float(np.sum(a[0] * b[0]) + np.sum(a[1] * b[1]))

    x = (np.zeros_like(gradient[0]), np.zeros_like(gradient[1]))
    r = (-gradient[0], -gradient[1])
    z = precondition(*r)
    p = z
    rz = dot(r, z)
    start = np.sqrt(max(dot(r, r), 1e-300))
    for _ in range(iterations):
        q = operator(*p)
        alpha = rz / max(dot(p, q), 1e-300)
        x = (x[0] + alpha * p[0], x[1] + alpha * p[1])
        r = (r[0] - alpha * q[0], r[1] - alpha * q[1])
        if np.sqrt(dot(r, r)) < CG_TOLERANCE * start:
            break
        z = precondition(*r)
        rz_new = dot(r, z)
        p = (z[0] + (rz_new / rz) * p[0], z[1] + (rz_new / rz) * p[1])
        rz = rz_new
    return x


def refine_atoms_and_poses(atoms: Atoms, data, rotation, shifts_A, pixel_A: float, *, iterations: int,
                           width_bounds_A: tuple[float, float], cg_iterations: int = 50,
                           tolerance: float = 1e-6) -> AtomRefinement:  # fmt: skip
    """Levenberg-Marquardt on atoms and poses together from ``atoms`` and the poses given; stops after
    ``iterations`` steps or when a step lowers the misfit by less than ``tolerance`` of it. Widths are held
    within ``width_bounds_A`` (A): a candidate that is noise would otherwise narrow onto one pixel or spread
    over the image."""
    data = np.asarray(data, dtype=np.float64)
    rotation, shifts_A = np.array(rotation, dtype=float), np.array(shifts_A, dtype=float)
    shape = data.shape[1:]
    projections = AtomProjections(atoms, rotation, shifts_A, shape, pixel_A)
    misfit = _misfit(projections.images(), data)
    damping, accepted = 1e-3, 0
    for _ in range(iterations):
        gradient = projections.apply_transpose(projections.images() - data)
        blocks = projections.block_diagonal()
        while True:
            atom_step, tilt_step = _preconditioned_cg(projections, gradient, blocks, damping, cg_iterations)
            trial_atoms = atoms.moved(atom_step)
            trial_atoms.widths_A = np.clip(trial_atoms.widths_A, *width_bounds_A)
            trial_rotation = rotation_exp(tilt_step[:, :3]) @ rotation
            trial_shifts = shifts_A + tilt_step[:, 3:]
            trial = AtomProjections(trial_atoms, trial_rotation, trial_shifts, shape, pixel_A)
            trial_misfit = _misfit(trial.images(), data)
            if trial_misfit < misfit or damping >= MAX_DAMPING:
                break
            damping = min(10.0 * damping, MAX_DAMPING)
        if trial_misfit >= misfit:
            break  # no step lowers the misfit: converged to the precision the damping allows
        gain = (misfit - trial_misfit) / max(misfit, 1e-300)
        atoms, rotation, shifts_A, projections, misfit = trial_atoms, trial_rotation, trial_shifts, trial, trial_misfit
        damping, accepted = max(damping / 3.0, MIN_DAMPING), accepted + 1
        if gain < tolerance:
            break
    return AtomRefinement(atoms, rotation, shifts_A, misfit, accepted)
