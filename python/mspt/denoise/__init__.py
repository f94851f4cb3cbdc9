"""Denoising of the summed-phase projections before tomography: BM3D on each image (noise level estimated
from the data when not given), then a Fourier-sparsity constraint. ``denoise(images, config)``."""

from .bm3d_filter import bm3d
from .config import BM3D_PROFILES, DenoiseConfig
from .noise_level import estimate_sigma
from .pipeline import denoise
from .sparsity import fourier_sparsity

__all__ = ["BM3D_PROFILES", "DenoiseConfig", "bm3d", "denoise", "estimate_sigma", "fourier_sparsity"]
