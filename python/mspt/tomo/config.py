"""TomoConfig: every setting of a tomographic reconstruction with joint rigid alignment, validated on creation.

Field names are the keys of the ``[tomo]`` section of a run's TOML file. Defaults suit a tilt series of
denoised summed-phase projections of a particle that fits inside the field of view at every tilt.
"""

from __future__ import annotations

import dataclasses

from .. import _validate as v

SOLVERS = ("sirt_momentum",)
PRE_ALIGNMENTS = ("cross_correlation", "centre_of_mass", "none")
SCHEDULES = ("default", "reference")
POSE_SOLVERS = ("gauss_newton", "joint")


def _levels(value) -> tuple[int, ...]:
    try:
        levels = tuple(value)
        ok = len(levels) >= 1 and all(isinstance(f, int) and f >= 1 for f in levels)
        ok = ok and all(a > b for a, b in zip(levels, levels[1:]))
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"levels: expected decreasing positive integer downsampling factors, e.g. (4, 2, 1), got {value!r}"
        )
    return levels


def _per_level(name: str, value, n_levels: int) -> tuple[int, ...]:
    items = (value,) * n_levels if isinstance(value, int) else value
    try:
        items = tuple(items)
        ok = len(items) == n_levels and all(isinstance(n, int) and n >= 0 for n in items)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected a non-negative integer or one per level ({n_levels}), got {value!r}")
    return items


