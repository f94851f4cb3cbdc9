"""The tomography group of the results HDF5 (``mspt.results`` schema, DESIGN.md): ``tomo/{volume (Z, Y, X)
f32, rotation (T, 3, 3), shifts_A (T, 2), loss}`` with attribute ``voxel_size_A``, plus ``support``,
``initial_rotation``, ``initial_shifts_A``, ``residuals``, ``loss_levels`` and attributes
``projector_calls``, ``timings`` (JSON) and ``config`` (JSON).

Writes are atomic (a temporary copy of the file is written and renamed over it, as
:mod:`mspt.ptycho.results_file` does), other groups of an existing file are kept, and an existing ``tomo``
group is replaced only with ``overwrite=True``."""

from __future__ import annotations

import dataclasses
import json
import pathlib

import h5py
import numpy as np

from ..io.results import write_group

from .config import TomoConfig
from .result import TomoResult

GROUP = "tomo"
ARRAYS = {
    "volume": "volume", "rotation": "rotation", "shifts_A": "shifts_A", "loss": "loss", "support": "support",
    "initial_rotation": "initial_rotation", "initial_shifts_A": "initial_shifts_A", "residuals": "residuals",
    "loss_levels": "levels",
}  # fmt: skip


def save_tomo_result(path, result: TomoResult, overwrite: bool = False) -> pathlib.Path:
    """Write ``result`` as group ``tomo`` of the results file at ``path`` (created if absent)."""
    if not isinstance(result, TomoResult):
        raise TypeError(f"result: expected an mspt.tomo.TomoResult, got {type(result).__name__}")
    path = pathlib.Path(path)

    def write(g: h5py.Group) -> None:
        for name, field in ARRAYS.items():
            g.create_dataset(name, data=np.asarray(getattr(result, field)))
        g.attrs["voxel_size_A"] = float(result.voxel_size_A)
        g.attrs["projector_calls"] = float(result.projector_calls)
        g.attrs["timings"] = json.dumps(result.timings)
        g.attrs["config"] = json.dumps(dataclasses.asdict(result.config))

    write_group(path, GROUP, write, overwrite)
    return path


def _config_from_json(text: str) -> TomoConfig:
    fields = json.loads(text)
    for name in ("volume_shape", "levels", "iterations"):
        if isinstance(fields.get(name), list):
            fields[name] = tuple(fields[name])
    return TomoConfig(**fields)


def load_tomo_result(path) -> TomoResult:
    """Read back what :func:`save_tomo_result` wrote."""
    with h5py.File(path, "r") as f:
        if GROUP not in f:
            raise KeyError(f"{path}: no {GROUP} group")
        g = f[GROUP]
        arrays = {field: g[name][()] for name, field in ARRAYS.items()}
        return TomoResult(
            **arrays,
            voxel_size_A=float(g.attrs["voxel_size_A"]),
            projector_calls=float(g.attrs["projector_calls"]),
            timings=json.loads(g.attrs["timings"]),
            config=_config_from_json(g.attrs["config"]),
        )
