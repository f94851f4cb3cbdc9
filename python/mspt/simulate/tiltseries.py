"""tiltseries: simulate a 4D-STEM tilt series of a nanocrystal and write it as an ``mspt.tiltseries`` file with
a ``truth`` group (test and demo data; never the only reference, see tests/test_simulate.py).

Per tilt the atoms are rotated by R = Ry(tilt) about the rotation centre (+z moves towards +x for a positive
tilt), abTEM computes their projected-potential slices, and mspt's multislice propagates a probe through the
band-limited transmission functions at every position of a raster scan centred on the rotation centre.

Defocus: ``defocus_A`` is referenced to the rotation-centre plane (the tilt-series convention); the probe
meets the entrance of the slice stack thickness / 2 upstream, so it enters with defocus_A + thickness / 2.

``truth`` group: ``positions_A`` (N, 3) untilted (x, y, z) from the rotation centre, ``numbers`` (N,),
``projected_potential_VA`` (T, Y, X) summed over slices, attributes ``pixel_size_A``,
``slice_thickness_A``, ``n_slices``, ``interaction_rad_per_VA`` (sigma: the phase is sigma x potential),
``entrance_defocus_A``. Pixel (Y // 2, X // 2) is the rotation centre.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from .. import _validate as v
from ..constants import interaction_parameter
from ..io.tiltseries_writer import save_tiltseries
from ..ops import multislice_forward, tilt_series_rotations
from ..probe import make_probe
from .potential import SliceGrid, potential_slices, transmission

_MARGIN_A = 2.0  # empty space between the outermost atom and the box (the potential's tails)
_BATCH = 256


def tiltseries(atoms, tilts_deg, path, *, energy_eV: float = 200e3, semiangle_mrad: float = 25.0,
               scan_shape=(20, 20), scan_step_A=0.8, gpts: int = 64, sampling_A: float = 0.2,
               defocus_A: float = 0.0, aberrations=None, slice_thickness_A: float = 2.0,
               dose_e_per_A2: float | None = None, seed: int = 0, parametrization: str = "lobato",
               overwrite: bool = False, progress: bool = False) -> dict:  # fmt: skip
    """Simulate and write a tilt series; returns a summary (grid, slices, positions, electrons per pattern).

    atoms : ASE Atoms, positions (x, y, z) in A from the rotation centre (e.g. :func:`nanocube`).
    tilts_deg : tilt angles about y (degrees).
    scan_shape : raster (scan_y, scan_x); scan_step_A : its step (dy, dx) in A, centred on the rotation centre.
    gpts : probe window and pattern size (pixels); sampling_A : object pixel (A); the detector pixel is
        1 / (gpts * sampling_A) in 1/A.
    defocus_A : defocus (A) referenced to the rotation-centre plane; aberrations : Krivanek coefficients.
    slice_thickness_A : multislice slice thickness (A); the stack spans the atoms at every tilt.
    dose_e_per_A2 : Poisson noise for this dose (e/A^2); None: noiseless patterns each summing to the
        fraction of the beam inside the band limit (about 1).
    """
    if pathlib.Path(path).exists() and not overwrite:  # before minutes of simulation, not after
        raise FileExistsError(f"path: {path} already exists; pass overwrite=True to replace it")
    if len(atoms) == 0:
        raise ValueError("atoms: expected at least one atom")
    angles = np.asarray(tilts_deg, dtype=float).reshape(-1)
    rotations = tilt_series_rotations(angles)
    scan_shape = tuple(int(n) for n in np.broadcast_to(scan_shape, (2,)))
    if min(scan_shape) < 1:
        raise ValueError(f"scan_shape: expected two positive integers (scan_y, scan_x), got {scan_shape}")
    step = v.pair("scan_step_A", scan_step_A, "A", positive_values=True)
    v.positive("gpts", gpts, integer=True)
    if gpts < 8 or gpts % 2:
        raise ValueError(f"gpts: expected an even window of at least 8 pixels, got {gpts}")
    v.positive("sampling_A", sampling_A)
    v.positive("slice_thickness_A", slice_thickness_A)
    if dose_e_per_A2 is not None:
        v.positive("dose_e_per_A2", dose_e_per_A2)

    radius = float(np.max(np.linalg.norm(atoms.get_positions(), axis=1))) + _MARGIN_A
    n_slices = max(1, math.ceil(2 * radius / slice_thickness_A))
    extent_px = [(n - 1) * s / sampling_A for n, s in zip(scan_shape, step)]
    needed = max(max(extent_px) + gpts + 2, 2 * radius / sampling_A + 2)
    grid = SliceGrid(gpts=2 * math.ceil(needed / 2), sampling_A=float(sampling_A), n_slices=n_slices,
                     slice_thickness_A=float(slice_thickness_A))  # fmt: skip
    entrance_defocus = float(defocus_A) + grid.thickness_A / 2
    probe = make_probe(energy_eV, semiangle_mrad, gpts, sampling_A, defocus_A=entrance_defocus, aberrations=aberrations)
    positions_px = raster_positions_A(scan_shape, step) / sampling_A + grid.gpts // 2
    sigma = interaction_parameter(energy_eV)
    electrons = None if dose_e_per_A2 is None else dose_e_per_A2 * step[0] * step[1]
    rng = np.random.default_rng(seed)

    base = atoms.get_positions()
    patterns, projected = [], []
    bar = _bar(len(angles), progress)
    for rotation in rotations:
        tilted = atoms.copy()
        tilted.set_positions(base @ rotation.T)  # active rotation about the rotation centre (the origin)
        potential = potential_slices(tilted, grid, parametrization=parametrization)
        projected.append(potential.sum(0).astype(np.float32))
        slices = transmission(potential, sigma, sampling_A)
        intensities = np.concatenate([
            multislice_forward(slices, probe, positions_px[i : i + _BATCH], grid.slice_thickness_A)
            for i in range(0, len(positions_px), _BATCH)
        ])  # fmt: skip
        counts = intensities if electrons is None else rng.poisson(intensities * electrons).astype(np.float32)
        patterns.append(counts.reshape(*scan_shape, gpts, gpts).astype(np.float32))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    def write_truth(f):
        truth = f.create_group("truth")
        truth.create_dataset("positions_A", data=base)
        truth.create_dataset("numbers", data=np.asarray(atoms.numbers))
        truth.create_dataset("projected_potential_VA", data=np.stack(projected))
        truth.attrs.update(
            pixel_size_A=float(sampling_A), slice_thickness_A=grid.slice_thickness_A, n_slices=grid.n_slices,
            interaction_rad_per_VA=sigma, entrance_defocus_A=entrance_defocus,
        )  # fmt: skip

    save_tiltseries(
        path, patterns, angles, energy_eV=energy_eV, semiangle_mrad=semiangle_mrad, scan_step_A=step,
        defocus_A=defocus_A, aberrations=aberrations, reciprocal_sampling_invA=1.0 / (gpts * sampling_A),
        doses_e_per_A2=dose_e_per_A2, overwrite=overwrite, extra=write_truth,
    )  # fmt: skip
    return dict(object_gpts=grid.gpts, n_slices=grid.n_slices, thickness_A=grid.thickness_A,
                positions_px=positions_px, electrons_per_pattern=electrons, entrance_defocus_A=entrance_defocus)  # fmt: skip


def raster_positions_A(scan_shape, step_A) -> np.ndarray:
    """(N, 2) raster positions (y, x) in A centred on the rotation centre, row-major: the positions
    :class:`mspt.ptycho.PtychoScan` assumes for a raster without scan rotation."""
    (sy, sx), (dy, dx) = scan_shape, step_A
    yy, xx = np.meshgrid((np.arange(sy) - (sy - 1) / 2) * dy, (np.arange(sx) - (sx - 1) / 2) * dx, indexing="ij")
    return np.column_stack([yy.ravel(), xx.ravel()])


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="simulating tilts", unit="tilt")
