"""The pipeline's ``[joint]`` stage: the joint refinement started from the sequential result, its analysis
(resolution and atoms, as for the sequential volume) and its report.

Its results go to the ``joint`` group of ``results.h5`` (:mod:`mspt.joint.results_file`) and
``joint/analysis``; the refined potential is exported as ``volume_joint.mrc`` (V; the sequential
``volume.mrc`` holds the summed phase per A). The sequential results are left as they are, so the two can be
compared.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .volume_analysis import analyse_volume

log = logging.getLogger("mspt.pipeline")


def joint_memory_bytes(volume_shape, config) -> int:
    """Host memory of the joint refinement: the L-BFGS-B correction pairs (2 per ``memory_vectors``) and
    about eight more float64 volumes (iterate, gradient, line search, workspace)."""
    return (2 * config.memory_vectors + 8) * 8 * int(np.prod(volume_shape))


def check_joint_memory(volume_shape, config, available_bytes: int | None = None) -> None:
    """MemoryError, with the numbers and what to change, when the refinement needs more than 80 % of the
    available memory (by default what this machine has free)."""
    from ..ptycho.memory import available_ram_bytes

    need = joint_memory_bytes(volume_shape, config)
    have = available_ram_bytes() if available_bytes is None else available_bytes
    log.info("joint: volume %s needs about %.2f GB of the %.2f GB available", tuple(volume_shape), need / 1e9, have / 1e9)
    if need > 0.8 * have:
        raise MemoryError(
            f"joint: the volume {tuple(volume_shape)} and its optimiser need about {need / 1e9:.1f} GB, more than "
            f"80 % of the {have / 1e9:.1f} GB available; set [joint] voxel_size_A larger or memory_vectors smaller"
        )


def joint_stage(config, series, store, out_dir, tomo_result, progress: bool):
    """Run (or, on resume, read back) the joint refinement; returns (summary, seconds). The stage is resumable
    as a whole: an interrupted joint stage runs again from the sequential result (no checkpoints inside)."""
    from ..io import export_volume
    from ..joint import build_start, refine
    from ..joint.results_file import save_joint_result
    from ..joint.report import save_joint_report

    if store.has("joint/analysis"):
        return _stored_summary(store), 0.0
    cfg = config.joint
    started = time.perf_counter()
    model, tilts, start = build_start(
        series, store.ptycho_results(), tomo_result, voxel_size_A=cfg.voxel_size_A, n_slices=cfg.n_slices,
        slice_thickness_A=cfg.slice_thickness_A, likelihood=cfg.likelihood, batch_size=cfg.batch_size,
        device=config.run.device, threads=config.run.threads,
    )  # fmt: skip
    check_joint_memory(start.shape, cfg)
    result = refine(model, start, tilts, cfg.replace(progress=cfg.progress and config.run.progress and progress))
    save_joint_result(store.path, result, model, overwrite=True)
    store.exports["volume_joint"] = export_volume(out_dir / "volume_joint.mrc", result.volume, model.voxel_size_A,
                                                  overwrite=True)  # fmt: skip
    res, fit, summary = analyse_volume(config, result.volume, model.voxel_size_A, "joint")
    store.add_analysis(res, fit, group="joint/analysis")
    store.add_report("joint", save_joint_report(start, result, model.voxel_size_A, out_dir / "report_joint.png"))
    log.info("joint: loss %.6g -> %.6g in %.1f passes; resolution (z, y, x) = %s A", result.loss[0],
             result.loss[-1], result.passes, summary["resolution_A"])  # fmt: skip
    return summary, time.perf_counter() - started


def _stored_summary(store) -> dict:
    """The summary a finished stage returned, read back from ``joint/analysis``."""
    from ..io import load_analysis

    analysis = load_analysis(store.path, group="joint/analysis")
    summary: dict = {"resolution_A": tuple(float(r) for r in analysis["resolution_A"])}
    if "site_found" in analysis:
        summary["found_fraction"] = float(np.mean(analysis["site_found"]))
    return summary
