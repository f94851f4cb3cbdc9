"""Driver for the py4DSTEM multislice ptychography peer: save a dataset, run py4DSTEM in its own virtual
environment (it pins numpy<2, so it is never our dependency), load and score the result.

    from peers.py4dstem import run_py4dstem, py4dstem_python
    result = run_py4dstem(ds, n_iter=32)       # ds: tests/ptycho_data.py's PtychoDataset
    result["r"], result["time_per_iteration_s"], result["registration"].phase

The environment is made by ``benchmarks/peers/setup_py4dstem_venv.sh`` at ``.venv-py4dstem/`` (repository
root), or named by ``MSPT_PY4DSTEM_PYTHON`` (its python executable). Without it, :func:`run_py4dstem` raises
:class:`Py4DSTEMUnavailable` (a RuntimeError; pytest code turns it into a skip with :func:`require_py4dstem`).

Scoring: py4DSTEM's object frame differs from the truth grid by a translation that the driver knows from the
positions: ``offset = mean(py4DSTEM positions_px - given positions_A / pixel_size)``; the summed phase is
then registered with ``ptycho_data.register_phase`` (the same function mspt's tests use), which band-limits
it to the truth's cut-off, refines that offset within +-2 px and scores the Pearson r over the scanned field
of view.

Run as a script for one scored run on the default dataset:  python benchmarks/peers/py4dstem.py [n_iter]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
RUNNER = HERE / "run_py4dstem_msp.py"
DEFAULT_VENV = REPO_ROOT / ".venv-py4dstem"
PYTHON_ENV = "MSPT_PY4DSTEM_PYTHON"

if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
import ptycho_data  # noqa: E402

# py4DSTEM settings tuned for its best Pearson r on the default dataset (py4DSTEM 0.14.18, 32 iterations
# unless said; final r in brackets, scored before register_phase band-limited the reconstruction): a complex
# object beat the real "potential" one (0.9970 vs 0.9929 with batches of 16; 0.9952 vs 0.9891 at 64
# full-batch iterations); mini-batches of 16 positions converge far faster per iteration than one full batch
# (0.9970 vs 0.9864; batches of 8: 0.9972, 32: 0.9966, 64: 0.9958); the default step 0.5 beat 0.25 (0.9961)
# and 1.0 (diverges, 0.85); 4 slices of 7.8 A match 8 (0.9968, twice the time) and beat 2 (0.9763); refining
# the probe beat fixing it at the true probe (0.9840 vs 0.9891 at 64 full-batch iterations). Positions are
# fixed (nominal = true on the default dataset) and the known tilt (none) is given. Regularisers (TV, kz
# filter, low-pass) were left off: at the default dose there is nothing for them to do.
TUNED = {
    "num_slices": 4,
    "object_type": "complex",
    "step_size": 0.5,
    "max_batch_size": 16,
    "fix_probe": False,
}


class Py4DSTEMUnavailable(RuntimeError):
    """The py4DSTEM virtual environment is missing or broken."""


def py4dstem_python() -> Path:
    """The venv's python executable; Py4DSTEMUnavailable (with the command that makes it) if missing."""
    given = os.environ.get(PYTHON_ENV)
    python = Path(given) if given else DEFAULT_VENV / "bin" / "python"
    if not python.exists():
        raise Py4DSTEMUnavailable(
            f"py4DSTEM's virtual environment is missing ({python} not found): run "
            f"`bash benchmarks/peers/setup_py4dstem_venv.sh` or set {PYTHON_ENV} to a python that imports py4DSTEM"
        )
    return python


def require_py4dstem():
    """pytest helper: skip the calling test when the py4DSTEM environment is missing."""
    import pytest

    try:
        return py4dstem_python()
    except Py4DSTEMUnavailable as exc:
        pytest.skip(str(exc))


