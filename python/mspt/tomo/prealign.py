"""Pre-alignment of the projection shifts before the joint refinement.

"cross_correlation": the shift along the tilt axis (y) comes from the common line: for rotations about y,
every projection summed over x gives the same profile along y, so each profile is registered to the mean
profile (no accumulated drift). The shift across it (x) comes from the phase correlation of neighbouring
tilts (ordered by tilt angle), chained outwards from the tilt nearest zero.
"centre_of_mass": the projections' centres of mass, which are the rotated volume's centre of mass plus the
shift.
Either way the estimate is stripped of its common 3D translation (the gauge, see :mod:`.gauge`), so it only
moves the projections relative to one another.
"""

from __future__ import annotations

import numpy as np

from .gauge import remove_translation_gauge


def _peak_offset(correlation: np.ndarray) -> np.ndarray:
    """The offset of the maximum of a (circular, zero-lag at index 0) correlation, with a parabolic sub-sample
    fit on each axis."""
    index = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
    offset = []
    for axis, (i, n) in enumerate(zip(index, correlation.shape)):
        around = [list(index) for _ in range(3)]
        for k, d in enumerate((-1, 0, 1)):
            around[k][axis] = (i + d) % n
        lo, mid, hi = (correlation[tuple(a)] for a in around)
        denominator = lo - 2 * mid + hi
        frac = 0.5 * (lo - hi) / denominator if denominator < 0 else 0.0
        lag = i if i <= n // 2 else i - n
        offset.append(lag + float(np.clip(frac, -0.5, 0.5)))
    return np.array(offset)


def _shift_of(moving: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The shift (pixels) that best carries ``reference`` onto ``moving``, by phase correlation (1D or 2D)."""
    f_m, f_r = np.fft.fftn(moving - moving.mean()), np.fft.fftn(reference - reference.mean())
    cross = f_m * np.conj(f_r)
    cross /= np.abs(cross) + 1e-3 * np.abs(cross).max() + 1e-30
    return _peak_offset(np.real(np.fft.ifftn(cross)))


def _tilt_angles(rotation: np.ndarray) -> np.ndarray:
    """The tilt about y (rad) that each rotation comes closest to: where it sends +z in the x-z plane."""
    return np.arctan2(rotation[:, 0, 2], rotation[:, 2, 2])


def _cross_correlation_shifts(projections: np.ndarray, rotation: np.ndarray, pixel_A: float) -> np.ndarray:
    profiles = projections.sum(axis=2)
    mean_profile = profiles.mean(axis=0)
    dy = np.array([_shift_of(p, mean_profile)[0] for p in profiles])
    shifts = np.zeros((len(projections), 2))
    shifts[:, 0] = dy
    order = np.argsort(_tilt_angles(rotation))
    start = int(np.argmin(np.abs(_tilt_angles(rotation)[order])))
    # Register along x only: undo each projection's y shift first (whole pixels suffice for the x search).
    unshifted = np.stack([np.roll(p, -int(round(s)), axis=0) for p, s in zip(projections, dy)])
    for direction in (1, -1):
        for k in range(start + direction, len(order) if direction > 0 else -1, direction):
            t, previous = order[k], order[k - direction]
            dx = _shift_of(unshifted[t], unshifted[previous])[1]
            shifts[t, 1] = shifts[previous, 1] + dx
    return shifts * pixel_A


def _centre_of_mass_shifts(projections: np.ndarray, pixel_A: float) -> np.ndarray:
    t, py, px = projections.shape
    weights = np.clip(projections, 0.0, None)
    total = weights.sum(axis=(1, 2))
    if np.any(total <= 0):
        raise ValueError("pre_align: centre_of_mass needs projections with positive total intensity")
    y = (np.arange(py) - py // 2) * pixel_A
    x = (np.arange(px) - px // 2) * pixel_A
    cy = np.einsum("tyx,y->t", weights, y) / total
    cx = np.einsum("tyx,x->t", weights, x) / total
    return np.stack([cy, cx], axis=1)


def prealign_shifts(projections: np.ndarray, rotation: np.ndarray, shifts_A: np.ndarray, pixel_A: float,
                    method: str) -> np.ndarray:  # fmt: skip
    """Pre-aligned shifts (T, 2) in A: ``shifts_A`` plus the estimated relative shifts ("none": unchanged)."""
    if method == "none":
        return np.array(shifts_A, dtype=float)
    if method == "centre_of_mass":
        estimate = _centre_of_mass_shifts(projections, pixel_A)
    else:
        estimate = _cross_correlation_shifts(projections, rotation, pixel_A)
    # The estimate measures where each projection sits; the shifts already given have been applied to the
    # model, so only the relative part of (estimate - given) is a correction.
    return remove_translation_gauge(estimate, shifts_A, rotation)
