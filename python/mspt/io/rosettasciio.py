"""Tilt series from the files rosettasciio reads (Merlin .mib, EMPAD .xml/.raw, Digital Micrograph, hspy,
...): one file per tilt plus a tilt list, mapped onto a :class:`TiltSeries`. Needs the optional
``rosettasciio`` package.

Each file must hold one 4D signal with two navigation (scan) axes and two signal (detector) axes; the data
is read lazily (dask). Calibrations come from the axes (scan step in nm or A; detector pixel in 1/nm, 1/A
or mrad) and from the metadata (``Acquisition_instrument.TEM.beam_energy`` in keV,
``convergence_angle`` in mrad); keywords supply what a file lacks and override what it has.
"""

from __future__ import annotations

import importlib
import pathlib
from collections.abc import Sequence

import numpy as np

from ..ops import tilt_series_rotations
from .calibration import ScanCalibration
from .tiltseries import TiltSeries

LENGTH_TO_A = {"nm": 10.0, "a": 1.0, "å": 1.0, "angstrom": 1.0, "pm": 0.01}
RECIPROCAL_TO_INVA = {"1/nm": 0.1, "nm^-1": 0.1, "1/a": 1.0, "a^-1": 1.0, "1/å": 1.0, "å^-1": 1.0}


def _rsciio():
    try:
        return importlib.import_module("rsciio")
    except ImportError as err:
        raise ImportError(
            f"reading this format needs the optional package 'rosettasciio' ({err}); install it with: "
            "pip install rosettasciio (or the extra: pip install 'mspt[formats]')"
        ) from None


def reader_for(path: pathlib.Path, reader: str | None = None):
    """The rosettasciio plugin module for ``path``: the one named ``reader`` (e.g. "QuantumDetector"), or
    the only one that claims the file's extension."""
    rsciio = _rsciio()
    plugins = rsciio.IO_PLUGINS
    if reader is not None:
        chosen = [p for p in plugins if p["name"].lower() == reader.lower()]
        if not chosen:
            raise ValueError(f"reader: expected one of {sorted(p['name'] for p in plugins)}, got {reader!r}")
    else:
        suffix = path.suffix.lstrip(".").lower()
        chosen = [p for p in plugins if suffix in (e.lower() for e in p["file_extensions"])]
        if len(chosen) != 1:
            names = [p["name"] for p in chosen]
            raise ValueError(
                f"reader: {len(chosen)} rosettasciio readers claim '.{suffix}' files ({names}); name one with reader=..."
            )
    return importlib.import_module(chosen[0]["api"])


def load_rosettasciio(paths: Sequence, tilts_deg, *, reader: str | None = None, **calibration_overrides):
    """A TiltSeries from one rosettasciio-readable file per tilt; ``tilts_deg`` gives their angles about y.
    ``calibration_overrides`` supply or replace calibrations (e.g. ``energy_eV``, ``scan_rotation_deg``,
    ``detector_transpose``)."""

    paths = [pathlib.Path(p) for p in ([paths] if isinstance(paths, (str, pathlib.Path)) else paths)]
    angles = np.asarray(tilts_deg, dtype=float).reshape(-1)
    if angles.size != len(paths):
        raise ValueError(f"tilts_deg: expected {len(paths)} angles (one per file), got {angles.size}")
    data, calibrations = [], []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"tiltseries: no such file {path}")
        signals = reader_for(path, reader).file_reader(str(path), lazy=True)
        cubes = [s for s in signals if np.ndim(s["data"]) == 4]
        if len(cubes) != 1:
            raise ValueError(f"{path.name}: expected one 4D signal (scan_y, scan_x, k_y, k_x), found {len(cubes)}")
        data.append(cubes[0]["data"])
        calibrations.append(_calibrations(path.name, cubes[0]))
    known = {**calibrations[0], **calibration_overrides}
    for name, what in (("energy_eV", "the beam energy (eV)"), ("semiangle_mrad", "the probe semiangle (mrad)"),
                       ("scan_step_A", "the scan step (dy, dx) in A")):  # fmt: skip
        if name not in known:
            raise ValueError(f"{name}: not in {paths[0].name}; expected {what}: pass it as a keyword")
    if "detector_sampling_mrad" in calibration_overrides or "reciprocal_sampling_invA" in calibration_overrides:
        for key in ("detector_sampling_mrad", "reciprocal_sampling_invA"):
            if key not in calibration_overrides:
                known.pop(key, None)
    for index, values in enumerate(calibrations[1:], start=1):
        for key, value in values.items():
            if key not in calibration_overrides and not np.allclose(value, calibrations[0].get(key, np.nan)):
                raise ValueError(f"{paths[index].name}: {key} = {value} differs from {paths[0].name}'s {calibrations[0].get(key)}")
    return TiltSeries(data, tilt_series_rotations(angles), ScanCalibration(**known), names=[p.name for p in paths])


def _calibrations(name: str, signal: dict) -> dict:
    axes = signal.get("axes", [])
    navigation = [a for a in axes if a.get("navigate")]
    detector = [a for a in axes if not a.get("navigate")]
    if len(navigation) != 2 or len(detector) != 2:
        raise ValueError(
            f"{name}: expected two scan (navigation) and two detector (signal) axes, got {len(navigation)} and {len(detector)}"
        )
    out: dict = {}
    step = _scaled(navigation, LENGTH_TO_A)
    if step is not None:
        out["scan_step_A"] = step
    units = {str(a.get("units", "")).lower() for a in detector}
    if units == {"mrad"}:
        out["detector_sampling_mrad"] = tuple(float(a["scale"]) for a in detector)
    else:
        dk = _scaled(detector, RECIPROCAL_TO_INVA)
        if dk is not None:
            out["reciprocal_sampling_invA"] = dk
    tem = signal.get("metadata", {}).get("Acquisition_instrument", {}).get("TEM", {})
    if "beam_energy" in tem:
        out["energy_eV"] = float(tem["beam_energy"]) * 1e3  # HyperSpy's metadata: keV
    if "convergence_angle" in tem:
        out["semiangle_mrad"] = float(tem["convergence_angle"])
    return out


def _scaled(axes, table):
    scales = []
    for axis in axes:
        factor = table.get(str(axis.get("units", "")).lower())
        if factor is None:
            return None
        scales.append(float(axis["scale"]) * factor)
    return tuple(scales)
