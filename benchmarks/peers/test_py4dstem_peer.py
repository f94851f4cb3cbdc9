"""The py4DSTEM peer harness end to end on the default dataset: py4DSTEM runs in its own venv (skipped
without it), its summed phase is registered on the truth and scored. This checks the harness (frames,
calibrations, scoring), and records py4DSTEM's figures for the comparison with mspt's engine."""

import numpy as np
import pytest

from py4dstem import TUNED, require_py4dstem, run_py4dstem

import ptycho_data  # on sys.path through py4dstem.py

N_ITER = 16


@pytest.mark.slow
def test_py4dstem_reconstructs_the_default_dataset(report):
    require_py4dstem()
    ds = ptycho_data.dataset()
    res = run_py4dstem(ds, N_ITER, threads=1)
    m = res["meta"]
    report(
        f"py4DSTEM {m['py4dstem_version']} MSP, default dataset, {N_ITER} iterations, 1 thread",
        r=res["r"], ms_per_iteration=1e3 * res["time_per_iteration_s"], reconstruct_s=res["reconstruct_s"],
        wall_s=res["wall_s"], settings=str({k: m["settings"][k] for k in TUNED}),
    )  # fmt: skip
    # The frame bookkeeping is right: the registration search moves the phase by a fraction of a pixel.
    assert np.all(np.abs(res["registration"].refined_px) < 0.5), res["registration"].refined_px
    assert res["r"] > 0.98
    assert len(res["iteration_times_s"]) == N_ITER and np.all(res["iteration_times_s"] > 0)
    assert np.all(np.diff(res["r_iterations"][:8]) > -0.01)  # converging, not wandering
