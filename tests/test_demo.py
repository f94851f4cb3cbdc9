"""`mspt demo` end to end, as the README runs it: the final atoms against the simulated nanocube.

The demo's tilt series is simulated from abTEM potentials (mspt.simulate, whose patterns
tests/test_simulate.py holds to abTEM's own 4D-STEM simulation); the truth is the ideal cube's atoms. The
demo fits them with the cube itself as the structure, so every displacement it reports is a
reconstruction error: a perfect reconstruction would report zero.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("abtem")

from mspt.io import load_analysis  # noqa: E402


@pytest.mark.slow
def test_demo_reconstructs_the_nanocube_atoms(tmp_path, measured):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "mspt.cli", "demo", "--out", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "results:" in run.stdout and "atom sites found" in run.stdout
    for name in ("results.h5", "volume.mrc", "atoms.xyz", "report_tomo.png", "report_atoms.png", "mspt.log"):
        assert (out / name).exists(), name
    analysis = load_analysis(out / "results.h5")
    elements, found = analysis["elements"], analysis["site_found"]
    error = np.linalg.norm(analysis["displacement_A"], axis=1)
    cations = np.isin(elements, ["Sr", "Ti"])
    cation_found = measured("demo", "Sr/Ti sites found (fraction)", found[cations].mean(), 0.99, ">")
    cation_rms = measured("demo", "Sr/Ti position error rms (A)", np.sqrt(np.mean(error[cations & found] ** 2)), 0.1)
    oxygen_found = measured("demo", "O sites found (fraction)", found[elements == "O"].mean(), 0.8, ">")
    oxygen_rms = measured("demo", "O position error rms (A)", np.sqrt(np.mean(error[(elements == "O") & found] ** 2)), 0.4)
    assert cation_found > 0.99 and cation_rms < 0.1
    assert oxygen_found > 0.8 and oxygen_rms < 0.4
