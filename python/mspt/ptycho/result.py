"""PtychoResult: what a multislice ptychography reconstruction returns."""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import PtychoConfig


@dataclasses.dataclass(frozen=True)
class PtychoResult:
    """A reconstructed tilt.

    slices : (S, Y, X) complex64 transmission functions, entrance to exit; pixel ``pixel_size_A``, slice
        thickness ``slice_thickness_A``. Object pixel (0, 0) sits at ``object_origin_A`` (y, x) in the
        scan's position frame.
    probe : (M, ky, kx) complex64 probe modes at the stack's entrance, strongest first.
    positions_A : (N, 2) refined probe positions (y, x) in A; ``nominal_positions_A`` the ones given.
    tilt_mrad : refined beam tilt (ty, tx).
    loss : (iterations,) mean training loss per pattern in each iteration.
    validation_loss : (iterations,) mean loss per held-out pattern after each iteration (NaN without a split).
    discrepancy : (iterations,) training deviance over its counting-noise expectation (Poisson; NaN else).
    stop_reason : why the run ended; iterations_run : how many iterations it ran; best_iteration : the
        iteration whose state is returned with stop="validation" (-1 when the final state is returned).
        The held-out positions are not folded back for a final polish (it could only fit their noise).
    validation_indices : the held-out positions (indices into the scan).
    regularisation : for each weight given as "auto", the chosen value and every candidate's validation loss.
    summed_phase : (Y, X) sum over slices of each slice's phase (rad): the projection for tomography.
    timings : wall times in seconds ("total", "per_iteration").
    scan_affine : (2, 2) the scan model's map of the nominal positions about their centre, (y, x), A per A
        (identity without a scan model; scan_model.describe_affine gives its scale, rotation and shear).
    scan_drift_A : (dy, dx) the scan model's drift from the first pattern to the last (A; zero without drift).
    position_offsets_A : (N, 2) each position's own correction beyond the scan model (A).
    warnings : the self-checks that fired, as (code, message) pairs (diagnostics.py).
    stack_shift_A : how far (A) re-centring moved the slices' content downstream of where the defocus and
        ``stack_centre_A`` placed the stack; the probe is given at the entrance of the stack so moved, i.e. at
        depth ``stack_centre_A - thickness / 2 - stack_shift_A`` from the defocus reference plane.
    probe_defocus_A : the refined probe's defocus (A, ``-C10``) referred to the plane the scan's ``defocus_A``
        refers to, read off its phase (:func:`mspt.probe_defocus_A`): the probe's refinement refines the
        defocus, so a value far from the scan's says its defocus was off (None in files written before).
    frc_resolution_A : with ``self_check="frc"``, the half-data FRC resolution (1/7 threshold, A); ``frc`` the
        curve and both estimates (frc.FRCResult.as_dict); None otherwise.
    """

    slices: np.ndarray
    probe: np.ndarray
    positions_A: np.ndarray
    nominal_positions_A: np.ndarray
    tilt_mrad: np.ndarray
    loss: np.ndarray
    validation_loss: np.ndarray
    discrepancy: np.ndarray
    stop_reason: str
    iterations_run: int
    best_iteration: int
    validation_indices: np.ndarray
    regularisation: dict
    summed_phase: np.ndarray
    pixel_size_A: tuple[float, float]
    slice_thickness_A: float
    object_origin_A: np.ndarray
    timings: dict
    config: PtychoConfig
    scan_affine: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(2))
    scan_drift_A: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))
    position_offsets_A: np.ndarray | None = None
    warnings: list = dataclasses.field(default_factory=list)
    frc_resolution_A: float | None = None
    frc: dict | None = None
    stack_shift_A: float = 0.0
    probe_defocus_A: float | None = None

    @property
    def iterations(self) -> int:
        return self.iterations_run
