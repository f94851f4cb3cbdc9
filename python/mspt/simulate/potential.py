"""Projected-potential slices of atoms placed about the rotation centre, computed with abTEM.

Geometry (DESIGN.md, "Coordinates"): the atoms' positions are (x, y, z) in A from the rotation centre, which
sits at pixel (N // 2, N // 2) of the (N, N) grid and at depth thickness / 2 of the slice stack; slice 0 is
the entrance (smallest z). abTEM's arrays are (x, y): they are returned as mspt's (y, x).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._optional import require

# abTEM settings for the simulator: eager arrays, NumPy FFTs (no planning), no progress bars.
ABTEM_SETTINGS = {"dask.lazy": False, "fft": "numpy", "diagnostics.progress_bar": False}


@dataclasses.dataclass(frozen=True)
class SliceGrid:
    """The simulation box: ``gpts`` x ``gpts`` pixels of ``sampling_A`` laterally, ``n_slices`` slices of
    ``slice_thickness_A`` along the beam; the rotation centre at pixel gpts // 2 and depth thickness / 2."""

    gpts: int
    sampling_A: float
    n_slices: int
    slice_thickness_A: float

    @property
    def thickness_A(self) -> float:
        return self.n_slices * self.slice_thickness_A

    @property
    def centre_A(self) -> np.ndarray:
        """The rotation centre in abTEM's box frame (x, y, z), A."""
        lateral = (self.gpts // 2) * self.sampling_A
        return np.array([lateral, lateral, self.thickness_A / 2])


def potential_slices(atoms, grid: SliceGrid, *, parametrization: str = "lobato") -> np.ndarray:
    """(n_slices, gpts, gpts) projected potential per slice in V A, (y, x) order, of ``atoms`` whose
    positions are given from the rotation centre (projection "infinite": each atom's whole projected
    potential lands in the slice that holds its centre)."""
    abtem = require("abtem")
    ase = require("ase")
    positions = np.asarray(atoms.get_positions(), dtype=float) + grid.centre_A
    side = grid.gpts * grid.sampling_A
    box = np.array([side, side, grid.thickness_A])
    if np.any(positions < 0) or np.any(positions >= box):
        raise ValueError(
            f"atoms: expected every atom inside the simulation box ({side:.1f} x {side:.1f} x {grid.thickness_A:.1f} A "
            "about the rotation centre); enlarge gpts or the slice stack"
        )
    placed = ase.Atoms(numbers=atoms.numbers, positions=positions, cell=box, pbc=True)
    with abtem.config.set(ABTEM_SETTINGS):
        potential = abtem.Potential(
            placed, gpts=grid.gpts, slice_thickness=grid.slice_thickness_A, projection="infinite",
            parametrization=parametrization,
        )  # fmt: skip
        if potential.num_slices != grid.n_slices:
            raise RuntimeError(f"abTEM made {potential.num_slices} slices, expected {grid.n_slices}")
        array = np.asarray(potential.build(lazy=False).array, dtype=np.float64)
    return np.ascontiguousarray(np.swapaxes(array, -1, -2))


def transmission(potential_VA: np.ndarray, sigma_rad_per_VA: float, sampling_A: float) -> np.ndarray:
    """Complex transmission functions exp(i sigma V), band-limited with a hard cut at 2/3 of the Nyquist
    frequency (as abTEM's multislice applies them), complex64."""
    raw = np.exp(1j * sigma_rad_per_VA * potential_VA)
    n0, n1 = raw.shape[-2:]
    k0 = np.fft.fftfreq(n0, sampling_A)[:, None]
    k1 = np.fft.fftfreq(n1, sampling_A)[None, :]
    cutoff = 2.0 / 3.0 / (2.0 * sampling_A)
    inside = k0**2 + k1**2 < cutoff**2
    return np.fft.ifft2(np.fft.fft2(raw, axes=(-2, -1)) * inside, axes=(-2, -1)).astype(np.complex64)
