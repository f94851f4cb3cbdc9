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

# The joint stage's gains on the demo, fixed below what was measured (r +0.0097 / +0.0112; FWHM z, y, x
# -0.039, -0.068, -0.083 A from 0.95, 0.68, 0.68 A).
GAIN_R = 0.004
NARROWER_A = 0.015


def _demo(out, *flags):
    run = subprocess.run([sys.executable, "-m", "mspt.cli", "demo", "--out", str(out), "--quiet", *flags],
                         capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, _demo(out)


@pytest.mark.slow
def test_demo_reconstructs_the_nanocube_atoms(demo, measured):
    out, run = demo
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


@pytest.mark.slow
def test_joint_refinement_sharpens_the_demo_volume(demo, measured):
    """``mspt demo --joint --resume`` on the finished demo runs the joint stage alone. Scored against the
    cube's 3D potential (abTEM's finite integrals on the joint grid) inside the cube's box plus 2 A: the
    correlation, band-limited to the sequential voxel's Nyquist (1.25 / A) and to the probe's aperture
    (2 / A), and the average Sr/Ti atom's widths (mspt.analysis.atom_widths), before (the sequential volume
    on the joint grid, where the stage starts) and after."""
    from mspt.analysis import atom_widths
    from mspt.constants import interaction_parameter
    from mspt.joint import on_voxel_grid
    from mspt.joint.results_file import load_joint_result
    from mspt.simulate import nanocube, potential_volume
    from mspt.tomo import load_tomo_result

    out, _ = demo
    run = _demo(out, "--joint", "--resume")
    assert "joint refinement: resolution" in run.stdout
    joint = load_joint_result(out / "results.h5")
    tomo = load_tomo_result(out / "results.h5")
    voxel = float(joint["voxel_size_A"])
    before = on_voxel_grid(tomo.volume / interaction_parameter(200e3), tomo.voxel_size_A, voxel)
    after = joint["volume"]
    assert before.shape == after.shape and voxel == pytest.approx(0.2)
    atoms = nanocube("SrTiO3", 2)
    truth = potential_volume(atoms, after.shape, voxel)
    positions = atoms.get_positions()
    box = _box_mask(after.shape, voxel, positions.min(0) - 2.0, positions.max(0) + 2.0)
    k = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(n, voxel) ** 2 for n in after.shape], indexing="ij")))
    for cutoff in (1.25, 2.0):
        band = lambda v: np.fft.ifftn(np.fft.fftn(v) * (k < cutoff)).real[box]  # noqa: E731
        r_before = np.corrcoef(band(before), band(truth))[0, 1]
        r_after = np.corrcoef(band(after), band(truth))[0, 1]
        measured("demo joint", f"r with the truth below {cutoff} / A, sequential", r_before, 0.0, ">")
        gain = measured("demo joint", f"r with the truth below {cutoff} / A, gain", r_after - r_before, GAIN_R, ">")
        assert gain > GAIN_R
    cations = positions[np.isin(atoms.get_chemical_symbols(), ["Sr", "Ti"])]
    widths_before = atom_widths(before, voxel, cations).fwhm_A
    widths_after = atom_widths(after, voxel, cations).fwhm_A
    for axis, name in enumerate("zyx"):
        measured("demo joint", f"average Sr/Ti atom FWHM along {name} (A), sequential", widths_before[axis], 0.0, ">")
        narrower = measured("demo joint", f"average Sr/Ti atom FWHM along {name} (A), joint - sequential",
                            widths_after[axis] - widths_before[axis], -NARROWER_A)  # fmt: skip
        assert narrower < -NARROWER_A


def _box_mask(shape, voxel, lo_xyz, hi_xyz):
    k, j, i = (np.arange(n) - n // 2 for n in shape)
    x, y, z = i[None, None, :] * voxel, j[None, :, None] * voxel, k[:, None, None] * voxel
    return ((x >= lo_xyz[0]) & (x <= hi_xyz[0]) & (y >= lo_xyz[1]) & (y <= hi_xyz[1])
            & (z >= lo_xyz[2]) & (z <= hi_xyz[2]))  # fmt: skip
