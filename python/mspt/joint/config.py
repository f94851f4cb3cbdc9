"""JointConfig: the ``[joint]`` section, the joint refinement's settings (DESIGN.md's frozen-config pattern)."""

from __future__ import annotations

import dataclasses

from .. import _validate as v
from .. import ops

ACQUISITION = ("poses", "probe", "positions")


@dataclasses.dataclass(frozen=True)
class JointConfig:
    """The joint refinement, run after the sequential method from its result (``[joint]`` in a run TOML).

    enabled : run it as the pipeline's last stage.
    outer_iterations : alternations of a volume block and an acquisition block (each tilt's ``refine``
        parameters in turn).
    volume_evaluations : loss-and-gradient passes over all tilts per volume block (L-BFGS-B with the
        potential kept non-negative).
    acquisition_evaluations : passes over one tilt's data per parameter block (L-BFGS).
    refine : which acquisition parameters are refined besides the volume: any of "poses" (rotation and
        shifts), "probe" (the modes) and "positions"; an empty list refines the volume alone.
    voxel_size_A : the refined volume's voxel (A); default the ptychography pixel, so the volume can hold
        what the patterns resolve (the sequential volume is resampled onto it).
    n_slices, slice_thickness_A : the slab stack; default the ptychography's.
    likelihood : "poisson" or "amplitude". batch_size : scan positions per multislice call.
    memory_vectors : L-BFGS correction pairs kept for the volume (each costs two float64 volumes).
    validation_fraction : fraction of each tilt's positions held out of the fit (:mod:`.holdout`); the
        state with the lowest loss on them is returned, and the run stops after ``patience`` outer
        iterations without a new lowest. 0 fits every position and returns the last state.
    patience : see ``validation_fraction``. seed : the held-out positions' random choice.
    progress : a progress bar over the outer iterations.
    """

    enabled: bool = False
    outer_iterations: int = 3
    volume_evaluations: int = 10
    acquisition_evaluations: int = 5
    refine: tuple[str, ...] = ACQUISITION
    voxel_size_A: float | None = None
    n_slices: int | None = None
    slice_thickness_A: float | None = None
    likelihood: str = "poisson"
    batch_size: int = 256
    memory_vectors: int = 8
    validation_fraction: float = 0.05
    patience: int = 2
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        for name in ("enabled", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        v.positive("outer_iterations", self.outer_iterations, integer=True)
        v.positive("volume_evaluations", self.volume_evaluations, integer=True, allow_zero=True)
        v.positive("acquisition_evaluations", self.acquisition_evaluations, integer=True, allow_zero=True)
        refine = (self.refine,) if isinstance(self.refine, str) else tuple(self.refine)
        unknown = [p for p in refine if p not in ACQUISITION]
        if unknown:
            raise ValueError(f"refine: unknown {unknown}; expected any of {list(ACQUISITION)}")
        object.__setattr__(self, "refine", refine)
        if self.voxel_size_A is not None:
            v.positive("voxel_size_A", self.voxel_size_A)
        if self.n_slices is not None:
            v.positive("n_slices", self.n_slices, integer=True)
        if self.slice_thickness_A is not None:
            v.positive("slice_thickness_A", self.slice_thickness_A)
        v.choice("likelihood", self.likelihood, ops.LIKELIHOODS)
        v.positive("batch_size", self.batch_size, integer=True)
        v.positive("memory_vectors", self.memory_vectors, integer=True)
        v.fraction("validation_fraction", self.validation_fraction, high=0.5)
        v.positive("patience", self.patience, integer=True)
        v.positive("seed", self.seed, integer=True, allow_zero=True)
        if self.volume_evaluations == 0 and not (self.refine and self.acquisition_evaluations):
            raise ValueError("volume_evaluations: 0 with nothing to refine in the acquisition block "
                             "(acquisition_evaluations 0 or refine empty) would refine nothing")  # fmt: skip

    def replace(self, **changes) -> "JointConfig":
        return dataclasses.replace(self, **changes)
