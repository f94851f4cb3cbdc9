"""The gauge of joint alignment: rotating the volume by G about the rotation centre, or translating it by c,
changes every pose (R_t -> R_t G, s_t -> s_t + (R_t c)_(y,x)) and leaves every projection unchanged, so the
data cannot fix a common rotation or a common 3D translation of the poses.

mspt fixes it by keeping the reconstruction in the frame of the poses it was given: after every pose update
the corrections to the input poses are stripped of their least-squares common rotation and common 3D
translation (3 + 3 degrees of freedom). No tilt is held fixed.
"""

from __future__ import annotations

import numpy as np

from .rotations import rotation_exp, rotation_log


def remove_rotation_gauge(rotation: np.ndarray, rotation_in: np.ndarray) -> np.ndarray:
    """R_t G with the common rotation G that makes the corrections exp([w_t]x) = R_t G R_in_t^T smallest in
    the least-squares sense (to second order in the corrections)."""
    out = np.array(rotation, dtype=float)
    for _ in range(3):  # the first-order fit converges in a few passes for corrections of a few degrees
        w = rotation_log(out @ np.swapaxes(rotation_in, 1, 2))
        # R_t exp([g]x) = exp([R_t g]x) R_t, so the gauge moves w_t by R_t g.
        g = -np.mean(np.einsum("tba,tb->ta", out, w), axis=0)
        out = out @ rotation_exp(g)
    return out


def translation_gauge_rows(rotation: np.ndarray) -> np.ndarray:
    """(T, 2, 3): the shift (dy, dx) that translating the volume by c = (x, y, z) adds to each projection."""
    return np.asarray(rotation)[:, [1, 0], :]


def remove_translation_gauge(shifts_A: np.ndarray, shifts_in_A: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """The shifts with the least-squares common 3D translation of the corrections ``shifts_A - shifts_in_A``
    removed."""
    rows = translation_gauge_rows(rotation).reshape(-1, 3)
    corrections = (np.asarray(shifts_A) - np.asarray(shifts_in_A)).reshape(-1)
    c = np.linalg.lstsq(rows, corrections, rcond=None)[0]
    return np.asarray(shifts_A) - (rows @ c).reshape(-1, 2)
