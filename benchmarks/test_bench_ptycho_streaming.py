"""A scan streamed from its file: the next batch is read while this one is fitted (mspt.ptycho.read_ahead),
so a pass should take about the longer of its reading and its fitting, not their sum.

The default scan (tests/ptycho_data.py, 256 patterns of 64^2) is written to an HDF5 file and read through a
throttle that makes each read take as long as a disk of ``rate`` bytes/s would (sleeping, as blocking I/O
does, without the GIL). The rate is set so that reading a pass takes about as long as fitting it, where
overlap matters most. Measured in one run, 1 thread: the fitting alone (patterns held in memory), the reading
alone (the pass's reads one after another), and the streamed pass; reported as the streamed pass over the
longer of the two (1.0: the reading is hidden entirely; (fit + read) / max(fit, read): none of it is)."""

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import ptycho_data as pd  # noqa: E402

from mspt.ptycho import PtychoConfig, PtychoEngine  # noqa: E402

N_SLICES = 4


class ThrottledDataset:
    """An h5py dataset read as if from a disk of ``rate`` bytes/s."""

    def __init__(self, dataset, rate: float):
        self.dataset, self.rate, self.shape = dataset, rate, dataset.shape

    def __getitem__(self, key):
        started = time.perf_counter()
        block = self.dataset[key]
        time.sleep(max(0.0, block.nbytes / self.rate - (time.perf_counter() - started)))
        return block


def best_iteration(engine, rounds=6):
    for _ in range(2):  # plans made, caches warm
        engine.run_iteration()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        engine.run_iteration()
        times.append(time.perf_counter() - started)
    return min(times)


def test_streamed_pass_overlaps_reading_and_fitting(benchmark, report, tmp_path):
    ds = pd.dataset()
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.create_dataset("data", data=ds.data, chunks=(1, ds.data.shape[1], *ds.data.shape[2:]))
    config = PtychoConfig(n_slices=N_SLICES, slice_thickness_A=ds.thickness_A / N_SLICES, progress=False,
                          threads=1, batch_size=32, position_search_A=0.0)  # fmt: skip
    held = ds.scan("nominal", "entrance")
    fit_counts = held.check_patterns()
    fit_s = best_iteration(PtychoEngine.start(held, config, fit_counts))
    # A disk that reads the training patterns of one pass in about the time the pass fits them.
    rate = 0.9 * ds.data.nbytes / fit_s
    with h5py.File(tmp_path / "scan.h5", "r") as f:
        scan = dataclasses.replace(held, data=ThrottledDataset(f["data"], rate))
        # A budget below the scan's size: the engine streams the patterns from the file.
        streamed = PtychoEngine.start(scan, config.replace(memory_budget_bytes=ds.data.nbytes // 4), fit_counts)
        started = time.perf_counter()
        for batch in streamed._batches():  # one pass's reads, one after another
            scan.read(batch)
        read_s = time.perf_counter() - started
        streamed_s = best_iteration(streamed)
    longer, total = max(fit_s, read_s), fit_s + read_s
    figures = dict(fit_s=fit_s, read_s=read_s, streamed_s=streamed_s, streamed_over_longer=streamed_s / longer,
                   no_overlap_would_be=total / longer)  # fmt: skip
    benchmark.extra_info.update(figures)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    report("MSP streamed pass (default scan, reads throttled to the fitting's pace), 1 thread", **figures)
