"""A reconstructed tilt in the results HDF5 (``mspt.results`` schema, DESIGN.md): group ``ptycho/NNN`` with
``object`` (S, Y, X) c64, ``probe`` (M, Ky, Kx) c64, ``positions_A`` (N, 2), ``loss`` (iterations,), plus
``validation_loss``, ``discrepancy``, ``summed_phase``, ``nominal_positions_A``, ``tilt_mrad`` and
``validation_indices``, the scan model's ``scan_affine`` (2, 2), ``scan_drift_A`` (2,) and
``position_offsets_A`` (N, 2); attributes ``pixel_size_A``, ``slice_thickness_A``, ``object_origin_A``,
``stop_reason``, ``iterations_run``, ``best_iteration``, ``stack_shift_A``, ``probe_defocus_A`` (where
known), ``regularisation`` (JSON), ``config`` (JSON), ``warnings`` (JSON list of [code, message]), and with
the half-data self-check ``frc_resolution_A`` and ``frc`` (JSON: the FRC curve and both resolution
estimates).

Writes are atomic (a temporary copy of the file is written and renamed over it), and an existing group is
replaced only with ``overwrite=True``."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import h5py
import numpy as np

from ..io.results import write_group
from .config import PtychoConfig
from .result import PtychoResult

ARRAYS = {
    "object": "slices", "probe": "probe", "positions_A": "positions_A", "nominal_positions_A": "nominal_positions_A",
    "loss": "loss", "validation_loss": "validation_loss", "discrepancy": "discrepancy", "summed_phase": "summed_phase",
    "tilt_mrad": "tilt_mrad", "validation_indices": "validation_indices", "scan_affine": "scan_affine",
    "scan_drift_A": "scan_drift_A", "position_offsets_A": "position_offsets_A",
}  # fmt: skip


def save_result(path, result: PtychoResult, tilt: int = 0, *, overwrite: bool = False) -> None:
    """Write ``result`` as group ``ptycho/{tilt:03d}`` of the results file at ``path`` (created if absent)."""
    write_group(pathlib.Path(path), f"ptycho/{int(tilt):03d}", lambda g: _write(g, result), overwrite)


def _write(g: h5py.Group, result: PtychoResult) -> None:
    for name, field in ARRAYS.items():
        value = getattr(result, field)
        if value is not None:
            g.create_dataset(name, data=np.asarray(value))
    g.attrs["pixel_size_A"] = np.asarray(result.pixel_size_A, dtype=float)
    g.attrs["slice_thickness_A"] = float(result.slice_thickness_A)
    g.attrs["object_origin_A"] = np.asarray(result.object_origin_A, dtype=float)
    g.attrs["stop_reason"] = result.stop_reason
    g.attrs["iterations_run"] = int(result.iterations_run)
    g.attrs["best_iteration"] = int(result.best_iteration)
    g.attrs["stack_shift_A"] = float(result.stack_shift_A)
    if result.probe_defocus_A is not None:
        g.attrs["probe_defocus_A"] = float(result.probe_defocus_A)
    g.attrs["regularisation"] = json.dumps(result.regularisation, default=float)
    g.attrs["config"] = json.dumps(dataclasses.asdict(result.config))
    g.attrs["timings"] = json.dumps(result.timings)
    g.attrs["warnings"] = json.dumps([list(w) for w in result.warnings])
    if result.frc is not None:
        g.attrs["frc_resolution_A"] = float(result.frc_resolution_A)
        g.attrs["frc"] = json.dumps(result.frc)


def load_result(path, tilt: int = 0) -> PtychoResult:
    """Read back what :func:`save_result` wrote."""
    group_name = f"ptycho/{int(tilt):03d}"
    with h5py.File(path, "r") as f:
        if group_name not in f:
            raise KeyError(f"{path}: no {group_name} group")
        g = f[group_name]
        arrays = {field: g[name][()] for name, field in ARRAYS.items() if name in g}
        regularisation = {
            k: {"value": v["value"], "validation_loss": {float(c): s for c, s in v["validation_loss"].items()}}
            for k, v in json.loads(g.attrs["regularisation"]).items()
        }  # fmt: skip
        return PtychoResult(
            **arrays,
            pixel_size_A=tuple(float(x) for x in g.attrs["pixel_size_A"]),
            slice_thickness_A=float(g.attrs["slice_thickness_A"]),
            object_origin_A=np.asarray(g.attrs["object_origin_A"]),
            stop_reason=str(g.attrs["stop_reason"]),
            iterations_run=int(g.attrs["iterations_run"]),
            best_iteration=int(g.attrs["best_iteration"]),
            regularisation=regularisation,
            timings=json.loads(g.attrs["timings"]),
            config=PtychoConfig(**json.loads(g.attrs["config"])),
            warnings=[tuple(w) for w in json.loads(g.attrs.get("warnings", "[]"))],
            frc_resolution_A=float(g.attrs["frc_resolution_A"]) if "frc_resolution_A" in g.attrs else None,
            stack_shift_A=float(g.attrs.get("stack_shift_A", 0.0)),
            probe_defocus_A=float(g.attrs["probe_defocus_A"]) if "probe_defocus_A" in g.attrs else None,
            frc=json.loads(g.attrs["frc"]) if "frc" in g.attrs else None,
        )
