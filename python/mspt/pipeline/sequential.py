"""``mspt.run(config)``: the whole sequential method, from a tilt series to a volume, atoms and figures.

Stages, each resumable (a finished stage's group in ``results.h5`` is its proof of completion):

1. ptycho      per tilt, on Dask or in this process; each tilt checkpoints and lands in its own file first
2. projections summed phases on one grid centred on the rotation axis, then denoised
3. tomo        volume and refined poses
4. analysis    resolution from the power spectrum; with a structure, lattice registration and atom fitting
5. joint       with ``[joint] enabled``: the joint refinement from the sequential result, then its own
               analysis (:mod:`.joint_stage`)

Outputs in ``[output] dir``: ``results.h5`` (DESIGN.md schema, the configuration as TOML in its root
attributes), ``report_*.png``, ``volume.mrc`` and ``atoms.xyz`` exports, ``mspt.log``; the per-tilt files
and checkpoints in ``work/``. Nothing existing is overwritten unless ``overwrite`` is set, and
``resume=True`` continues an interrupted run from where it stopped, with the same result; a resumed run
may change ``[joint]`` (the sequential stages are kept, the joint stage is run again), ``[output]`` and
``[run]``.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import pathlib
import time

import numpy as np

from .. import __version__
from .fanout import run_jobs, tilt_jobs
from .joint_stage import joint_stage
from .outputs import ResultsStore
from .projections import projection_stack
from .volume_analysis import analyse_volume

log = logging.getLogger("mspt.pipeline")

RESULTS_NAME = "results.h5"


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """Where a run's outputs are, and the headline numbers."""

    out_dir: pathlib.Path
    results_path: pathlib.Path
    reports: dict
    exports: dict
    timings: dict
    resolution_A: tuple | None
    atoms_found_fraction: float | None
    joint: dict | None = None


def run(config, *, out=None, resume: bool = False, overwrite: bool | None = None, scheduler: str | None = None,
        device: str | None = None, progress: bool = True) -> PipelineResult:  # fmt: skip
    """Run the sequential pipeline for ``config`` (a RunConfig, or a TOML path or text).

    ``out``, ``scheduler``, ``device`` and ``overwrite`` override the configuration's ``[output] dir``,
    ``[run] scheduler``, ``[run] device`` and ``[output] overwrite``.
    """
    from ..config import RunConfig, load_config, to_toml

    if not isinstance(config, RunConfig):
        config = load_config(config)
    config = _with_overrides(config, out=out, overwrite=overwrite, scheduler=scheduler, device=device)
    out_dir = pathlib.Path(config.output.dir)
    store = ResultsStore(out_dir / RESULTS_NAME)
    timings: dict = {}
    with _open_series(config) as series:  # the input is checked before anything is written
        _prepare_output(out_dir, store, config, resume)
        handler = _log_to(out_dir / "mspt.log")
        try:
            log.info("mspt %s: run in %s (resume=%s)", __version__, out_dir, resume)
            store.write_root_attrs(config_toml=to_toml(config), version=__version__, started=_now())
            shown = progress and config.run.progress
            timings["ptycho"] = _timed(lambda: _ptycho_stage(config, series, store, out_dir, shown))
            started = time.perf_counter()
            projections, pixel = _projection_stage(config, store, out_dir, shown)
            timings["projections"] = time.perf_counter() - started
            tomo_result, timings["tomo"] = _tomo_stage(config, series, store, out_dir, projections, pixel, shown)
            analysis, timings["analysis"] = _analysis_stage(config, store, out_dir, tomo_result)
            joint = None
            if config.joint.enabled:
                joint, timings["joint"] = joint_stage(config, series, store, out_dir, tomo_result, shown)
            store.write_root_attrs(finished=_now())
            log.info("finished: %s", store.path)
        finally:
            logging.getLogger("mspt").removeHandler(handler)
            handler.close()
    return PipelineResult(
        out_dir=out_dir, results_path=store.path, reports=store.reports, exports=store.exports, timings=timings,
        resolution_A=analysis.get("resolution_A"), atoms_found_fraction=analysis.get("found_fraction"), joint=joint,
    )  # fmt: skip


