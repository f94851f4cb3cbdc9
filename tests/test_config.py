"""The TOML run configuration: defaults from [input] alone, every section mapped onto its dataclass, paths
resolved against the file, a to_toml round trip, and bad files rejected with the key path."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from mspt.config import RunConfig, load_config, to_toml
from mspt.denoise import DenoiseConfig
from mspt.ptycho import PtychoConfig
from mspt.tomo import TomoConfig

FULL = """
[input]
tiltseries = "data/scan.h5"
structure = "Co3O4.cif"
[output]
dir = "results"
overwrite = true
[run]
device = "cpu"
scheduler = "tcp://10.0.0.1:8786"
workers = 3
threads = 2
[ptycho]
n_slices = 7
slice_thickness_A = 3.5
batch_size = "auto"
kz_strength = "auto"
checkpoint_path = "work/ptycho.h5"
[denoise]
sigma = 0.05
fourier_keep = 0.2
[tomo]
volume_shape = [64, 96, 96]
levels = [2, 1]
iterations = [3, 2]
align_rotation_from = 1
voxel_size_A = 0.4
[analysis]
search_radius_A = 0.5
[joint]
enabled = true
"""


def test_input_alone_gives_every_default(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[input]\ntiltseries = "scan.h5"\n')
    config = load_config(path)
    assert config.input.tiltseries == str(tmp_path / "scan.h5")
    assert config.output.dir == str(tmp_path / "results") and config.output.overwrite is False
    assert config.ptycho == PtychoConfig() and config.tomo == TomoConfig() and config.denoise == DenoiseConfig()
    assert config.run.device == "cpu" and config.run.scheduler == "" and config.joint.enabled is False


def test_every_section_maps_onto_its_dataclass(tmp_path):
    path = tmp_path / "sub" / "run.toml"
    path.parent.mkdir()
    path.write_text(FULL)
    config = load_config(path)
    base = path.parent.resolve()
    assert config.input.tiltseries == str(base / "data" / "scan.h5")
    assert config.input.structure == str(base / "Co3O4.cif")
    assert config.ptycho.checkpoint_path == str(base / "work" / "ptycho.h5")  # *_path keys are paths too
    assert config.ptycho == PtychoConfig(n_slices=7, slice_thickness_A=3.5, batch_size="auto", kz_strength="auto",
                                         checkpoint_path=str(base / "work" / "ptycho.h5"))  # fmt: skip
    assert config.tomo.volume_shape == (64, 96, 96) and config.tomo.levels == (2, 1) and config.tomo.iterations == (3, 2)
    assert config.denoise.sigma == 0.05 and config.denoise.fourier_keep == 0.2
    assert config.analysis.search_radius_A == 0.5
    assert config.run.workers == 3 and config.run.threads == 2 and config.run.scheduler.startswith("tcp://")
    assert config.joint.enabled is True and config.output.overwrite is True


def test_to_toml_round_trips(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(FULL)
    config = load_config(path)
    text = to_toml(config)
    again = load_config(text)
    assert again == config
    assert to_toml(again) == text  # stable: a resumed run compares the stored text
    # Unusual strings survive (quotes, backslashes, unicode).
    odd = config.replace(input=dataclasses.replace(config.input, structure='C:\\data\\"Co₃O₄".cif'))
    assert load_config(to_toml(odd)) == odd


def test_text_without_base_keeps_relative_paths():
    config = load_config('[input]\ntiltseries = "scan.h5"\n')
    assert config.input.tiltseries == "scan.h5"
    config = load_config('[input]\ntiltseries = "scan.h5"\n', base_dir="/data")
    assert pathlib.Path(config.input.tiltseries) == pathlib.Path("/data/scan.h5").resolve()


BAD = {
    "unknown key with a suggestion": ('[input]\ntiltseries = "a"\n[ptycho]\nn_slice = 3\n',
                                      r"ptycho\.n_slice: unknown key; did you mean n_slices\?"),
    "unknown key, no close match": ('[input]\ntiltseries = "a"\n[run]\ncolour = "red"\n', r"run\.colour: unknown key; expected one of"),
    "unknown section": ('[input]\ntiltseries = "a"\n[tomography]\nlevels = [1]\n', r"tomography: unknown section; did you mean tomo\?"),
    "missing input": ('[output]\ndir = "x"\n', r"input: missing section"),
    "missing tiltseries": ('[input]\nstructure = "a.cif"\n', r"input\.tiltseries: required key missing"),
    "negative slices": ('[input]\ntiltseries = "a"\n[ptycho]\nn_slices = -5\n', r"ptycho\.n_slices: expected a positive"),
    "zero thickness": ('[input]\ntiltseries = "a"\n[ptycho]\nslice_thickness_A = 0\n', r"ptycho\.slice_thickness_A: expected a positive"),
    "bad choice": ('[input]\ntiltseries = "a"\n[run]\ndevice = "gpu"\n', r"run\.device: expected one of \('cpu', 'cuda'\), got 'gpu'"),
    "string for number": ('[input]\ntiltseries = "a"\n[tomo]\nvoxel_size_A = "small"\n', r'tomo\.voxel_size_A: expected a positive number \(A\) or "auto"'),
    "short volume shape": ('[input]\ntiltseries = "a"\n[tomo]\nvolume_shape = [64, 64]\n', r"tomo\.volume_shape: expected \(Z, Y, X\)"),
    "negative volume shape": ('[input]\ntiltseries = "a"\n[tomo]\nvolume_shape = [64, -64, 64]\n', r"tomo\.volume_shape: expected \(Z, Y, X\)"),
    "number for boolean": ('[input]\ntiltseries = "a"\n[output]\noverwrite = 1\n', r"output\.overwrite: expected true or false"),
    "workers zero": ('[input]\ntiltseries = "a"\n[run]\nworkers = 0\n', r'run\.workers: expected a positive integer or "auto"'),
    "cross-field rule": ('[input]\ntiltseries = "a"\n[analysis]\nsearch_radius_A = 2.0\n', r"analysis\.search_radius_A: expected less than"),
    "section not a table": ('ptycho = 5\n[input]\ntiltseries = "a"\n', r"ptycho: expected a \[ptycho\] table"),
    "invalid TOML": ('[input\ntiltseries = "a"\n', r"config: invalid TOML"),
    "empty tiltseries": ('[input]\ntiltseries = ""\n', r"input\.tiltseries: expected the path"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_names_the_key_path(case):
    text, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        load_config(text)


def test_missing_file_and_wrong_types(tmp_path):
    with pytest.raises(FileNotFoundError, match="config: no such file"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(TypeError, match="config: expected a TOML file path or TOML text"):
        load_config(42)
    with pytest.raises(TypeError, match="ptycho: expected a PtychoConfig"):
        RunConfig(input=load_config('[input]\ntiltseries = "a"\n').input, ptycho=TomoConfig())
