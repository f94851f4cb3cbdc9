"""fourier_sparsity(): keep only the strongest Fourier coefficients of each image.

A crystalline projection is sparse in Fourier space (its Bragg spots), white noise is spread evenly over
it; zeroing all but the strongest coefficients removes the noise between the spots. The spectrum of a real
image is Hermitian and a coefficient and its conjugate partner have the same magnitude, so both are kept or
dropped together and the result stays real.
"""

from __future__ import annotations

import numpy as np


def fourier_sparsity(images, keep: float | None) -> np.ndarray:
    """Keep the ``keep`` fraction (in (0, 1]) of the largest-magnitude 2D Fourier coefficients of each image
    (Y, X) of ``images`` (one image or a stack (T, Y, X)) and zero the rest; ``keep`` of 1 or None returns a
    copy. Coefficients tied with the smallest kept one are kept too. Float32 input gives float32 output."""
    stack = np.asarray(images)
    if stack.ndim not in (2, 3):
        raise ValueError(f"images: expected an image (Y, X) or a stack (T, Y, X), got shape {stack.shape}")
    if not (np.issubdtype(stack.dtype, np.floating) or np.issubdtype(stack.dtype, np.integer)):
        raise TypeError(f"images: expected real numbers, got dtype {stack.dtype}")
    out_dtype = np.float32 if stack.dtype == np.float32 else np.float64
    if keep is None or keep == 1:
        return stack.astype(out_dtype, copy=True)
    try:
        keep = float(keep)
    except (TypeError, ValueError):
        keep = float("nan")
    if not (0 < keep <= 1):
        raise ValueError(f"keep: expected a fraction in (0, 1] (or None to skip), got {keep!r}")
    spectra = np.fft.fft2(stack.astype(np.float64), axes=(-2, -1))
    magnitude = np.abs(spectra)
    # |F(k)| and |F(-k)| agree only to rounding; taking the larger of the two gives both partners the very
    # same magnitude, so a threshold can never split a pair.
    partner = np.roll(np.flip(magnitude, axis=(-2, -1)), 1, axis=(-2, -1))
    magnitude = np.maximum(magnitude, partner)
    flat = magnitude.reshape(*stack.shape[:-2], -1)
    count = max(1, int(round(keep * flat.shape[-1])))
    # The count-th largest magnitude of each image is its threshold.
    threshold = -np.partition(-flat, count - 1, axis=-1)[..., count - 1]
    spectra[magnitude < threshold[..., None, None]] = 0
    return np.real(np.fft.ifft2(spectra, axes=(-2, -1))).astype(out_dtype)
