"""The support mask: where the coarse reconstruction exceeds a fraction of its maximum, dilated by a margin,
carried to any level's grid."""

from __future__ import annotations

import numpy as np

from .resample import resample_volume


def _dilate(mask: np.ndarray, radius_voxel: float) -> np.ndarray:
    """Binary dilation by a ball of ``radius_voxel`` voxels (FFT convolution; the grid is the coarse one)."""
    if radius_voxel <= 0:
        return mask
    reach = int(np.ceil(radius_voxel))
    padded = [n + reach for n in mask.shape]
    axes = [np.fft.fftfreq(n, 1.0 / n) for n in padded]  # signed integer offsets
    kz, ky, kx = np.meshgrid(*axes, indexing="ij")
    ball = (kz**2 + ky**2 + kx**2 <= radius_voxel**2).astype(float)
    axes3 = (0, 1, 2)
    spread = np.fft.irfftn(np.fft.rfftn(mask.astype(float), padded, axes3) * np.fft.rfftn(ball), padded, axes3)
    return spread[: mask.shape[0], : mask.shape[1], : mask.shape[2]] > 0.5


def support_from_volume(volume: np.ndarray, voxel_A: float, threshold: float, dilation_A: float) -> np.ndarray:
    """Voxels above ``threshold`` x max(volume), dilated by ``dilation_A`` (A) -> bool mask on the same grid."""
    peak = float(volume.max())
    if peak <= 0:
        return np.ones(volume.shape, dtype=bool)  # nothing to go by: no restriction
    return _dilate(volume > threshold * peak, dilation_A / voxel_A)


def support_on_grid(mask: np.ndarray, voxel_A: float, shape, grid_voxel_A: float) -> np.ndarray:
    """The mask carried to another centred grid: a voxel belongs to it where the interpolated mask is > 0."""
    return resample_volume(mask.astype(np.float32), voxel_A, shape, grid_voxel_A) > 1e-3
