"""reconstruct(): tomography with joint rigid alignment (pyramid, alternating volume / pose updates,
progress, checkpoints, resume)."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time

import numpy as np

from .._validate import positive
from ..ops.projector import _rotations, _shifts
from .atom_polish import polish_poses_with_atoms
from .checkpoint import load_tomo_checkpoint, save_tomo_checkpoint
from .config import TomoConfig
from .joint_step import joint_gauss_newton_step
from .gauge import remove_rotation_gauge, remove_translation_gauge
from .pose_update import (MIN_DAMPING, PoseTrial, apply_pose_delta, gauss_newton_step, pose_system, tilt_misfit,
                          updated_damping)
from .prealign import prealign_shifts
from .reference_schedule import Adam, adam_pose_step, adam_volume
from .rotations import rotation_exp, rotation_log
from .resample import downsample_images, gaussian_blur, resample_volume
from .result import TomoResult, TomoStep
from .series_operator import LevelGeometry, SeriesProjector
from .support import support_from_volume, support_on_grid
from .volume_solver import sirt_weights, solve_volume


@dataclasses.dataclass
class _RunState:
    """Everything a checkpoint must hold for a resumed run to end where an uninterrupted one would."""

    level: int  # index into config.levels; len(levels) once the final pass is due
    step: int  # next outer step within the level
    volume: np.ndarray | None  # at the grid of level ``volume_level``
    volume_level: int
    rotation: np.ndarray
    shifts_A: np.ndarray
    support: np.ndarray | None  # on the coarsest grid, once built
    loss: list
    loss_levels: list
    calls: list  # one-element counter shared with the operators
    timings: dict
    pose_adam: Adam | None = None  # reference schedule only
    pose_velocity: np.ndarray | None = None  # (T, 5) momentum of the pose steps at this level
    pose_trial: PoseTrial | None = None  # the poses before the last pose step, judged after the next volume solve
    pose_damping: np.ndarray | None = None  # (T,) Levenberg-Marquardt damping of each tilt's pose step


def _seed_volume_unit(data: np.ndarray, voxel_A: float) -> float:
    """The unit of the reference schedule's volume learning rate: the published code normalises the projections
    to a maximum of 1 and sums voxels along the ray, so its rate is in (projection maximum) per voxel; in mspt's
    volume units (projection units per A) that is max|b| / voxel_A."""
    return max(float(np.max(np.abs(data))), 1e-30) / voxel_A


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="tomography", unit="step", leave=False)


def _fingerprint(config: TomoConfig, projections: np.ndarray) -> dict:
    keep = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for volatile in ("progress", "checkpoint_every", "checkpoint_path", "threads", "batch_size"):
        keep.pop(volatile)
    keep = {k: list(v) if isinstance(v, tuple) else v for k, v in keep.items()}
    keep["projections_shape"] = list(projections.shape)
    return keep


def _check_inputs(projections, rotation, shifts_A, pixel_size_A, config):
    if not isinstance(config, TomoConfig):
        raise TypeError(f"config: expected an mspt.tomo.TomoConfig, got {type(config).__name__}")
    try:
        data = np.asarray(projections, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError("projections: expected a real (T, Y, X) array") from None
    if data.ndim != 3 or min(data.shape) < 1:
        raise ValueError(f"projections: expected shape (T, Y, X), got {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("projections: expected finite values (found NaN or inf)")
    rot = _rotations(rotation)
    if rot.shape[0] != data.shape[0]:
        raise ValueError(f"rotation: expected {data.shape[0]} rotations (one per projection), got {rot.shape[0]}")
    shifts = _shifts(shifts_A, rot.shape[0])
    pixel = positive("pixel_size_A", pixel_size_A)
    return np.ascontiguousarray(data), rot, shifts, pixel


def _geometries(config: TomoConfig, projection_shape, pixel_A: float) -> list[LevelGeometry]:
    """The pyramid's levels, then the full-resolution grid of the final pass."""
    py, px = projection_shape
    voxel = pixel_A if config.voxel_size_A == "auto" else float(config.voxel_size_A)
    # "auto": the projections' field of view (x, y) and its width along z, at the volume's voxel size.
    ny, nx = (max(1, round(n * pixel_A / voxel)) for n in (py, px))
    shape = (nx, ny, nx) if config.volume_shape == "auto" else config.volume_shape
    out = []
    for f in (*config.levels, 1):
        volume_shape = tuple(-(-n // f) for n in shape)
        out.append(LevelGeometry(f, volume_shape, voxel * f, (-(-py // f), -(-px // f)), pixel_A * f))
    return out


def reconstruct(projections, rotation, shifts_A=None, *, pixel_size_A: float, config: TomoConfig = TomoConfig(),
                resume: bool = False, overwrite: bool = False, callback=None) -> TomoResult:  # fmt: skip
    """Reconstruct a volume from a tilt series while refining each projection's pose.

    Parameters
    ----------
    projections : (T, Y, X) real projections (e.g. summed phase, rad) on pixels of ``pixel_size_A`` (A).
    rotation : (T, 3, 3) nominal active rotations (e.g. ``mspt.ops.tilt_series_rotations(tilts_deg)``).
    shifts_A : (T, 2) nominal (dy, dx) shifts in A; default zero.
    config : :class:`TomoConfig`.
    resume : continue from ``config.checkpoint_path`` if it exists; the run ends where an uninterrupted run
        would. A new run never replaces an existing checkpoint unless ``overwrite=True``.
    callback : called with a :class:`mspt.tomo.result.TomoStep` (poses, loss, projector calls so far) after
        every outer step, e.g. to follow the pose errors of a simulation against its projector calls; if it
        returns True the schedule ends after that step (the final volume pass still runs).

    Schedule ("default"): pre-alignment of the shifts; then, from the coarsest pyramid level to the finest,
    outer steps of (warm-started volume solve, Gauss-Newton pose update); where rotations are refined, each
    tilt's pose step is kept only if the next volume solve, compared with the same solve at the old poses,
    confirms it against a prior on the rotation (``pose_trust_region``); the support is built from the
    coarsest level's volume; optionally (``atom_polish``, recommended for volumes of separate atoms) the poses
    refined once more together with a Gaussian-atom model of the volume (:mod:`mspt.tomo.atom_polish`); a final
    full-resolution volume pass with the poses fixed and an optional blur.
    Schedule ("reference"): the published method's Adam schedule through the same operators
    (:mod:`mspt.tomo.reference_schedule`), for comparison.
    Gauge: the pose corrections carry no common rotation and no common 3D translation (removed after every
    pose update, :mod:`mspt.tomo.gauge`), so the volume stays in the frame of the poses given.

    Memory: about 7 volumes (Z Y X float32: iterate, previous iterate, momentum point, step, SIRT weights,
    support, one batch's back-projection) plus about 12 projection stacks (T Py Px: data, model, previous
    model, SIRT weights, residual, and in the pose update 3 rotated models and 5 Jacobian columns in float64)
    at the finest level; e.g. 512^3 with 36 tilts of 512^2: ~3.8 GB + ~1.6 GB; the pose trust region adds 3
    volumes and 2 projection stacks (the volume and model before the step, the control solve); the atom polish
    about 60 bytes per atom, tilt and pixel of an atom's window (8 widths across) on top of a few volumes and
    projection stacks, e.g. 5000 atoms 1.5 pixels wide in 36 tilts: 5000 x 36 x 13^2 x 60 B ~ 1.8 GB.
    No T x volume intermediate.
    """
    data, rot_in, shifts_in, pixel = _check_inputs(projections, rotation, shifts_A, pixel_size_A, config)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable taking a TomoStep, or None, got {type(callback).__name__}")
    geometries = _geometries(config, data.shape[1:], pixel)
    fingerprint = _fingerprint(config, data)
    checkpoint = pathlib.Path(config.checkpoint_path) if config.checkpoint_path else None
    started = time.perf_counter()

    if resume and checkpoint is not None and checkpoint.exists():
        arrays, meta = load_tomo_checkpoint(checkpoint)
        if meta.get("config") != fingerprint:
            raise ValueError(
                f"checkpoint_path: {checkpoint} was written with different settings or data; resume with the "
                "same configuration and projections, or start a new run"
            )
        state = _RunState(
            level=meta["level"], step=meta["step"], volume=arrays["volume"], volume_level=meta["volume_level"],
            rotation=arrays["rotation"], shifts_A=arrays["shifts_A"],
            support=arrays["support"] if meta["has_support"] else None,
            loss=list(arrays["loss_history"]), loss_levels=list(arrays["loss_levels"]), calls=[meta["calls"]],
            timings=meta["timings"],
            pose_adam=Adam((len(data), 5), arrays["adam_m"], arrays["adam_v"], meta["adam_count"])
            if "adam_m" in arrays else None,
            pose_velocity=arrays.get("pose_velocity"),
            pose_damping=arrays.get("pose_damping"),
            pose_trial=PoseTrial(arrays["trial_rotation"], arrays["trial_shifts_A"], arrays["trial_volume"],
                                 arrays["trial_model"]) if "trial_rotation" in arrays else None,
        )  # fmt: skip
    else:
        if checkpoint is not None and checkpoint.exists() and not overwrite:
            raise FileExistsError(
                f"checkpoint_path: {checkpoint} already exists; pass resume=True to continue that run, "
                "overwrite=True to replace it, or choose another checkpoint_path"
            )
        t0 = time.perf_counter()
        shifts = prealign_shifts(data, rot_in, shifts_in, pixel, config.pre_align)
        timings = {"prealign": time.perf_counter() - t0}
        state = _RunState(0, 0, None, -1, rot_in.copy(), shifts, None, [], [], [0.0], timings)

    run = _Run(config, data, rot_in, shifts_in, geometries, state, checkpoint, fingerprint, callback)
    bar = _progress(sum(config.iterations) + 1, run.steps_done(), config.progress)
    try:
        run.run(bar)
    finally:
        if bar is not None:
            bar.close()
    state.timings["total"] = time.perf_counter() - started  # this call's share when resumed
    return run.result()


class _Run:
    """The loop over levels and outer steps; one instance per call of :func:`reconstruct`."""

    def __init__(self, config, data, rot_in, shifts_in, geometries, state: _RunState, checkpoint, fingerprint,
                 callback=None):  # fmt: skip
        self.config, self.data, self.rot_in, self.shifts_in = config, data, rot_in, shifts_in
        self.geometries, self.state, self.checkpoint, self.fingerprint = geometries, state, checkpoint, fingerprint
        self.callback = callback
        self.final_volume = self.final_model = self.final_support = None

    def steps_done(self) -> int:
        return sum(self.config.iterations[: self.state.level]) + self.state.step

    def _operator(self, geometry: LevelGeometry) -> SeriesProjector:
        return SeriesProjector(geometry, self.config.batch_size, self.config.threads, self.state.calls)

    def _level_volume(self, level: int) -> np.ndarray:
        """The current volume carried to ``level``'s grid (zeros before the first level)."""
        s, geometry = self.state, self.geometries[level]
        if s.volume is None:
            return np.zeros(geometry.volume_shape, dtype=np.float32)
        if s.volume_level == level:
            return s.volume
        voxel_A = self.geometries[s.volume_level].voxel_A
        return resample_volume(s.volume, voxel_A, geometry.volume_shape, geometry.voxel_A)

    def _level_support(self, level: int) -> np.ndarray:
        geometry = self.geometries[level]
        if self.state.support is None:
            return np.ones(geometry.volume_shape, dtype=bool)
        return support_on_grid(self.state.support, self.geometries[0].voxel_A, geometry.volume_shape, geometry.voxel_A)

    def _record(self, loss: float, data: np.ndarray, factor: int) -> None:
        self.state.loss.append(2.0 * loss / max(float(np.sum(data.astype(np.float64) ** 2)), 1e-300))
        self.state.loss_levels.append(factor)

    def run(self, bar) -> None:
        config, s = self.config, self.state
        while s.level < len(config.levels):
            t0 = time.perf_counter()
            level = s.level
            geometry = self.geometries[level]
            data = downsample_images(self.data, geometry.factor)
            s.volume, s.volume_level = self._level_volume(level), level
            support = self._level_support(level)
            op = self._operator(geometry)
            refine_shifts = 0 <= config.level_index("align_translation_from") <= level
            refine_rotation = 0 <= config.level_index("align_rotation_from") <= level
            if config.schedule == "reference" and (s.pose_adam is None or s.step == 0):
                s.pose_adam = Adam((len(data), 5))
            if s.step == 0:
                s.pose_velocity = s.pose_trial = s.pose_damping = None
            stop = False
            while s.step < config.iterations[level] and not stop:
                if config.schedule == "reference":
                    self._reference_step(op, data, support, refine_rotation, refine_shifts)
                else:
                    self._default_step(op, data, support, refine_rotation, refine_shifts)
                s.step += 1
                if self.callback is not None:
                    stop = self.callback(TomoStep(geometry.factor, s.step - 1, s.rotation.copy(), s.shifts_A.copy(),
                                                  s.loss[-1], float(s.calls[0]))) is True  # fmt: skip
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(level=geometry.factor, loss=f"{s.loss[-1]:.3g}")
                key = f"level_{geometry.factor}"
                s.timings[key] = s.timings.get(key, 0.0) + time.perf_counter() - t0
                t0 = time.perf_counter()
                every = config.checkpoint_every
                if self.checkpoint is not None and every and self.steps_done() % every == 0 and not stop:
                    self._save_checkpoint()
            if level == 0 and config.support:
                s.support = support_from_volume(s.volume, geometry.voxel_A, config.threshold, config.support_dilation_A)
            s.level, s.step = (len(config.levels) if stop else level + 1), 0
        if config.atom_polish:
            t0 = time.perf_counter()
            self._atom_polish()
            s.timings["atom_polish"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._final_pass()
        s.timings["final"] = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)

    def _default_step(self, op, data, support, refine_rotation, refine_shifts) -> None:
        s, config = self.state, self.config
        weights = sirt_weights(op, support, s.rotation, s.shifts_A)
        model = op.forward(s.volume, s.rotation, s.shifts_A) if s.volume.any() else np.zeros_like(data)
        solution = solve_volume(op, data, s.volume, model, s.rotation, s.shifts_A, weights,
                                config.volume_iterations, config.nonnegative)  # fmt: skip
        s.volume = solution.volume
        self._record(solution.loss, data, op.geometry.factor)
        if config.pose_solver == "joint" and refine_rotation:
            # Both updates start from the same state (a simultaneous step): the rotations by the joint step,
            # which accounts for what the volume absorbs; the shifts by the smoothed Gauss-Newton step.
            _, shifts = gauss_newton_step(
                op, s.volume, solution.model, data, s.rotation, s.shifts_A, refine_rotation=False,
                refine_shifts=refine_shifts, step=config.pose_step, max_rotation_rad=0.0,
                max_shift_A=config.max_shift_step_A, smoothing_px=config.pose_smoothing_px,
            ) if refine_shifts else (None, s.shifts_A)  # fmt: skip
            rotation, _ = joint_gauss_newton_step(
                op, s.volume, solution.model, data, s.rotation, s.shifts_A, weights, support,
                iterations=config.joint_iterations, refine_shifts=False, step=config.pose_step,
                max_rotation_rad=math.radians(config.max_rotation_step_deg), max_shift_A=config.max_shift_step_A,
                damping=config.joint_damping, nonnegative=config.nonnegative,
            )  # fmt: skip
            self._set_poses(rotation, shifts)
        elif refine_rotation or refine_shifts:
            self._gauss_newton_poses(op, data, support, solution, refine_rotation, refine_shifts)

    def _gauss_newton_poses(self, op, data, support, solution, refine_rotation, refine_shifts) -> None:
        """The pose update of the default schedule: per tilt Levenberg-Marquardt on the smoothed misfit with
        the volume fixed and heavy-ball momentum; where rotations are refined, each step is kept only where the
        misfit re-solved at the new poses, with a prior on the rotation, confirms it
        (:class:`mspt.tomo.pose_update.PoseTrial`)."""
        s, config = self.state, self.config
        model = solution.model
        if s.pose_damping is None:
            s.pose_damping = np.full(len(data), MIN_DAMPING)
        trust = config.pose_trust_region and refine_rotation
        if trust and s.pose_trial is not None:
            trial = s.pose_trial
            control = solve_volume(op, data, trial.volume, trial.model, trial.rotation, trial.shifts_A,
                                   sirt_weights(op, support, trial.rotation, trial.shifts_A), config.volume_iterations,
                                   config.nonnegative)  # fmt: skip
            accepted = trial.accepted(
                tilt_misfit(control.model, data),
                tilt_misfit(model, data),
                rotation_log(trial.rotation @ np.swapaxes(self.rot_in, 1, 2)),
                rotation_log(s.rotation @ np.swapaxes(self.rot_in, 1, 2)), math.radians(config.rotation_prior_deg),
            )  # fmt: skip
            s.pose_damping = updated_damping(s.pose_damping, accepted)
            if not accepted.all():  # those tilts go back to their poses before the step, with the control's volume
                rotation, shifts = s.rotation.copy(), s.shifts_A.copy()
                rotation[~accepted], shifts[~accepted] = trial.rotation[~accepted], trial.shifts_A[~accepted]
                self._set_poses(rotation, shifts)
                if not accepted.any():
                    s.volume = control.volume
                model = op.forward(s.volume, s.rotation, s.shifts_A)
                if s.pose_velocity is not None:
                    s.pose_velocity[~accepted] = 0.0
        system = pose_system(op, s.volume, model, data, s.rotation, s.shifts_A, refine_rotation=refine_rotation,
                             refine_shifts=refine_shifts, smoothing_px=config.pose_smoothing_px)  # fmt: skip
        delta = config.pose_step * system.solve(s.pose_damping)
        rotation, shifts = apply_pose_delta(
            s.rotation, s.shifts_A, delta, refine_rotation=refine_rotation, refine_shifts=refine_shifts,
            max_rotation_rad=math.radians(config.max_rotation_step_deg), max_shift_A=config.max_shift_step_A,
        )  # fmt: skip
        step = np.concatenate([rotation_log(rotation @ np.swapaxes(s.rotation, 1, 2)), shifts - s.shifts_A], 1)
        # Heavy-ball momentum on the pose steps: the volume absorbs part of every correction, so the
        # alternation creeps along the same direction step after step; momentum follows that direction.
        # It restarts when the loss at this level rose.
        rising = len(s.loss) > 1 and s.loss_levels[-2] == s.loss_levels[-1] and s.loss[-1] > s.loss[-2]
        keep = 0.0 if (s.pose_velocity is None or rising) else config.pose_momentum
        s.pose_velocity = step + keep * (s.pose_velocity if s.pose_velocity is not None else 0.0)
        v = s.pose_velocity
        s.pose_trial = PoseTrial(s.rotation.copy(), s.shifts_A.copy(), s.volume, model) if trust else None
        self._set_poses(rotation_exp(v[:, :3]) @ s.rotation, s.shifts_A + v[:, 3:])

    def _reference_step(self, op, data, support, refine_rotation, refine_shifts) -> None:
        s, config = self.state, self.config
        rate = config.reference_volume_rate * _seed_volume_unit(data, op.geometry.voxel_A)
        s.volume, model = adam_volume(op, data, s.rotation, s.shifts_A, support, config.reference_volume_steps,
                                      rate, config.nonnegative)  # fmt: skip
        self._record(0.5 * float(np.sum((model - data).astype(np.float64) ** 2)), data, op.geometry.factor)
        if refine_rotation or refine_shifts:
            rotation, shifts = adam_pose_step(
                op, s.volume, model, data, s.rotation, s.shifts_A, s.pose_adam, refine_rotation=refine_rotation,
                refine_shifts=refine_shifts, rotation_rate_rad=math.radians(config.reference_rotation_rate_deg),
                shift_rate_A=config.reference_shift_rate_A,
            )  # fmt: skip
            self._set_poses(rotation, shifts)

    def _set_poses(self, rotation, shifts) -> None:
        rotation = remove_rotation_gauge(rotation, self.rot_in)
        self.state.rotation = rotation
        self.state.shifts_A = remove_translation_gauge(shifts, self.shifts_in, rotation)

    def _atom_polish(self) -> None:
        """The poses refined with a Gaussian-atom model of the full-resolution volume (``atom_polish``)."""
        s, config = self.state, self.config
        finest = len(self.geometries) - 1
        volume = self._level_volume(finest)
        polish = polish_poses_with_atoms(
            self._operator(self.geometries[finest]), volume, self._level_support(finest), self.data, s.rotation,
            s.shifts_A, threshold=config.atom_threshold, min_separation_A=config.atom_separation_A,
            iterations=config.atom_iterations, volume_iterations=config.volume_iterations,
        )  # fmt: skip
        if polish.accepted:
            self._set_poses(polish.rotation, polish.shifts_A)

    def _final_pass(self) -> None:
        s, config = self.state, self.config
        geometry = self.geometries[-1]
        op = self._operator(geometry)
        volume = self._level_volume(len(self.geometries) - 1)
        support = self._level_support(len(self.geometries) - 1)
        if config.schedule == "reference":
            rate = config.reference_volume_rate * _seed_volume_unit(self.data, geometry.voxel_A)
            volume, model = adam_volume(op, self.data, s.rotation, s.shifts_A, support,
                                        max(config.final_iterations, 1), rate, config.nonnegative)  # fmt: skip
            loss = 0.5 * float(np.sum((model - self.data).astype(np.float64) ** 2))
        else:
            model = op.forward(volume, s.rotation, s.shifts_A)
            if config.final_iterations:
                weights = sirt_weights(op, support, s.rotation, s.shifts_A)
                solution = solve_volume(op, self.data, volume, model, s.rotation, s.shifts_A, weights,
                                        config.final_iterations, config.nonnegative)  # fmt: skip
                volume, model = solution.volume, solution.model
            loss = 0.5 * float(np.sum((model - self.data).astype(np.float64) ** 2))
        self._record(loss, self.data, 1)
        self.final_model, self.final_support = model, support
        self.final_volume = gaussian_blur(volume, config.blur_sigma_voxel) if config.blur_sigma_voxel else volume

    def _save_checkpoint(self) -> None:
        s = self.state
        arrays = {
            "volume": s.volume, "rotation": s.rotation, "shifts_A": s.shifts_A,
            "support": s.support if s.support is not None else np.zeros(0, dtype=bool),
            "loss_history": np.asarray(s.loss, dtype=float), "loss_levels": np.asarray(s.loss_levels, dtype=int),
        }  # fmt: skip
        meta = {"config": self.fingerprint, "level": s.level, "step": s.step, "volume_level": s.volume_level,
                "has_support": s.support is not None, "calls": s.calls[0],
                "timings": s.timings}  # fmt: skip
        if s.pose_velocity is not None:
            arrays["pose_velocity"] = s.pose_velocity
        if s.pose_damping is not None:
            arrays["pose_damping"] = s.pose_damping
        if s.pose_trial is not None:
            trial = s.pose_trial
            arrays.update(trial_rotation=trial.rotation, trial_shifts_A=trial.shifts_A, trial_volume=trial.volume,
                          trial_model=trial.model)  # fmt: skip
        if s.pose_adam is not None:
            arrays.update(adam_m=s.pose_adam.m, adam_v=s.pose_adam.v)
            meta["adam_count"] = s.pose_adam.count
        save_tomo_checkpoint(self.checkpoint, arrays, meta)

    def result(self) -> TomoResult:
        s = self.state
        residual = self.final_model - self.data
        norms = np.sqrt(np.sum(self.data.astype(np.float64) ** 2, axis=(1, 2)))
        return TomoResult(
            volume=self.final_volume.astype(np.float32),
            voxel_size_A=self.geometries[-1].voxel_A,
            support=self.final_support,
            rotation=s.rotation,
            shifts_A=s.shifts_A,
            initial_rotation=self.rot_in,
            initial_shifts_A=self.shifts_in,
            loss=np.asarray(s.loss),
            residuals=np.sqrt(np.sum(residual.astype(np.float64) ** 2, axis=(1, 2))) / np.maximum(norms, 1e-300),
            levels=np.asarray(s.loss_levels),
            projector_calls=float(s.calls[0]),
            timings=dict(s.timings),
            config=self.config,
        )
