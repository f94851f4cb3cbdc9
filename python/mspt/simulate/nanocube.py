"""nanocube: a small cubic nanocrystal (ASE Atoms) centred on the origin, the rotation centre of a simulated
tilt series."""

from __future__ import annotations

import numpy as np

from .. import _validate as v
from ._optional import require

SRTIO3_A = 3.905  # SrTiO3 cubic perovskite lattice parameter (A)


def perovskite_srtio3(a_A: float = SRTIO3_A):
    """The SrTiO3 cubic unit cell (Pm-3m): Sr at the corner, Ti at the body centre, O at the face centres."""
    ase = require("ase")
    fractional = [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)]
    return ase.Atoms("SrTiO3", scaled_positions=fractional, cell=[a_A] * 3, pbc=True)


def nanocube(structure="SrTiO3", cells: int = 3, *, closed: bool = True):
    """A cube of ``cells`` x ``cells`` x ``cells`` unit cells, centred on the origin (A).

    structure : "SrTiO3", an ASE Atoms unit cell with an orthogonal cell, or a chemical symbol that
        ``ase.build.bulk(symbol, cubic=True)`` knows (e.g. "Au").
    closed : also keep the atoms on the far faces (fractional coordinate exactly ``cells``), so the cube is
        symmetric about its centre and terminated alike on opposite faces.
    Returns ASE Atoms without a cell (no periodicity); positions (x, y, z) in A from the cube's centre.
    """
    ase = require("ase")
    v.positive("cells", cells, integer=True)
    if isinstance(structure, str):
        unit = perovskite_srtio3() if structure == "SrTiO3" else _bulk(structure)
    elif isinstance(structure, ase.Atoms):
        unit = structure
    else:
        raise TypeError(f"structure: expected 'SrTiO3', a chemical symbol or ASE Atoms, got {type(structure).__name__}")
    cell = np.asarray(unit.cell.array, dtype=float)
    if np.linalg.matrix_rank(cell) < 3 or np.max(np.abs(cell - np.diag(np.diag(cell)))) > 1e-6:
        raise ValueError("structure: expected a unit cell with orthogonal axes along x, y, z (a cubic or tetragonal cell)")
    edge = np.diag(cell) * cells
    reps = cells + 1 if closed else cells
    block = unit.repeat((reps, reps, reps))
    positions = block.get_positions()
    keep = np.all(positions <= edge + 1e-6, axis=1) if closed else np.ones(len(block), bool)
    cube = ase.Atoms(numbers=block.numbers[keep], positions=positions[keep] - edge / 2)
    return cube


def _bulk(symbol: str):
    build = require("ase.build")
    try:
        return build.bulk(symbol, cubic=True)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"structure: ASE cannot build a cubic bulk crystal of {symbol!r} ({err})") from None
