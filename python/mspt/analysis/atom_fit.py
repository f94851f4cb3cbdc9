"""fit_lattice: register a crystal structure to a reconstructed volume and measure every site.

Steps: peaks of the (lightly smoothed) volume -> global lattice registration (:mod:`.lattice`) -> each
site's atom searched for within ``search_radius_A`` and fitted to sub-voxel precision -> found / missing by
a per-species threshold from the data -> (periodic structures) sites outside the crystal's envelope dropped
-> final least-squares registration on the found atoms -> displacements.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError, cKDTree

from .. import _validate as v
from .atom_result import AtomFit
from .config import AnalysisConfig
from .lattice import is_periodic, lattice_sites, load_structure, register_lattice, similarity_transform
from .peaks import (
    NEIGHBOURHOOD, background_level, fit_neighbourhoods, gaussian_values, local_maxima, neighbourhoods, render_gaussians, smooth,
    subvoxel_centres, thin, voxel_to_xyz, xyz_to_voxel,
)  # fmt: skip

NEIGHBOUR_PASSES = 2


def fit_lattice(volume, voxel_size_A, structure, *, config: AnalysisConfig | None = None) -> AtomFit:
    """Fit the atoms of ``structure`` to ``volume``.

    volume : (Z, Y, X) real array, atoms bright (e.g. a reconstructed potential or summed phase).
    voxel_size_A : voxel size (A).
    structure : an ASE Atoms or a path ASE reads (CIF, ...): a periodic crystal (e.g. from
        ``ase.spacegroup.crystal``), tiled over the crystal in the volume, or a finite model (an ideal
        nanocrystal) whose atoms are the sites.
    config : :class:`AnalysisConfig` (defaults when None).

    Raises ValueError / TypeError for bad inputs and :class:`LatticeMismatchError` (a ValueError) when the
    structure does not fit the volume.
    """
    config = AnalysisConfig() if config is None else config
    if not isinstance(config, AnalysisConfig):
        raise TypeError(f"config: expected an AnalysisConfig, got {type(config).__name__}")
    volume = _check_volume(volume)
    voxel_size_A = v.positive("voxel_size_A", voxel_size_A)
    atoms = load_structure(structure)

    smoothed = smooth(volume, voxel_size_A, config.smoothing_A)
    level, noise = background_level(smoothed)
    peak_voxels = local_maxima(smoothed, voxel_size_A, config.min_separation_A, _peak_threshold(smoothed, voxel_size_A, level, noise, config))
    peak_centres, peak_heights = subvoxel_centres(smoothed, peak_voxels, level)
    peaks_A = voxel_to_xyz(peak_centres, volume.shape, voxel_size_A)
    separate = thin(peaks_A, peak_heights, config.min_separation_A)
    peaks_A, peak_heights = peaks_A[separate], peak_heights[separate]

    # Sites are measured where their search sphere and fit window lie inside the volume.
    box_lo = voxel_to_xyz(np.zeros(3), volume.shape, voxel_size_A)
    box_hi = voxel_to_xyz(np.array(volume.shape) - 1, volume.shape, voxel_size_A)
    margin = config.search_radius_A + 2 * voxel_size_A
    registration = register_lattice(
        peaks_A, peak_heights, atoms, box_lo + margin, box_hi - margin,
        search_radius_A=config.search_radius_A, scale_tolerance=config.scale_tolerance,
        angular_step_deg=config.angular_step_deg, min_match_fraction=config.min_match_fraction,
    )  # fmt: skip
    sites, atom_index = lattice_sites(atoms, registration, box_lo + margin, box_hi - margin)
    elements = np.array(atoms.get_chemical_symbols())[atom_index]
    measured_A, heights, has_peak = measure_sites(smoothed, registration.to_volume(sites), voxel_size_A, config.search_radius_A, level, noise)

    def classify(measured_A, heights, ideal_A):
        if config.site_threshold == "auto":
            thresholds = site_thresholds(heights, elements)
        else:
            thresholds = {s: float(config.site_threshold) - level for s in set(elements.tolist())}
        within = has_peak & (np.linalg.norm(measured_A - ideal_A, axis=1) <= config.search_radius_A)
        return thresholds, within & (heights > np.array([thresholds[s] for s in elements]))

    thresholds, found = classify(measured_A, heights, registration.to_volume(sites))
    if is_periodic(atoms):
        inside = inside_envelope(registration.to_volume(sites), found, 0.5 * config.search_radius_A)
        sites, elements, measured_A, heights, has_peak = (a[inside] for a in (sites, elements, measured_A, heights, has_peak))
        thresholds, found = classify(measured_A, heights, registration.to_volume(sites))

    # The final registration: the similarity transform of the ideal sites onto the found atoms.
    if found.sum() >= 4:
        rotation, scale, origin = similarity_transform(sites[found], measured_A[found])
        registration = dataclasses.replace(registration, rotation=rotation, scale=scale, origin_A=origin)
    ideal_A = registration.to_volume(sites)
    displacement = np.where(found[:, None], measured_A - ideal_A, np.nan)
    residual = float(np.sqrt(np.mean(np.sum(displacement[found] ** 2, axis=1)))) if found.any() else float("inf")
    registration = dataclasses.replace(registration, residual_A=residual)

    unmatched = _unexplained_peaks(peaks_A[peak_heights > min(thresholds.values(), default=0.0)], ideal_A,
                                   measured_A[found], config.search_radius_A, config.min_separation_A)  # fmt: skip
    return AtomFit(
        positions_A=np.where(found[:, None], measured_A, ideal_A),
        sites_A=ideal_A,
        elements=elements,
        site_found=found,
        displacement_A=displacement,
        intensities=heights,
        thresholds={s: float(t) for s, t in thresholds.items()},
        background_level=level,
        registration=registration,
        unmatched_peaks_A=unmatched,
        box_lo_A=box_lo,
        box_hi_A=box_hi,
    )


def _peak_threshold(smoothed, voxel_size_A, level, noise, config: AnalysisConfig) -> float:
    """The larger of ``peak_threshold_sigma`` noise sigmas and ``peak_threshold_fraction`` of the strongest
    peaks' height, above the background level."""
    threshold = level + config.peak_threshold_sigma * noise
    if config.peak_threshold_fraction > 0:
        maxima = local_maxima(smoothed, voxel_size_A, config.min_separation_A, threshold)
        if len(maxima):
            heights = np.sort(smoothed[tuple(maxima.T)])[::-1]
            strongest = float(np.median(heights[:10]))
            threshold = max(threshold, level + config.peak_threshold_fraction * (strongest - level))
    return threshold


