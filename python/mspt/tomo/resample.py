"""Separable resampling of images and volumes between grids that share the rotation centre: sample n of a
grid of n_points with spacing d sits at (n - n_points//2) d (DESIGN.md). Each axis is a small dense matrix,
so a volume is resampled by three tensor contractions (no per-voxel Python)."""

from __future__ import annotations

import math

import numpy as np


def linear_resample_matrix(n_in: int, spacing_in: float, n_out: int, spacing_out: float) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights from one centred grid to another (zero outside)."""
    position = (np.arange(n_out) - n_out // 2) * spacing_out
    u = position / spacing_in + n_in // 2  # fractional input index
    lo = np.floor(u).astype(int)
    frac = u - lo
    matrix = np.zeros((n_out, n_in))
    for corner, weight in ((lo, 1.0 - frac), (lo + 1, frac)):
        inside = (corner >= 0) & (corner < n_in)
        np.add.at(matrix, (np.nonzero(inside)[0], corner[inside]), weight[inside])
    return matrix


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) Gaussian smoothing by ``sigma`` samples, each row normalised to sum to 1 (edges renormalised,
    so a constant stays constant)."""
    if sigma <= 0:
        return np.eye(n)
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    reach = max(1, int(math.ceil(4 * sigma)))
    kernel = np.where(np.abs(offsets) <= reach, np.exp(-0.5 * (offsets / sigma) ** 2), 0.0)
    return kernel / kernel.sum(axis=1, keepdims=True)


def apply_separable(array: np.ndarray, matrices, axes) -> np.ndarray:
    """Apply one (n_out, n_in) matrix along each of ``axes`` of ``array``."""
    out = np.asarray(array, dtype=np.float64)
    for matrix, axis in zip(matrices, axes):
        out = np.moveaxis(np.tensordot(matrix, out, axes=([1], [axis])), 0, axis)
    return out


def resample_volume(volume: np.ndarray, voxel_in_A: float, shape_out, voxel_out_A: float) -> np.ndarray:
    """Trilinear resampling of a (Z, Y, X) volume onto a centred grid ``shape_out`` of voxel ``voxel_out_A``
    -> float32."""
    matrices = [linear_resample_matrix(n_in, voxel_in_A, n_out, voxel_out_A)
                for n_in, n_out in zip(volume.shape, shape_out)]  # fmt: skip
    return apply_separable(volume, matrices, (0, 1, 2)).astype(np.float32)


def downsample_images(images: np.ndarray, factor: int) -> np.ndarray:
    """(T, Py, Px) images with pixel p -> the same field on a centred grid of pixel ``factor`` p, ceil(P / factor)
    pixels per axis: Gaussian anti-aliasing (sigma ``factor``/2 pixels) then linear sampling. Values keep their
    units (line integrals stay line integrals)."""
    if factor == 1:
        return np.asarray(images, dtype=np.float32)
    matrices = []
    for n in images.shape[1:]:
        smooth = gaussian_matrix(n, factor / 2.0)
        matrices.append(linear_resample_matrix(n, 1.0, -(-n // factor), float(factor)) @ smooth)
    return apply_separable(images, matrices, (1, 2)).astype(np.float32)


def gaussian_blur(volume: np.ndarray, sigma_voxel: float) -> np.ndarray:
    """Gaussian blur of a (Z, Y, X) volume by ``sigma_voxel`` voxels on every axis -> float32."""
    matrices = [gaussian_matrix(n, sigma_voxel) for n in volume.shape]
    return apply_separable(volume, matrices, (0, 1, 2)).astype(np.float32)
