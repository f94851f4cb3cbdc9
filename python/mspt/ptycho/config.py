"""PtychoConfig: every setting of a multislice ptychography reconstruction, validated on creation.

Defaults suit a 200 keV, 20-30 mrad, 0.5-1 A step scan of a crystal a few nm thick; the sample-specific
settings to check are the slice count and thickness (together: the sample thickness the stack spans).
"""

from __future__ import annotations

import dataclasses

from .. import _validate as v
from .scan_model import SCAN_MODELS
from .stack import RECENTRE_MIN_SLICES, pad_slice_count
from .stopping import STOP_RULES

LIKELIHOODS = ("amplitude", "poisson")
OBJECT_CONSTRAINTS = ("none", "amplitude_le_1", "phase_only")
DEVICES = ("cpu", "cuda")
POSITION_CONSTRAINTS = ("affine", "mean", "none")
SELF_CHECKS = ("none", "frc")
SLICE_SCHEDULES = ("fixed", "coarse_to_fine")


def _positive_or_auto(name: str, value) -> None:
    if value != "auto":
        try:
            v.positive(name, value, integer=True)
        except ValueError:
            raise ValueError(f'{name}: expected a positive integer or "auto", got {value!r}') from None


@dataclasses.dataclass(frozen=True)
class PtychoConfig:
    """Settings of :func:`mspt.ptycho.reconstruct`.

    Geometry
        n_slices : object slices along the beam.
        slice_thickness_A : their thickness (A); the sample's slices span ``n_slices * slice_thickness_A``.
        stack_centre_A : where the stack's centre sits relative to the plane the scan's defocus refers to
            (A along the beam; 0 puts the stack centre on that plane).
        padding_px : object pixels added around the scanned field of view, beyond the probe window.
        pad_slices_A : vacuum (A) added above and below the sample's ``n_slices``, in whole slices (rounded):
            room for the stack to be re-centred on a sample whose depth is not known exactly. The stack
            then has ``stack_slices`` slices spanning ``thickness_A``; its centre stays at ``stack_centre_A``.
        recentre_stack : keep the depth centre of the phase contrast at the stack centre: every few
            iterations the object is shifted along the beam by whole or fractional slices and the probe
            refocused by the same distance (stack.py); "auto": for stacks of 30 slices or more.
        slice_schedule : "fixed", or "coarse_to_fine": half as many slices of twice the thickness until
            ``split_slices_at``, then each split in two (needs an even ``stack_slices``).
        split_slices_at : the iteration (0-based) at which a coarse-to-fine schedule splits its slices.
    Optimisation
        iterations : passes over the data (epochs); with a stopping rule, the most it may take.
        stop : "validation" (default: 5 % of the positions never take part in an update; the run keeps the
            state that predicts them best and stops when that has not improved for ``patience``
            iterations), "discrepancy" (Poisson data: stop once the deviance reaches the counting-noise
            level), or "fixed" (run all ``iterations``).
        validation_fraction : share of the positions held out for validation.
        patience : iterations without a better validation loss before stopping.
        batch_size : probe positions per gradient step (default "auto"): a power of two near 1/8 of the
            scan's positions, raised until a batch holds 1e5 counts, within 8 .. 64, halved until the run
            fits the memory budgets (memory.py). Scans of 512 positions and more, and low-dose scans
            (under about 3,100 counts per pattern), get 64; a smaller scan converges in far fewer passes
            (70 A of SrTiO3, 16 x 16 positions: 28 passes to r 0.9977 with 32 against 53 with 64).
        likelihood : "amplitude" (Gaussian on sqrt counts; robust, fast) or "poisson" (low dose).
        object_step, probe_step, position_step : fractions of the Gauss-Newton step (1 = full step).
            While a validation set is held out (``stop="validation"``) the object first takes 1.6 times
            ``object_step``, until the validation loss stalls for ``patience`` iterations; the run then goes
            back to its best state and goes on with ``object_step`` (half the passes on a 70 A crystal).
        probe_modes : mixed-state probe modes (kept orthogonal).
        refine_probe_from, refine_positions_from, refine_tilt_from : first iteration (0-based) at which
            each is refined; -1 never refines it.
        max_position_step_px : largest position change per iteration (object pixels).
        position_constraint : the global part removed from the position corrections after each iteration:
            "affine" (trust the scan's calibration: shift, scale, rotation and shear stay nominal), "mean"
            (only the common shift), or "none".
        scan_model : a global model of the positions refined with the object and probe (scan_model.py):
            "affine+drift" (one scale, a rotation and a drift linear in acquisition time: on a raster a drift
            cannot be told from an anisotropic scale or a shear), "affine" (scale y / x, rotation, shear; no
            drift), or "none". The per-position offsets then carry no affine part (position_constraint
            "affine"). The translation is never refined (it is the object's).
        refine_scan_model_from : first iteration (0-based) at which the scan model is refined; -1 never.
        position_search_A : positions that fit their pattern far worse than the rest (stuck in a local
            minimum) are searched for on a half-pixel grid this far (A) around; 0 disables the search.
        seed : seeds the batch order (a run is reproducible).
    Regularisation
        object_constraint : "amplitude_le_1" (transmission amplitude at most 1), "phase_only", or "none".
        kz_strength : strength of the kz (depth) filter that damps structure varying fast along the
            beam relative to across it; 0 disables it.
        tv_weight : total-variation weight on each slice's phase (0 disables it).
        Either may be "auto": a few candidates run a short reconstruction each and the one that predicts
        the held-out patterns best is used (recorded in ``PtychoResult.regularisation``).
    Execution
        device : "cpu" or "cuda"; threads : CPU threads (None: all).
        checkpoint_every : write a checkpoint every N iterations (0: never); checkpoint_path : its file.
        memory_budget_bytes : scans larger than this are streamed from their file in batches; "auto": held
            in memory when the whole run fits the host budget with them.
        host_budget_bytes, device_budget_bytes : the RAM / GPU memory a run may take; "auto": 80 % of the
            available RAM / of the GPU's free memory. ``reconstruct`` plans the run's memory before it starts
            (:func:`mspt.ptycho.plan`) and raises MemoryError when it cannot fit.
        self_check : "frc": also reconstruct two interleaved halves of the positions and estimate the
            resolution from their Fourier ring correlation (``PtychoResult.frc_resolution_A``); "none".
        progress : show a progress bar.
    """

    n_slices: int = 5
    slice_thickness_A: float = 4.0
    stack_centre_A: float = 0.0
    padding_px: int = 8
    pad_slices_A: float = 0.0
    recentre_stack: bool | str = "auto"
    slice_schedule: str = "fixed"
    split_slices_at: int = 10
    iterations: int = 60
    stop: str = "validation"
    validation_fraction: float = 0.05
    patience: int = 5
    batch_size: int | str = "auto"
    likelihood: str = "amplitude"
    object_step: float = 0.9
    probe_step: float = 0.5
    position_step: float = 0.5
    probe_modes: int = 1
    refine_probe_from: int = 2
    refine_positions_from: int = 5
    refine_tilt_from: int = -1
    max_position_step_px: float = 0.5
    position_constraint: str = "affine"
    scan_model: str = "none"
    refine_scan_model_from: int = 3
    position_search_A: float = 1.5
    seed: int = 0
    object_constraint: str = "amplitude_le_1"
    kz_strength: float | str = 0.0
    tv_weight: float | str = 0.0
    device: str = "cpu"
    threads: int | None = None
    checkpoint_every: int = 0
    checkpoint_path: str | None = None
    memory_budget_bytes: int | str = 4 * 2**30
    host_budget_bytes: int | str = "auto"
    device_budget_bytes: int | str = "auto"
    self_check: str = "none"
    progress: bool = True

    def __post_init__(self):
        v.positive("n_slices", self.n_slices, integer=True)
        v.positive("slice_thickness_A", self.slice_thickness_A)
        v.finite("stack_centre_A", self.stack_centre_A, "A")
        v.positive("padding_px", self.padding_px, integer=True, allow_zero=True)
        v.positive("iterations", self.iterations, integer=True, allow_zero=True)
        v.positive("pad_slices_A", self.pad_slices_A, allow_zero=True)
        if self.recentre_stack != "auto" and not isinstance(self.recentre_stack, bool):
            raise ValueError(f'recentre_stack: expected true, false or "auto", got {self.recentre_stack!r}')
        v.choice("slice_schedule", self.slice_schedule, SLICE_SCHEDULES)
        v.positive("split_slices_at", self.split_slices_at, integer=True, allow_zero=True)
        if self.slice_schedule == "coarse_to_fine" and self.stack_slices % 2:
            raise ValueError(
                f'slice_schedule: "coarse_to_fine" pairs slices, so the stack needs an even number of slices '
                f"(n_slices + 2 padding slices), got {self.stack_slices}"
            )
        if self.slice_schedule == "coarse_to_fine" and self.split_slices_at >= self.iterations:
            raise ValueError(
                f"split_slices_at: a coarse-to-fine schedule splits its slices before the last iteration, so "
                f"expected less than iterations ({self.iterations}), got {self.split_slices_at}"
            )
        _positive_or_auto("batch_size", self.batch_size)
        v.choice("stop", self.stop, STOP_RULES)
        v.fraction("validation_fraction", self.validation_fraction, high=0.5)
        v.positive("patience", self.patience, integer=True)
        if self.stop == "discrepancy" and self.likelihood != "poisson":
            raise ValueError('stop: "discrepancy" needs likelihood="poisson"')
        v.choice("likelihood", self.likelihood, LIKELIHOODS)
        v.fraction("object_step", self.object_step, high=2.0)
        v.fraction("probe_step", self.probe_step, high=2.0)
        v.fraction("position_step", self.position_step, high=2.0)
        v.positive("probe_modes", self.probe_modes, integer=True)
        for name in ("refine_probe_from", "refine_positions_from", "refine_tilt_from", "refine_scan_model_from"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < -1:
                raise ValueError(f"{name}: expected an iteration index >= 0, or -1 for never, got {value!r}")
        v.positive("max_position_step_px", self.max_position_step_px)
        v.choice("position_constraint", self.position_constraint, POSITION_CONSTRAINTS)
        v.choice("scan_model", self.scan_model, SCAN_MODELS)
        if self.scan_model != "none" and self.position_constraint != "affine":
            raise ValueError(
                f'position_constraint: a scan model ("{self.scan_model}") keeps the per-position offsets free of '
                f'any affine part, so it needs "affine", got {self.position_constraint!r}'
            )
        v.positive("position_search_A", self.position_search_A, allow_zero=True)
        if not isinstance(self.seed, int):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")
        v.choice("object_constraint", self.object_constraint, OBJECT_CONSTRAINTS)
        for name in ("kz_strength", "tv_weight"):
            value = getattr(self, name)
            if value != "auto":
                try:
                    v.positive(name, value, allow_zero=True)
                except ValueError:
                    raise ValueError(f'{name}: expected a non-negative number or "auto", got {value!r}') from None
        v.choice("device", self.device, DEVICES)
        if self.threads is not None:
            v.positive("threads", self.threads, integer=True)
        v.positive("checkpoint_every", self.checkpoint_every, integer=True, allow_zero=True)
        if self.checkpoint_every and not self.checkpoint_path:
            raise ValueError("checkpoint_path: required when checkpoint_every > 0")
        for name in ("memory_budget_bytes", "host_budget_bytes", "device_budget_bytes"):
            _positive_or_auto(name, getattr(self, name))
        v.choice("self_check", self.self_check, SELF_CHECKS)

    @property
    def pad_slices(self) -> int:
        """Vacuum slices on each side of the sample's slices."""
        return pad_slice_count(self.pad_slices_A, self.slice_thickness_A)

    @property
    def stack_slices(self) -> int:
        """Slices of the whole stack: the sample's and the vacuum padding on both sides."""
        return self.n_slices + 2 * self.pad_slices

    @property
    def thickness_A(self) -> float:
        """The thickness the slice stack spans (A), vacuum padding included."""
        return self.stack_slices * self.slice_thickness_A

    @property
    def recentres(self) -> bool:
        """Whether the engine re-centres the stack (``recentre_stack`` with "auto" resolved)."""
        if self.recentre_stack == "auto":
            return self.stack_slices >= RECENTRE_MIN_SLICES
        return bool(self.recentre_stack)

    def replace(self, **changes) -> "PtychoConfig":
        return dataclasses.replace(self, **changes)
