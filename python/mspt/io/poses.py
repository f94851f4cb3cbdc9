"""A tilt's orientation as stored in a file (``tilt_deg``, a ``rotation`` matrix, or ``euler_deg`` with the
file's ``euler_convention``) turned into the active rotation matrix R of DESIGN.md's pose convention.

Euler conventions are named "zyz intrinsic" / "zyz extrinsic" (any three of x, y, z); a bare "zyz" is
intrinsic. Intrinsic (a, b, c) about axes (p, q, r) is R = R_p(a) R_q(b) R_r(c); extrinsic is
R = R_r(c) R_q(b) R_p(a). Each R_axis is the active right-handed rotation, so R_y(t) is the plain tilt."""

from __future__ import annotations

import math

import numpy as np

from ..ops import rotation_about_y

_ORTHONORMAL_TOL = 1e-4


def axis_rotation(axis: str, angle_deg: float) -> np.ndarray:
    """The active rotation (3, 3) by ``angle_deg`` about ``axis`` ("x", "y" or "z"), (x, y, z) order."""
    if axis == "y":
        return rotation_about_y(angle_deg)
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    if axis == "z":
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    raise ValueError(f"axis: expected 'x', 'y' or 'z', got {axis!r}")


def parse_euler_convention(text) -> tuple[str, bool]:
    """("zyz", intrinsic?) from "zyz", "zyz intrinsic" or "zyz extrinsic"; ValueError otherwise."""
    words = str(text).strip().lower().split()
    ok = 1 <= len(words) <= 2 and len(words[0]) == 3 and set(words[0]) <= set("xyz")
    ok = ok and all(a != b for a, b in zip(words[0], words[0][1:]))
    ok = ok and (len(words) == 1 or words[1] in ("intrinsic", "extrinsic"))
    if not ok:
        raise ValueError(
            f'euler_convention: expected three axes with no axis twice in a row, optionally followed by '
            f'"intrinsic" or "extrinsic" (e.g. "zyz intrinsic"), got {text!r}'
        )
    return words[0], len(words) == 1 or words[1] == "intrinsic"


def euler_to_rotation(angles_deg, convention: str) -> np.ndarray:
    """The rotation (3, 3) of Euler angles (degrees) in the named convention."""
    axes, intrinsic = parse_euler_convention(convention)
    angles = np.asarray(angles_deg, dtype=float).reshape(-1)
    if angles.shape != (3,) or not np.all(np.isfinite(angles)):
        raise ValueError(f"euler_deg: expected three finite angles in degrees, got {angles_deg!r}")
    mats = [axis_rotation(axis, a) for axis, a in zip(axes, angles)]
    if not intrinsic:
        mats = mats[::-1]
    return mats[0] @ mats[1] @ mats[2]


def checked_rotation(name: str, value) -> np.ndarray:
    """A (3, 3) rotation matrix, checked to be orthonormal with determinant +1 (ValueError naming ``name``)."""
    rot = np.asarray(value, dtype=float)
    if rot.shape != (3, 3) or not np.all(np.isfinite(rot)):
        raise ValueError(f"{name}: expected a finite (3, 3) rotation matrix, got shape {rot.shape}")
    if np.max(np.abs(rot @ rot.T - np.eye(3))) > _ORTHONORMAL_TOL or abs(np.linalg.det(rot) - 1) > _ORTHONORMAL_TOL:
        raise ValueError(f"{name}: expected an orthonormal matrix with determinant +1 (within {_ORTHONORMAL_TOL:g})")
    return rot


def tilt_about_y_deg(rotation: np.ndarray) -> float:
    """The tilt (degrees) about y that ``rotation`` gives the beam axis: the angle by which it moves +z
    towards +x (exact for a plain tilt about y)."""
    return math.degrees(math.atan2(rotation[0, 2], rotation[2, 2]))
