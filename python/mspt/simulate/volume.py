"""potential_volume: the 3D electrostatic potential of atoms on mspt's volume grid (ground truth for
simulated data), computed with abTEM's finite projection integrals."""

from __future__ import annotations

import numpy as np

from .. import _validate as v
from ._optional import require
from .potential import ABTEM_SETTINGS


def potential_volume(atoms, shape, voxel_size_A: float, *, parametrization: str = "lobato") -> np.ndarray:
    """(Z, Y, X) float32 potential (V) of ``atoms`` (positions (x, y, z) in A from the rotation centre), each
    voxel the mean of the potential over its thickness along z.

    The grid is DESIGN.md's: voxel (k, j, i) sits at ((i - X//2) d, (j - Y//2) d, (k - Z//2) d) from the rotation
    centre, d = ``voxel_size_A``. abTEM integrates each atom's potential over every slab of thickness d
    ("finite" projection), so an atom spread over several voxels along z lands in all of them, in proportion.
    """
    abtem = require("abtem")
    ase = require("ase")
    shape = tuple(int(n) for n in np.broadcast_to(shape, (3,)))
    if min(shape) < 1:
        raise ValueError(f"shape: expected three positive integers (Z, Y, X), got {shape}")
    d = float(v.positive("voxel_size_A", voxel_size_A))
    nz, ny, nx = shape
    # abTEM's pixel i spans [i d, (i + 1) d) laterally with its sample at i d, and slice k spans [k d, (k + 1) d)
    # along z: place the rotation centre at pixel (X//2, Y//2) and at the centre of slice Z//2.
    centre = np.array([(nx // 2) * d, (ny // 2) * d, (nz // 2 + 0.5) * d])
    positions = np.asarray(atoms.get_positions(), dtype=float) + centre
    box = np.array([nx * d, ny * d, nz * d])
    if np.any(positions < 0) or np.any(positions >= box):
        raise ValueError(f"atoms: expected every atom inside the volume ({box[2]:.1f} x {box[1]:.1f} x {box[0]:.1f} A)")
    placed = ase.Atoms(numbers=atoms.numbers, positions=positions, cell=box, pbc=False)
    with abtem.config.set(ABTEM_SETTINGS):
        potential = abtem.Potential(
            placed, gpts=(nx, ny), slice_thickness=d, projection="finite", parametrization=parametrization,
            periodic=False,
        )  # fmt: skip
        if potential.num_slices != nz:
            raise RuntimeError(f"abTEM made {potential.num_slices} slices, expected {nz}")
        projected = np.asarray(potential.build(lazy=False).array, dtype=np.float64)  # (Z, X, Y), V A per slice
    return np.ascontiguousarray(np.swapaxes(projected, -1, -2) / d, dtype=np.float32)
