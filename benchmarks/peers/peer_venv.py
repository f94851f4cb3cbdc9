"""What the peer drivers (py4dstem.py, ptyrad.py) share: finding a peer's own virtual environment, running
its runner script there on a dataset saved as .npz, and scoring the summed phase it returns.

A peer lives in its own environment (it pins what mspt does not: numpy<2, PyTorch, ...), named by an
environment variable (its python executable) or found at ``.venv-<peer>/`` at the repository root. Its runner
writes ``result.npz``: arrays plus a JSON ``meta`` with at least ``sampling_A``, ``reconstruct_s`` and
``time_per_iteration_s``, and ``phase``, ``phase_iterations`` and ``positions_px_initial`` (the given
positions on the peer's canvas).

Scoring: the peer's object frame differs from the truth grid by a translation known from the positions,
``offset = mean(positions_px_initial - given positions_A / pixel_size)``; the summed phase is then registered
with ``ptycho_data.register_phase`` (the function mspt's tests use), which band-limits it to the truth's
cut-off, refines that offset within +-2 px and scores the Pearson r over the scanned field of view.
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
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")

if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))
import ptycho_data  # noqa: E402


class PeerUnavailable(RuntimeError):
    """A peer's virtual environment is missing or broken."""


class Peer:
    """One peer: its name, runner script, environment variable, default venv and setup script."""

    def __init__(self, name: str, runner: str, python_env: str, venv: str, setup: str, unavailable=PeerUnavailable):
        self.name, self.runner, self.python_env = name, HERE / runner, python_env
        self.default_venv, self.setup, self.unavailable = REPO_ROOT / venv, setup, unavailable

    def python(self) -> Path:
        """The venv's python executable; ``unavailable`` (with the command that makes it) if missing."""
        given = os.environ.get(self.python_env)
        python = Path(given) if given else self.default_venv / "bin" / "python"
        if not python.exists():
            raise self.unavailable(
                f"{self.name}'s virtual environment is missing ({python} not found): run "
                f"`bash benchmarks/peers/{self.setup}` or set {self.python_env} to a python that imports it"
            )
        return python

    def require(self) -> Path:
        """pytest helper: skip the calling test when the peer's environment is missing."""
        import pytest

        try:
            return self.python()
        except PeerUnavailable as exc:
            pytest.skip(str(exc))

    def run(self, ds: "ptycho_data.PtychoDataset", config: dict, *, threads: int | None, timeout_s: float,
            workdir=None, score: bool = True) -> dict:  # fmt: skip
        """Run the runner on ``ds`` with ``config`` (JSON) -> its arrays, ``meta``, ``wall_s`` (start-up
        included), ``reconstruct_s``, ``time_per_iteration_s``; with ``score`` also :func:`score`'s keys."""
        python = self.python()
        env = dict(os.environ)
        if threads is not None:
            env.update({key: str(int(threads)) for key in THREAD_VARIABLES})
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            tmp = Path(tmp)
            ds.save_npz(tmp / "dataset.npz", include_truth=False)
            (tmp / "config.json").write_text(json.dumps(config))
            cmd = [str(python), str(self.runner), str(tmp / "dataset.npz"), str(tmp / "result.npz")]
            cmd += ["--config", str(tmp / "config.json")]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, cwd=tmp)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"{self.name} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
            with np.load(tmp / "result.npz", allow_pickle=False) as f:
                result = {k: np.asarray(f[k]) for k in f.files if k != "meta"}
                result["meta"] = json.loads(str(f["meta"]))
        meta = result["meta"]
        result.update(wall_s=wall, reconstruct_s=meta["reconstruct_s"],
                      time_per_iteration_s=meta["time_per_iteration_s"])  # fmt: skip
        if score:
            result.update(self.score(result, ds, config.get("positions", "nominal")))
        return result

    def score(self, result: dict, ds: "ptycho_data.PtychoDataset", positions: str = "nominal") -> dict:
        """Register the peer's summed phase (final and per snapshot) on the truth and score it."""
        given = ds.nominal_positions_px if positions == "nominal" else ds.positions_px
        pixel = result["meta"]["sampling_A"]
        if not np.allclose(pixel, ds.pixel_size_A, rtol=1e-5):
            raise RuntimeError(f"{self.name}'s pixel {pixel} A differs from the truth grid's {ds.pixel_size_A} A")
        offset = (result["positions_px_initial"] - given).mean(0)
        reg = ptycho_data.register_phase(result["phase"], ds, offset_px=offset, pixel_size_A=pixel[0])
        r_iter = [ptycho_data.register_phase(p, ds, offset_px=offset).r for p in result["phase_iterations"]]
        return dict(offset_px=offset, registration=reg, r=reg.r, r_iterations=np.asarray(r_iter))
