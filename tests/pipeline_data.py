"""Small simulated tilt series for the pipeline's tests (abTEM potentials through mspt.simulate, whose
patterns tests/test_simulate.py holds to abTEM's own 4D-STEM simulation).

Import as ``import pipeline_data`` (pytest puts ``tests/`` on ``sys.path``)."""

from __future__ import annotations

import pathlib

import numpy as np

TINY_TOML = """\
[input]
tiltseries = "{series}"
{structure}
[output]
dir = "{out}"
[run]
workers = 1
threads = 1
checkpoint_every = 1
progress = false
[ptycho]
n_slices = 2
slice_thickness_A = 6.0
iterations = {iterations}
stop = "fixed"
validation_fraction = 0.0
progress = false
[denoise]
enabled = {denoise}
progress = false
[tomo]
voxel_size_A = 0.5
levels = [2, 1]
iterations = [3, 3]
align_rotation_from = -1
final_iterations = 5
progress = false
"""


def tiny_series(folder: pathlib.Path, *, tilts=(-45.0, 0.0, 45.0), scan=(12, 12), cells: int = 1) -> pathlib.Path:
    """A cube of SrTiO3 cells, a few tilts, a small scan of 48 x 48-pixel patterns, Poisson noise."""
    from mspt.simulate import nanocube, tiltseries

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiltseries.h5"
    if not path.exists():
        atoms = nanocube("SrTiO3", cells)
        atoms.write(folder / "cube.xyz")
        tiltseries(atoms, np.asarray(tilts), path, scan_shape=scan, scan_step_A=1.0, gpts=48, sampling_A=0.25,
                   dose_e_per_A2=2e4, seed=1)  # fmt: skip
    return path


def tiny_config(folder: pathlib.Path, series: pathlib.Path, out: pathlib.Path, *, iterations: int = 4,
                denoise: bool = False, structure: str | None = None) -> pathlib.Path:  # fmt: skip
    text = TINY_TOML.format(series=series, out=out, iterations=iterations, denoise=str(denoise).lower(),
                            structure=f'structure = "{structure}"' if structure else "")  # fmt: skip
    path = folder / f"run_{out.name}.toml"
    path.write_text(text)
    return path
