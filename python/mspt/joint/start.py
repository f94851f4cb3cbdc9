"""The joint refinement's starting point: the sequential method's results turned into a JointModel, one
JointTilt per tilt and a potential volume.

* Volume: the tomography reconstructs the summed phase (rad) per A; the joint model wants the potential (V),
  so it is divided by the interaction parameter sigma (rad / (V A)).
* Grid: the projections' pixel is the ptychography pixel; the grid is centred on the rotation axis (pixel
  P // 2, the scan centre, as in :mod:`mspt.pipeline.projections`) and large enough for every probe window
  of every tilt.
* Positions: each tilt's refined positions (A, scan frame, origin at the scan centre) in grid pixels.
* Probe: each tilt's refined probe modes, propagated from the entrance of its ptychography slice stack to the
  entrance of the joint slab stack (both referred to the rotation-centre plane, DESIGN.md's defocus
  reference, the ptychography's re-centring included), so a different slab count or thickness keeps the same
  physical probe; each tilt's refined mistilt goes into its multislice.
* Poses: the tomography's refined rotations and shifts.
* Patterns: read lazily from the tilt series, one batch at a time.
"""

from __future__ import annotations

import math

import numpy as np

from ..constants import interaction_parameter
from .model import JointModel
from .tilt import JointTilt


class ScanPatterns:
    """A tilt's patterns as a (N, ky, kx) stack that reads only the slice asked for (the scan's own reader,
    detector transpose included)."""

    def __init__(self, scan):
        self.scan = scan
        self.shape = (scan.n_positions, *scan.pattern_shape)

    def __getitem__(self, batch: slice) -> np.ndarray:
        if not isinstance(batch, slice):
            raise TypeError(f"batch: expected a slice of positions, got {type(batch).__name__}")
        return self.scan.read(np.arange(self.shape[0])[batch])

    def read(self, indices) -> np.ndarray:
        """The patterns at flat position ``indices``."""
        return self.scan.read(indices)


def grid_shape(positions_A: list[np.ndarray], window: tuple[int, int], pixel_size_A: float) -> tuple[int, int]:
    """The smallest even (P, P) grid centred on the rotation axis that holds every probe window, plus a
    two-pixel margin for position refinement."""
    reach = max(float(np.abs(p).max()) for p in positions_A) / pixel_size_A
    half = math.ceil(reach + max(window) / 2 + 2)
    return 2 * half, 2 * half


def ptycho_entrance_A(result) -> float:
    """Depth (A, downstream positive, from the rotation-centre plane) where a tilt's ptychography probe is
    given: its stack's entrance, moved upstream by any re-centring of the stack (``stack_shift_A``)."""
    config = result.config
    return float(config.stack_centre_A) - config.thickness_A / 2 - float(result.stack_shift_A)


def build_start(series, ptycho_results: list, tomo_result, *, voxel_size_A: float | None = None,
                n_slices: int | None = None, slice_thickness_A: float | None = None, likelihood: str = "poisson",
                batch_size: int = 256, device: str = "cpu", threads: int | None = None):  # fmt: skip
    """(model, tilts, volume_V) for a joint refinement of ``series`` (an :class:`mspt.io.TiltSeries`) starting
    from its per-tilt ``ptycho_results`` and the ``tomo_result`` built from them. ``voxel_size_A`` defaults
    to the ptychography pixel (the tomography volume is resampled onto it); ``n_slices`` and
    ``slice_thickness_A`` default to the ptychography's."""
    from ..ptycho.stack import propagate_probe

    if len(ptycho_results) != series.n_tilts:
        raise ValueError(f"ptycho_results: expected one result per tilt ({series.n_tilts}), got {len(ptycho_results)}")
    if tomo_result.rotation.shape[0] != series.n_tilts:
        raise ValueError(f"tomo_result: expected poses for {series.n_tilts} tilts, got {tomo_result.rotation.shape[0]}")
    first = ptycho_results[0]
    pixel = float(first.pixel_size_A[0])
    for index, result in enumerate(ptycho_results):
        if not np.allclose(result.pixel_size_A, (pixel, pixel), rtol=1e-6):
            raise ValueError(f"ptycho_results[{index}].pixel_size_A: expected square pixels of {pixel} A like tilt 0, "
                             f"got {tuple(result.pixel_size_A)}")  # fmt: skip
    n_slices = first.config.n_slices if n_slices is None else int(n_slices)
    thickness = first.config.slice_thickness_A if slice_thickness_A is None else float(slice_thickness_A)
    window = tuple(first.probe.shape[-2:])
    shape = grid_shape([r.positions_A for r in ptycho_results], window, pixel)
    energy = float(series.calibration.energy_eV)
    voxel = pixel if voxel_size_A is None else float(voxel_size_A)
    model = JointModel(
        voxel_size_A=voxel, n_slices=n_slices, slice_thickness_A=thickness,
        energy_eV=energy, pixel_size_A=pixel, shape=shape, likelihood=likelihood, batch_size=batch_size,
        device=device, threads=threads,
    )  # fmt: skip
    entrance = -n_slices * thickness / 2
    centre_px = np.array(shape) // 2
    tilts = []
    for index, result in enumerate(ptycho_results):
        probe = propagate_probe(np.asarray(result.probe), entrance - ptycho_entrance_A(result), energy,
                                (pixel, pixel), result.tilt_mrad)  # fmt: skip
        tilts.append(JointTilt(
            rotation=tomo_result.rotation[index], shifts_A=tomo_result.shifts_A[index], probe=probe,
            positions_px=np.asarray(result.positions_A) / pixel + centre_px,
            patterns=ScanPatterns(series.scan(index)), tilt_mrad=result.tilt_mrad,
        ))  # fmt: skip
    potential = np.asarray(tomo_result.volume, dtype=np.float64) / interaction_parameter(energy)
    return model, tilts, on_voxel_grid(potential, float(tomo_result.voxel_size_A), voxel)


def on_voxel_grid(volume: np.ndarray, voxel_size_A: float, new_voxel_size_A: float) -> np.ndarray:
    """``volume`` (Z, Y, X) resampled (trilinear) onto voxels of ``new_voxel_size_A`` covering the same box
    about the rotation centre (DESIGN.md's centred grid) -> float32."""
    from ..tomo.resample import resample_volume

    if math.isclose(voxel_size_A, new_voxel_size_A, rel_tol=1e-9):
        return np.asarray(volume, dtype=np.float32)
    shape = tuple(max(1, round(n * voxel_size_A / new_voxel_size_A)) for n in volume.shape)
    return resample_volume(np.asarray(volume, dtype=np.float32), voxel_size_A, shape, new_voxel_size_A)
