"""The scan model: probe positions = the nominal scan through a global affine map, plus a drift linear in
acquisition time, plus per-position offsets that carry no affine part.

    position_i = c + A (nominal_i - c) + t_i d + offset_i

c is the centroid of the nominal (training) positions, A the 2 x 2 affine map in (y, x), t_i the acquisition
time of pattern i (its place in the data's order, from -1/2 for the first pattern to +1/2 for the last) and
d the drift over the whole scan (object pixels). Everything is linear in the model's parameters theta, so the
model's displacement is ``sum_k theta_k F_k`` with fixed fields F_k (N, 2), and a Gauss-Newton step on theta
is the weighted least-squares projection of the per-position Newton steps onto those fields.

What the data can tell (and so what the model refines):

* A common translation: not observable (moving every position moves the object with it); it stays nominal.
* Scale: observable. The object pixel is fixed by the detector calibration (1 / (pattern size x detector
  pixel)); the probe's size and the motion of its shadow image across the patterns measure the scan step in
  those pixels.
* Rotation: observable relative to the detector axes. The diffraction patterns fix the object's orientation
  on the detector, so a scan rotated against it cannot be matched by rotating the object.
* Drift against shear / anisotropic scale: on a raster, acquisition time is itself an affine function of the
  grid indices (t = (row * columns + column) / (N - 1) - 1/2, with or without a fly-back pause), so a drift
  linear in time IS an affine map of the grid: a general affine and a drift cannot be told apart from one
  raster scan. "affine+drift" therefore takes the affine as a similarity (one scale and a rotation: square,
  orthogonal scan coils) and the drift takes the rest (the slow axis's stretch and shear); "affine" takes a
  general affine (scale y / x, rotation, shear) and no drift (a drift is folded into the affine). Scan
  orders that are not affine in the grid (serpentine, spiral) would separate them; the model does not need
  them.
"""

from __future__ import annotations

import math

import numpy as np

SCAN_MODELS = ("none", "affine", "affine+drift")
N_PARAMETERS = {"none": 0, "affine": 4, "affine+drift": 4}
# The generator of a rotation in (y, x) order: a rotation counter-clockwise in the (x, y) plane by phi maps
# (y, x) to (y + phi x, x - phi y) to first order (the sense of PtychoScan.scan_rotation_deg).
ROTATION_GENERATOR = np.array([[0.0, 1.0], [-1.0, 0.0]])


def acquisition_time(n_positions: int) -> np.ndarray:
    """t_i from -1/2 (first pattern) to +1/2 (last), linear in the data's order (the scan order)."""
    return np.arange(n_positions) / max(n_positions - 1, 1) - 0.5


