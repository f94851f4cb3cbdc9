"""Lattice registration: the similarity transform (rotation, origin, scale) that lays a crystal structure
onto the peak cloud of a volume.

Global first, then refined, every step on the peak cloud (the local maxima of the volume):
1. scale: the histogram of peak-pair distances against the structure's (orientation-free), searched within
   1 +- ``scale_tolerance``;
2. orientation: a rotation function (as in molecular replacement): the peak-pair vectors are binned into a
   smoothed 3D histogram (a Patterson map of the peaks), and each rotation on a near-uniform grid over
   SO(3) scores the structure's own pair vectors, rotated, against it; the best few grid rotations are
   refined continuously on a sharper map;
3. origin: for each candidate orientation, the peaks folded into the unit cell (periodic structure) or
   binned in the volume (finite model) are cross-correlated by FFT with the structure's atoms weighted by
   atomic number, which also tells apart orientations the pair vectors cannot (the two polarities of a
   non-centrosymmetric crystal);
4. least squares: sites and peaks are paired (mutual nearest, within ``search_radius_A``) and the
   similarity transform is refitted (Umeyama) until the pairing stops changing.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage, optimize
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

NEIGHBOURS_FOR_PAIRS = 24  # the pair vectors used reach about this many neighbours per atom
CANDIDATE_ORIENTATIONS = 12
PEAKS_FOR_SEARCH = 6000  # the global search uses the peaks nearest the cloud's centre, up to this many


class LatticeMismatchError(ValueError):
    """The structure does not fit the volume: too few peaks lie near a registered site. ``registration``
    holds the best registration found (None when there were too few peaks to try)."""

    def __init__(self, message: str, registration: "LatticeRegistration | None" = None):
        super().__init__(message)
        self.registration = registration


@dataclasses.dataclass(frozen=True)
class LatticeRegistration:
    """A structure laid onto a volume: a structure position ``a`` (x, y, z in A, the structure's own frame)
    lands at ``scale * rotation @ a + origin_A`` in the volume's frame (DESIGN.md coordinates).

    residual_A : rms distance between the paired peaks and their sites (A).
    match_fraction : share of the peaks within ``search_radius_A`` of a site; near 1 for a structure that
        fits, near the volume share of the search spheres (~0.1-0.2) for one that does not.
    n_peaks : peaks the registration used.
    """

    rotation: np.ndarray
    origin_A: np.ndarray
    scale: float
    residual_A: float
    match_fraction: float
    n_peaks: int

    def to_volume(self, positions_A: np.ndarray) -> np.ndarray:
        """Structure-frame positions (N, 3) -> volume-frame positions (N, 3), both (x, y, z) in A."""
        return _apply(self.scale * self.rotation, positions_A) + self.origin_A

    def to_structure(self, positions_A: np.ndarray) -> np.ndarray:
        """Volume-frame positions (N, 3) -> structure-frame positions; the inverse of :meth:`to_volume`."""
        return _apply(self.rotation.T / self.scale, np.asarray(positions_A) - self.origin_A)


def _apply(matrix, points):
    """``points @ matrix.T`` for points (N, 3): einsum, not BLAS, whose threads cost more than they bring on
    a tall, three-column product."""
    return np.einsum("ab,nb->na", matrix, np.asarray(points, dtype=np.float64))


def load_structure(structure):
    """An ASE Atoms from ``structure``: an Atoms (copied) or a path to any file ASE reads (CIF, XYZ, ...).
    A structure periodic along all three axes is a crystal that fills the volume's crystal; anything else
    is a finite model (e.g. an ideal nanocrystal) whose atoms are the sites."""
    try:
        from ase import Atoms
    except ImportError:
        raise ImportError("structure: lattice registration needs ASE (pip install ase)") from None

    if isinstance(structure, Atoms):
        atoms = structure.copy()
    elif isinstance(structure, (str, os.PathLike)):
        import ase.io

        try:
            atoms = ase.io.read(structure)
        except Exception as err:  # ASE raises many kinds; the user needs the path and the reason
            raise ValueError(f"structure: could not read {os.fspath(structure)!r} with ASE ({err})") from None
    else:
        raise TypeError(f"structure: expected an ase.Atoms or a path to a file ASE reads, got {type(structure).__name__}")
    if len(atoms) == 0:
        raise ValueError("structure: expected at least one atom, got an empty structure")
    if is_periodic(atoms) and abs(np.linalg.det(atoms.cell.array)) < 1e-6:
        raise ValueError("structure: a periodic structure needs a cell of non-zero volume")
    return atoms


def is_periodic(atoms) -> bool:
    return bool(np.all(atoms.pbc))


def lattice_sites(atoms, registration: LatticeRegistration, box_lo_A, box_hi_A) -> tuple[np.ndarray, np.ndarray]:
    """The structure's sites that ``registration`` puts inside the box [lo, hi] (x, y, z in A): structure-
    frame positions (N, 3) and the index (N,) of the structure atom each site repeats. A periodic structure
    is tiled over the box; a finite one gives its own atoms."""
    lo, hi = np.asarray(box_lo_A, float), np.asarray(box_hi_A, float)
    if is_periodic(atoms):
        cell = atoms.cell.array
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        frac = registration.to_structure(corners) @ np.linalg.inv(cell)
        ranges = [np.arange(np.floor(a) - 1, np.ceil(b) + 1) for a, b in zip(frac.min(0), frac.max(0))]
        cells = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
        # Only the cells that can reach the box (the box's corners span a larger, rotated range).
        reach = np.linalg.norm(cell.sum(axis=0)) * registration.scale
        centres = registration.to_volume(_apply(cell.T, cells + 0.5))
        cells = cells[np.all((centres >= lo - reach) & (centres <= hi + reach), axis=1)][:, None, :]
        base = atoms.get_scaled_positions(wrap=True)
        positions = _apply(cell.T, (cells + base[None]).reshape(-1, 3))
        index = np.tile(np.arange(len(atoms)), len(cells))
    else:
        positions, index = atoms.positions.copy(), np.arange(len(atoms))
    placed = registration.to_volume(positions)
    inside = np.all((placed >= lo) & (placed <= hi), axis=1)
    return positions[inside], index[inside]


def register_lattice(peaks_A, weights, atoms, box_lo_A, box_hi_A, *, search_radius_A, scale_tolerance,
                     angular_step_deg, min_match_fraction) -> LatticeRegistration:  # fmt: skip
    """Register ``atoms`` (an ASE Atoms from :func:`load_structure`) onto the peaks (K, 3) (x, y, z in A)
    with ``weights`` (K,) (peak heights above background); the sites considered are those inside the box.
    Raises :class:`LatticeMismatchError` when the best registration pairs fewer than ``min_match_fraction``
    of the peaks with a site."""
    peaks_A = np.asarray(peaks_A, dtype=np.float64)
    weights = np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    if len(peaks_A) < 4:
        raise LatticeMismatchError(f"volume: found {len(peaks_A)} peaks, too few to register a lattice (need 4 or more)")
    model_vectors, reach_A = _structure_pair_vectors(atoms)
    scale = _scale_search(peaks_A, model_vectors, reach_A, scale_tolerance)
    rotations = _orientation_search(peaks_A, model_vectors, reach_A, scale, np.radians(angular_step_deg))
    # Candidates are screened on the central peaks (those the orientation search used), then the best
    # is refined on all of them.
    central = _central(peaks_A, PEAKS_FOR_SEARCH)
    screen_peaks, screen_weights = peaks_A[central], weights[central]
    screen_lo = np.maximum(box_lo_A, screen_peaks.min(axis=0) - search_radius_A)
    screen_hi = np.minimum(box_hi_A, screen_peaks.max(axis=0) + search_radius_A)
    best, best_quality = None, None
    tree = cKDTree(screen_peaks)
    for rotation in rotations:
        origin = _origin_search(screen_peaks, screen_weights, atoms, rotation, scale, screen_lo, screen_hi)
        start = LatticeRegistration(rotation, origin, scale, np.inf, 0.0, len(screen_peaks))
        candidate = refine_registration(screen_peaks, atoms, start, screen_lo, screen_hi, search_radius_A, iterations=3)
        # Orientations whose sites overlay the peaks equally well (e.g. the two polarities of a
        # non-centrosymmetric crystal) differ in which species sits where: prefer the one whose heavy atoms
        # sit on the strong peaks.
        sites, atom_index = lattice_sites(atoms, candidate, screen_lo, screen_hi)
        site, peak, _ = mutual_nearest(candidate.to_volume(sites), tree, search_radius_A)
        quality = (round(candidate.match_fraction, 2), _correlation(screen_weights[peak], atoms.numbers[atom_index[site]]), -candidate.residual_A)
        if best is None or quality > best_quality:
            best, best_quality = candidate, quality
    best = refine_registration(peaks_A, atoms, dataclasses.replace(best, n_peaks=len(peaks_A)), box_lo_A, box_hi_A, search_radius_A)
    if best.match_fraction < min_match_fraction:
        raise LatticeMismatchError(
            f"structure: does not fit the volume: only {best.match_fraction:.1%} of the {len(peaks_A)} peaks lie "
            f"within search_radius_A = {search_radius_A} A of a registered site (min_match_fraction = "
            f"{min_match_fraction}); check the structure, voxel_size_A and scale_tolerance",
            best,
        )
    return best


def _correlation(a, b) -> float:
    """Pearson correlation of two samples; 0 where either is constant or too short."""
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def refine_registration(peaks_A, atoms, registration: LatticeRegistration, box_lo_A, box_hi_A,
                        search_radius_A, *, iterations: int = 20) -> LatticeRegistration:  # fmt: skip
    """Least-squares refinement: pair sites and peaks (mutual nearest within ``search_radius_A``), refit
    the similarity transform to the pairs, repeat until the pairing is stable."""
    tree = cKDTree(peaks_A)
    pairing = None
    lo, hi = np.asarray(box_lo_A, float), np.asarray(box_hi_A, float)
    candidates, _ = lattice_sites(atoms, registration, lo - 2.0, hi + 2.0)  # the refinement moves sites little
    for _ in range(iterations):
        placed = registration.to_volume(candidates)
        sites = candidates[np.all((placed >= lo) & (placed <= hi), axis=1)]
        site_idx, peak_idx, distances = mutual_nearest(registration.to_volume(sites), tree, search_radius_A)
        if len(site_idx) < 4:
            return dataclasses.replace(registration, match_fraction=len(site_idx) / len(peaks_A))
        key = (len(sites), tuple(peak_idx))
        rotation, scale, origin = similarity_transform(sites[site_idx], peaks_A[peak_idx])
        if pairing == key:
            break
        pairing = key
        registration = dataclasses.replace(registration, rotation=rotation, origin_A=origin, scale=scale)
    residual = float(np.sqrt(np.mean(distances ** 2)))
    return dataclasses.replace(registration, residual_A=residual, match_fraction=len(peak_idx) / len(peaks_A))


def mutual_nearest(sites_A, peak_tree: cKDTree, radius_A):
    """Pairs (site index, peak index, distance) of sites and peaks that are each other's nearest within
    ``radius_A``."""
    if len(sites_A) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    distance, peak = peak_tree.query(sites_A, distance_upper_bound=radius_A)
    site = np.flatnonzero(np.isfinite(distance))
    peak, distance = peak[site], distance[site]
    order = np.lexsort((distance, peak))  # by peak, nearest site first
    first = np.ones(len(order), dtype=bool)
    first[1:] = peak[order][1:] != peak[order][:-1]
    keep = np.sort(order[first])
    return site[keep], peak[keep], distance[keep]


def similarity_transform(source, target, weights=None):
    """(rotation, scale, origin) minimising sum w |scale R source + origin - target|^2 (Umeyama, 1991)."""
    w = np.ones(len(source)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    mu_s, mu_t = w @ source, w @ target
    s, t = source - mu_s, target - mu_t
    covariance = (t * w[:, None]).T @ s
    u, d, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / (w @ np.sum(s ** 2, axis=1)))
    return rotation, scale, mu_t - scale * rotation @ mu_s


# --- global search ------------------------------------------------------------------------------------


def _structure_pair_vectors(atoms):
    """The structure's interatomic vectors out to the distance that reaches ~NEIGHBOURS_FOR_PAIRS
    neighbours per atom: unique vectors (Q, 3) and their multiplicity per atom (Q,), plus that reach (A)."""
    cutoff = 3.0
    while True:
        first, vectors = _neighbour_pairs(atoms, cutoff)
        distances = np.linalg.norm(vectors, axis=1)
        counts = np.bincount(first, minlength=len(atoms))
        if np.median(counts) >= NEIGHBOURS_FOR_PAIRS or cutoff > 30:
            break
        cutoff *= 1.5
    # Each atom's NEIGHBOURS_FOR_PAIRS-th neighbour distance (atoms with fewer neighbours, e.g. on a finite
    # model's surface, are left out), from the pairs sorted by atom, then distance.
    order = np.lexsort((distances, first))
    rank = np.arange(len(order)) - np.searchsorted(first[order], first[order])
    kth = distances[order][rank == NEIGHBOURS_FOR_PAIRS - 1]
    reach = float(np.median(kth)) if len(kth) else float(distances.max())
    near = distances <= reach
    unique, counts = np.unique(np.round(vectors[near], 3), axis=0, return_counts=True)
    return (unique, counts / len(atoms)), reach


def _neighbour_pairs(atoms, cutoff_A):
    """(first atom (P,), vector to its neighbour (P, 3)) for every ordered pair closer than ``cutoff_A``,
    periodic images included for a periodic structure."""
    if is_periodic(atoms):
        from ase.neighborlist import neighbor_list

        return neighbor_list("iD", atoms, cutoff_A)
    pairs = cKDTree(atoms.positions).query_pairs(cutoff_A, output_type="ndarray")
    vectors = atoms.positions[pairs[:, 1]] - atoms.positions[pairs[:, 0]]
    return np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([vectors, -vectors])


def _central(peaks_A, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` peaks nearest the cloud's median."""
    if len(peaks_A) <= limit:
        return np.arange(len(peaks_A))
    return np.argsort(np.linalg.norm(peaks_A - np.median(peaks_A, axis=0), axis=1))[:limit]


def _peak_pair_vectors(peaks_A, reach_A):
    """Peak-pair vectors (both signs) out to ``reach_A`` of the PEAKS_FOR_SEARCH peaks nearest the cloud's
    centre (enough for the statistics; the whole cloud is used by the least-squares refinement)."""
    peaks_A = peaks_A[_central(peaks_A, PEAKS_FOR_SEARCH)]
    pairs = cKDTree(peaks_A).query_pairs(reach_A, output_type="ndarray")
    vectors = peaks_A[pairs[:, 1]] - peaks_A[pairs[:, 0]]
    return np.concatenate([vectors, -vectors])


def _scale_search(peaks_A, model_vectors, reach_A, tolerance):
    """The scale whose structure pair distances best overlay the peak pair distance histogram."""
    if tolerance == 0:
        return 1.0
    unique, counts = model_vectors
    model_d = np.linalg.norm(unique, axis=1)
    peak_d = np.linalg.norm(_peak_pair_vectors(peaks_A, reach_A * (1 + tolerance) + 0.5), axis=1)
    bin_A = 0.01
    histogram = np.bincount(np.round(peak_d / bin_A).astype(int)).astype(float)
    histogram = ndimage.gaussian_filter1d(histogram, 0.1 / bin_A, mode="constant")
    scales = np.arange(1 - tolerance, 1 + tolerance + 1e-9, 0.002)
    index = np.round(np.outer(scales, model_d) / bin_A).astype(int)
    index = np.clip(index, 0, len(histogram) - 1)
    score = (histogram[index] * counts).sum(axis=1)
    return float(scales[np.argmax(score)])


def _orientation_search(peaks_A, model_vectors, reach_A, scale, step_rad):
    """The CANDIDATE_ORIENTATIONS best rotations (each a 3x3 matrix) of the rotation function, refined."""
    unique, counts = model_vectors
    model = scale * unique
    vectors = _peak_pair_vectors(peaks_A, reach_A * scale + 1.0)
    bin_A = 0.15
    half = int(np.ceil((reach_A * scale + 1.0) / bin_A))
    grid_index = np.round(vectors / bin_A).astype(int) + half
    patterson = np.zeros((2 * half + 1,) * 3)
    np.add.at(patterson, tuple(grid_index.T), 1.0)

    def score_fn(sigma_A):
        smoothed = ndimage.gaussian_filter(patterson, sigma_A / bin_A, mode="constant")

        def score(rotations):  # (R, 3, 3) -> (R,)
            points = np.einsum("rab,qb->rqa", rotations, model) / bin_A + half
            values = ndimage.map_coordinates(smoothed, points.reshape(-1, 3).T, order=1, mode="constant")
            return values.reshape(len(rotations), -1) @ counts

        return score

    grid = _rotation_grid(step_rad)
    coarse = score_fn(max(0.3, 0.5 * reach_A * step_rad))
    scores = np.concatenate([coarse(grid[i : i + 2000]) for i in range(0, len(grid), 2000)])
    chosen: list[np.ndarray] = []
    for index in np.argsort(-scores):
        if all(_angle_between(grid[index], other) > 1.5 * step_rad for other in chosen):
            chosen.append(grid[index])
            if len(chosen) == CANDIDATE_ORIENTATIONS:
                break
    fine = score_fn(0.2)
    refined = []
    for start in chosen:
        def cost(w, start=start):
            return -fine((Rotation.from_rotvec(w).as_matrix() @ start)[None])[0]

        best = optimize.minimize(cost, np.zeros(3), method="Nelder-Mead",
                                 options={"initial_simplex": 0.5 * step_rad * np.vstack([np.zeros(3), np.eye(3)]),
                                          "xatol": 1e-4, "fatol": 1e-9})  # fmt: skip
        refined.append(Rotation.from_rotvec(best.x).as_matrix() @ start)
    return refined


def _rotation_grid(step_rad: float) -> np.ndarray:
    """Near-uniform rotations (N, 3, 3) about ``step_rad`` apart: a super-Fibonacci spiral of unit
    quaternions (Alexa, CVPR 2022), N = 8 pi^2 / step^3."""
    n = int(np.ceil(8 * np.pi**2 / step_rad**3))
    s = np.arange(n) + 0.5
    r, big_r = np.sqrt(s / n), np.sqrt(1 - s / n)
    alpha = 2 * np.pi * s / np.sqrt(2)
    beta = 2 * np.pi * s / 1.533751168755204288118041
    quaternions = np.stack([r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], -1)
    return Rotation.from_quat(quaternions).as_matrix()


def _angle_between(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1)))


