"""refine: the joint refinement loop, alternating a volume block and an acquisition block.

Each outer iteration first refines the volume against every tilt (:mod:`.volume_block`: L-BFGS-B, the
potential non-negative), then each tilt's acquisition parameters against its own data with the volume held
(:mod:`.acquisition`: pose, probe, positions in turn). Blocks, not one big vector: the parameters' scales
and curvatures differ by orders of magnitude, and a tilt's acquisition parameters couple only to its own
data, so they are refined one tilt at a time with that tilt's data only. A few positions of each tilt are
held out (:mod:`.holdout`); the state with the lowest loss on them is returned. Memory: the volume, the
optimiser's correction pairs (``memory_vectors`` x 2 float64 volumes) and one tilt's batch of patterns.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from . import _inputs
from .acquisition import refine_tilt
from .config import JointConfig
from .holdout import Split, split_tilt
from .model import JointModel
from .tilt import JointTilt
from .volume_block import refine_volume_block, total_loss_grad


@dataclasses.dataclass(frozen=True)
class JointResult:
    """What :func:`refine` returns.

    volume : (Z, Y, X) float32, the refined potential (V) on the model's voxel grid.
    tilts : the tilts with their refined poses, probes and positions (the given ones where not refined).
    loss : the training loss (held-out positions excluded) summed over all tilts at the start and after each
        block; ``blocks`` names each entry ("start", "volume", "acquisition").
    validation_loss : the held-out positions' loss after each block (NaN without held-out positions).
    validation_indices : per tilt, the held-out positions (indices into its scan).
    best_block : the entry whose state is returned (the lowest validation loss; the last without).
    stop_reason : "iterations" (all outer iterations ran) or "validation" (``patience`` outer iterations
        without a new lowest validation loss).
    passes : evaluations made, in passes over the whole series: an evaluation of all tilts' training positions
        counts 1, one tilt's 1 / T, and the held-out positions their share of the scan.
    timings : wall times in seconds ("total", "volume", "acquisition").
    """

    volume: np.ndarray
    tilts: list
    loss: np.ndarray
    blocks: tuple[str, ...]
    validation_loss: np.ndarray
    validation_indices: list
    best_block: int
    stop_reason: str
    passes: float
    timings: dict


def refine(model: JointModel, volume, tilts: Sequence[JointTilt], config: JointConfig | None = None, *,
           callback: Callable[[int, np.ndarray, list], None] | None = None) -> JointResult:  # fmt: skip
    """Refine ``volume`` (Z, Y, X potential, V) and the ``tilts``' acquisition jointly against their patterns.

    ``config`` (a :class:`JointConfig`; its ``enabled`` flag is not consulted here) sets the outer
    iterations, the evaluations per block, which acquisition parameters are refined and the held-out
    fraction. ``callback(outer, volume, tilts)`` runs after each outer iteration with the current state
    (e.g. to score it against a ground truth).
    """
    if not isinstance(model, JointModel):
        raise TypeError(f"model: expected an mspt.joint.JointModel, got {type(model).__name__}")
    tilts = list(tilts)
    if not tilts or not all(isinstance(t, JointTilt) for t in tilts):
        raise TypeError("tilts: expected a non-empty sequence of mspt.joint.JointTilt")
    config = JointConfig() if config is None else config
    if not isinstance(config, JointConfig):
        raise TypeError(f"config: expected an mspt.joint.JointConfig, got {type(config).__name__}")
    rng = np.random.default_rng(config.seed)
    start = np.maximum(_inputs.volume(volume), 0).astype(np.float32)
    splits = [split_tilt(t, config.validation_fraction, rng, model.grid_shape(start)) for t in tilts]
    run = _Run(model, start, splits)
    grid = model.grid_shape(run.volume)
    started = time.perf_counter()
    timings = {"volume": 0.0, "acquisition": 0.0}
    run.record("start", total_loss_grad(model, run.volume, run.train)[0], passes=1.0)
    bar = _bar(config)
    stop_reason, since_best = "iterations", 0
    for outer in range(config.outer_iterations):
        best_before = run.best_validation
        if config.volume_evaluations:
            t0 = time.perf_counter()
            run.volume, loss, n = refine_volume_block(model, run.volume, run.train, evaluations=config.volume_evaluations,
                                                      memory_vectors=config.memory_vectors)  # fmt: skip
            timings["volume"] += time.perf_counter() - t0
            run.record("volume", loss, passes=n)
        if config.refine and config.acquisition_evaluations:
            t0 = time.perf_counter()
            loss, passes = 0.0, 0.0
            for index, split in enumerate(run.splits):
                train, tilt_loss, n = refine_tilt(model, run.volume, split.train, config.refine,
                                                  config.acquisition_evaluations, grid)  # fmt: skip
                run.splits[index] = split.with_train(train)
                loss += tilt_loss
                passes += n / len(tilts)
            timings["acquisition"] += time.perf_counter() - t0
            run.record("acquisition", loss, passes=passes)
        if bar is not None:
            bar.set_postfix(loss=f"{run.loss[-1]:.6g}", validation=f"{run.validation[-1]:.6g}")
            bar.update(1)
        if callback is not None:
            callback(outer, run.volume, run.merged(tilts))
        since_best = 0 if run.best_validation < best_before else since_best + 1
        if run.has_validation and since_best >= config.patience:
            stop_reason = "validation"
            break
    if bar is not None:
        bar.close()
    timings["total"] = time.perf_counter() - started
    volume_out, splits_out, best = run.chosen()
    return JointResult(
        volume=volume_out, tilts=[s.merged(t) for s, t in zip(splits_out, tilts)], loss=np.array(run.loss),
        blocks=tuple(run.blocks), validation_loss=np.array(run.validation),
        validation_indices=[s.validation_indices for s in splits_out], best_block=best,
        stop_reason=stop_reason, passes=run.passes, timings=timings,
    )  # fmt: skip


class _Run:
    """The refinement's state, its history and the best state seen on the held-out positions."""

    def __init__(self, model: JointModel, volume: np.ndarray, splits: list[Split]):
        self.model, self.volume, self.splits = model, volume, splits
        self.has_validation = any(s.validation is not None for s in splits)
        self.loss: list[float] = []
        self.validation: list[float] = []
        self.blocks: list[str] = []
        self.passes = 0.0
        self.best_validation = np.inf
        self.best: tuple | None = None

    @property
    def train(self) -> list[JointTilt]:
        return [s.train for s in self.splits]

    def merged(self, tilts) -> list[JointTilt]:
        return [s.merged(t) for s, t in zip(self.splits, tilts)]

    def record(self, block: str, loss: float, *, passes: float) -> None:
        self.loss.append(float(loss))
        self.blocks.append(block)
        self.passes += passes
        validation = self._validation_loss()
        self.validation.append(validation)
        if self.has_validation and validation < self.best_validation:
            self.best_validation = validation
            self.best = (self.volume.copy(), list(self.splits), len(self.loss) - 1)

    def _validation_loss(self) -> float:
        if not self.has_validation:
            return float("nan")
        held = [s.validation for s in self.splits if s.validation is not None]
        self.passes += sum(t.positions_px.shape[0] for t in held) / sum(
            s.train.positions_px.shape[0] + (0 if s.validation is None else s.validation.positions_px.shape[0])
            for s in self.splits
        )
        return float(sum(
            self.model.tilt_loss_grad(self.volume, t, wrt=()).loss
            for t in held
        ))  # fmt: skip

    def chosen(self):
        """(volume, splits, block index): the best state on the held-out positions, else the last."""
        if self.best is None:
            return self.volume, self.splits, len(self.loss) - 1
        return self.best


def _bar(config: JointConfig):
    if not config.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.outer_iterations, desc="joint refinement", unit="outer")
