"""Likelihoods of measured diffraction counts under modelled intensities, with their gradients.

The same element body runs inside the fused multislice gradient (:func:`mspt.ops.multislice_loss_grad`).
"""

from __future__ import annotations

import numpy as np

from .._native import core as _core
from ._arrays import accepts_arrays
from .multislice import LIKELIHOODS


@accepts_arrays(intensity="real", data="real", mask="mask")
def likelihood(intensity, data, kind: str = "poisson", eps: float = 1e-6, mask=None) -> tuple[float, np.ndarray]:
    """Summed loss and dL/dintensity.

    kind : "poisson" (deviance ``I - d + d log(d / I)``, gradient ``1 - d / I``) or "amplitude"
        (``(sqrt(I) - sqrt(d))^2``, gradient ``1 - sqrt(d / I)``); ``I`` is ``intensity + eps``.
    mask : optional boolean array, True where a pixel counts.
    Float64 inputs run in double precision, anything else in single precision.
    """
    if kind not in LIKELIHOODS:
        raise ValueError(f"kind: expected one of {tuple(LIKELIHOODS)}, got {kind!r}")
    double = np.asarray(intensity).dtype == np.float64
    dtype = np.float64 if double else np.float32
    intensity = np.ascontiguousarray(intensity, dtype=dtype)
    data = np.ascontiguousarray(data, dtype=dtype)
    if data.shape != intensity.shape:
        raise ValueError(f"data: expected the shape of intensity {intensity.shape}, got {data.shape}")
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=bool)
    fn = _core.likelihood64 if double else _core.likelihood32
    loss, grad = fn(intensity, data, LIKELIHOODS[kind], float(eps), mask)
    return float(loss), grad
