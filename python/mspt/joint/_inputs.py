"""Validation of one tilt's arrays at the joint model's boundary: errors name the argument and what was
expected."""

from __future__ import annotations

import numpy as np


def volume(value) -> np.ndarray:
    """(Z, Y, X) real potential; float32 (what the native projector computes in), float64 kept as given."""
    vol = np.asarray(value)
    if vol.ndim != 3 or not np.issubdtype(vol.dtype, np.floating):
        raise ValueError(f"volume: expected a real (Z, Y, X) potential in volts, got {vol.dtype} {vol.shape}")
    return vol if vol.dtype == np.float64 else np.ascontiguousarray(vol, dtype=np.float32)


def rotation(value) -> np.ndarray:
    """One pose's (3, 3) rotation; its orthonormality is checked by the projector."""
    rot = np.asarray(value, dtype=np.float64)
    if rot.shape != (3, 3):
        raise ValueError(f"rotation: expected one pose, a (3, 3) rotation matrix, got shape {rot.shape}")
    return rot


def shifts(value) -> np.ndarray:
    """One pose's in-plane shift (dy, dx) in A."""
    out = np.asarray(value, dtype=np.float64)
    if out.shape != (2,) or not np.all(np.isfinite(out)):
        raise ValueError(f"shifts_A: expected a finite (dy, dx) pair in angstrom, got {value!r}")
    return out


def probe(value) -> np.ndarray:
    """Probe modes (M, ny, nx), complex."""
    arr = np.asarray(value)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or not np.iscomplexobj(arr):
        raise ValueError(f"probe: expected complex modes (M, ny, nx) or (ny, nx), got {arr.dtype} {arr.shape}")
    return arr


def positions(value) -> np.ndarray:
    """(B, 2) window centres (y, x) in pixels."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
        raise ValueError(f"positions_px: expected shape (B, 2) of (y, x) pixel positions, got {arr.shape}")
    return arr


def patterns_shape(patterns, n_positions: int, window: tuple[int, int]) -> None:
    """Check a (possibly lazy) pattern stack's shape without reading it."""
    shape = tuple(getattr(patterns, "shape", ()))
    if shape != (n_positions, *window):
        raise ValueError(
            f"patterns: expected shape {(n_positions, *window)} (one pattern per position, the probe's window), "
            f"got {shape}"
        )
