"""The atom-model pose polish: poses refined against a volume of Gaussian atoms instead of the voxel grid.

Why: a voxel volume has far more freedom than a tilt series pins (48^3 voxels against 19 x 48^2 pixels in
the alignment test): most of the signal that would tell a tilt angle, the high spatial frequencies of
each projection that no neighbouring tilt shares, can be fitted by the voxels instead, noise included. On the
blob phantom of tests/test_tomo_alignment.py a voxel volume (with its support and non-negativity) keeps
1-3 % of the information on a tilt-axis rotation that the same data give with the volume known; the poses
that fit best are then off by 0.17-0.26 degree rms with 1 % noise (the voxel schedule ends at 0.17-0.66 over
10 noise seeds). An atomic volume described by position, amplitude and width per atom keeps most of it (81-92 %
with the volume restricted to the atoms' cores), and its exact projections have no interpolation blur that
depends on the pose: the jointly refined poses come within 0.056-0.077 degree rms (issue 5; the bound with the
volume known is 0.056). On the crystal of tests/test_tomo_crystal.py it undoes the drift of tilts towards a
zone axis that a voxel volume follows at no cost in misfit.

Steps: atoms are the local maxima of the voxel volume (:mod:`mspt.analysis.peaks`); atoms and poses are
refined together (:mod:`mspt.tomo.atom_refine`); the misfit left is reconstructed as a voxel volume and its
peaks, atoms the first detection missed (e.g. a weak atom beside a strong one, merged by the missing wedge),
join the model for another refinement; an atom is kept only if taking it out would raise the misfit by more
than noise could (``SIGNIFICANCE``). The polished poses are used only if the misfit the atoms leave looks like
noise to a voxel volume (:mod:`mspt.tomo.misfit_consistency`): a sample that is not made of separate atoms
keeps the voxel poses, with a warning.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from ..analysis.peaks import (background_level, fit_neighbourhoods, local_maxima, neighbourhoods, smooth, thin,
                              voxel_to_xyz)  # fmt: skip
from .atom_model import ATOM_PARAMETERS, TILT_PARAMETERS, AtomProjections, Atoms
from .atom_refine import AtomRefinement, refine_atoms_and_poses
from .misfit_consistency import fit_volume_to, structured_fraction
from .series_operator import SeriesProjector

DETECTION_SMOOTHING_VOXEL = 0.5  # Gaussian smoothing (voxels) of the volume before peak detection
MAX_WIDTH_VOXEL = 4.0  # the widest atom detection starts (a voxel grid fine enough for atoms samples them finer)
MISSED_FLOOR = 0.5  # fraction of the detection threshold at which the misfit's volume is searched for atoms
MISFIT_ITERATIONS = 2  # the misfit's volume gets this many times the volume iterations (it starts from zero)
# The atoms' poses are used if at most this fraction of the misfit they leave is structure consistent between
# the tilts (:mod:`mspt.tomo.misfit_consistency`; about 0 for a complete model, 1 for a missing background).
MAX_STRUCTURED_FRACTION = 0.2
COMPLETION_ROUNDS = 3  # refinements after the first, each with the atoms found in the misfit the last one left
# An atom is kept if taking it out would raise the misfit by more than this many noise variances: Delta chi^2 =
# 2 x 12.5 = 25 for its 5 parameters, which noise alone reaches with a probability of about 1e-4.
SIGNIFICANCE = 12.5


@dataclasses.dataclass
class AtomPolish:
    """The outcome of :func:`polish_poses_with_atoms`."""

    rotation: np.ndarray  # (T, 3, 3) the poses to use (the polished ones, or the input ones if not accepted)
    shifts_A: np.ndarray  # (T, 2)
    atoms: Atoms  # the refined atoms (positions in the frame of the refined poses)
    accepted: bool  # whether the atoms explained the data well enough for their poses to be used
    structured_fraction: float  # :func:`mspt.tomo.misfit_consistency.structured_fraction` of the atoms' misfit


def detect_atoms(volume, voxel_A: float, threshold: float, min_separation_A: float,
                 floor: float | None = None) -> Atoms:  # fmt: skip
    """Gaussian atoms at the local maxima of ``volume`` above ``floor`` (default: the background level plus
    ``threshold`` x (maximum - background)) and at least ``min_separation_A`` apart, with amplitudes and
    widths from a Gaussian fit to each peak's 3 x 3 x 3 neighbourhood (of the volume smoothed by
    ``DETECTION_SMOOTHING_VOXEL``, which the widths are corrected for)."""
    smoothed = smooth(volume, voxel_A, DETECTION_SMOOTHING_VOXEL * voxel_A)
    level, _ = background_level(smoothed)
    if floor is None:
        floor = level + threshold * (float(smoothed.max()) - level)
    kji = local_maxima(smoothed, voxel_A, min_separation_A, floor)
    offsets, heights, hessians = fit_neighbourhoods(neighbourhoods(smoothed, kji) - level)
    positions = voxel_to_xyz(kji + offsets, volume.shape, voxel_A)
    keep = thin(positions, heights, min_separation_A)
    # The width from the log-curvature across the beam (the missing wedge stretches the peaks along z); a failed
    # fit (NaN) or a peak no wider than the smoothing gets one voxel, a flat top (no atom) at most MAX_WIDTH_VOXEL.
    curvature = -0.5 * (hessians[keep, 1, 1] + hessians[keep, 2, 2])
    smoothing2 = DETECTION_SMOOTHING_VOXEL**2
    widths2 = np.where(np.isfinite(curvature) & (curvature > 0), 1.0 / np.maximum(curvature, 1e-6), 1.0) - smoothing2
    widths2 = np.clip(np.where(widths2 > 0.25, widths2, 1.0), None, MAX_WIDTH_VOXEL**2)
    amplitudes = heights[keep] * ((widths2 + smoothing2) / widths2) ** 1.5  # the height before the smoothing
    return Atoms(positions[keep], amplitudes, np.sqrt(widths2) * voxel_A)


def _significant(fit: AtomRefinement, data, pixel_A: float) -> np.ndarray:
    """(N,) bool: atoms whose removal would raise the misfit by more than ``SIGNIFICANCE`` noise variances (the
    variance estimated from the misfit left per degree of freedom)."""
    projections = AtomProjections(fit.atoms, fit.rotation, fit.shifts_A, data.shape[1:], pixel_A)
    residual = projections.images() - data
    freedom = max(data.size - ATOM_PARAMETERS * len(fit.atoms) - TILT_PARAMETERS * len(data), 1)
    variance = 2.0 * fit.misfit / freedom
    return projections.removal_cost(residual) > SIGNIFICANCE * variance


def _refine_significant(atoms: Atoms, data, rotation, shifts_A, pixel_A: float, iterations: int,
                        width_bounds_A) -> AtomRefinement:  # fmt: skip
    """Refine, drop the atoms that do not pay for themselves, and refine the rest again if any were dropped."""
    fit = refine_atoms_and_poses(atoms, data, rotation, shifts_A, pixel_A, iterations=iterations,
                                 width_bounds_A=width_bounds_A)  # fmt: skip
    keep = _significant(fit, data, pixel_A)
    if keep.all() or not keep.any():
        return fit
    return refine_atoms_and_poses(fit.atoms.subset(keep), data, fit.rotation, fit.shifts_A, pixel_A,
                                  iterations=iterations, width_bounds_A=width_bounds_A)  # fmt: skip


def _missed_atoms(misfit_volume, voxel_A: float, atoms: Atoms, floor: float, min_separation_A: float) -> Atoms:
    """Atoms at the peaks of ``misfit_volume`` (a voxel volume fitted to data - atoms) above ``floor``, away
    from the atoms already held."""
    found = detect_atoms(misfit_volume, voxel_A, 0.0, min_separation_A, floor)
    if not len(found) or not len(atoms):
        return found
    distance = np.linalg.norm(found.positions_A[:, None] - atoms.positions_A[None], axis=-1).min(axis=1)
    return found.subset(distance >= min_separation_A)


def polish_poses_with_atoms(op: SeriesProjector, volume, support, data, rotation, shifts_A, *, threshold: float,
                            min_separation_A: float, iterations: int,
                            volume_iterations: int) -> AtomPolish:  # fmt: skip
    """Refine the poses against a Gaussian-atom model of ``volume`` (the voxel volume at the poses given, on
    ``op``'s grid, which must be the projections' full resolution). Costs 2 + 2 ``MISFIT_ITERATIONS`` x
    ``volume_iterations`` projector calls after each refinement (at most ``COMPLETION_ROUNDS`` + 1) and as
    many again for the consistency test."""
    g = op.geometry
    data = np.asarray(data, dtype=np.float64)
    atoms = detect_atoms(volume, g.voxel_A, threshold, min_separation_A)
    if not len(atoms):
        warnings.warn("atom_polish: no atoms found in the volume; the poses are left as the voxel volume had them",
                      RuntimeWarning, stacklevel=2)  # fmt: skip
        return AtomPolish(rotation, shifts_A, atoms, False, math.inf)
    smoothed = smooth(volume, g.voxel_A, DETECTION_SMOOTHING_VOXEL * g.voxel_A)
    level, _ = background_level(smoothed)
    # Candidates in the misfit's volume are searched below the detection threshold: each must then pass the
    # significance test, which is the real criterion.
    floor = MISSED_FLOOR * threshold * (float(smoothed.max()) - level)
    # Widths between half a pixel (narrower is not sampled) and twice the widest atom detected.
    bounds = (0.5 * g.pixel_A, 2.0 * float(np.max(atoms.widths_A)))
    misfit_iterations = MISFIT_ITERATIONS * volume_iterations

    def left_by(fit: AtomRefinement):
        """The misfit the atoms leave and a voxel volume fitted to it."""
        misfit = data - AtomProjections(fit.atoms, fit.rotation, fit.shifts_A, data.shape[1:], g.pixel_A).images()
        return misfit, fit_volume_to(op, misfit, support, fit.rotation, fit.shifts_A, misfit_iterations)

    fit = _refine_significant(atoms, data, rotation, shifts_A, g.pixel_A, iterations, bounds)
    misfit, misfit_volume = left_by(fit)
    for _ in range(COMPLETION_ROUNDS):
        missed = _missed_atoms(misfit_volume.volume, g.voxel_A, fit.atoms, floor, min_separation_A)
        if not len(missed):
            break
        held = len(fit.atoms)  # the missed atoms sit in the frame of the refined poses, like the refined atoms
        fit = _refine_significant(fit.atoms.joined(missed), data, fit.rotation, fit.shifts_A, g.pixel_A, iterations,
                                  bounds)  # fmt: skip
        misfit, misfit_volume = left_by(fit)
        if len(fit.atoms) <= held:
            break  # the candidates did not pay for themselves: what is left is noise
    structured = structured_fraction(op, misfit, misfit_volume, support, fit.rotation, fit.shifts_A,
                                     misfit_iterations)  # fmt: skip
    if structured > MAX_STRUCTURED_FRACTION:
        warnings.warn(
            f"atom_polish: {structured:.0%} of the misfit {len(fit.atoms)} Gaussian atoms leave is structure "
            "consistent between the tilts, not noise: the sample does not look like separate atoms alone at this "
            "resolution (a background, a support, unresolved atoms?), so the poses are left as the voxel volume "
            "had them", RuntimeWarning, stacklevel=2,
        )  # fmt: skip
        return AtomPolish(rotation, shifts_A, fit.atoms, False, structured)
    return AtomPolish(fit.rotation, fit.shifts_A, fit.atoms, True, structured)
