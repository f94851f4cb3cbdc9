"""The ``joint`` group of a results file: the refined volume and acquisition of a joint refinement.

``joint/``: ``volume`` (Z, Y, X) float32 potential (V); ``rotation`` (T, 3, 3), ``shifts_A`` (T, 2), ``probe``
(T, M, ny, nx) complex64 after refinement; per tilt (tilts may differ in their number of positions)
``positions_px/NNN`` (N, 2) (window centres on the projection grid, whose pixel (P // 2, P // 2) is the
rotation axis) and ``validation_indices/NNN`` (the held-out positions); ``loss`` (n,), ``validation_loss`` (n,) and
``blocks`` (n,): the training and held-out losses at the start and after each block. Attributes:
``voxel_size_A``, ``pixel_size_A``, ``grid_shape``, ``n_slices``, ``slice_thickness_A``, ``energy_eV``,
``likelihood``, ``passes``, ``best_block``, ``stop_reason``, ``timings`` (JSON). Written atomically.
"""

from __future__ import annotations

import json
import pathlib

import h5py
import numpy as np

from ..io.results import write_group
from .model import JointModel
from .refine import JointResult

GROUP = "joint"


def save_joint_result(path, result: JointResult, model: JointModel, overwrite: bool = False) -> pathlib.Path:
    """Write ``result`` (refined under ``model``) as group ``joint`` of the results file at ``path``."""
    if not isinstance(result, JointResult):
        raise TypeError(f"result: expected an mspt.joint.JointResult, got {type(result).__name__}")
    path = pathlib.Path(path)

    def write(g: h5py.Group) -> None:
        g.create_dataset("volume", data=result.volume)
        g.create_dataset("rotation", data=np.stack([t.rotation for t in result.tilts]))
        g.create_dataset("shifts_A", data=np.stack([t.shifts_A for t in result.tilts]))
        g.create_dataset("probe", data=np.stack([t.probe for t in result.tilts]).astype(np.complex64))
        for index, (tilt, held) in enumerate(zip(result.tilts, result.validation_indices)):
            g.create_dataset(f"positions_px/{index:03d}", data=tilt.positions_px)
            g.create_dataset(f"validation_indices/{index:03d}", data=np.asarray(held, dtype=np.int64))
        g.create_dataset("loss", data=result.loss)
        g.create_dataset("validation_loss", data=result.validation_loss)
        g.create_dataset("blocks", data=np.array(result.blocks, dtype="S"))
        grid = model.grid_shape(result.volume)
        g.attrs.update(
            voxel_size_A=model.voxel_size_A, pixel_size_A=model.pixel_A, grid_shape=np.array(grid),
            n_slices=model.n_slices, slice_thickness_A=model.slice_thickness_A, energy_eV=model.energy_eV,
            likelihood=model.likelihood, passes=float(result.passes), timings=json.dumps(result.timings),
            best_block=int(result.best_block), stop_reason=result.stop_reason,
        )  # fmt: skip

    write_group(path, GROUP, write, overwrite)
    return path


def load_joint_result(path) -> dict:
    """The ``joint`` group as a dict of its arrays and attributes (``blocks`` as str, ``timings`` a dict,
    ``positions_px`` and ``validation_indices`` lists with one array per tilt)."""
    with h5py.File(path, "r") as f:
        if GROUP not in f:
            raise KeyError(f"{path}: no {GROUP!r} group")
        g = f[GROUP]
        out = {name: g[name][()] for name in g if isinstance(g[name], h5py.Dataset)}
        for name in ("positions_px", "validation_indices"):
            out[name] = [g[name][key][()] for key in sorted(g[name])]
        out.update({key: g.attrs[key] for key in g.attrs})
    out["blocks"] = tuple(out["blocks"].astype(str))
    out["timings"] = json.loads(out["timings"])
    return out
