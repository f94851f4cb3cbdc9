"""PtychoEngine: the state of one multislice ptychography reconstruction and its update rule.

The engine owns the object slices, the probe modes, the probe positions, the beam tilt and the batch
schedule across iterations; the native fused operator (:func:`mspt.ops.multislice_loss_grad`) computes
the likelihood and all gradients of a batch in one pass, and each parameter takes a preconditioned
(Gauss-Newton-diagonal) step:

* slices:    O -= step * dL/dO / (2 c S (illumination + beta * max illumination)), the summed probe
             intensity of the batch at each object pixel (the multislice generalisation of the rPIE step,
             shared among the S slices that all act on the same exit wave), over the batch's windows only
             (object_step.py); over-relaxed (OVERRELAXATION) until the validation loss first stalls;
* probe:     P -= step * dL/dP / (2 c (sum over the batch of |O window|^2 + beta * max));
* positions: r -= step * dL/dr / h_r, clipped to max_position_step_px, where h_r is the curvature of the
             loss w.r.t. a position, measured each iteration by finite differences of the position
             gradient on a few positions (it depends on the object's contrast, so it cannot be derived from
             the probe alone);
* scan model: the positions' global part (an affine map of the nominal scan and a drift linear in
             acquisition time, scan_model.py) takes one Gauss-Newton step per iteration: the per-position
             gradients of the iteration projected onto the model's fields with the same curvature h_r;
             the per-position offsets keep no affine part;
* tilt:      a beam tilt and a slice stack sheared along the beam give the same data; the object is kept
             unsheared and any shear that builds up in it is moved into the tilt after each iteration.
* stack:     the object may be moved along the beam by whole or fractional slices with the probe refocused
             by the same distance (the model's predictions stay put): every few iterations the stack is
             re-centred on the depth centre of its phase contrast; a coarse-to-fine schedule starts with
             half as many slices of twice the thickness and splits them (stack.py).

c is the curvature of the likelihood per unit wave intensity (1 for the amplitude likelihood, 2 for
Poisson near the solution). After each iteration the object constraint and the kz filter are applied,
the probe modes are re-orthogonalised, and the global (mean or affine) part of the position corrections
is removed (a global shift, stretch or rotation of all positions is nearly one of the object's), or, with
a scan model, left to the model.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .. import _validate, ops
from ..probe import make_probe
from ..probe_defocus import probe_defocus_A
from .config import PtychoConfig
from .memory import preferred_batch_size
from .object_step import windowed_object_step
from .probe_step import windowed_probe_step
from .read_ahead import read_ahead
from .diagnostics import GRID_CHECK_EVERY, STACK_DRIFT_FRACTION, Diagnostics
from .regularise import apply_object_constraint, kz_filter, orthogonalise_modes, shift_slices, slice_shear_rate, tv_step
from .position_search import FINE_STEP_PX, coarse_step_px, disk_offsets, refine_offsets
from .scan import PtychoScan
from .scan_model import N_PARAMETERS, ScanModel
from .stack import RECENTRE_EVERY, RECENTRE_FROM, recentre, split_slices
from .stopping import StopState, choose_validation, expected_poisson_deviance

# rPIE-style floor of the illumination preconditioner, as a fraction of its maximum.
ILLUMINATION_FLOOR = 0.1
# The object step's multiplier until the validation loss stalls. Each slice takes 1/S of the Newton step
# because a change common to all slices moves the exit wave S times; most of the object's error is not
# common to the slices (Fresnel propagation decorrelates them at high spatial frequency), so an over-relaxed
# step converges that part faster while the common part still contracts (|1 - 1.6| < 1). Near the noise
# floor the larger step fits noise sooner: once the validation loss has stalled for `patience` iterations
# the run goes back to its best state and goes on with the configured step (the stopping rule's patience
# starts again there).
OVERRELAXATION = 1.6
# Curvature of each likelihood per unit of wave intensity, near the solution.
LIKELIHOOD_CURVATURE = {"amplitude": 1.0, "poisson": 2.0}
# Heavy-ball momentum of the position updates: positions and object converge together, slowly, and the
# momentum carries a position across the shallow part of that coupled valley.
POSITION_MOMENTUM = 0.7
# Heavy-ball momentum of the scan model's steps: its global stretch and rotation relax only as fast as the
# object gives up the distortion it first took on; the momentum carries the model along that slow valley.
SCAN_MOMENTUM = 0.9
# What the stopping rule keeps of the best state.
BEST_KEYS = ("slices", "probe", "positions_px", "tilt_mrad", "scan_parameters", "stack_shift_A")
# The position curvature changes slowly: it is measured every CURVATURE_EVERY iterations.
CURVATURE_EVERY = 5
# Stuck positions: every SEARCH_EVERY iterations of position refinement, positions whose loss lies
# OUTLIER_SIGMAS robust standard deviations above the median (at most MAX_SEARCHES) are searched for.
SEARCH_EVERY = 5
OUTLIER_SIGMAS = 6.0
MAX_SEARCHES = 32


class PtychoEngine:
    """Reconstruction state and one-iteration update. Build it with :meth:`start` or :meth:`from_state`."""

    def __init__(self, scan: PtychoScan, config: PtychoConfig, state: dict):
        self.scan = scan
        self.config = config
        # reconstruct() resolves "auto" with the memory plan; an engine started directly takes the preference.
        self.batch_size = (
            config.batch_size
            if config.batch_size != "auto"
            else preferred_batch_size(scan.n_positions, float(state["mean_counts"]))
        )
        self.sampling_A = scan.sampling_A
        self.window = scan.pattern_shape
        self.slices: np.ndarray = state["slices"]
        self.probe: np.ndarray = state["probe"]
        self.positions_px: np.ndarray = state["positions_px"]
        self.nominal_positions_px: np.ndarray = state["nominal_positions_px"]
        self.object_origin_A: np.ndarray = state["object_origin_A"]
        self.tilt_mrad: np.ndarray = state["tilt_mrad"]
        self.iteration: int = int(state["iteration"])
        self.loss_history: list[float] = list(state["loss_history"])
        self.position_velocity: np.ndarray = state["position_velocity"]  # last position step (momentum)
        self.position_curvature: np.ndarray = state["position_curvature"]  # d^2 L / d(y, x)^2 per position
        # Where the stuck-position search last left each position (NaN: never searched there; checkpoints
        # written before this existed have none).
        self.searched_px: np.ndarray = np.asarray(state.get("searched_px", np.full_like(self.positions_px, np.nan)))
        self.scan_parameters: np.ndarray = np.asarray(state["scan_parameters"], dtype=np.float64)
        self.scan_velocity: np.ndarray = np.asarray(state["scan_velocity"], dtype=np.float64)  # last model step
        # How far (A) re-centring has moved the stack's content downstream (stack.py); the probe's focus moved
        # upstream by as much. Checkpoints written before re-centring existed have none.
        self.stack_shift_A = float(state.get("stack_shift_A", 0.0))
        # Whether the object still takes the over-relaxed step (OVERRELAXATION): only with a validation
        # set, which says when to stop; checkpoints written before this existed continue with the plain step.
        self.overrelaxed = bool(state.get("overrelaxed", False))
        self.mean_counts = float(state["mean_counts"])  # the data's mean counts per pattern
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng_state"]
        # Validation positions never take part in an update (stopping.py); the best state by their loss.
        self.validation = np.asarray(state["validation_indices"], dtype=np.int64)
        self.training = np.setdiff1d(np.arange(scan.n_positions), self.validation)
        self.scan_model = ScanModel(config.scan_model, self.nominal_positions_px, fit_on=self.training)
        self.stop = StopState(
            validation_history=list(state["validation_history"]), discrepancy_history=list(state["discrepancy_history"]),
            best_validation=float(state["best_validation"]), best_iteration=int(state["best_iteration"]),
            patience_from=int(state.get("patience_from", -1)),
        )  # fmt: skip
        self.best = {key: state.get("best_" + key, 0.0) for key in BEST_KEYS}
        self.loss_per_position = np.zeros(scan.n_positions)
        # Self-checks (diagnostics.py): the warnings this run has fired (a resumed run does not repeat them).
        self.diagnostics = Diagnostics([tuple(w) for w in json.loads(state.get("warnings", "[]"))])
        self.diverged = False
        self._scan_grid_px = _raster_steps_px(scan, self.nominal_positions_px)
        self._scan_step_px = _scan_step_px(self._scan_grid_px, self.nominal_positions_px)
        self._data = None
        if scan.nbytes_float32 <= config.memory_budget_bytes:
            self._data = scan.read(np.arange(scan.n_positions))

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def start(cls, scan: PtychoScan, config: PtychoConfig, mean_counts: float) -> "PtychoEngine":
        """A fresh reconstruction: vacuum slices, the probe from the calibrations, the nominal positions."""
        sampling = scan.sampling_A
        ny, nx = scan.pattern_shape
        positions_A = scan.positions()
        # Object pixel (0, 0) sits at object_origin_A; every window keeps `padding_px` pixels to the edge.
        pad = config.padding_px
        origin = positions_A.min(0) - (np.array([ny // 2, nx // 2]) + pad) * np.array(sampling)
        positions_px = (positions_A - origin) / np.array(sampling)
        extent = positions_px.max(0)
        shape = (int(math.ceil(extent[0])) + ny - ny // 2 + pad + 1, int(math.ceil(extent[1])) + nx - nx // 2 + pad + 1)
        probe = make_probe(
            scan.energy_eV, scan.semiangle_mrad, (ny, nx), sampling, defocus_A=entrance_defocus_A(scan, config),
            aberrations=scan.aberrations, modes=config.probe_modes, electrons=mean_counts,
        ).array  # fmt: skip
        state = dict(
            slices=np.ones((_starting_slices(config), *shape), np.complex64),
            probe=probe,
            positions_px=positions_px,
            nominal_positions_px=positions_px.copy(),
            object_origin_A=origin,
            tilt_mrad=np.array(_validate.pair("tilt_mrad", scan.tilt_mrad, "mrad"), dtype=np.float64),
            iteration=0,
            loss_history=[],
            position_velocity=np.zeros_like(positions_px),
            position_curvature=np.ones(2),
            scan_parameters=np.zeros(N_PARAMETERS[config.scan_model]),
            stack_shift_A=0.0,
            scan_velocity=np.zeros(N_PARAMETERS[config.scan_model]),
            mean_counts=float(mean_counts),
        )
        rng = np.random.default_rng(config.seed)
        fraction = config.validation_fraction if config.stop == "validation" else 0.0
        state.update(
            validation_indices=choose_validation(scan.n_positions, fraction, rng),
            validation_history=[], discrepancy_history=[], best_validation=np.inf, best_iteration=-1,
            rng_state=rng.bit_generator.state,
        )  # fmt: skip
        state["overrelaxed"] = len(state["validation_indices"]) > 0
        state.update({"best_" + key: np.array(state[key], copy=True) for key in BEST_KEYS})
        return cls(scan, config, state)

    @classmethod
    def from_state(cls, scan: PtychoScan, config: PtychoConfig, state: dict) -> "PtychoEngine":
        return cls(scan, config, state)

    def state(self) -> dict:
        """Everything needed to continue exactly where this engine is (for checkpoints)."""
        return dict(
            slices=self.slices, probe=self.probe, positions_px=self.positions_px,
            nominal_positions_px=self.nominal_positions_px, object_origin_A=self.object_origin_A,
            tilt_mrad=self.tilt_mrad, iteration=self.iteration, loss_history=np.array(self.loss_history),
            position_velocity=self.position_velocity, position_curvature=self.position_curvature,
            searched_px=self.searched_px, scan_parameters=self.scan_parameters, scan_velocity=self.scan_velocity, mean_counts=self.mean_counts,
            stack_shift_A=self.stack_shift_A, overrelaxed=self.overrelaxed,
            warnings=np.bytes_(json.dumps(self.diagnostics.records).encode()),  # JSON [[code, message], ...]
            rng_state=self.rng.bit_generator.state, validation_indices=self.validation,
            validation_history=np.array(self.stop.validation_history),
            discrepancy_history=np.array(self.stop.discrepancy_history),
            best_validation=self.stop.best_validation, best_iteration=self.stop.best_iteration,
            patience_from=self.stop.patience_from,
            **{"best_" + key: value for key, value in self.best.items()},
        )  # fmt: skip

    # -- one iteration ---------------------------------------------------------------------------------
    def _refining(self, first: int) -> bool:
        return first >= 0 and self.iteration >= first

    def _batches(self) -> list[np.ndarray]:
        training, size = self.training, self.batch_size
        if self._data is not None:
            order = training[self.rng.permutation(len(training))]
            return [order[i : i + size] for i in range(0, len(order), size)]
        # Streaming from a file: contiguous blocks (cheap to read) in a random order.
        blocks = [training[i : i + size] for i in range(0, len(training), size)]
        return [blocks[i] for i in self.rng.permutation(len(blocks))]

    def _read(self, batch: np.ndarray) -> np.ndarray:
        return self._data[batch] if self._data is not None else self.scan.read(batch)

    def _batches_with_patterns(self):
        """This pass's training batches and their patterns; streamed from the file, the next batch is read
        while this one is fitted (read_ahead.py)."""
        batches = self._batches()
        if self._data is not None:
            return ((batch, self._data[batch]) for batch in batches)
        return read_ahead(self.scan.read, batches)

    def run_iteration(self) -> float:
        """One pass over the data; returns the mean loss per pattern."""
        cfg = self.config
        if self._coarse() and self.iteration >= cfg.split_slices_at:
            self.slices = split_slices(self.slices)
        refine_probe = self._refining(cfg.refine_probe_from)
        refine_positions = self._refining(cfg.refine_positions_from)
        refine_scan = cfg.scan_model != "none" and self._refining(cfg.refine_scan_model_from)
        position_gradients = refine_positions or refine_scan
        wrt = ["slices"] + ["probe"] * refine_probe + ["positions"] * position_gradients
        curvature = LIKELIHOOD_CURVATURE[cfg.likelihood]
        probe_intensity = np.sum(np.abs(self.probe) ** 2, axis=0)
        if position_gradients and (self.iteration - self._position_refinement_start()) % CURVATURE_EVERY == 0:
            self.position_curvature = self._position_curvature()
        gradient = np.zeros_like(self.positions_px) if refine_scan else None
        total_loss = 0.0
        # Pixels outside a batch's windows keep whatever the last iteration's filters left: project them once
        # here; from then on each batch's step projects its own windows (object_step.py).
        apply_object_constraint(self.slices, cfg.object_constraint, out=self.slices)
        # One zeroed slice-gradient buffer for the pass: each batch adds its gradient there and its step
        # clears the windows it read, so no batch allocates or clears an object. (The CUDA engine returns
        # a whole gradient per batch; accumulating on the host would first send the buffer to the device.)
        slice_gradient = np.zeros_like(self.slices) if cfg.device == "cpu" else None
        for batch, patterns in self._batches_with_patterns():
            positions = self.positions_px[batch]  # a copy: the steps below use the positions the batch was fitted at
            fit = ops.multislice_loss_grad(
                patterns, self.slices, self.probe, positions, self.slice_thickness_A,
                self.scan.energy_eV, self.sampling_A, likelihood=cfg.likelihood, tilt_mrad=self.tilt_mrad,
                wrt=wrt, device=cfg.device, threads=cfg.threads, check_data=False, accumulate_slices=slice_gradient,
            )  # fmt: skip
            total_loss += fit.loss
            self.loss_per_position[batch] = fit.loss_per_position
            self._step_slices(fit.slices, probe_intensity, positions, curvature)
            if refine_probe:
                self._step_probe(fit.probe, positions, curvature)
            if refine_scan:
                gradient[batch] = fit.positions_px
            if refine_positions:
                self._step_positions(batch, positions, fit.positions_px)
            # This batch's gradients and patterns are freed before the next batch's are made: their memory is
            # reused (and a streamed run holds two batches of patterns, not three: read_ahead.py).
            del fit, patterns
        del slice_gradient  # freed before the iteration's filters make their own stack-sized temporaries
        if refine_scan:
            self._step_scan_model(gradient)
        if refine_positions and (self.iteration - cfg.refine_positions_from) % SEARCH_EVERY == SEARCH_EVERY - 1:
            self._search_stuck_positions()
        self._finish_iteration(refine_probe, refine_positions or refine_scan)
        if cfg.recentres and self.iteration >= RECENTRE_FROM and self.iteration % RECENTRE_EVERY == 0:
            self._recentre_stack()
        mean_loss = total_loss / len(self.training)
        self.loss_history.append(mean_loss)
        self.iteration += 1
        self._self_check(refine_positions or refine_scan)
        if not math.isfinite(mean_loss):  # nothing more can be learned from a state that holds NaNs
            self.diverged = True
            self.stop.record(float("nan"), float("nan"), self.iteration)
            self.stop.stop_reason = f"the loss diverged (not finite) at iteration {self.iteration}"
            return mean_loss
        improved = self.stop.record(self._validation_loss(), self._discrepancy(mean_loss), self.iteration)
        if improved:
            self.best = {key: np.array(getattr(self, key), copy=True) for key in BEST_KEYS}
        elif self.overrelaxed and self.stop.stalled(self.iteration, cfg.patience):
            self._settle()
        return mean_loss

    def _settle(self):
        """End the over-relaxed phase (OVERRELAXATION): back to the best state, momentum cleared, the
        configured object step from here; the stopping rule counts its patience from now."""
        self._restore_best_state()
        self.position_velocity = np.zeros_like(self.position_velocity)
        self.scan_velocity = np.zeros_like(self.scan_velocity)
        self.overrelaxed = False
        self.stop.patience_from = self.iteration

    def _self_check(self, positions_refined: bool):
        """The cheap self-checks every iteration, the spectral and depth ones every GRID_CHECK_EVERY."""
        d = self.diagnostics
        d.check_loss(self.loss_history)
        d.check_probe(self.probe, self.mean_counts)
        if positions_refined:
            d.check_positions(self.position_offsets_px(), self._scan_step_px)
        if self.iteration % GRID_CHECK_EVERY == 0:
            if self._scan_grid_px is not None:
                d.check_grid(self.summed_phase(), self.nominal_positions_px, self._scan_grid_px)
            d.check_stack(self.slices, self._scanned_mask())

    def _scanned_mask(self) -> np.ndarray:
        """Object pixels inside the bounding box of the positions (the field of view the data cover)."""
        lo = np.floor(self.positions_px.min(0)).astype(int)
        hi = np.ceil(self.positions_px.max(0)).astype(int)
        mask = np.zeros(self.slices.shape[1:], bool)
        mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1] = True
        return mask

    def _validation_loss(self) -> float:
        """Mean loss per validation pattern under the current model (NaN without a validation set). The
        held-out patterns never change the object or the probe; while positions are refined, each takes
        its own position step (from its own gradient, object and probe fixed), as every position does."""
        if len(self.validation) == 0:
            return float("nan")
        cfg = self.config
        refine = self._refining(cfg.refine_positions_from)
        for i in range(0, len(self.validation), self.batch_size):
            batch = self.validation[i : i + self.batch_size]
            positions = self.positions_px[batch]
            fit = ops.multislice_loss_grad(
                self._read(batch), self.slices, self.probe, positions, self.slice_thickness_A,
                self.scan.energy_eV, self.sampling_A, likelihood=cfg.likelihood, tilt_mrad=self.tilt_mrad,
                wrt=("positions",) if refine else (), device=cfg.device, threads=cfg.threads, check_data=False,
            )  # fmt: skip
            self.loss_per_position[batch] = fit.loss_per_position
            if refine:
                self._step_positions(batch, positions, fit.positions_px)
        return float(np.mean(self.loss_per_position[self.validation]))

    def _discrepancy(self, training_loss: float, sample: int = 16) -> float:
        """Training deviance per pattern over what counting noise alone gives at the model's intensities
        (estimated on a few training positions); NaN for the amplitude likelihood."""
        cfg = self.config
        if cfg.likelihood != "poisson":
            return float("nan")
        subset = self.training[:: max(1, len(self.training) // sample)][:sample]
        intensities = ops.multislice_forward(
            self.slices, self.probe, self.positions_px[subset], self.slice_thickness_A, self.scan.energy_eV,
            self.sampling_A, tilt_mrad=self.tilt_mrad, device=cfg.device, threads=cfg.threads,
        )  # fmt: skip
        band = self._far_field_band()
        expected = np.mean(np.sum(expected_poisson_deviance(intensities[:, band]), axis=1))
        return float(training_loss / expected) if expected > 0 else float("nan")

    def _far_field_band(self) -> np.ndarray:
        """Detector pixels the band-limited model predicts (zero frequency at the centre)."""
        ny, nx = self.window
        ky = np.fft.fftshift(np.fft.fftfreq(ny, self.sampling_A[0]))[:, None]
        kx = np.fft.fftshift(np.fft.fftfreq(nx, self.sampling_A[1]))[None, :]
        return ky**2 + kx**2 < ops.bandlimit_cutoff_invA(self.sampling_A) ** 2

    def restore_best(self) -> None:
        """Go back to the state with the lowest validation loss (a no-op without a validation set). A
        state from before a coarse-to-fine split comes back split: the result has the configured slicing."""
        self._restore_best_state()
        if self._coarse():
            self.slices = split_slices(self.slices)

    def _restore_best_state(self):
        if self.stop.best_iteration >= 0:
            for key, value in self.best.items():
                setattr(self, key, np.array(value, copy=True))
            self.stack_shift_A = float(self.stack_shift_A)

    # -- the slice stack (stack.py) ------------------------------------------------------------------------
    @property
    def slice_thickness_A(self) -> float:
        """The current slices' thickness (A): the configured one, or twice it before a coarse-to-fine split."""
        return self.config.thickness_A / len(self.slices)

    def _coarse(self) -> bool:
        """Whether the stack still has the coarse slices of a coarse-to-fine schedule."""
        return len(self.slices) < self.config.stack_slices

    def _recentre_stack(self):
        """Move the sample's phase contrast back to the stack centre, the probe's focus with it."""
        self.slices, self.probe, moved_A = recentre(
            self.slices, self.probe, self._scanned_mask(), self.slice_thickness_A, self.scan.energy_eV,
            self.sampling_A, self.tilt_mrad,
        )  # fmt: skip
        self.stack_shift_A += moved_A
        if abs(self.stack_shift_A) > STACK_DRIFT_FRACTION * self.config.thickness_A:
            self.diagnostics.fire("stack_drift",
                                  f"the sample sat {self.stack_shift_A:+.1f} A along the beam from where the defocus "
                                  "and stack_centre_A placed it; the stack was re-centred on it and the probe "
                                  "refocused to match: check the defocus and the stack's placement")  # fmt: skip

    def _step_positions(self, batch: np.ndarray, positions: np.ndarray, gradient: np.ndarray):
        """A curvature-scaled gradient step with momentum for the batch's positions (``positions``, the batch's
        copy, is moved in place), each clipped to max_position_step_px and to the object. In-place arithmetic
        (the same operations in the same order): this runs after every batch."""
        cfg = self.config
        step = gradient * -cfg.position_step
        step /= self.position_curvature
        velocity = self.position_velocity[batch]
        velocity *= POSITION_MOMENTUM
        step += velocity
        step.clip(-cfg.max_position_step_px, cfg.max_position_step_px, out=step)
        self.position_velocity[batch] = step
        positions += step
        self.positions_px[batch] = positions.clip(*self._position_bounds(), out=positions)

    def _position_refinement_start(self) -> int:
        """The first iteration that refines positions, one by one or through the scan model."""
        cfg = self.config
        starts = [cfg.refine_positions_from] + [cfg.refine_scan_model_from] * (cfg.scan_model != "none")
        return min(s for s in starts if s >= 0)

    def _step_scan_model(self, gradient: np.ndarray):
        """One Gauss-Newton step of the scan model from this iteration's position gradients (N, 2) (with
        momentum), its largest displacement clipped to max_position_step_px; every position (held-out ones
        too) follows."""
        cfg = self.config
        step = cfg.position_step * self.scan_model.gauss_newton_step(gradient, self.position_curvature)
        step = step + SCAN_MOMENTUM * self.scan_velocity
        move = self.scan_model.displacement(step)
        largest = float(np.max(np.abs(move)))
        if largest > cfg.max_position_step_px:
            step, move = step * (cfg.max_position_step_px / largest), move * (cfg.max_position_step_px / largest)
        self.scan_velocity = step
        self.scan_parameters = self.scan_parameters + step
        self.positions_px = np.clip(self.positions_px + move, *self._position_bounds())

    def _search_stuck_positions(self):
        """A position far from its truth sits in a local minimum of its pattern's loss that the gradient
        cannot leave, and fits its pattern far worse than the others: search a disk of radius
        ``position_search_A`` around each such outlier, coarse grid then half-pixel (position_search.py), and
        move it to the best point. An outlier the search left where it was (it fits badly for another reason:
        the scan's edge, a defect) is not searched again until it has moved by half a pixel."""
        cfg = self.config
        losses = self.loss_per_position
        median = np.median(losses[self.training])  # the threshold comes from training patterns only
        spread = 1.4826 * np.median(np.abs(losses[self.training] - median)) + 1e-12
        outliers = np.nonzero(losses > median + OUTLIER_SIGMAS * spread)[0]
        unmoved = np.linalg.norm(self.positions_px[outliers] - self.searched_px[outliers], axis=1) < FINE_STEP_PX
        outliers = outliers[~unmoved][:MAX_SEARCHES]  # NaN (never searched) compares False: searched
        radius = cfg.position_search_A / min(self.sampling_A)
        if radius < FINE_STEP_PX or len(outliers) == 0:
            return
        step = coarse_step_px(self.scan.wavelength_A, self.scan.semiangle_mrad, self.sampling_A)
        coarse, fine = disk_offsets(radius, step), refine_offsets(step)
        bounds = self._position_bounds()
        for b in outliers:
            pattern = self._read(np.array([b]))
            start = self.positions_px[b].copy()
            best, best_loss = self._best_candidate(pattern, np.clip(start + coarse, *bounds))
            if len(fine):
                best_fine, fine_loss = self._best_candidate(pattern, np.clip(best + fine, *bounds))
                if fine_loss < best_loss:
                    best, best_loss = best_fine, fine_loss
            if best_loss < losses[b]:
                self.positions_px[b] = best
                self.position_velocity[b] = 0.0
            self.searched_px[b] = self.positions_px[b]

    def _best_candidate(self, pattern: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, float]:
        """The candidate position (pixels) whose model fits ``pattern`` best, and its loss."""
        cfg = self.config
        fit = ops.multislice_loss_grad(
            np.broadcast_to(pattern, (len(candidates), *self.window)), self.slices, self.probe, candidates,
            self.slice_thickness_A, self.scan.energy_eV, self.sampling_A, likelihood=cfg.likelihood,
            tilt_mrad=self.tilt_mrad, wrt=(), device=cfg.device, threads=cfg.threads, check_data=False,
        )  # fmt: skip
        best = int(np.argmin(fit.loss_per_position))
        return candidates[best].copy(), float(fit.loss_per_position[best])

    def _curvature_sample(self, sample: int = 32) -> tuple[np.ndarray, np.ndarray]:
        training = self.training
        subset = np.sort(training[self.rng.choice(len(training), min(sample, len(training)), replace=False)])
        return subset, self._read(subset)

    def _position_gradient(self, subset, data, offset=0.0) -> np.ndarray:
        cfg = self.config
        return ops.multislice_loss_grad(
            data, self.slices, self.probe, self.positions_px[subset] + offset, self.slice_thickness_A,
            self.scan.energy_eV, self.sampling_A, likelihood=cfg.likelihood, tilt_mrad=self.tilt_mrad,
            wrt=("positions",), device=cfg.device, threads=cfg.threads, check_data=False,
        ).positions_px  # fmt: skip

    def _position_curvature(self, shift_px: float = 0.1) -> np.ndarray:
        """d^2 L / dy^2 and d^2 L / dx^2 per position (median over a random sample of positions), from
        finite differences of the position gradient."""
        subset, data = self._curvature_sample()
        base = self._position_gradient(subset, data)
        hy = np.median((self._position_gradient(subset, data, np.array([shift_px, 0.0]))[:, 0] - base[:, 0]) / shift_px)
        hx = np.median((self._position_gradient(subset, data, np.array([0.0, shift_px]))[:, 1] - base[:, 1]) / shift_px)
        # Far from the solution the loss may be locally concave along an axis: fall back to a small step.
        fallback = np.abs(base).mean(0) / self.config.max_position_step_px + 1e-30
        return np.where(np.array([hy, hx]) > 0, np.array([hy, hx]), fallback)

    def _step_slices(self, grad: np.ndarray, probe_intensity: np.ndarray, positions: np.ndarray, curvature: float):
        """The preconditioned step and the object constraint over the batch's windows; ``grad`` is cleared
        there (object_step.py). Every slice's Newton step alone would correct the whole exit wave; taken
        together they would correct it n_slices times over, so each slice takes its share. The constraint
        projects after every step: left to the end of the pass, the many small steps of a small batch can
        pile amplitude past 1 far enough to overflow (a wrong detector calibration reached NaN within the
        first pass of 16 batches of 16)."""
        cfg = self.config
        step = cfg.object_step * (OVERRELAXATION if self.overrelaxed else 1.0)
        windowed_object_step(
            self.slices, grad, probe_intensity, positions, step=step,
            curvature=2 * curvature * len(self.slices), floor_fraction=ILLUMINATION_FLOOR,
            constraint=cfg.object_constraint, threads=cfg.threads,
        )  # fmt: skip

    def _step_probe(self, grad: np.ndarray, positions: np.ndarray, curvature: float):
        """The preconditioned probe step, its gains from the entrance slice's power over the batch's windows
        (probe_step.py)."""
        windowed_probe_step(
            self.probe, grad, self.slices[0], positions, step=self.config.probe_step, curvature=2 * curvature,
            floor_fraction=ILLUMINATION_FLOOR, threads=self.config.threads,
        )  # fmt: skip

    def _finish_iteration(self, refine_probe: bool, refine_positions: bool):
        cfg = self.config
        if self._refining(cfg.refine_tilt_from) and len(self.slices) > 2:
            self._move_shear_into_tilt()
        apply_object_constraint(self.slices, cfg.object_constraint, out=self.slices)
        if cfg.kz_strength > 0 and len(self.slices) > 1:
            self.slices = kz_filter(self.slices, self.slice_thickness_A, self.sampling_A, cfg.kz_strength)
            apply_object_constraint(self.slices, cfg.object_constraint, out=self.slices)
        if cfg.tv_weight > 0:
            self.slices = tv_step(self.slices, cfg.tv_weight)
        if refine_probe and self.probe.shape[0] > 1:
            self.probe = orthogonalise_modes(self.probe)
        if refine_positions and cfg.scan_model != "none":
            # The scan model holds the global part of the positions; the offsets keep none of it.
            self.positions_px -= self.scan_model.global_part(self.position_offsets_px())
            self.position_velocity -= self.scan_model.global_part(self.position_velocity)
        elif refine_positions:
            # A common shift, stretch or rotation of every position is (nearly) one of the object: keep the
            # corrections free of that global part so the object cannot drift into it.
            # Measured on the training positions (held-out data must not steer the training ones).
            self.positions_px -= global_part(
                self.positions_px - self.nominal_positions_px, self.nominal_positions_px, cfg.position_constraint,
                fit_on=self.training,
            )  # fmt: skip

    def _move_shear_into_tilt(self):
        """A beam tilt and a slice stack sheared along the beam give the same data; of the two, the object
        is taken unsheared (columns along the beam) and the shear measured in it moves into the tilt: a
        model tilt short of the true one by D leaves slice s displaced by -s dz tan(D)."""
        rate_px = slice_shear_rate(self.slices, self._scanned_mask())
        delta = -rate_px * np.array(self.sampling_A) / self.slice_thickness_A  # tan of the missing tilt
        self.tilt_mrad = np.arctan(np.tan(self.tilt_mrad * 1e-3) + delta) * 1e3
        depth = np.arange(len(self.slices)) - (len(self.slices) - 1) / 2
        self.slices = shift_slices(self.slices, -depth[:, None] * rate_px[None, :])

    def _position_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Window centres whose window stays inside the object (with half a pixel to spare)."""
        ny, nx = self.window
        h, w = self.slices.shape[1:]
        return np.array([ny // 2, nx // 2], float), np.array([h - ny + ny // 2 - 1, w - nx + nx // 2 - 1], float)

    # -- views -----------------------------------------------------------------------------------------
    def positions_A(self) -> np.ndarray:
        return self.positions_px * np.array(self.sampling_A) + self.object_origin_A

    def refined_defocus_A(self) -> float:
        """The probe's defocus (A) read off its phase, referred to the plane the scan's defocus refers to: the
        probe sits at the entrance of the stack, which re-centring moved ``stack_shift_A`` downstream."""
        entrance_depth_A = float(self.scan.defocus_A) - entrance_defocus_A(self.scan, self.config) - self.stack_shift_A
        return probe_defocus_A(self.probe, self.scan.energy_eV, self.sampling_A) + entrance_depth_A

    def summed_phase(self) -> np.ndarray:
        return np.sum(np.angle(self.slices), axis=0)

    def position_offsets_px(self) -> np.ndarray:
        """Each position's own correction (N, 2): what the scan model does not explain (pixels)."""
        return self.positions_px - self.nominal_positions_px - self.scan_model.displacement(self.scan_parameters)

    def scan_affine(self) -> np.ndarray:
        """The scan model's 2 x 2 map of the nominal positions, in (y, x) and A."""
        sampling = np.array(self.sampling_A)
        return self.scan_model.affine(self.scan_parameters) * sampling[:, None] / sampling[None, :]

    def scan_drift_A(self) -> np.ndarray:
        """The scan model's drift (dy, dx) in A from the first pattern to the last."""
        return self.scan_model.drift_px(self.scan_parameters) * np.array(self.sampling_A)


