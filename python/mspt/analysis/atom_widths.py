"""atom_widths: the resolution a volume reaches at its atoms, read from the average atom's widths.

Each atom of a reconstruction is the object's atom blurred by the reconstruction's point-spread function;
averaging many atoms (at their sub-voxel positions) leaves that blur with the noise averaged away. Its full
width at half maximum along z (the axial direction, the missing wedge's) against x and y measures how much
the reconstruction is stretched along the beam; unlike the power-spectrum criterion (:mod:`.resolution`) it
needs no noise model and compares volumes on different voxel grids directly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _validate as v
from ._fourier_shells import check_volume
from .peaks import xyz_to_voxel


@dataclasses.dataclass(frozen=True)
class AtomWidths:
    """fwhm_A : (z, y, x) full widths at half maximum of the average atom (A), measured on its profiles
    through the peak after subtracting the level at ``radius_A``. profile_A : (n,) offsets of the profiles
    (A); profiles : (3, n) the average atom along z, y and x. n_sites : atoms averaged."""

    fwhm_A: tuple[float, float, float]
    profile_A: np.ndarray
    profiles: np.ndarray
    n_sites: int

    @property
    def elongation(self) -> float:
        """Axial over mean transverse width: 1 for an isotropic reconstruction."""
        z, y, x = self.fwhm_A
        return z / ((y + x) / 2)


def atom_widths(volume, voxel_size_A: float, sites_A, *, radius_A: float = 1.5, step_A: float | None = None) -> AtomWidths:
    """The average atom of ``volume`` (Z, Y, X; voxel (k, j, i) at ((i - X//2) d, (j - Y//2) d, (k - Z//2) d))
    over ``sites_A`` (N, 3) (x, y, z) in A from the rotation centre, sampled by cubic splines (trilinear
    sampling would widen atoms a few voxels wide by several per cent) on profiles of
    ``radius_A`` either side at ``step_A`` (default a quarter voxel). Sites whose profiles leave the volume are
    skipped; ValueError if none is left."""
    from scipy import ndimage

    vol = check_volume("volume", volume).astype(np.float64)
    d = float(v.positive("voxel_size_A", voxel_size_A))
    radius = float(v.positive("radius_A", radius_A))
    step = d / 4 if step_A is None else float(v.positive("step_A", step_A))
    sites = np.asarray(sites_A, dtype=float)
    if sites.ndim != 2 or sites.shape[1] != 3 or not np.all(np.isfinite(sites)):
        raise ValueError(f"sites_A: expected (N, 3) finite (x, y, z) positions in A, got shape {sites.shape}")
    index = xyz_to_voxel(sites, vol.shape, d)  # (k, j, i) of each site
    reach = radius / d
    inside = np.all((index - reach >= 0) & (index + reach <= np.array(vol.shape) - 1), axis=1)
    if not np.any(inside):
        raise ValueError(f"sites_A: no site lies {radius} A or more inside the volume")
    half = max(1, round(radius / step))
    offsets = step * np.arange(-half, half + 1)  # symmetric, with a sample on the site itself
    coefficients = ndimage.spline_filter(vol, order=3)
    profiles = np.zeros((3, offsets.size))
    for axis in range(3):
        coords = np.repeat(index[inside][:, :, None], offsets.size, axis=2)  # (N, 3, n)
        coords[:, axis, :] += offsets / d
        samples = ndimage.map_coordinates(coefficients, coords.transpose(1, 0, 2).reshape(3, -1), order=3,
                                          prefilter=False)  # fmt: skip
        profiles[axis] = samples.reshape(-1, offsets.size).mean(0)
    widths = tuple(_fwhm(offsets, p) for p in profiles)
    return AtomWidths(fwhm_A=widths, profile_A=offsets, profiles=profiles, n_sites=int(inside.sum()))


def _fwhm(x: np.ndarray, profile: np.ndarray) -> float:
    """Width at half height above the profile's ends (linear interpolation between samples); the peak is
    taken at the centre, where the sites are."""
    base = min(profile[0], profile[-1])
    centre = profile.size // 2
    half = base + (profile[centre] - base) / 2
    if profile[centre] <= base:
        return float("nan")
    left = centre
    while left > 0 and profile[left - 1] > half:
        left -= 1
    right = centre
    while right < profile.size - 1 and profile[right + 1] > half:
        right += 1
    if left == 0 or right == profile.size - 1:
        return float("nan")  # wider than the profile

    def cross(i, j):  # where the profile passes half between samples i (above) and j (below)
        return x[i] + (x[j] - x[i]) * (profile[i] - half) / (profile[i] - profile[j])

    return float(cross(right, right + 1) - cross(left, left - 1))
