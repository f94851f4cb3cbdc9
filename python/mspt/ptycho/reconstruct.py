"""reconstruct(): the multislice ptychography loop (progress, checkpoints, resume)."""

from __future__ import annotations

import dataclasses
import pathlib
import time

import numpy as np

from .autotune import choose_regularisation
from .checkpoint import load_state, save_state
from .config import PtychoConfig
from .engine import PtychoEngine
from .frc import with_half_data_frc
from .memory import plan, resolved_config
from .result import PtychoResult
from .scan import PtychoScan


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="ptychography", unit="it", leave=False)


def _config_fingerprint(config: PtychoConfig, patterns_streamed: bool) -> dict:
    """The settings a resumed run must share with the run that wrote the checkpoint (the memory budgets
    only through what they decide: streaming changes the batch order)."""
    keep = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for volatile in ("iterations", "progress", "checkpoint_every", "checkpoint_path", "threads", "device",
                     "memory_budget_bytes", "host_budget_bytes", "device_budget_bytes"):  # fmt: skip
        keep.pop(volatile)
    keep["patterns_streamed"] = patterns_streamed
    return keep


def reconstruct(
    scan: PtychoScan, config: PtychoConfig = PtychoConfig(), *, resume: bool = False, overwrite: bool = False
) -> PtychoResult:
    """Reconstruct one tilt: object slices, probe modes, positions and beam tilt from a 4D-STEM scan.

    With ``resume=True`` and an existing ``config.checkpoint_path``, the run continues from the checkpoint
    and ends where an uninterrupted run would have. A new run never replaces an existing checkpoint unless
    ``overwrite=True``.

    The run's memory is planned first (:func:`mspt.ptycho.plan`): "auto" batch size and pattern budget are
    chosen there, and a run that cannot fit raises MemoryError before any pattern is read.
    """
    if not isinstance(scan, PtychoScan):
        raise TypeError(f"scan: expected an mspt.ptycho.PtychoScan, got {type(scan).__name__}")
    if not isinstance(config, PtychoConfig):
        raise TypeError(f"config: expected an mspt.ptycho.PtychoConfig, got {type(config).__name__}")
    plan(scan, config).require_fit()  # before any pattern is read: the smallest batch "auto" may choose
    mean_counts = scan.check_patterns()
    memory_plan = plan(scan, config, mean_counts=mean_counts).require_fit()  # "auto" batches hold enough counts
    config = resolved_config(config, memory_plan)
    config, regularisation = choose_regularisation(scan, config, mean_counts)
    fingerprint = _config_fingerprint(config, memory_plan.patterns_streamed)
    checkpoint = pathlib.Path(config.checkpoint_path) if config.checkpoint_path else None
    if resume and checkpoint is not None and checkpoint.exists():
        state, meta = load_state(checkpoint)
        if meta.get("config") != fingerprint:
            raise ValueError(
                f"checkpoint_path: {checkpoint} was written with different settings; resume with the same "
                "configuration or start a new run"
            )
        engine = PtychoEngine.from_state(scan, config, state)
    else:
        if checkpoint is not None and checkpoint.exists() and not overwrite:
            raise FileExistsError(
                f"checkpoint_path: {checkpoint} already exists; pass resume=True to continue that run, "
                "overwrite=True to replace it, or choose another checkpoint_path"
            )
        engine = PtychoEngine.start(scan, config, mean_counts)

    bar = _progress(config.iterations, engine.iteration, config.progress)
    started = time.perf_counter()
    iteration_times = []
    try:
        while engine.iteration < config.iterations:
            if config.stop != "fixed" and engine.stop.should_stop(config.stop, engine.iteration, config.patience):
                break
            t0 = time.perf_counter()
            loss = engine.run_iteration()
            if engine.diverged:
                break
            iteration_times.append(time.perf_counter() - t0)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
            if checkpoint is not None and config.checkpoint_every and engine.iteration % config.checkpoint_every == 0:
                save_state(checkpoint, engine.state(), {"config": fingerprint})
    finally:
        if bar is not None:
            bar.close()
    total = time.perf_counter() - started
    if not engine.stop.stop_reason:
        engine.stop.stop_reason = f"ran the {config.iterations} iterations allowed"
    iterations_run = engine.iteration
    if config.stop == "validation":
        engine.restore_best()
    sampling = engine.sampling_A
    result = PtychoResult(
        slices=engine.slices.copy(),
        probe=engine.probe.copy(),
        positions_A=engine.positions_A(),
        nominal_positions_A=engine.nominal_positions_px * np.array(sampling) + engine.object_origin_A,
        tilt_mrad=engine.tilt_mrad.copy(),
        loss=np.array(engine.loss_history),
        validation_loss=np.array(engine.stop.validation_history),
        discrepancy=np.array(engine.stop.discrepancy_history),
        stop_reason=engine.stop.stop_reason,
        iterations_run=iterations_run,
        best_iteration=engine.stop.best_iteration,
        validation_indices=engine.validation.copy(),
        regularisation=regularisation,
        summed_phase=engine.summed_phase(),
        pixel_size_A=sampling,
        slice_thickness_A=config.slice_thickness_A,
        object_origin_A=engine.object_origin_A.copy(),
        scan_affine=engine.scan_affine(),
        scan_drift_A=engine.scan_drift_A(),
        position_offsets_A=engine.position_offsets_px() * np.array(sampling),
        warnings=list(engine.diagnostics.records),
        stack_shift_A=float(engine.stack_shift_A),
        probe_defocus_A=engine.refined_defocus_A(),
        timings={"total": total, "per_iteration": float(np.mean(iteration_times)) if iteration_times else 0.0},
        config=config,
    )
    if config.self_check == "frc":
        del engine  # the two half-data runs need its memory
        result = with_half_data_frc(scan, config, result)
    return result