# -- stages ----------------------------------------------------------------------------------------------
def _ptycho_stage(config, series, store: ResultsStore, out_dir: pathlib.Path, progress: bool) -> None:
    from ..ptycho import load_result, save_report

    missing = [i for i in range(series.n_tilts) if not store.has(f"ptycho/{i:03d}")]
    if not missing:
        log.info("ptycho: all %d tilts already done", series.n_tilts)
        return
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    ptycho_config = config.ptycho.replace(device=config.run.device)
    if config.run.threads is not None:
        ptycho_config = ptycho_config.replace(threads=config.run.threads)
    jobs = tilt_jobs(config.input.tiltseries, missing, ptycho_config, work, store.tilt_file, config.run.checkpoint_every)
    workers = _workers(config, len(jobs))
    log.info("ptycho: %d tilts on %s", len(jobs), config.run.scheduler or f"{workers} local worker(s)")
    bar = _bar(len(jobs), "ptychography (tilts)", progress)

    def done(job):
        # Land each tilt in the results file as soon as it is finished (this process is the only writer).
        store.link_ptycho(job.index)
        result = load_result(job.output, job.index)
        if job.index == 0 or job.index == series.n_tilts // 2:
            store.add_report(f"ptycho_{job.index:03d}", save_report(result, out_dir / f"report_ptycho_{job.index:03d}.png"))
        log.info("ptycho: tilt %d done (%s, %d iterations)", job.index, result.stop_reason, result.iterations_run)
        if bar is not None:
            bar.update(1)

    try:
        run_jobs(jobs, scheduler=config.run.scheduler, workers=workers, on_done=done)
    finally:
        if bar is not None:
            bar.close()


def _projection_stage(config, store: ResultsStore, out_dir: pathlib.Path, progress: bool):
    from ..denoise import denoise
    from .figures import save_projection_report

    results = store.ptycho_results()
    pixel = float(results[0].pixel_size_A[0])
    if store.has("projections/denoised"):
        return store.read("projections/denoised"), pixel
    phase = projection_stack(results)
    denoise_config = config.denoise.replace(progress=config.denoise.progress and progress)
    denoised = denoise(phase, denoise_config) if config.denoise.enabled else phase
    store.add_projections(phase, denoised, pixel)
    store.add_report("projections", save_projection_report(phase, denoised, pixel, out_dir / "report_projections.png"))
    log.info("projections: %s at %.3f A/pixel, denoised=%s", phase.shape, pixel, config.denoise.enabled)
    return denoised, pixel


def _tomo_stage(config, series, store: ResultsStore, out_dir, projections, pixel, progress: bool):
    from ..tomo import reconstruct, save_tomo_report

    if store.has("tomo/volume"):
        return store.tomo_result(), 0.0
    tomo_config = config.tomo.replace(
        checkpoint_path=str(out_dir / "work" / "tomo.checkpoint.h5"),
        checkpoint_every=config.tomo.checkpoint_every or config.run.checkpoint_every,
        progress=config.tomo.progress and config.run.progress and progress,
    )
    _check_tomo_memory(projections.shape, pixel, tomo_config)
    started = time.perf_counter()
    result = reconstruct(projections, series.rotations, pixel_size_A=pixel, config=tomo_config, resume=True)
    seconds = time.perf_counter() - started
    store.add_tomo(result)
    store.add_report("tomo", save_tomo_report(result, out_dir / "report_tomo.png"))
    store.export_volume(result.volume, result.voxel_size_A)
    log.info("tomo: volume %s at %.3f A/voxel in %.1f s", result.volume.shape, result.voxel_size_A, seconds)
    return result, seconds


def _analysis_stage(config, store: ResultsStore, out_dir: pathlib.Path, tomo_result):
    from ..analysis import save_resolution_report
    from ..analysis.atom_report import save_atom_report

    started = time.perf_counter()
    volume, voxel = tomo_result.volume, tomo_result.voxel_size_A
    res, fit, summary = analyse_volume(config, volume, voxel, "analysis")
    store.add_report("resolution", save_resolution_report(res, out_dir / "report_resolution.png"))
    if fit is not None:
        store.add_report("atoms", save_atom_report(fit, volume, voxel, out_dir / "report_atoms.png"))
        store.export_atoms(fit)
    store.add_analysis(res, fit)
    return summary, time.perf_counter() - started


