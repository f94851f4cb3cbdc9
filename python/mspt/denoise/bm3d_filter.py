"""bm3d(): BM3D denoising (the ``bm3d`` package) of one image or of each image of a stack."""

from __future__ import annotations

import numpy as np

from ._bm3d_backend import load_bm3d
from .config import BM3D_PROFILES
from .noise_level import estimate_sigma

_MIN_SIDE_PX = 16  # BM3D matches 8 x 8 blocks in a search window; smaller images leave it nothing to match


def bm3d(images, sigma=None, profile: str = "np", *, progress: bool = True) -> np.ndarray:
    """BM3D-denoise a single image (Y, X) or each image of a stack (T, Y, X).

    sigma : the noise standard deviation in the images' units: one number for all images, one per image
        (length T), or None to estimate it from each image (:func:`mspt.denoise.estimate_sigma`).
    profile : a ``bm3d`` profile name, see :class:`mspt.denoise.DenoiseConfig`.
    progress : a progress bar over the images of a stack.

    The noise is handed to BM3D as the flat power spectral density of white noise (``sigma**2 * Y * X``
    in the package's convention) rather than as a scalar: every profile accepts that form, whereas the
    "refilter" profile fails on a scalar sigma in bm3d 4.0. Returns float32 for float32 input, float64
    otherwise, in the input's shape.
    """
    stack, single = _as_stack(images)
    sigmas = _sigmas(sigma, stack)
    if profile not in BM3D_PROFILES:
        raise ValueError(f"profile: expected one of {BM3D_PROFILES}, got {profile!r}")
    package = load_bm3d()
    out_dtype = np.float32 if stack.dtype == np.float32 else np.float64
    out = np.empty(stack.shape, dtype=out_dtype)
    bar = _progress(len(stack), progress and not single)
    try:
        for index, (image, noise) in enumerate(zip(stack, sigmas)):
            white_psd = np.full(image.shape, noise**2 * image.size)
            out[index] = package.bm3d(image.astype(np.float64), white_psd, profile=profile)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out[0] if single else out


def _as_stack(images) -> tuple[np.ndarray, bool]:
    stack = np.asarray(images)
    if stack.ndim not in (2, 3):
        raise ValueError(f"images: expected an image (Y, X) or a stack (T, Y, X), got shape {stack.shape}")
    if not np.issubdtype(stack.dtype, np.floating) and not np.issubdtype(stack.dtype, np.integer):
        raise TypeError(f"images: expected real numbers, got dtype {stack.dtype}")
    single = stack.ndim == 2
    stack = stack[None] if single else stack
    if min(stack.shape[1:]) < _MIN_SIDE_PX:
        raise ValueError(
            f"images: expected images of at least {_MIN_SIDE_PX} x {_MIN_SIDE_PX} pixels, got {stack.shape[1:]}"
        )
    if not np.all(np.isfinite(stack)):
        raise ValueError("images: contains NaN or infinite values")
    return stack, single


def _sigmas(sigma, stack: np.ndarray) -> list[float]:
    if sigma is None:
        return [estimate_sigma(image) for image in stack]
    values = np.ravel(np.asarray(sigma, dtype=float)) if not isinstance(sigma, str) else None
    if values is None or values.size not in (1, len(stack)) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"sigma: expected None (estimate it), a positive number, or {len(stack)} positive numbers (one per "
            f"image), in the images' units; got {sigma!r}"
        )
    return [float(s) for s in np.broadcast_to(values, (len(stack),))]


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="denoise (BM3D)", unit="image", leave=False)