def measure_sites(smoothed, sites_A, voxel_size_A, search_radius_A, level, noise):
    """For each site (N, 3) (x, y, z in A), the atom within ``search_radius_A`` fitted to sub-voxel precision.

    First pass: the strongest local maximum (above ``level + 2 noise``) near the site; not the brightest
    voxel, which at the sphere's edge can be a heavy neighbour's tail outshining a light atom. Then
    NEIGHBOUR_PASSES passes on the volume with every other fitted atom's Gaussian subtracted: the brightest
    voxel near the site, refitted. Subtracting neighbours removes their pull on a light atom's centre and
    uncovers light atoms that sit on a heavy neighbour's shoulder (no local maximum of their own).
    Returns the centres (N, 3) (x, y, z in A; the site itself where nothing was fitted), heights above
    ``level`` (N,) and whether an atom was fitted (N,)."""
    shape = smoothed.shape
    sites_vox = xyz_to_voxel(sites_A, shape, voxel_size_A)
    radius_vox = search_radius_A / voxel_size_A + 0.5 * np.sqrt(3)  # voxels whose centre may hold the atom
    background_removed = smoothed - np.float32(level)

    maxima = local_maxima(smoothed, voxel_size_A, 0.0, level + 2 * noise)
    kji = np.clip(np.round(sites_vox).astype(np.int64), 1, np.array(shape) - 2)
    if len(maxima):
        distance, index = cKDTree(maxima).query(sites_vox, k=8, distance_upper_bound=radius_vox)
        candidate = np.isfinite(distance)
        values = np.where(candidate, smoothed[tuple(maxima[np.where(candidate, index, 0)].transpose(2, 0, 1))], -np.inf)
        best = maxima[index[np.arange(len(index)), np.argmax(values, axis=1)] % len(maxima)]
        kji = np.where(candidate.any(axis=1)[:, None], best, kji)
    offset, height, hessian = fit_neighbourhoods(neighbourhoods(background_removed, kji))

    for _ in range(NEIGHBOUR_PASSES):
        centres = kji + offset
        fitted = _fitted(centres, height, hessian, sites_vox, search_radius_A / voxel_size_A)
        # Each Gaussian drawn out to 3 sigma (of the median fitted width): a heavy atom's tail that far out
        # still rivals a light neighbour's gradient (4 sigma gains ~1 % in accuracy for twice the time).
        sigma_vox = np.sqrt(np.median(-1.0 / np.linalg.eigvalsh(hessian[fitted])[:, 0])) if fitted.any() else 1.0
        reach = int(np.clip(np.ceil(3 * sigma_vox), 2, 8))
        others = background_removed - render_gaussians(shape, centres[fitted], height[fitted], hessian[fitted], reach=reach)
        own_height = np.where(fitted, height, 0.0)  # a site not fitted adds nothing of its own
        own_hessian = np.where(fitted[:, None, None], hessian, 0.0)
        # A fitted atom stays on the voxel nearest its centre (its own Gaussian dominates there); the others
        # look again for their brightest voxel now that their neighbours are subtracted.
        kji = np.clip(np.round(centres).astype(np.int64), 1, np.array(shape) - 2)
        kji[~fitted] = _brightest_near(others, sites_vox[~fitted], radius_vox)
        window = neighbourhoods(others, kji) + gaussian_values(kji[:, None, :] + NEIGHBOURHOOD[None] - centres[:, None, :], own_height, own_hessian)
        offset, height, hessian = fit_neighbourhoods(window)
    fitted = _fitted(kji + offset, height, hessian, sites_vox, search_radius_A / voxel_size_A)
    centres = np.where(fitted[:, None], voxel_to_xyz(kji + offset, shape, voxel_size_A), sites_A)
    at_site = ndimage.map_coordinates(background_removed, sites_vox.T, order=1, mode="nearest")
    return centres, np.where(fitted, height, at_site), fitted


