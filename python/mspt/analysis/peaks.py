"""Peaks of a volume: the background level, the local maxima, and their sub-voxel centres.

Coordinates follow DESIGN.md: voxel (k, j, i) of a (Z, Y, X) volume with voxel size d sits at
x = (i - X//2) d, y = (j - Y//2) d, z = (k - Z//2) d, and positions are given as (x, y, z) in A.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

# Offsets of a 3 x 3 x 3 neighbourhood, (27, 3) as (dk, dj, di), and the design matrix of a full quadratic
# in them: 1, dk, dj, di, dk^2, dj^2, di^2, dk dj, dk di, dj di.
NEIGHBOURHOOD = np.stack(np.meshgrid(*(np.arange(-1, 2),) * 3, indexing="ij"), -1).reshape(-1, 3)
_DESIGN = np.column_stack([
    np.ones(27), NEIGHBOURHOOD,
    NEIGHBOURHOOD ** 2,
    NEIGHBOURHOOD[:, 0] * NEIGHBOURHOOD[:, 1], NEIGHBOURHOOD[:, 0] * NEIGHBOURHOOD[:, 2], NEIGHBOURHOOD[:, 1] * NEIGHBOURHOOD[:, 2],
])  # fmt: skip


def smooth(volume: np.ndarray, voxel_size_A: float, smoothing_A: float) -> np.ndarray:
    """The volume smoothed by a Gaussian of sigma ``smoothing_A`` (A), as float32."""
    volume = np.asarray(volume, dtype=np.float32)
    if smoothing_A <= 0:
        return volume
    return ndimage.gaussian_filter(volume, smoothing_A / voxel_size_A, mode="nearest")


def background_level(volume: np.ndarray) -> tuple[float, float]:
    """(level, noise sigma) of the volume's background, from its voxel histogram: the median and the
    scaled median absolute deviation of the voxels below the median's upper half-width. Atoms fill a few
    per cent of a volume's voxels, so both statistics describe the space between and around them.

    A reconstruction restricted to a support, or clipped at zero, holds many voxels at exactly its minimum:
    they carry no noise, and would make the noise look nil. When they are more than a tenth of the volume,
    the statistics come from the other voxels (the support's interior)."""
    sample = np.asarray(volume, dtype=np.float64).ravel()
    if sample.size > 2_000_000:  # a strided sample is as good a histogram and much faster
        sample = sample[:: sample.size // 1_000_000]
    clipped = sample == sample.min()
    if clipped.mean() > 0.1 and not clipped.all():
        sample = sample[~clipped]
    level = float(np.median(sample))
    noise = 1.4826 * float(np.median(np.abs(sample - level)))
    return level, max(noise, np.finfo(np.float32).tiny)


def local_maxima(smoothed: np.ndarray, voxel_size_A: float, min_separation_A: float, threshold: float) -> np.ndarray:
    """Voxel indices (K, 3) as (k, j, i) of the local maxima above ``threshold`` within a ball of radius
    ``min_separation_A / 2`` (at least their 26 neighbours), at least one voxel from the border. Maxima
    closer than ``min_separation_A`` may remain: thin them at their sub-voxel centres (:func:`thin`)."""
    radius = max(np.sqrt(3) + 1e-6, 0.5 * min_separation_A / voxel_size_A)
    span = np.arange(-int(radius), int(radius) + 1)
    ball = np.sum(np.stack(np.meshgrid(span, span, span, indexing="ij")) ** 2, axis=0) <= radius**2
    # A full cube is separable: the filter then runs as three 1D passes.
    local_max = ndimage.maximum_filter(smoothed, **({"size": ball.shape} if ball.all() else {"footprint": ball}), mode="nearest")
    peaks = (smoothed == local_max) & (smoothed > threshold)
    peaks[[0, -1]] = peaks[:, [0, -1]] = peaks[:, :, [0, -1]] = False
    return np.argwhere(peaks)


def thin(positions_A: np.ndarray, heights: np.ndarray, min_separation_A: float) -> np.ndarray:
    """Which peaks to keep (K,) bool so that none are closer than ``min_separation_A``: of two closer
    peaks the weaker is dropped, strongest first."""
    order = np.argsort(-np.asarray(heights), kind="stable")
    pairs = cKDTree(np.asarray(positions_A)[order]).query_pairs(min_separation_A, output_type="ndarray")
    keep_sorted = np.ones(len(order), dtype=bool)
    for a, b in pairs[np.argsort(pairs.min(axis=1), kind="stable")]:  # a < b: a is the stronger
        if keep_sorted[min(a, b)]:
            keep_sorted[max(a, b)] = False
    keep = np.empty_like(keep_sorted)
    keep[order] = keep_sorted
    return keep


def subvoxel_centres(smoothed: np.ndarray, kji: np.ndarray, level: float):
    """Sub-voxel centres (K, 3) as fractional (k, j, i) and heights above ``level`` (K,) of the peaks at
    voxels ``kji`` (at least one voxel inside the volume), by :func:`fit_neighbourhoods`."""
    kji = np.asarray(kji, dtype=np.int64).reshape(-1, 3)
    offset, height, _ = fit_neighbourhoods(neighbourhoods(smoothed, kji) - level)
    return kji + offset, height


def neighbourhoods(volume: np.ndarray, kji: np.ndarray) -> np.ndarray:
    """The 3 x 3 x 3 neighbourhoods (K, 27) of voxels ``kji`` (K, 3), in the order of ``NEIGHBOURHOOD``."""
    return volume[tuple((np.asarray(kji)[:, None, :] + NEIGHBOURHOOD[None]).transpose(2, 0, 1))].astype(np.float64)


def fit_neighbourhoods(values: np.ndarray):
    """Fit each 3 x 3 x 3 neighbourhood (K, 27) (background removed) with a Gaussian: a quadratic fitted
    to the logarithm, exact for a Gaussian atom, weighted by the squared values (the log's noise falls as
    1/value). Returns the peak's offset from the central voxel (K, 3) in voxels, its height (K,), and the
    log's Hessian (K, 3, 3) in 1/voxel^2, NaN where the fit has no maximum within one voxel or one
    implausibly taller than the data (there the offset is the centre of mass above the neighbourhood's
    minimum and the height the central value)."""
    count = len(values)
    if count == 0:
        return np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3, 3))
    positive = values > 1e-6 * np.abs(values).max(initial=1.0)
    weights = np.where(positive, values, 0.0) ** 2
    logs = np.log(np.where(positive, values, 1.0))
    normal = np.einsum("kn,np,nq->kpq", weights, _DESIGN, _DESIGN)
    rhs = np.einsum("kn,np,kn->kp", weights, _DESIGN, logs)
    solvable = positive.sum(axis=1) >= 10
    normal[~solvable] = np.eye(10)
    # A tiny ridge keeps degenerate neighbourhoods (positive values on one plane only) solvable; their fit
    # then fails the checks below and falls back to the centre of mass.
    normal += 1e-9 * np.trace(normal, axis1=1, axis2=2)[:, None, None] * np.eye(10)
    coef = np.linalg.solve(normal, rhs[..., None])[..., 0]
    gradient = coef[:, 1:4]
    hessian = np.empty((count, 3, 3))
    hessian[:, [0, 1, 2], [0, 1, 2]] = 2 * coef[:, 4:7]
    hessian[:, 0, 1] = hessian[:, 1, 0] = coef[:, 7]
    hessian[:, 0, 2] = hessian[:, 2, 0] = coef[:, 8]
    hessian[:, 1, 2] = hessian[:, 2, 1] = coef[:, 9]
    fit_ok = solvable & (np.linalg.eigvalsh(hessian).max(axis=1) < 0)
    hessian[~fit_ok] = -np.eye(3)
    offset = -np.linalg.solve(hessian, gradient[..., None])[..., 0]
    fit_ok &= np.all(np.abs(offset) <= 1.0, axis=1)
    height = np.exp(np.minimum(coef[:, 0] + 0.5 * np.einsum("kp,kp->k", gradient, offset), 700.0))
    # A peak within one voxel of the centre cannot be much higher than the brightest voxel (a Gaussian
    # a voxel wide keeps over half its height a voxel off-centre); a taller one is a flat fit to noise.
    fit_ok &= height <= 2 * values.max(axis=1)

    mass = values - values.min(axis=1, keepdims=True)
    total = mass.sum(axis=1, keepdims=True)
    com = np.where(total > 0, mass @ NEIGHBOURHOOD / np.where(total > 0, total, 1.0), 0.0)
    offset = np.where(fit_ok[:, None], offset, com)
    height = np.where(fit_ok, height, values[:, 13])
    hessian[~fit_ok] = np.nan
    return offset, height, hessian