def global_part(corrections: np.ndarray, nominal: np.ndarray, kind: str, fit_on: np.ndarray | None = None) -> np.ndarray:
    """The part of per-position corrections (N, 2) common to all positions: their mean ("mean"), or the
    best affine map of the nominal positions ("affine"), fitted on the positions ``fit_on`` (default all)
    and evaluated at every position; zero for "none"."""
    if kind == "none":
        return np.zeros_like(corrections)
    fit_on = np.arange(len(nominal)) if fit_on is None else fit_on
    if kind == "mean" or len(fit_on) < 4:
        return np.broadcast_to(corrections[fit_on].mean(0), corrections.shape)
    centre = nominal[fit_on].mean(0)
    design = np.column_stack([nominal - centre, np.ones(len(nominal))])
    coefficients, *_ = np.linalg.lstsq(design[fit_on], corrections[fit_on], rcond=None)
    return design @ coefficients


def _raster_steps_px(scan: PtychoScan, nominal_px: np.ndarray) -> np.ndarray | None:
    """The raster's two step vectors (rows: one row down, one column on; (y, x) pixels; the median step of
    the nominal positions), or None for a scan that is not a (scan_y, scan_x) raster."""
    shape = scan.data.shape
    if len(shape) != 4 or min(shape[:2]) < 2:
        return None
    grid = nominal_px.reshape(shape[0], shape[1], 2)
    return np.stack([np.median(np.diff(grid, axis=0), axis=(0, 1)), np.median(np.diff(grid, axis=1), axis=(0, 1))])