class ScanModel:
    """The fields of one scan model over the nominal positions (N, 2) in object pixels.

    kind : "none", "affine" or "affine+drift" (see the module docstring).
    fit_on : the positions whose corrections define the model (the training positions; held-out ones follow
        the model but never steer it).
    """

    def __init__(self, kind: str, nominal_px: np.ndarray, fit_on: np.ndarray):
        if kind not in SCAN_MODELS:
            raise ValueError(f"scan_model: expected one of {SCAN_MODELS}, got {kind!r}")
        self.kind = kind
        self.fit_on = np.asarray(fit_on, dtype=np.int64)
        self.centre = nominal_px[self.fit_on].mean(0)
        relative = nominal_px - self.centre
        self.time = acquisition_time(len(nominal_px))
        self.fields = _model_fields(kind, relative, self.time)  # (P, N, 2)
        # Everything an offset must not contain: a translation, any affine map of the nominal grid, a drift.
        self._global_fields = np.concatenate([_translation_fields(len(nominal_px)), _general_affine_fields(relative),
                                              _drift_fields(self.time)])  # fmt: skip

    @property
    def n_parameters(self) -> int:
        return len(self.fields)

    def displacement(self, theta: np.ndarray) -> np.ndarray:
        """The model's displacement (N, 2) of every position from its nominal place (pixels)."""
        return np.tensordot(np.asarray(theta, dtype=float), self.fields, axes=1) if self.n_parameters else 0.0

    def affine(self, theta: np.ndarray) -> np.ndarray:
        """The 2 x 2 map A in (y, x) (identity for "none")."""
        if self.kind == "affine":
            return np.eye(2) + np.reshape(theta[:4], (2, 2))
        if self.kind == "affine+drift":
            return (1.0 + theta[0]) * np.eye(2) + theta[1] * ROTATION_GENERATOR
        return np.eye(2)

    def drift_px(self, theta: np.ndarray) -> np.ndarray:
        """Drift (dy, dx) over the whole scan, first pattern to last (pixels)."""
        return np.asarray(theta[2:4], dtype=float) if self.kind == "affine+drift" else np.zeros(2)

    def gauss_newton_step(self, gradient: np.ndarray, curvature: np.ndarray) -> np.ndarray:
        """The parameter step that minimises the quadratic model of the loss with per-position gradients
        ``gradient`` (N, 2) and per-axis curvature ``curvature`` (2,), the positions ``fit_on`` only:
        (F^T H F)^-1 F^T g with the sign of a descent."""
        if not self.n_parameters:
            return np.zeros(0)
        fields = self.fields[:, self.fit_on]  # (P, n, 2)
        weighted = fields * curvature
        normal = np.tensordot(fields, weighted, axes=([1, 2], [1, 2]))  # (P, P)
        rhs = np.tensordot(fields, gradient[self.fit_on], axes=([1, 2], [0, 1]))
        return -np.linalg.lstsq(normal, rhs, rcond=1e-12)[0]

    def global_part(self, offsets: np.ndarray) -> np.ndarray:
        """The part of ``offsets`` (N, 2) that is a translation, an affine map of the nominal grid or a drift,
        fitted on ``fit_on`` (least squares) and evaluated at every position."""
        design = self._global_fields.reshape(len(self._global_fields), -1).T  # (2N, K)
        rows = np.stack([2 * self.fit_on, 2 * self.fit_on + 1], 1).ravel()
        coefficients = np.linalg.lstsq(design[rows], offsets.reshape(-1)[rows], rcond=1e-10)[0]
        return (design @ coefficients).reshape(offsets.shape)


def _translation_fields(n: int) -> np.ndarray:
    fields = np.zeros((2, n, 2))
    fields[0, :, 0] = 1.0
    fields[1, :, 1] = 1.0
    return fields


def _general_affine_fields(relative: np.ndarray) -> np.ndarray:
    """d position / d A[a, b] = e_a * relative[:, b], in the order A[0,0], A[0,1], A[1,0], A[1,1]."""
    fields = np.zeros((4, len(relative), 2))
    for a in range(2):
        for b in range(2):
            fields[2 * a + b, :, a] = relative[:, b]
    return fields


def _drift_fields(time: np.ndarray) -> np.ndarray:
    fields = np.zeros((2, len(time), 2))
    fields[0, :, 0] = time
    fields[1, :, 1] = time
    return fields


def _model_fields(kind: str, relative: np.ndarray, time: np.ndarray) -> np.ndarray:
    if kind == "affine":
        return _general_affine_fields(relative)
    if kind == "affine+drift":
        scale = relative
        rotation = relative @ ROTATION_GENERATOR.T
        return np.concatenate([np.stack([scale, rotation]), _drift_fields(time)])
    return np.zeros((0, len(relative), 2))


def describe_affine(affine: np.ndarray) -> dict:
    """The 2 x 2 scan map in words: ``affine = R(rotation) @ U``, the polar decomposition's rotation R
    (counter-clockwise in the (x, y) plane, degrees, the sense of ``scan_rotation_deg``) and its symmetric
    stretch U, with scale_y = U[0, 0], scale_x = U[1, 1] and shear = U[0, 1]."""
    a = np.asarray(affine, dtype=float)
    angle = math.atan2(a[0, 1] - a[1, 0], a[0, 0] + a[1, 1])
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, s], [-s, c]])
    stretch = rotation.T @ a
    return {
        "rotation_deg": math.degrees(angle), "scale_y": float(stretch[0, 0]), "scale_x": float(stretch[1, 1]),
        "shear": float(0.5 * (stretch[0, 1] + stretch[1, 0])),
    }  # fmt: skip
