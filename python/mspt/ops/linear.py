"""The linear parts of the multislice model as standalone operators, each with its exact adjoint.

These run the same kernel bodies as :func:`mspt.ops.multislice_forward`: Fresnel propagation between
slices, the Fourier (sub-pixel) shift of a probe, and the extraction of probe windows from an object,
whose adjoint is the overlap-add used for object gradients. Complex128 inputs run in double precision.
"""

from __future__ import annotations

import math

import numpy as np

from .._native import core as _core
from ..constants import wavelength_A as _wavelength_A
from ._arrays import accepts_arrays
from .multislice import _finite_positive, _pair, bandlimit_cutoff_invA


def _complex_stack(name: str, arr) -> np.ndarray:
    arr = np.asarray(arr)
    dtype = np.complex128 if arr.dtype in (np.complex128, np.float64) else np.complex64
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected shape (K, ny, nx) or (ny, nx), got {arr.shape}")
    return arr


def _propagation_params(shape, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit):
    sampling = _pair("sampling_A", sampling_A, "angstrom")
    if min(sampling) <= 0:
        raise ValueError(f"sampling_A: expected positive pixel sizes in angstrom, got {sampling_A!r}")
    tilt = _pair("tilt_mrad", tilt_mrad, "mrad")
    return _core.PropagationParams(
        shape[-2], shape[-1], sampling[0], sampling[1], _wavelength_A(_finite_positive("energy_eV", energy_eV)),
        _finite_positive("dz_A", dz_A), math.tan(tilt[0] * 1e-3), math.tan(tilt[1] * 1e-3),
        bandlimit_cutoff_invA(sampling) if bandlimit else 0.0,
    )  # fmt: skip


def _propagate(waves, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, adjoint):
    stack = _complex_stack("waves", waves)
    params = _propagation_params(stack.shape, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit)
    out = _core.propagate(stack, params, adjoint)
    return out.reshape(np.shape(waves))


@accepts_arrays(waves="complex")
def propagate(waves, dz_A: float, energy_eV: float, sampling_A, *, tilt_mrad=(0.0, 0.0), bandlimit: bool = True):
    """Fresnel-propagate waves (K, ny, nx) or (ny, nx) over ``dz_A`` angstrom with beam tilt ``tilt_mrad``
    (band-limited to 2/3 Nyquist when ``bandlimit``)."""
    return _propagate(waves, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, False)


@accepts_arrays(waves="complex")
def propagate_adjoint(waves, dz_A: float, energy_eV: float, sampling_A, *, tilt_mrad=(0.0, 0.0), bandlimit: bool = True):
    """The exact adjoint of :func:`propagate` (the conjugate propagator)."""
    return _propagate(waves, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, True)


def _shift(waves, shifts_px, adjoint):
    stack = _complex_stack("waves", waves)
    shifts = np.ascontiguousarray(np.broadcast_to(np.asarray(shifts_px, dtype=np.float64), (stack.shape[0], 2)))
    if not np.all(np.isfinite(shifts)):
        raise ValueError("shifts_px: expected finite shifts")
    return _core.fourier_shift(stack, shifts, adjoint).reshape(np.shape(waves))


@accepts_arrays(waves="complex", shifts_px="real")
def fourier_shift(waves, shifts_px):
    """Shift waves (K, ny, nx) by ``shifts_px`` (K, 2) or (2,) pixels (y, x), periodically, by a Fourier ramp."""
    return _shift(waves, shifts_px, False)


@accepts_arrays(waves="complex", shifts_px="real")
def fourier_shift_adjoint(waves, shifts_px):
    """The exact adjoint of :func:`fourier_shift` (a shift by the opposite amount)."""
    return _shift(waves, shifts_px, True)


def _positions(positions_px) -> np.ndarray:
    positions = np.ascontiguousarray(positions_px, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions_px: expected shape (B, 2) of (y, x) pixel positions, got {positions.shape}")
    return positions


@accepts_arrays(obj="complex", positions_px="real")
def extract_windows(obj, positions_px, window) -> np.ndarray:
    """The (ny, nx) windows of a complex object (H, W) at each probe position (B, 2) -> (B, ny, nx).
    The window of position (y, x) covers rows [round(y) - ny//2, + ny) and likewise for columns."""
    obj = np.asarray(obj)
    dtype = np.complex128 if obj.dtype in (np.complex128, np.float64) else np.complex64
    obj = np.ascontiguousarray(obj, dtype=dtype)
    if obj.ndim != 2:
        raise ValueError(f"object: expected shape (H, W), got {obj.shape}")
    ny, nx = _pair("window", window, "pixels")
    return _core.extract_windows(obj, _positions(positions_px), int(ny), int(nx))


@accepts_arrays(patches="complex", positions_px="real")
def extract_windows_adjoint(patches, positions_px, object_shape) -> np.ndarray:
    """Overlap-add: the exact adjoint of :func:`extract_windows`, summing patches (B, ny, nx) into an object."""
    patches = _complex_stack("patches", patches)
    h, w = (int(v) for v in object_shape)
    if h < 1 or w < 1:
        raise ValueError(f"object_shape: expected a positive (H, W), got {object_shape!r}")
    return _core.overlap_add(patches, _positions(positions_px), h, w)


overlap_add = extract_windows_adjoint


@accepts_arrays(patch="real", positions_px="real")
def illumination(patch, positions_px, object_shape) -> np.ndarray:
    """The sum of one real patch (ny, nx), e.g. the probe intensity, placed at every probe window: (H, W)
    float32. Equal to ``extract_windows_adjoint`` of the patch repeated per position, without the copies."""
    patch = np.ascontiguousarray(patch, dtype=np.float32)
    if patch.ndim != 2:
        raise ValueError(f"patch: expected shape (ny, nx), got {patch.shape}")
    h, w = (int(v) for v in object_shape)
    return _core.illumination(patch, _positions(positions_px), h, w)


@accepts_arrays(obj="complex", positions_px="real")
def window_power(obj, positions_px, window, threads: int | None = None) -> np.ndarray:
    """The sum over probe windows of |object window|^2: (ny, nx) float32 (complex64 object), on ``threads``
    threads (None: OpenMP's default)."""
    obj = np.ascontiguousarray(obj, dtype=np.complex64)
    if obj.ndim != 2:
        raise ValueError(f"object: expected shape (H, W), got {obj.shape}")
    ny, nx = _pair("window", window, "pixels")
    return _core.window_power(obj, _positions(positions_px), int(ny), int(nx), int(threads or 0))
