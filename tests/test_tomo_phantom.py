"""Test data for mspt.tomo: a phantom of atom-like Gaussian blobs and its exact projections (line integrals of
3D Gaussians are 2D Gaussians at the rotated centres), independent of mspt's projector; and pose-error
metrics with the gauge removed."""

from __future__ import annotations

import math

import numpy as np

from mspt.ops import tilt_series_rotations
from mspt.tomo.gauge import translation_gauge_rows
from mspt.tomo.rotations import rotation_exp, rotation_log


def blob_positions(rng, count: int, radius_A: float, min_distance_A: float) -> np.ndarray:
    """``count`` centres (x, y, z) in A inside a ball of ``radius_A``, at least ``min_distance_A`` apart."""
    points = []
    while len(points) < count:
        p = rng.uniform(-radius_A, radius_A, 3)
        if np.linalg.norm(p) <= radius_A and all(np.linalg.norm(p - q) >= min_distance_A for q in points):
            points.append(p)
    return np.array(points)


def blob_volume(centres, amplitudes, sigma_A, shape, voxel_A) -> np.ndarray:
    """The blobs sampled at the voxel centres of a (Z, Y, X) grid (DESIGN.md coordinates)."""
    axes = [(np.arange(n) - n // 2) * voxel_A for n in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    out = np.zeros(shape)
    for (cx, cy, cz), a in zip(centres, amplitudes):
        out += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma_A**2))
    return out


def blob_projections(centres, amplitudes, sigma_A, rotation, shifts_A, shape, pixel_A) -> np.ndarray:
    """Exact line integrals along z of the blobs rotated by each R and shifted by (dy, dx): (T, Py, Px)."""
    py, px = shape
    y = (np.arange(py) - py // 2) * pixel_A
    x = (np.arange(px) - px // 2) * pixel_A
    out = np.zeros((len(rotation), py, px))
    norm = sigma_A * math.sqrt(2 * math.pi)
    for t, (r, (dy, dx)) in enumerate(zip(rotation, shifts_A)):
        moved = centres @ r.T
        for (cx, cy, _), a in zip(moved, amplitudes):
            gy = np.exp(-((y - cy - dy) ** 2) / (2 * sigma_A**2))
            gx = np.exp(-((x - cx - dx) ** 2) / (2 * sigma_A**2))
            out[t] += a * norm * gy[:, None] * gx[None, :]
    return out


def perturbed_poses(rng, tilts_deg, max_rotation_deg, max_shift_A):
    """Nominal rotations and the true ones: each true pose off by a rotation vector with components up to
    ``max_rotation_deg`` and a shift up to ``max_shift_A`` per axis, with the unobservable common part (the
    gauge) removed so that the truth lives in the nominal poses' frame."""
    nominal = tilt_series_rotations(tilts_deg)
    w = np.radians(rng.uniform(-max_rotation_deg, max_rotation_deg, (len(nominal), 3)))
    g = np.mean(np.einsum("tba,tb->ta", nominal, w), axis=0)
    w = w - np.einsum("tab,b->ta", nominal, g)
    true_rotation = rotation_exp(w) @ nominal
    shifts = rng.uniform(-max_shift_A, max_shift_A, (len(nominal), 2))
    rows = translation_gauge_rows(true_rotation).reshape(-1, 3)
    c = np.linalg.lstsq(rows, shifts.reshape(-1), rcond=None)[0]
    shifts = shifts - (rows @ c).reshape(-1, 2)
    return nominal, true_rotation, shifts


def rotation_errors(rotation, true_rotation) -> np.ndarray:
    """(T, 3) each rotation's error as a rotation vector (x, y, z) in degrees, after the best common rotation
    (the rotation part of the gauge) has been taken out."""
    w = rotation_log(rotation @ np.swapaxes(true_rotation, 1, 2))
    g = np.mean(np.einsum("tba,tb->ta", true_rotation, w), axis=0)
    aligned = rotation @ rotation_exp(-g)  # R_est G^-1 with G the common rotation
    return np.degrees(rotation_log(aligned @ np.swapaxes(true_rotation, 1, 2)))


def pose_errors(rotation, shifts_A, true_rotation, true_shifts_A):
    """(rms rotation error in degrees, rms shift error in A per axis) after the best common rotation and 3D
    translation (the gauge) has been taken out."""
    angle = np.linalg.norm(rotation_errors(rotation, true_rotation), axis=-1)
    rows = translation_gauge_rows(true_rotation).reshape(-1, 3)
    diff = (np.asarray(shifts_A) - true_shifts_A).reshape(-1)
    c = np.linalg.lstsq(rows, diff, rcond=None)[0]
    shift_error = (diff - rows @ c).reshape(-1, 2)
    return float(np.sqrt(np.mean(angle**2))), float(np.sqrt(np.mean(shift_error**2)))


def test_blob_projections_carry_the_phantom_mass(measured):
    """Each exact projection integrates to the phantom's mass, sum_a a (2 pi)^(3/2) sigma^3, at every pose."""
    rng = np.random.default_rng(3)
    centres = blob_positions(rng, 12, 8.0, 3.0)
    amplitudes = rng.uniform(0.5, 1.0, len(centres))
    nominal, rotation, shifts = perturbed_poses(rng, np.linspace(-60, 60, 5), 2.0, 2.0)
    projections = blob_projections(centres, amplitudes, 1.2, rotation, shifts, (40, 40), 0.8)
    mass = np.sum(amplitudes) * (2 * math.pi) ** 1.5 * 1.2**3
    error = np.max(np.abs(projections.sum(axis=(1, 2)) * 0.8**2 / mass - 1))
    assert measured("blob_projections", "relative mass error", error, 1e-6) < 1e-6
