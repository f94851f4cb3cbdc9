"""py4DSTEM / EMD 1.0 files mapped onto a :class:`TiltSeries`.

An EMD 1.0 file (root attributes ``emd_group_type = "file"``, ``version_major = 1``) holds a tree of groups;
a 4D-STEM datacube is a group with ``emd_group_type = "array"`` whose ``data`` dataset is 4D (scan_y,
scan_x, k_y, k_x), with dimension vectors ``dim0``..``dim3`` (attributes ``name``, ``units``). Every such
datacube in the file is one tilt, in the order of their group paths.

Calibrations come from a ``metadatabundle/calibration`` group (py4DSTEM's names: ``R_pixel_size`` /
``R_pixel_units`` for the scan step, ``Q_pixel_size`` / ``Q_pixel_units`` for the detector pixel,
``QR_rotation_degrees``, ``QR_flip``) found on the datacube or its ancestors, else from the dimension
vectors when they carry physical units. EMD files carry no beam energy or probe semiangle, and tilt angles
only by convention: give them as keywords (``energy_eV``, ``semiangle_mrad``, ``tilts_deg``; any other
calibration keyword overrides the file). A nonzero ``QR_rotation_degrees`` or a ``QR_flip`` must be
restated as ``scan_rotation_deg`` / ``detector_transpose`` (their sign and axis conventions differ from
mspt's), so a reconstruction never runs with a silently misread scan geometry.
"""

from __future__ import annotations

import pathlib

import h5py
import numpy as np

from ..ops import tilt_series_rotations
from .calibration import ScanCalibration, _plain
from .tiltseries import TiltSeries

LENGTH_TO_A = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01}
RECIPROCAL_TO_INVA = {"a^-1": 1.0, "1/a": 1.0, "å^-1": 1.0, "nm^-1": 0.1, "1/nm": 0.1}


def is_emd(f: h5py.File) -> bool:
    return _plain(f.attrs.get("emd_group_type")) == "file" and int(_plain(f.attrs.get("version_major", 0)) or 0) == 1


def datacubes(f: h5py.File) -> list[str]:
    """Paths of the 4D array groups of an EMD file, sorted."""
    found: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and _plain(obj.attrs.get("emd_group_type")) == "array":
            data = obj.get("data")
            if isinstance(data, h5py.Dataset) and data.ndim == 4:
                found.append(name)

    f.visititems(visit)
    return sorted(found)


def read_emd(f: h5py.File, path: pathlib.Path, *, tilts_deg=None, **overrides):
    """A TiltSeries over every 4D datacube of an open EMD 1.0 file (see the module's docstring)."""

    cubes = datacubes(f)
    if not cubes:
        raise ValueError(f"tiltseries: the EMD file {path} holds no 4D datacube (an 'array' group with 4D data)")
    if tilts_deg is None:
        if len(cubes) > 1:
            raise ValueError(f"tilts_deg: the EMD file holds {len(cubes)} datacubes; give their tilt angles (degrees)")
        tilts_deg = [0.0]
    angles = np.asarray(tilts_deg, dtype=float).reshape(-1)
    if angles.size != len(cubes):
        raise ValueError(f"tilts_deg: expected {len(cubes)} angles (one per datacube: {cubes}), got {angles.size}")
    known, missing = _file_calibration(f, cubes[0])
    for name, message in missing.items():
        detector_given = name == "reciprocal_sampling_invA" and "detector_sampling_mrad" in overrides
        if name not in overrides and not detector_given:
            raise ValueError(f"{name}: not in the EMD file; expected {message}: pass load_tiltseries(path, {name}=...)")
    calibration = ScanCalibration(**{**known, **overrides})
    data = [f[name]["data"] for name in cubes]
    return TiltSeries(data, tilt_series_rotations(angles), calibration, path=path, file=f,
                      names=[f"{name}/data" for name in cubes])  # fmt: skip


def _file_calibration(f: h5py.File, cube: str) -> tuple[dict, dict]:
    """What the file says about the calibrations, under ScanCalibration's names, and what it lacks (name ->
    what is expected)."""
    values = _calibration_metadata(f, cube)
    out: dict = {}
    missing: dict = {}
    for key in ("energy_eV", "semiangle_mrad"):
        if key in values:
            out[key] = values[key]
    for key, what in (("energy_eV", "the beam energy (eV)"), ("semiangle_mrad", "the probe semiangle (mrad)")):
        if key not in out:
            missing[key] = what
    dims = [f[cube].get(f"dim{i}") for i in range(4)]
    step = _length(values.get("R_pixel_size"), values.get("R_pixel_units"))
    if step is None:
        step = _dim_step(dims[0], dims[1], LENGTH_TO_A)
    if step is not None:
        out["scan_step_A"] = step
    else:
        missing["scan_step_A"] = "the scan step (dy, dx) in A"
    q_size, q_units = values.get("Q_pixel_size"), str(values.get("Q_pixel_units", "")).lower()
    if q_size is not None and q_units == "mrad":
        out["detector_sampling_mrad"] = float(q_size)
    elif q_size is not None and q_units in RECIPROCAL_TO_INVA:
        out["reciprocal_sampling_invA"] = float(q_size) * RECIPROCAL_TO_INVA[q_units]
    else:
        dk = _dim_step(dims[2], dims[3], RECIPROCAL_TO_INVA)
        if dk is not None:
            out["reciprocal_sampling_invA"] = dk
        else:
            missing["reciprocal_sampling_invA"] = "the detector pixel in 1/A (or detector_sampling_mrad in mrad)"
    rotation = float(values.get("QR_rotation_degrees", 0.0) or 0.0)
    if rotation:
        missing["scan_rotation_deg"] = f"the scan rotation in mspt's convention (the file's QR_rotation_degrees is {rotation})"
    if bool(values.get("QR_flip", False)):
        missing["detector_transpose"] = "whether the detector axes are (k_x, k_y) (the file sets QR_flip)"
    return out, missing


def _calibration_metadata(f: h5py.File, cube: str) -> dict:
    """The ``calibration`` metadata nearest the datacube (its own bundle, then its ancestors')."""
    parts = cube.split("/")
    for depth in range(len(parts), -1, -1):
        group = f["/".join(parts[:depth])] if depth else f
        meta = group.get("metadatabundle/calibration")
        if isinstance(meta, h5py.Group):
            values = {key: _plain(meta[key][()]) for key in meta if isinstance(meta[key], h5py.Dataset)}
            values.update({key: _plain(value) for key, value in meta.attrs.items()})
            return values
    return {}


def _length(size, units):
    if size is None or units is None:
        return None
    scale = LENGTH_TO_A.get(str(units).lower())
    return None if scale is None else float(size) * scale


def _dim_step(dim_a, dim_b, units_table):
    steps = []
    for dim in (dim_a, dim_b):
        if not isinstance(dim, h5py.Dataset) or dim.size < 2:
            return None
        scale = units_table.get(str(_plain(dim.attrs.get("units", ""))).lower())
        if scale is None:
            return None
        values = np.asarray(dim[:2], dtype=float)
        steps.append((values[1] - values[0]) * scale)
    return tuple(steps)
