"""``mspt demo``: simulate a small nanocube tilt series and reconstruct it end to end.

A 2 x 2 x 2-cell SrTiO3 cube (about 8 A on a side), 13 tilts from -60 to +60 degrees, a 24 x 24 scan of
64 x 64-pixel patterns at 200 keV with Poisson noise; then the whole pipeline: per-tilt multislice
ptychography, denoising, tomography with alignment, resolution and atom fitting against the ideal cube.
The simulation (abTEM's potentials, mspt's multislice) is a demonstration input only; the tests check
mspt's physics against abTEM's own simulation.
"""

from __future__ import annotations

import pathlib

import numpy as np

DEMO_TOML = """\
# The demo's run configuration: a starting point for your own (every key is documented in mspt.config).
[input]
tiltseries = "tiltseries.h5"
structure = "nanocube.xyz"

[output]
dir = "."

[ptycho]
n_slices = 4
slice_thickness_A = 4.0
iterations = 20

[tomo]
voxel_size_A = 0.4
"""

# ``mspt demo --joint``: the joint refinement after the sequential method (a few minutes more); with
# ``--resume`` on a finished demo only this stage runs.
DEMO_JOINT_TOML = """
[joint]
enabled = true
outer_iterations = 2
volume_evaluations = 10
acquisition_evaluations = 5
"""


def simulate_demo_series(out_dir: pathlib.Path, *, overwrite: bool, progress: bool) -> pathlib.Path:
    """Write the demo's tilt series and the ideal cube (its structure) into ``out_dir``."""
    from ..simulate import nanocube, tiltseries

    out_dir.mkdir(parents=True, exist_ok=True)
    series = out_dir / "tiltseries.h5"
    atoms = nanocube("SrTiO3", 2)
    atoms.write(out_dir / "nanocube.xyz")
    if series.exists() and not overwrite:
        return series  # simulated by an earlier demo run: same seed, same data
    tiltseries(atoms, np.arange(-60.0, 61.0, 10.0), series, scan_shape=(24, 24), scan_step_A=0.8, gpts=64,
               sampling_A=0.2, dose_e_per_A2=1e5, seed=0, overwrite=overwrite, progress=progress)  # fmt: skip
    return series


def run_demo(out_dir, *, overwrite: bool = False, resume: bool = False, progress: bool = True, joint: bool = False):
    """Simulate (once) and reconstruct the demo into ``out_dir`` (with ``joint``, the joint refinement too);
    returns the PipelineResult."""
    from ..config import load_config
    from .sequential import run

    out_dir = pathlib.Path(out_dir)
    simulate_demo_series(out_dir, overwrite=overwrite, progress=progress)
    config_path = out_dir / "demo.toml"
    config_path.write_text(DEMO_TOML + (DEMO_JOINT_TOML if joint else ""))
    return run(load_config(config_path), resume=resume, overwrite=overwrite, progress=progress)
