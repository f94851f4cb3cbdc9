"""load_tiltseries: open a tilt series from an ``mspt.tiltseries`` HDF5 file, a py4DSTEM/EMD 1.0 file, or a
format rosettasciio reads, as one :class:`mspt.io.TiltSeries` (schema in :mod:`mspt.io.tiltseries`)."""

from __future__ import annotations

import pathlib

import h5py
import numpy as np

from ..ops import tilt_series_rotations
from .calibration import ScanCalibration, _plain
from .emd import is_emd, read_emd
from .poses import checked_rotation, euler_to_rotation
from .rosettasciio import load_rosettasciio
from .tiltseries import HDF5_SUFFIXES, TILTS, TiltSeries


def load_tiltseries(path, **calibration_overrides) -> TiltSeries:
    """Open a tilt series lazily: an ``mspt.tiltseries`` HDF5 file, a py4DSTEM / EMD 1.0 file, or (with the
    optional rosettasciio package) one scan in a format it reads (see :func:`mspt.io.load_rosettasciio`).

    ``calibration_overrides`` replace (or, for formats that lack them, supply) root calibrations, e.g.
    ``energy_eV=200e3``; EMD files also take ``tilts_deg``. Returns a :class:`TiltSeries`; close it (or use
    ``with``) to release the file. ValueError names the attribute or dataset that is missing or wrong.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tiltseries: no such file {path}")
    if path.suffix.lower() not in HDF5_SUFFIXES and not _mspt_or_emd(path):

        tilts = calibration_overrides.pop("tilts_deg", [0.0])
        return load_rosettasciio([path], tilts, **calibration_overrides)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"tiltseries: {path} is not a readable HDF5 file (truncated or not HDF5: {err})") from None
    try:
        if TILTS in f:
            return _read_mspt(f, path, calibration_overrides)

        if is_emd(f):
            return read_emd(f, path, **calibration_overrides)
        raise ValueError(
            f"tiltseries: {path} holds neither a '{TILTS}' group (mspt.tiltseries schema: tilts/000/data, ...) "
            "nor an EMD 1.0 datacube"
        )
    except BaseException:
        f.close()
        raise


def _mspt_or_emd(path: pathlib.Path) -> bool:
    if not h5py.is_hdf5(path):
        return False

    with h5py.File(path, "r") as f:
        return TILTS in f or is_emd(f)


def _read_mspt(f: h5py.File, path: pathlib.Path, overrides: dict) -> TiltSeries:
    attrs = {**dict(f.attrs), **overrides}
    calibration = ScanCalibration.from_attrs(attrs, where=f" of {path.name}")
    tilts = f[TILTS]
    if not isinstance(tilts, h5py.Group) or len(tilts) == 0:
        raise ValueError(f"{TILTS}: expected a group with one subgroup per tilt (000, 001, ...), found none")
    names = sorted(tilts.keys())
    expected = [f"{i:03d}" for i in range(len(names))]
    if names != expected:
        missing = sorted(set(expected) - set(names)) or sorted(set(names) - set(expected))
        raise ValueError(f"{TILTS}: expected groups {expected[0]}..{expected[-1]} numbered from 000 without gaps; check {missing}")
    data, rotations, doses = [], [], []
    for name in names:
        group = tilts[name]
        where = f"{TILTS}/{name}"
        if not isinstance(group, h5py.Group) or "data" not in group or not isinstance(group["data"], h5py.Dataset):
            raise ValueError(f"{where}/data: missing; expected a dataset (scan_y, scan_x, k_y, k_x) for every tilt")
        data.append(group["data"])
        rotations.append(_rotation(group, where, f.attrs))
        doses.append(group.attrs.get("dose_e_per_A2"))
    return TiltSeries(data, np.stack(rotations), calibration, doses_e_per_A2=doses, path=path, file=f,
                      names=[f"{TILTS}/{n}/data" for n in names])  # fmt: skip


def _rotation(group: h5py.Group, where: str, root_attrs) -> np.ndarray:
    given = [key for key in ("tilt_deg", "rotation", "euler_deg") if key in group.attrs]
    if len(given) != 1:
        raise ValueError(
            f"{where}: expected exactly one of the attributes tilt_deg, rotation (3x3) or euler_deg, got {given or 'none'}"
        )
    value = np.asarray(group.attrs[given[0]])
    if given[0] == "tilt_deg":
        if value.size != 1 or not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all():
            raise ValueError(f"{where}: tilt_deg: expected one finite angle in degrees, got {value!r}")
        return tilt_series_rotations([float(value.reshape(()))])[0]
    if given[0] == "rotation":
        return checked_rotation(f"{where}: rotation", value)
    if "euler_convention" not in root_attrs:
        raise ValueError(f'euler_convention: missing root attribute; {where} gives euler_deg (e.g. "zyz intrinsic")')
    try:
        return euler_to_rotation(value, _plain(root_attrs["euler_convention"]))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