@dataclasses.dataclass(frozen=True)
class TomoConfig:
    """Settings of :func:`mspt.tomo.reconstruct`.

    Geometry
        volume_shape : (Z, Y, X) of the full-resolution volume, or "auto": the projections' field of view (X, Y, X)
            at the volume's voxel size.
        voxel_size_A : full-resolution voxel size (A), or "auto": the projections' pixel size.
    Schedule
        levels : pyramid downsampling factors, coarsest first; the last is normally 1 (full resolution).
        iterations : outer steps (volume solve, then a pose update) per level; an integer or one per level.
        volume_iterations : volume-solver iterations per outer step (warm-started from the previous volume).
        final_iterations : volume-solver iterations of the final full-resolution pass with the poses fixed.
        align_translation_from, align_rotation_from : first level (index into ``levels``) at which the
            shifts / the rotations are refined; -1 never refines them; "finest" only at the last level.
            Rotations on coarse levels are biased by the coarse voxels, so the default waits for the finest.
        pose_step : fraction of the Gauss-Newton pose step taken (1 = full step).
        max_rotation_step_deg, max_shift_step_A : caps on one pose update of one tilt.
        pose_solver : "gauss_newton" (per-tilt 5x5 Gauss-Newton on the smoothed misfit, volume fixed) or
            "joint" (rotations by a joint volume-and-rotation Gauss-Newton step; experimental: fast on
            noise-free data, erratic with noise).
        pose_momentum : heavy-ball momentum of the Gauss-Newton pose steps within a level (0 disables it;
            restarted whenever the loss rises).
        pose_trust_region : where rotations are refined, judge each tilt's pose step after the next volume
            solve against the same solve at the poses before it: a step that does not lower the tilt's misfit
            plus a prior on its rotation (below) is undone and the tilt's Levenberg-Marquardt damping raised
            tenfold (lowered threefold after an accepted step). It curbs the drift of rotations on crystalline
            data, whose projections are self-similar under small rotations (not fully: degrees remain). Costs
            one more volume solve per outer step at those levels; off by default (it helps little on the demo data).
        rotation_prior_deg : expected size of the rotation errors (deg): the standard deviation of a Gaussian
            prior on each rotation's deviation from its input pose, weighed against the misfit in units of
            the tilt's residual variance (:class:`mspt.tomo.pose_update.PoseTrial`).
        joint_iterations, joint_damping : CGLS iterations and Levenberg-Marquardt damping of the joint
            volume-and-rotation Gauss-Newton step used where rotations are refined (:mod:`mspt.tomo.joint_step`).
        pose_smoothing_px : Gaussian blur (pixels of the level) of the misfit the pose step minimises; it
            smooths the kinks trilinear interpolation puts in the misfit (see :mod:`mspt.tomo.pose_update`).
    Atom-model pose polish (recommended for atomic-resolution volumes of separate atoms)
        atom_polish : after the last level, refine the poses once more together with a model of Gaussian atoms
            (position, amplitude and width each) found in the volume, projected exactly
            (:mod:`mspt.tomo.atom_polish`); the final volume is then solved at those poses. The voxel volume
            has room to absorb most of what a tilt angle does to its projection, the atoms have not: on the
            alignment test's blob phantom it brings the rotations from 0.17-0.66 to 0.056-0.077 degree rms
            (10 noise seeds; 0.056 is the bound with the volume known). If the misfit the atoms leave holds
            structure that a volume projects to (a background or support, atoms not resolved), the voxel poses
            are kept with a warning. Its cost is a few volume solves (126-168 projector calls there, on top of
            654) plus the atom fit, which grows with atoms x tilts x (8 widths / pixel)^2.
        atom_threshold : peaks of the (smoothed) volume above the background plus this fraction of its range
            start the model; atoms it misses are found in the misfit left and kept if they pay for themselves.
        atom_separation_A : peaks closer than this (A) are one atom.
        atom_iterations : Levenberg-Marquardt steps of each joint refinement of the atoms and the poses.
    Constraints
        threshold : voxels of the coarsest volume above ``threshold`` x its maximum make up the support core.
        support : restrict the volume to that core dilated by ``support_dilation_A`` (A).
        nonnegative : clip the volume at zero.
        blur_sigma_voxel : Gaussian blur (voxels) of the final volume; 0 disables it.
        solver : volume solver, "sirt_momentum" (SIRT-preconditioned projected gradient with Nesterov momentum
            and adaptive restart).
    Alignment
        pre_align : "cross_correlation" (neighbouring tilts, common line along the tilt axis),
            "centre_of_mass", or "none".
        schedule : "default" (warm-started volume, Gauss-Newton poses) or "reference" (the published method's:
            Adam on volume and poses, the volume re-zeroed at every outer step).
        reference_volume_steps : Adam volume steps per outer step of the reference schedule (the published
            code's 50 inner iterations).
        reference_volume_rate : its volume learning rate in the published code's units, projections normalised
            to a maximum of 1 summed over voxels: a step of up to ``rate`` x max|projections| / voxel (A) per
            voxel (its 1e-3).
        reference_rotation_rate_deg, reference_shift_rate_A : its pose learning rates; the rotation rate is the
            published code's 1e-3 rad for two of its Euler angles (1e-4 rad for the third), applied here to all
            three components of the rotation vector; its shift rate is in units of the image half-width, so
            the default (A) is a choice that lets the shifts move on this scale, not a published number.
    Execution
        batch_size : projections per projector call (bounds the projector's working memory).
        threads : CPU threads (None: all). progress : show a progress bar.
        checkpoint_every : write a checkpoint every N outer steps (0: never); checkpoint_path : its file.
    """

    volume_shape: tuple[int, int, int] | str = "auto"
    voxel_size_A: float | str = "auto"
    levels: tuple[int, ...] = (4, 2, 1)
    iterations: tuple[int, ...] | int = (6, 6, 12)
    volume_iterations: int = 10
    final_iterations: int = 20
    align_translation_from: int = 0
    align_rotation_from: int | str = "finest"
    pose_step: float = 1.0
    max_rotation_step_deg: float = 1.0
    max_shift_step_A: float = 2.0
    pose_smoothing_px: float = 1.0
    atom_polish: bool = False
    atom_threshold: float = 0.2
    atom_separation_A: float = 1.5
    atom_iterations: int = 20
    pose_solver: str = "gauss_newton"
    pose_momentum: float = 0.5
    pose_trust_region: bool = False
    rotation_prior_deg: float = 1.0
    joint_iterations: int = 10
    joint_damping: float = 0.3
    threshold: float = 0.4
    support: bool = True
    support_dilation_A: float = 6.0
    nonnegative: bool = True
    blur_sigma_voxel: float = 0.5
    solver: str = "sirt_momentum"
    pre_align: str = "cross_correlation"
    schedule: str = "default"
    reference_volume_steps: int = 50
    reference_volume_rate: float = 1e-3
    reference_rotation_rate_deg: float = 0.0573  # 1e-3 rad
    reference_shift_rate_A: float = 0.02
    batch_size: int = 16
    threads: int | None = None
    progress: bool = True
    checkpoint_every: int = 0
    checkpoint_path: str | None = None

    def __post_init__(self):
        if self.volume_shape != "auto":
            try:
                shape = tuple(int(n) for n in self.volume_shape)
                ok = len(shape) == 3 and all(n >= 1 and n == m for n, m in zip(shape, self.volume_shape))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(
                    f'volume_shape: expected (Z, Y, X) positive integers or "auto", got {self.volume_shape!r}'
                )
            object.__setattr__(self, "volume_shape", shape)
        if self.voxel_size_A != "auto":
            try:
                v.positive("voxel_size_A", self.voxel_size_A)
            except ValueError:
                raise ValueError(
                    f'voxel_size_A: expected a positive number (A) or "auto", got {self.voxel_size_A!r}'
                ) from None
        levels = _levels(self.levels)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "iterations", _per_level("iterations", self.iterations, len(levels)))
        v.positive("volume_iterations", self.volume_iterations, integer=True)
        v.positive("final_iterations", self.final_iterations, integer=True, allow_zero=True)
        for name in ("align_translation_from", "align_rotation_from"):
            value = getattr(self, name)
            if value == "finest":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value < len(levels):
                raise ValueError(
                    f'{name}: expected a level index in [0, {len(levels) - 1}], -1 for never or "finest", got {value!r}'
                )
        v.fraction("pose_step", self.pose_step, low=1e-3, high=1.0)
        v.positive("max_rotation_step_deg", self.max_rotation_step_deg)
        v.positive("max_shift_step_A", self.max_shift_step_A)
        v.positive("pose_smoothing_px", self.pose_smoothing_px, allow_zero=True)
        v.choice("pose_solver", self.pose_solver, POSE_SOLVERS)
        v.fraction("pose_momentum", self.pose_momentum, high=0.99)
        v.positive("rotation_prior_deg", self.rotation_prior_deg)
        v.positive("joint_iterations", self.joint_iterations, integer=True)
        v.positive("joint_damping", self.joint_damping, allow_zero=True)
        v.fraction("threshold", self.threshold)
        v.fraction("atom_threshold", self.atom_threshold, low=1e-3, high=1.0)
        v.positive("atom_separation_A", self.atom_separation_A)
        v.positive("atom_iterations", self.atom_iterations, integer=True)
        for name in ("support", "nonnegative", "progress", "pose_trust_region", "atom_polish"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        v.positive("support_dilation_A", self.support_dilation_A, allow_zero=True)
        v.positive("blur_sigma_voxel", self.blur_sigma_voxel, allow_zero=True)
        v.choice("solver", self.solver, SOLVERS)
        v.choice("pre_align", self.pre_align, PRE_ALIGNMENTS)
        v.choice("schedule", self.schedule, SCHEDULES)
        v.positive("reference_volume_steps", self.reference_volume_steps, integer=True)
        v.positive("reference_volume_rate", self.reference_volume_rate)
        v.positive("reference_rotation_rate_deg", self.reference_rotation_rate_deg)
        v.positive("reference_shift_rate_A", self.reference_shift_rate_A)
        v.positive("batch_size", self.batch_size, integer=True)
        if self.threads is not None:
            v.positive("threads", self.threads, integer=True)
        v.positive("checkpoint_every", self.checkpoint_every, integer=True, allow_zero=True)
        if self.checkpoint_every and not self.checkpoint_path:
            raise ValueError("checkpoint_path: required when checkpoint_every > 0")

    def replace(self, **changes) -> "TomoConfig":
        return dataclasses.replace(self, **changes)

    def level_index(self, name: str) -> int:
        """``align_translation_from`` / ``align_rotation_from`` as a level index (-1: never)."""
        value = getattr(self, name)
        return len(self.levels) - 1 if value == "finest" else value
