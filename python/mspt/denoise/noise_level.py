"""estimate_sigma(): the standard deviation of white noise in an image, measured from the image itself.

The finest diagonal band of an orthonormal Haar wavelet transform,
``HH = (x[2i, 2j] - x[2i, 2j+1] - x[2i+1, 2j] + x[2i+1, 2j+1]) / 2``, holds white noise of the image's own
standard deviation and almost nothing of a band-limited image (an atom column spanning a few pixels is
nearly flat across a 2 x 2 block). Its median absolute value over 0.6745 (the MAD of a unit normal) is
Donoho & Johnstone's robust noise estimate: the few blocks that do carry signal (edges, column centres)
sit in the tail and barely move the median.
"""

from __future__ import annotations

import numpy as np

_MAD_OF_UNIT_NORMAL = 0.6744897501960817


def estimate_sigma(image: np.ndarray) -> float:
    """The noise standard deviation of a 2D ``image`` (y, x), in the image's units."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image: expected a 2D array (y, x), got shape {image.shape}")
    if min(image.shape) < 4:
        raise ValueError(f"image: expected at least 4 x 4 pixels to estimate the noise, got {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image: contains NaN or infinite values")
    x = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2].astype(np.float64)
    diagonal = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2
    return float(np.median(np.abs(diagonal)) / _MAD_OF_UNIT_NORMAL)
