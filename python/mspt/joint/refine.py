"""refine: the joint refinement loop, alternating a volume block and an acquisition block.

Each outer iteration first refines the volume against every tilt (:mod:`.volume_block`: L-BFGS-B, the
potential non-negative), then each tilt's acquisition parameters against its own data with the volume held
(:mod:`.acquisition`: pose, probe, positions in turn). Blocks, not one big vector: the parameters' scales
and curvatures differ by orders of magnitude, and a tilt's acquisition parameters couple only to its own
data, so they are refined one tilt at a time with that tilt's data only. Memory: the volume, the optimiser's
correction pairs (``memory_vectors`` x 2 float64 volumes) and one tilt's batch of patterns.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from . import _inputs
from .acquisition import refine_tilt
from .config import JointConfig
from .model import JointModel
from .tilt import JointTilt
from .volume_block import refine_volume_block, total_loss_grad


@dataclasses.dataclass(frozen=True)
class JointResult:
    """What :func:`refine` returns.

    volume : (Z, Y, X) float32, the refined potential (V) on the model's voxel grid.
    tilts : the tilts with their refined poses, probes and positions (the given ones where not refined).
    loss : the loss summed over all tilts at the start and after each block; ``blocks`` names each entry
        ("start", "volume", "acquisition").
    passes : data passes made, counted in whole tilt series (one evaluation of one tilt = 1 / T).
    timings : wall times in seconds ("total", "volume", "acquisition").
    """

    volume: np.ndarray
    tilts: list
    loss: np.ndarray
    blocks: tuple[str, ...]
    passes: float
    timings: dict


def refine(model: JointModel, volume, tilts: Sequence[JointTilt], config: JointConfig | None = None, *,
           callback: Callable[[int, np.ndarray, list], None] | None = None) -> JointResult:  # fmt: skip
    """Refine ``volume`` (Z, Y, X potential, V) and the ``tilts``' acquisition jointly against their patterns.

    ``config`` (a :class:`JointConfig`; its ``enabled`` flag is not consulted here) sets the outer
    iterations, the evaluations per block and which acquisition parameters are refined. ``callback(outer,
    volume, tilts)`` runs after each outer iteration (e.g. to score against a ground truth).
    """
    if not isinstance(model, JointModel):
        raise TypeError(f"model: expected an mspt.joint.JointModel, got {type(model).__name__}")
    tilts = list(tilts)
    if not tilts or not all(isinstance(t, JointTilt) for t in tilts):
        raise TypeError("tilts: expected a non-empty sequence of mspt.joint.JointTilt")
    config = JointConfig() if config is None else config
    if not isinstance(config, JointConfig):
        raise TypeError(f"config: expected an mspt.joint.JointConfig, got {type(config).__name__}")
    vol = np.maximum(_inputs.volume(volume), 0).astype(np.float32)
    grid = model.shape or vol.shape[1:]
    started = time.perf_counter()
    timings = {"volume": 0.0, "acquisition": 0.0}
    loss, _ = total_loss_grad(model, vol, tilts)
    history, blocks, passes = [loss], ["start"], 1.0
    bar = _bar(config)
    for outer in range(config.outer_iterations):
        if config.volume_evaluations:
            t0 = time.perf_counter()
            vol, loss, n = refine_volume_block(model, vol, tilts, evaluations=config.volume_evaluations,
                                               memory_vectors=config.memory_vectors)  # fmt: skip
            timings["volume"] += time.perf_counter() - t0
            history.append(loss), blocks.append("volume")
            passes += n
        if config.refine and config.acquisition_evaluations:
            t0 = time.perf_counter()
            refined, loss = [], 0.0
            for tilt in tilts:
                tilt, tilt_loss, n = refine_tilt(model, vol, tilt, config.refine, config.acquisition_evaluations, grid)
                refined.append(tilt)
                loss += tilt_loss
                passes += n / len(tilts)
            tilts = refined
            timings["acquisition"] += time.perf_counter() - t0
            history.append(loss), blocks.append("acquisition")
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.6g}")
            bar.update(1)
        if callback is not None:
            callback(outer, vol, tilts)
    if bar is not None:
        bar.close()
    timings["total"] = time.perf_counter() - started
    return JointResult(volume=vol, tilts=tilts, loss=np.array(history), blocks=tuple(blocks), passes=passes,
                       timings=timings)  # fmt: skip


def _bar(config: JointConfig):
    if not config.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.outer_iterations, desc="joint refinement", unit="outer")
