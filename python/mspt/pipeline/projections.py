"""From per-tilt ptychography results to a stack of projections on one common grid.

Each tilt's summed phase lives on its own object grid: pixel (0, 0) sits at ``object_origin_A`` in the
scan's position frame, whose origin (position 0) is the scan centre, taken as the rotation axis. The
tomography wants every projection on one grid with the rotation centre at pixel (P // 2, P // 2)
(DESIGN.md's image convention). This module resamples each summed phase onto that grid (a sub-pixel
Fourier shift, so no interpolation blur), keeps only what the scan illuminated, and removes the summed
phase's arbitrary offset, which the tomography would otherwise read as a slab of uniform density.
"""

from __future__ import annotations

import math

import numpy as np

from ..ptycho.result import PtychoResult


def common_shape(results: list[PtychoResult]) -> tuple[int, int]:
    """The largest even (Py, Px) box centred on the scan centre that every tilt's scan illuminated."""
    if not results:
        raise ValueError("results: expected at least one tilt's ptychography result")
    pixel = np.asarray(results[0].pixel_size_A, dtype=float)
    sizes = []
    for index, result in enumerate(results):
        if not np.allclose(result.pixel_size_A, pixel, rtol=1e-6):
            raise ValueError(
                f"results[{index}].pixel_size_A: expected every tilt on the same pixel size {tuple(pixel)} A, "
                f"got {tuple(result.pixel_size_A)}"
            )
        nominal = np.asarray(result.nominal_positions_A, dtype=float)
        # The scanned field of view, symmetric about the scan centre.
        half = np.min(np.abs(np.stack([nominal.min(0), nominal.max(0)])), axis=0)
        sizes.append(2 * np.floor(half / pixel))
    size = np.min(np.array(sizes), axis=0).astype(int)
    if np.any(size < 8):
        raise ValueError(f"results: the scanned field of view is too small for tomography ({tuple(size)} pixels)")
    return int(size[0]), int(size[1])


def on_common_grid(result: PtychoResult, shape: tuple[int, int]) -> np.ndarray:
    """The summed phase (rad) resampled onto a (Py, Px) grid whose pixel (Py//2, Px//2) is the scan centre."""
    phase = np.asarray(result.summed_phase, dtype=np.float64)
    pixel = np.asarray(result.pixel_size_A, dtype=float)
    origin_px = np.asarray(result.object_origin_A, dtype=float) / pixel  # object pixel (0, 0) in output pixels
    out_shape = np.array(shape)
    # Output pixel J sits at object pixel J - P//2 - origin_px: an integer crop plus a sub-pixel shift.
    start = -out_shape // 2 - origin_px
    whole = np.floor(start).astype(int)
    frac = start - whole
    lo = whole
    hi = whole + out_shape + 1
    if np.any(lo < 0) or np.any(hi > np.array(phase.shape)):
        raise ValueError(
            f"summed_phase: the common grid {tuple(shape)} does not fit inside this tilt's object "
            f"{phase.shape} (origin {tuple(result.object_origin_A)} A)"
        )
    crop = phase[lo[0] : hi[0], lo[1] : hi[1]]
    shifted = _fourier_shift(crop, -frac)
    return shifted[: shape[0], : shape[1]]


def _fourier_shift(image: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """image(r - shift) by a phase ramp; the crop is one pixel larger, so the wrapped edge is cut off."""
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    ramp = np.exp(-2j * math.pi * (ky * shift_px[0] + kx * shift_px[1]))
    return np.fft.ifft2(np.fft.fft2(image) * ramp).real


def remove_offset(projection: np.ndarray, border_fraction: float = 0.1) -> np.ndarray:
    """Subtract the vacuum level: the median of the outer ``border_fraction`` of the field of view.

    A summed phase is known up to a constant; a particle in vacuum has the vacuum around it, at the
    border of the scanned field.
    """
    py, px = projection.shape
    by, bx = max(1, int(py * border_fraction)), max(1, int(px * border_fraction))
    mask = np.ones(projection.shape, dtype=bool)
    mask[by : py - by, bx : px - bx] = False
    return projection - np.median(projection[mask])


def projection_stack(results: list[PtychoResult], shape: tuple[int, int] | None = None) -> np.ndarray:
    """(T, Py, Px) float32 projections (rad) on one grid centred on the rotation axis, offsets removed."""
    shape = common_shape(results) if shape is None else shape
    return np.stack([remove_offset(on_common_grid(r, shape)) for r in results]).astype(np.float32)