def _fitted(centres_vox, height, hessian, sites_vox, radius_vox):
    """Sites whose fit is a Gaussian maximum above the background within the search radius."""
    within = np.linalg.norm(centres_vox - sites_vox, axis=1) <= radius_vox
    return np.isfinite(hessian[:, 0, 0]) & (height > 0) & within


def _brightest_near(volume, sites_vox, radius_vox, chunk: int = 4096):
    """The brightest voxel of ``volume`` within ``radius_vox`` of each site (N, 3) (fractional voxels), kept
    one voxel inside the volume."""
    reach = int(np.ceil(radius_vox))
    span = np.arange(-reach, reach + 1)
    offsets = np.stack(np.meshgrid(span, span, span, indexing="ij"), -1).reshape(-1, 3)
    offsets = offsets[np.sum(offsets**2, axis=1) <= (radius_vox + 0.5 * np.sqrt(3)) ** 2]  # can reach the sphere
    upper = np.array(volume.shape) - 2
    out = np.empty((len(sites_vox), 3), dtype=np.int64)
    for start in range(0, len(sites_vox), chunk):  # bounded memory on large volumes
        part = slice(start, start + chunk)
        points = np.clip(np.round(sites_vox[part]).astype(np.int64)[:, None, :] + offsets[None], 1, upper)
        near = np.sum((points - sites_vox[part, None, :]) ** 2, axis=2) <= radius_vox**2
        values = np.where(near, volume[tuple(points.transpose(2, 0, 1))], -np.inf)
        out[part] = points[np.arange(len(points)), np.argmax(values, axis=1)]
    return out


def site_thresholds(heights, elements) -> dict:
    """Per species, the intensity (height above background) that separates found from missing sites.

    A two-class split with one class pinned: missing sites sit at the background level (0 above it), the
    occupied level is the mean height of the sites above the threshold, and the threshold is midway between
    the two, iterated from the 90th percentile of the species' heights to a fixed point. Pinning the empty
    class keeps the split meaningful when few or no sites are vacant (a free two-class split would cut a
    fully occupied species in half)."""
    heights = np.asarray(heights, float)
    thresholds = {}
    for species in sorted(set(np.asarray(elements).tolist())):
        h = heights[np.asarray(elements) == species]
        occupied = max(float(np.percentile(h, 90)), 0.0)
        threshold = 0.5 * occupied
        for _ in range(100):
            above = h[h > threshold]
            occupied = float(above.mean()) if len(above) else occupied
            new = 0.5 * occupied
            if abs(new - threshold) <= 1e-9 * max(1.0, abs(new)):
                break
            threshold = new
        thresholds[species] = threshold
    return thresholds


def inside_envelope(sites_A, found, tolerance_A) -> np.ndarray:
    """Which sites lie inside the convex hull of the found sites (grown by ``tolerance_A``): a periodic
    lattice is tiled over the whole volume, and only the sites inside the crystal count as sites (a
    vacancy at a corner of the hull cannot be told from a different particle shape)."""
    points = sites_A[found]
    if len(points) < 4:
        return np.ones(len(sites_A), bool)
    try:
        hull = ConvexHull(points)
    except QhullError:  # coplanar found sites: no 3D envelope to cut with
        return np.ones(len(sites_A), bool)
    signed = sites_A @ hull.equations[:, :3].T + hull.equations[:, 3]
    return np.all(signed <= tolerance_A, axis=1) | found


def _unexplained_peaks(peaks_A, sites_A, atoms_A, search_radius_A, min_separation_A):
    """Peaks that lie farther than ``search_radius_A`` from every site and farther than
    ``min_separation_A`` from every fitted atom (closer peaks are the same feature, e.g. a light atom's
    peak pulled onto a heavy neighbour's flank before the neighbour is subtracted)."""
    far = np.ones(len(peaks_A), bool)
    for points, radius in ((sites_A, search_radius_A), (atoms_A, min_separation_A)):
        if len(points) and len(peaks_A):
            far &= cKDTree(points).query(peaks_A)[0] > radius
    return peaks_A[far]


def _check_volume(volume) -> np.ndarray:
    try:
        array = np.asarray(volume)
    except Exception:
        raise TypeError(f"volume: expected a (Z, Y, X) real array, got {type(volume).__name__}") from None
    if array.ndim != 3 or min(array.shape) < 8:
        raise ValueError(f"volume: expected a (Z, Y, X) array at least 8 voxels along each axis, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"volume: expected a real (float or integer) array, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("volume: expected finite values, got NaN or infinity")
    return array
