"""Per-tilt ptychography jobs, run in this process or fanned out over a Dask cluster.

Every job writes its tilt to its own file in the work folder, atomically, and checkpoints on the way.
That makes a job idempotent: a job that finds its file done returns at once, and a job that was killed
(a worker lost, a node pre-empted, the whole run interrupted) resumes from its checkpoint when it runs
again and ends where an uninterrupted job would. Dask re-runs the tasks of a lost worker by itself; the
results do not depend on which worker ran what (the engine's results do not depend on the thread count).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Sequence

from ..ptycho.config import PtychoConfig


@dataclasses.dataclass(frozen=True)
class TiltJob:
    """One tilt's reconstruction: read tilt ``index`` of ``tiltseries``, write ``output``."""

    tiltseries: str
    index: int
    config: PtychoConfig
    output: str
    checkpoint: str


def tilt_jobs(tiltseries, indices, config: PtychoConfig, work_dir, output_for, checkpoint_every: int) -> list[TiltJob]:
    """One job per tilt index; ``output_for(index)`` is where that tilt's result file goes."""
    work = pathlib.Path(work_dir)
    jobs = []
    for index in indices:
        checkpoint = work / f"ptycho_{index:03d}.checkpoint.h5"
        tilt_config = config.replace(
            checkpoint_path=str(checkpoint), checkpoint_every=checkpoint_every, progress=False
        )
        jobs.append(TiltJob(str(tiltseries), index, tilt_config, str(output_for(index)), str(checkpoint)))
    return jobs


def run_tilt_job(job: TiltJob) -> str:
    """Reconstruct one tilt (resuming its checkpoint if one exists) and write it; returns the output path."""
    from ..io import load_tiltseries
    from ..ptycho import reconstruct, save_result

    output = pathlib.Path(job.output)
    if output.exists():  # written atomically, so it is complete
        return str(output)
    with load_tiltseries(job.tiltseries) as series:
        result = reconstruct(series.scan(job.index), job.config, resume=True)
    save_result(output, result, tilt=job.index)
    checkpoint = pathlib.Path(job.checkpoint)
    if checkpoint.exists():
        checkpoint.unlink()  # the result file now holds everything the checkpoint did
    return str(output)


def run_jobs(
    jobs: Sequence[TiltJob], *, scheduler: str = "", workers: int = 1, on_done: Callable[[TiltJob], None] | None = None
) -> list[str]:
    """Run the jobs: in this process when ``workers == 1`` and no scheduler is given, otherwise on Dask
    (a LocalCluster of ``workers`` single-task processes, or the scheduler at ``scheduler``)."""
    if not scheduler and workers <= 1:
        outputs = []
        for job in jobs:
            outputs.append(run_tilt_job(job))
            if on_done is not None:
                on_done(job)
        return outputs
    return _run_on_dask(jobs, scheduler, workers, on_done)


def _run_on_dask(jobs, scheduler: str, workers: int, on_done) -> list[str]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "run.scheduler / run.workers: fanning tilts out needs Dask distributed (pip install distributed), "
            "or set run.workers = 1 to run the tilts one after another"
        ) from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        # One task per worker process; each job's engine uses the worker's share of the cores.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        jobs = [dataclasses.replace(j, config=j.config.replace(threads=threads)) for j in jobs]
    try:
        futures = client.map(run_tilt_job, jobs, pure=False, retries=2)
        index = {f.key: job for f, job in zip(futures, jobs)}
        for future in as_completed(futures):
            future.result()  # raises the job's own error
            if on_done is not None:
                on_done(index[future.key])
        return [f.result() for f in futures]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
