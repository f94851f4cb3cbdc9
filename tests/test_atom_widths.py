"""atom_widths: the average atom's full widths at half maximum, against Gaussian atoms of known widths."""

from __future__ import annotations

import numpy as np
import pytest

from mspt.analysis import atom_widths

FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))


def _gaussian_atoms(shape, voxel, sites, sigmas):
    k, j, i = np.meshgrid(*[(np.arange(n) - n // 2) * voxel for n in shape], indexing="ij")
    sz, sy, sx = sigmas
    return sum(np.exp(-((i - x) ** 2 / (2 * sx**2) + (j - y) ** 2 / (2 * sy**2) + (k - z) ** 2 / (2 * sz**2)))
               for x, y, z in sites)  # fmt: skip


def test_widths_of_anisotropic_gaussian_atoms_at_sub_voxel_sites(measured):
    """Atoms 4 A apart at random sub-voxel offsets, sigma (z, y, x) = (0.5, 0.3, 0.25) A on 0.2 A voxels,
    plus a constant background: each FWHM within 3 % of 2.355 sigma (measured: 0.8 % at worst)."""
    rng = np.random.default_rng(3)
    grid = np.arange(-4.0, 4.1, 4.0)
    sites = np.array([(x, y, z) for x in grid for y in grid for z in grid]) + rng.uniform(-0.1, 0.1, (27, 3))
    sigmas = np.array([0.5, 0.3, 0.25])
    volume = _gaussian_atoms((64, 64, 64), 0.2, sites, sigmas) + 0.3
    widths = atom_widths(volume, 0.2, sites)
    expected = FWHM_PER_SIGMA * sigmas
    error = measured("atom widths", "largest relative FWHM error", float(np.max(np.abs(np.array(widths.fwhm_A) / expected - 1))), 0.03)
    assert error < 0.03 and widths.n_sites == 27
    # A radius that is not a whole number of steps still samples the profile on the site itself.
    odd = atom_widths(volume, 0.2, sites, radius_A=1.37)
    assert np.max(np.abs(np.array(odd.fwhm_A) / expected - 1)) < 0.03
    assert widths.elongation == pytest.approx(0.5 / 0.275, rel=0.03)


def test_sites_outside_are_skipped_and_bad_input_named():
    volume = _gaussian_atoms((32, 32, 32), 0.2, [(0, 0, 0)], (0.3, 0.3, 0.3))
    widths = atom_widths(volume, 0.2, [(0, 0, 0), (3.0, 0, 0)])  # the second's profile leaves the volume
    assert widths.n_sites == 1
    with pytest.raises(ValueError, match="sites_A"):
        atom_widths(volume, 0.2, [(3.0, 0, 0)])
    with pytest.raises(ValueError, match="sites_A"):
        atom_widths(volume, 0.2, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="voxel_size_A"):
        atom_widths(volume, -1.0, [(0, 0, 0)])