def gaussian_values(offsets, heights, hessians) -> np.ndarray:
    """``height * exp(d^T H d / 2)`` (K, P) at offsets d (K, P, 3) from K Gaussians' centres, with heights
    (K,) and symmetric log-Hessians H (K, 3, 3) (the quadratic form written out: faster than einsum)."""
    d0, d1, d2 = offsets[..., 0], offsets[..., 1], offsets[..., 2]
    h = hessians[:, None]
    form = (h[..., 0, 0] * d0 * d0 + h[..., 1, 1] * d1 * d1 + h[..., 2, 2] * d2 * d2
            + 2 * (h[..., 0, 1] * d0 * d1 + h[..., 0, 2] * d0 * d2 + h[..., 1, 2] * d1 * d2))  # fmt: skip
    return heights[:, None] * np.exp(0.5 * form)


def render_gaussians(shape, centres, heights, hessians, reach: int = 3) -> np.ndarray:
    """A volume (float32) of Gaussians ``height * exp(d^T H d / 2)`` with d the offset from each centre
    (K, 3) (fractional voxels) and H the log-Hessians (K, 3, 3) that :func:`fit_neighbourhoods` returns,
    each drawn within ``reach`` voxels of its centre."""
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    span = np.arange(-reach, reach + 1)
    patch = np.stack(np.meshgrid(span, span, span, indexing="ij"), -1).reshape(-1, 3)
    patch = patch[np.sum(patch**2, axis=1) <= (reach + 0.5) ** 2]  # a ball: the cube's corners add ~nothing
    for start in range(0, len(centres), 4096):  # bounded memory on large volumes
        c, h, hess = centres[start : start + 4096], heights[start : start + 4096], hessians[start : start + 4096]
        voxels = np.round(c).astype(np.int64)[:, None, :] + patch[None]
        values = gaussian_values(voxels - c[:, None, :], h, hess)
        inside = np.all((voxels >= 0) & (voxels < np.array(shape)), axis=2)
        flat = np.ravel_multi_index(tuple(voxels[inside].T), shape)
        if len(flat):  # accumulate over the chunk's own index range, not the whole volume
            low = flat.min()
            out[low : flat.max() + 1] += np.bincount(flat - low, weights=values[inside])
    return out.reshape(shape).astype(np.float32)


def voxel_to_xyz(kji: np.ndarray, shape: tuple[int, int, int], voxel_size_A: float) -> np.ndarray:
    """(x, y, z) in A of (fractional) voxel indices (k, j, i) of a volume of ``shape`` (Z, Y, X)."""
    kji = np.asarray(kji, dtype=np.float64)
    centre = np.array([n // 2 for n in shape], dtype=np.float64)
    return ((kji - centre) * voxel_size_A)[..., ::-1]


def xyz_to_voxel(xyz: np.ndarray, shape: tuple[int, int, int], voxel_size_A: float) -> np.ndarray:
    """Fractional voxel indices (k, j, i) of positions (x, y, z) in A; the inverse of :func:`voxel_to_xyz`."""
    centre = np.array([n // 2 for n in shape], dtype=np.float64)
    return np.asarray(xyz, dtype=np.float64)[..., ::-1] / voxel_size_A + centre