def run_py4dstem(
    ds: "ptycho_data.PtychoDataset",
    n_iter: int = 32,
    *,
    threads: int | None = None,
    timeout_s: float = 3600,
    workdir: str | os.PathLike | None = None,
    score: bool = True,
    **settings,
) -> dict:
    """Run py4DSTEM's MultislicePtychography on ``ds`` for ``n_iter`` iterations in its venv.

    ``settings`` go to run_py4dstem_msp.py (its ``DEFAULTS``: num_slices, slice_thickness_A, step_size,
    max_batch_size, object_type, fix_probe, fix_positions, positions="nominal"|"true", use_known_tilt,
    kz_regularization_gamma, tv_denoise_weights, num_probes, snapshot_every, ...), over :data:`TUNED`.
    ``threads`` sets OMP/OPENBLAS/MKL thread counts of the subprocess (None: inherited).

    Returns a dict: the runner's arrays (``phase``, ``phase_iterations``, ``snapshot_iters``, ``positions_px``,
    ``positions_px_initial``, ``object``, ``probe``, ``error_iterations``, ``iteration_times_s``), its
    ``meta`` (versions, settings, sampling, times), ``wall_s`` (the subprocess, start-up included),
    ``time_per_iteration_s`` (median), ``reconstruct_s``; with ``score``: ``offset_px``, ``registration``
    (ptycho_data.Registration of the final phase), ``r``, and ``r_iterations`` (r of each snapshot).
    """
    python = py4dstem_python()
    config = {**TUNED, **settings, "n_iter": int(n_iter)}
    env = dict(os.environ)
    if threads is not None:
        for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[key] = str(int(threads))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        ds.save_npz(tmp / "dataset.npz", include_truth=False)
        (tmp / "config.json").write_text(json.dumps(config))
        cmd = [str(python), str(RUNNER), str(tmp / "dataset.npz"), str(tmp / "result.npz")]
        cmd += ["--config", str(tmp / "config.json")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"py4DSTEM run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        with np.load(tmp / "result.npz", allow_pickle=False) as f:
            result = {k: np.asarray(f[k]) for k in f.files if k != "meta"}
            result["meta"] = json.loads(str(f["meta"]))
    meta = result["meta"]
    result.update(wall_s=wall, reconstruct_s=meta["reconstruct_s"], time_per_iteration_s=meta["time_per_iteration_s"])
    if score:
        result.update(score_py4dstem(result, ds, config.get("positions", "nominal")))
    return result


def score_py4dstem(result: dict, ds: "ptycho_data.PtychoDataset", positions: str = "nominal") -> dict:
    """Register py4DSTEM's summed phase (final and per snapshot) on the truth and score it."""
    given = ds.nominal_positions_px if positions == "nominal" else ds.positions_px
    pixel = result["meta"]["sampling_A"]
    if not np.allclose(pixel, ds.pixel_size_A, rtol=1e-5):
        raise RuntimeError(f"py4DSTEM's pixel {pixel} A differs from the truth grid's {ds.pixel_size_A} A")
    offset = (result["positions_px_initial"] - given).mean(0)
    reg = ptycho_data.register_phase(result["phase"], ds, offset_px=offset, pixel_size_A=pixel[0])
    r_iter = [ptycho_data.register_phase(p, ds, offset_px=offset).r for p in result["phase_iterations"]]
    return dict(offset_px=offset, registration=reg, r=reg.r, r_iterations=np.asarray(r_iter))


def _main(argv) -> int:
    n_iter = int(argv[1]) if len(argv) > 1 else 32
    extra = json.loads(argv[2]) if len(argv) > 2 else {}
    t0 = time.perf_counter()
    ds = ptycho_data.dataset()
    print(f"dataset: {ds.data.shape} patterns, object {ds.object_shape} px of {ds.pixel_size_A:.5f} A, "
          f"{ds.num_slices} slices of {ds.slice_thickness_A:.4f} A (load/simulate {time.perf_counter() - t0:.1f} s, "
          f"simulation {ds.simulation_time_s:.1f} s)")  # fmt: skip
    res = run_py4dstem(ds, n_iter, **extra)
    m = res["meta"]
    print(f"py4DSTEM {m['py4dstem_version']} ({m['class']}), numpy {m['numpy_version']}")
    print(f"settings {json.dumps(m['settings'])}")
    print(f"wall {res['wall_s']:.1f} s (preprocess {m['preprocess_s']:.2f} s, reconstruct {m['reconstruct_s']:.2f} s), "
          f"{res['time_per_iteration_s'] * 1e3:.1f} ms/iteration (median)")  # fmt: skip
    print(f"r = {res['r']:.4f} (offset {np.round(res['offset_px'], 2)}, refined {res['registration'].refined_px})")
    shown = [(i, r) for i, r in zip(res["snapshot_iters"], res["r_iterations"]) if i & (i - 1) == 0 or i == n_iter]
    if shown:
        print("r vs iteration:", ", ".join(f"{i}: {r:.4f}" for i, r in shown))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