def tomo_memory_bytes(projection_shape, pixel_size_A: float, config) -> int:
    """Host memory of the tomography stage at its finest level (mspt.tomo.reconstruct's docstring): about 7
    float32 volumes and 12 projection stacks, the Jacobian's in float64 (counted at 8 bytes each)."""
    t, py, px = projection_shape
    voxel = pixel_size_A if config.voxel_size_A == "auto" else float(config.voxel_size_A)
    if config.volume_shape == "auto":
        ny, nx = (max(1, round(n * pixel_size_A / voxel)) for n in (py, px))
        volume = nx * ny * nx
    else:
        volume = int(np.prod(config.volume_shape))
    return 7 * 4 * volume + 12 * 8 * t * py * px


def _check_tomo_memory(projection_shape, pixel_size_A: float, config) -> None:
    from ..ptycho.memory import available_ram_bytes

    need = tomo_memory_bytes(projection_shape, pixel_size_A, config)
    have = available_ram_bytes()
    log.info("tomo: needs about %.2f GB of the %.2f GB available", need / 1e9, have / 1e9)
    if need > 0.8 * have:
        raise MemoryError(
            f"tomo: the volume and projections need about {need / 1e9:.1f} GB, more than 80 % of the "
            f"{have / 1e9:.1f} GB available; set [tomo] voxel_size_A larger, volume_shape smaller, or run on "
            "a machine with more memory"
        )


# -- helpers ---------------------------------------------------------------------------------------------
def _with_overrides(config, *, out, overwrite, scheduler, device):
    output = config.output
    if out is not None:
        output = dataclasses.replace(output, dir=str(out))
    if overwrite is not None:
        output = dataclasses.replace(output, overwrite=bool(overwrite))
    run_section = config.run
    if scheduler is not None:
        run_section = dataclasses.replace(run_section, scheduler=scheduler)
    if device is not None:
        run_section = dataclasses.replace(run_section, device=device)
    return dataclasses.replace(config, output=output, run=run_section)


def _prepare_output(out_dir: pathlib.Path, store: ResultsStore, config, resume: bool) -> None:
    if store.path.exists() and not resume:
        if not config.output.overwrite:
            raise FileExistsError(
                f"output.dir: {out_dir} already holds a run ({store.path.name}); resume it with --resume, "
                "replace it with --overwrite, or choose another --out"
            )
        store.discard(out_dir / "work")
    if resume and store.path.exists():
        stored = store.read_root_attr("config_toml")
        if stored is not None:
            _check_resume(store, stored, config)
    out_dir.mkdir(parents=True, exist_ok=True)


def _check_resume(store: ResultsStore, stored_toml: str, config) -> None:
    """A resumed run keeps every stage's settings. ``[output]`` and ``[run]`` may change (a moved folder,
    another scheduler or device: where and how, not what), and so may ``[joint]``, which discards the joint
    stage's results so that it runs again with the new settings (its display and memory-only keys,
    ``progress`` and ``batch_size``, do not). Settings are compared as loaded, defaults filled in."""
    from ..config import SECTIONS, load_config

    try:
        stored = load_config(stored_toml)
    except (ValueError, ImportError) as err:
        raise ValueError(f"resume: {store.path} was written with a configuration this version cannot read ({err}); "
                         "start a new run in another --out") from None  # fmt: skip
    free = {"output", "run", "joint"}
    changed = [name for name in SECTIONS if name not in free and getattr(stored, name) != getattr(config, name)]
    if changed:
        raise ValueError(
            f"resume: {store.path} was written with a different configuration (changed: {', '.join(changed)}); "
            "resume with the same configuration (only [joint], [output] and [run] may change) or start a new "
            "run in another --out"
        )
    quiet = dict(progress=True, batch_size=1)
    if stored.joint.replace(**quiet) != config.joint.replace(**quiet) and store.has("joint"):
        log.info("resume: [joint] changed; the joint stage runs again")
        store.discard_group("joint")


def _open_series(config):
    from ..io import load_tiltseries

    return load_tiltseries(config.input.tiltseries)


def _workers(config, n_jobs: int) -> int:
    workers = config.run.workers
    if workers == "auto":
        import os

        workers = max(1, (os.cpu_count() or 1) // 4)
    return max(1, min(int(workers), n_jobs))


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tilt")


def _log_to(path: pathlib.Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("mspt")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
