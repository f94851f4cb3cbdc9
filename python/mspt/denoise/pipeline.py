"""denoise(): the projection denoising step of the pipeline, BM3D then the Fourier-sparsity constraint."""

from __future__ import annotations

import numpy as np

from .bm3d_filter import bm3d
from .config import DenoiseConfig
from .sparsity import fourier_sparsity


def denoise(images, config: DenoiseConfig = DenoiseConfig()) -> np.ndarray:
    """Denoise one projection (Y, X) or a stack (T, Y, X) of summed phases as ``config`` says: BM3D with
    ``config.profile`` at ``config.sigma`` (estimated per image when "auto"), then, unless
    ``config.fourier_keep`` is 1 or None, keep that fraction of the strongest Fourier coefficients."""
    if not isinstance(config, DenoiseConfig):
        raise TypeError(f"config: expected an mspt.denoise.DenoiseConfig, got {type(config).__name__}")
    if not config.enabled:
        return np.array(images, copy=True)
    sigma = None if config.sigma == "auto" else float(config.sigma)
    filtered = bm3d(images, sigma, config.profile, progress=config.progress)
    return fourier_sparsity(filtered, config.fourier_keep)