def _scan_step_px(grid_steps_px: np.ndarray | None, positions_px: np.ndarray) -> float:
    """The scan step (pixels): the shorter raster step, or, for a list of positions, the side of the area
    each covers (bounding box / count)."""
    if grid_steps_px is not None:
        return float(np.min(np.hypot(grid_steps_px[:, 0], grid_steps_px[:, 1])))
    if len(positions_px) < 2:
        return float("inf")
    extent = np.ptp(positions_px, axis=0)
    return float(np.sqrt(max(extent[0] * extent[1], max(extent) ** 2 / len(positions_px)) / len(positions_px)))


def _starting_slices(config: PtychoConfig) -> int:
    """Slices of a fresh stack: half the configured count while a coarse-to-fine schedule is coarse."""
    coarse = config.slice_schedule == "coarse_to_fine" and config.split_slices_at > 0
    return config.stack_slices // 2 if coarse else config.stack_slices


def entrance_defocus_A(scan: PtychoScan, config: PtychoConfig) -> float:
    """The probe's defocus referred to the stack's entrance surface (what the multislice model starts from).

    With the "centre" reference the stack's centre sits ``stack_centre_A`` downstream of the reference plane,
    so its entrance is ``stack_centre_A - thickness / 2`` from it, and a crossover ``defocus_A`` downstream of
    the reference plane is ``defocus_A - stack_centre_A + thickness / 2`` downstream of the entrance."""
    if scan.defocus_reference == "entrance":
        return float(scan.defocus_A)
    return float(scan.defocus_A) - config.stack_centre_A + config.thickness_A / 2