def _origin_search(peaks_A, weights, atoms, rotation, scale, box_lo_A, box_hi_A):
    """The origin (x, y, z in A) that best overlays the structure's atoms (weighted by atomic number) on
    the peaks (weighted by height) for a given rotation and scale: an FFT cross-correlation, within one
    unit cell for a periodic structure, over the volume for a finite one."""
    z = atoms.numbers.astype(float)
    blur_A = 0.3
    if is_periodic(atoms):
        cell = atoms.cell.array
        lengths = np.linalg.norm(cell, axis=1)
        bins = np.maximum(8, np.ceil(lengths / 0.15).astype(int))
        peak_frac = _apply((rotation @ np.linalg.inv(cell)).T / scale, peaks_A) % 1.0
        atom_frac = atoms.get_scaled_positions(wrap=True)
        density_peaks = _histogram(peak_frac * bins, bins, weights, periodic=True)
        density_atoms = _histogram(atom_frac * bins, bins, z, periodic=True)
        sigma = blur_A / (lengths / bins)
        density_peaks = ndimage.gaussian_filter(density_peaks, sigma, mode="wrap")
        density_atoms = ndimage.gaussian_filter(density_atoms, sigma, mode="wrap")
        correlation = np.fft.irfftn(np.fft.rfftn(density_peaks) * np.conj(np.fft.rfftn(density_atoms)), s=tuple(bins), axes=(0, 1, 2))
        shift = np.array(np.unravel_index(np.argmax(correlation), correlation.shape)) / bins
        return scale * rotation @ (shift @ cell)
    # Finite model: both point sets binned on one grid spacing, full (unwrapped) cross-correlation.
    spacing = 0.5  # coarse: the least-squares refinement takes it from here
    placed = scale * atoms.positions @ rotation.T
    lo_p, lo_a = np.asarray(box_lo_A, float), placed.min(axis=0) - 1.0
    shape_p = np.ceil((np.asarray(box_hi_A, float) - lo_p) / spacing).astype(int) + 1
    shape_a = np.ceil((placed.max(axis=0) + 1.0 - lo_a) / spacing).astype(int) + 1
    full = np.array([sp_fft.next_fast_len(int(n), real=True) for n in shape_p + shape_a - 1])
    density_peaks = _histogram((peaks_A - lo_p) / spacing, shape_p, weights, periodic=False)
    density_atoms = _histogram((placed - lo_a) / spacing, shape_a, z, periodic=False)
    sigma = max(blur_A, spacing) / spacing
    density_peaks = ndimage.gaussian_filter(density_peaks, sigma, mode="constant")
    density_atoms = ndimage.gaussian_filter(density_atoms, sigma, mode="constant")
    axes = (0, 1, 2)
    spectrum = np.fft.rfftn(density_peaks, s=tuple(full), axes=axes) * np.conj(np.fft.rfftn(density_atoms, s=tuple(full), axes=axes))
    correlation = np.fft.irfftn(spectrum, s=tuple(full), axes=axes)
    index = np.array(np.unravel_index(np.argmax(correlation), correlation.shape))
    shift = np.where(index > shape_p - 1, index - full, index)  # wrapped negative lags
    return lo_p - lo_a + shift * spacing


def _histogram(points_bins, shape, weights, *, periodic):
    """Weighted nearest-bin histogram of points given in bin units; (x, y, z) axes in that order."""
    index = np.round(points_bins).astype(int)
    shape = tuple(int(n) for n in shape)
    if periodic:
        index %= np.array(shape)
    else:
        ok = np.all((index >= 0) & (index < np.array(shape)), axis=1)
        index, weights = index[ok], np.asarray(weights)[ok]
    out = np.zeros(shape)
    np.add.at(out, tuple(index.T), weights)
    return out
