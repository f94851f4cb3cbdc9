"""Is a misfit noise, or structure that a volume projects to and a model left out?

A voxel volume fitted to pure noise leaves part of it unexplained (how much depends on how much freedom the
volume has against the data: three quarters with 20 solver iterations on the alignment test's geometry, a
tenth on a 32^3 grid seen from 9 tilts); fitted to structure that some volume projects to, such as an atom the
model lacks, a width it got wrong or a smooth background, it leaves next to nothing. So the fraction of a
misfit left unexplained is compared with the fraction left of a surrogate with the misfit's own power spectrum
in every projection but random phases, which holds nothing that is consistent from one tilt to the next: if
the misfit is noise (white or coloured) plus a fraction f of structure, the first is about (1 - f) times the
second, and f = 1 - left(misfit) / left(surrogate) estimates the structured fraction. Measured on the alignment
test's blob phantom: 0.01 with the true atoms; with 3 of 40 atoms left out: 0.84; on a 32^3 grid with the
true atoms and a smooth blob of a sixth of the data's maximum left out: 1.00.
"""

from __future__ import annotations

import numpy as np

from .series_operator import SeriesProjector
from .volume_solver import VolumeSolution, sirt_weights, solve_volume

SURROGATE_SEED = 0  # the surrogate's random phases: fixed, so that a run is reproducible


def unexplained_fraction(solution: VolumeSolution, misfit) -> float:
    """The fraction of |misfit|^2 that the volume ``solution`` fitted to it leaves."""
    total = 0.5 * float(np.sum(np.asarray(misfit, dtype=np.float64) ** 2))
    return solution.loss / max(total, 1e-300)


def fit_volume_to(op: SeriesProjector, images, support, rotation, shifts_A, iterations: int) -> VolumeSolution:
    """A voxel volume (inside ``support``, of either sign) fitted to ``images`` from zero; 2 + 2 ``iterations``
    projector calls."""
    weights = sirt_weights(op, support, rotation, shifts_A)
    images = np.asarray(images, dtype=np.float32)
    zero = np.zeros(op.geometry.volume_shape, dtype=np.float32)
    return solve_volume(op, images, zero, np.zeros_like(images), rotation, shifts_A, weights, iterations, False)


def phase_randomised(images) -> np.ndarray:
    """Each image with its 2D power spectrum kept and its Fourier phases replaced by those of white noise."""
    images = np.asarray(images, dtype=np.float64)
    shape = images.shape[1:]
    noise = np.fft.rfft2(np.random.default_rng(SURROGATE_SEED).normal(size=images.shape))
    spectrum = np.abs(np.fft.rfft2(images)) * noise / np.maximum(np.abs(noise), 1e-300)
    return np.fft.irfft2(spectrum, s=shape)


def structured_fraction(op: SeriesProjector, misfit, solution: VolumeSolution, support, rotation, shifts_A,
                        iterations: int) -> float:  # fmt: skip
    """1 - (the fraction of ``misfit`` that ``solution``, :func:`fit_volume_to` of it, leaves) / (the fraction a
    volume fitted the same way leaves of the phase-randomised misfit): about 0 for noise, 1 for structure that
    a volume projects to (2 + 2 ``iterations`` projector calls)."""
    surrogate = phase_randomised(misfit)
    baseline = unexplained_fraction(fit_volume_to(op, surrogate, support, rotation, shifts_A, iterations), surrogate)
    return 1.0 - unexplained_fraction(solution, misfit) / max(baseline, 1e-12)
