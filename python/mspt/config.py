"""RunConfig: one run's whole configuration, read from one TOML file onto the stages' frozen dataclasses.

Each TOML section maps onto a dataclass whose field names are its keys (DESIGN.md, "Public API")::

    [input]    InputConfig        tiltseries (required), structure
    [output]   OutputConfig       dir, overwrite
    [run]      RunSettings        device, scheduler, workers, threads, checkpoint_every, progress
    [ptycho]   mspt.ptycho:PtychoConfig
    [denoise]  mspt.denoise:DenoiseConfig
    [tomo]     mspt.tomo:TomoConfig
    [analysis] mspt.analysis:AnalysisConfig
    [joint]    mspt.joint:JointConfig

Stage dataclasses are resolved by name when first needed, so this module imports without the stages.
The loader is generic over dataclasses: TOML arrays become tuples, strings such as "auto" pass through to
the dataclass's own validation, and every error names the key path (``ptycho.n_slices: ...``). Relative
paths are resolved against the TOML file's directory. :func:`to_toml` writes a configuration back as TOML
text that :func:`load_config` reads to an equal configuration (stored in every results file).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import pathlib
import sys
from typing import Any

from . import _validate as v

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """tiltseries : the tilt series (mspt.tiltseries HDF5 or EMD). structure : optional crystal structure
    (any file ASE reads), enabling lattice registration and atom fitting."""

    tiltseries: str
    structure: str | None = None

    def __post_init__(self):
        if not isinstance(self.tiltseries, str) or not self.tiltseries:
            raise ValueError(f"tiltseries: expected the path of the tilt-series file, got {self.tiltseries!r}")
        if self.structure is not None and (not isinstance(self.structure, str) or not self.structure):
            raise ValueError(f"structure: expected the path of a structure file ASE reads, got {self.structure!r}")


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """dir : where results.h5, reports and exports go. overwrite : replace an existing run there."""

    dir: str = "results"
    overwrite: bool = False

    def __post_init__(self):
        if not isinstance(self.dir, str) or not self.dir:
            raise ValueError(f"dir: expected a directory path, got {self.dir!r}")
        if not isinstance(self.overwrite, bool):
            raise ValueError(f"overwrite: expected true or false, got {self.overwrite!r}")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How a run executes.

    device : "cpu" or "cuda". scheduler : "" for a local Dask cluster, or a scheduler address.
    workers : Dask workers for the per-tilt jobs, or "auto". threads : CPU threads per job (None: all).
    checkpoint_every : iterations between checkpoints of a stage (0: none). progress : progress bars.
    """

    device: str = "cpu"
    scheduler: str = ""
    workers: int | str = "auto"
    threads: int | None = None
    checkpoint_every: int = 5
    progress: bool = True

    def __post_init__(self):
        v.choice("device", self.device, ("cpu", "cuda"))
        if not isinstance(self.scheduler, str):
            expected = '"" (a local cluster) or an address such as "tcp://host:8786"'
            raise ValueError(f"scheduler: expected {expected}, got {self.scheduler!r}")
        if self.workers != "auto":
            try:
                v.positive("workers", self.workers, integer=True)
            except ValueError:
                raise ValueError(f'workers: expected a positive integer or "auto", got {self.workers!r}') from None
        if self.threads is not None:
            v.positive("threads", self.threads, integer=True)
        v.positive("checkpoint_every", self.checkpoint_every, integer=True, allow_zero=True)
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress: expected true or false, got {self.progress!r}")


# Section name -> its dataclass, or "module:Class" imported on first use.
SECTIONS: dict[str, Any] = {
    "input": InputConfig,
    "output": OutputConfig,
    "run": RunSettings,
    "ptycho": "mspt.ptycho.config:PtychoConfig",
    "denoise": "mspt.denoise:DenoiseConfig",
    "tomo": "mspt.tomo:TomoConfig",
    "analysis": "mspt.analysis:AnalysisConfig",
    "joint": "mspt.joint.config:JointConfig",
}
# Keys that hold file or directory paths besides those named *_path: resolved against the TOML's directory.
PATH_KEYS = {("input", "tiltseries"), ("input", "structure"), ("output", "dir")}


def section_class(name: str) -> type:
    """The dataclass of section ``name`` (imported on first use)."""
    target = SECTIONS[name]
    if isinstance(target, str):
        module, _, cls = target.partition(":")
        try:
            target = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as err:
            raise ImportError(f"[{name}]: its settings class {SECTIONS[name]} is not available ({err})") from None
    return target


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The configuration of :func:`mspt.run`: one field per TOML section; absent sections take their
    dataclass's defaults. Build one with :func:`load_config`, or directly with section instances."""

    input: InputConfig
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)
    run: RunSettings = dataclasses.field(default_factory=RunSettings)
    ptycho: Any = None
    denoise: Any = None
    tomo: Any = None
    analysis: Any = None
    joint: Any = None

    def __post_init__(self):
        for name in SECTIONS:
            cls = section_class(name)
            value = getattr(self, name)
            if value is None and name != "input":
                object.__setattr__(self, name, cls())
            elif not isinstance(value, cls):
                raise TypeError(f"{name}: expected a {cls.__name__}, got {type(value).__name__}")

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


# -- reading ---------------------------------------------------------------------------------------------
def load_config(source, *, base_dir=None) -> RunConfig:
    """A :class:`RunConfig` from a TOML file (a path) or TOML text.

    Relative paths are resolved against the file's directory (``base_dir`` for text; default: left as
    given). Unknown sections or keys and invalid values raise ValueError naming the key path.
    """
    text, base = _read_source(source)
    base = pathlib.Path(base_dir) if base_dir is not None else base
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config: invalid TOML ({err})") from None
    return from_dict(document, base_dir=base)


def from_dict(document: dict, *, base_dir=None) -> RunConfig:
    """A :class:`RunConfig` from a parsed TOML document (nested dicts), validated as :func:`load_config` does."""
    if not isinstance(document, dict):
        raise ValueError(f"config: expected a table of sections, got {type(document).__name__}")
    for name in document:
        if name not in SECTIONS:
            raise ValueError(f"{name}: unknown section{_suggest(name, SECTIONS)}")
    if "input" not in document:
        raise ValueError("input: missing section; expected [input] with tiltseries = \"FILE\"")
    sections = {}
    for name in SECTIONS:  # absent sections too: their default paths are resolved like given ones
        table = document.get(name, {})
        if not isinstance(table, dict):
            raise ValueError(f"{name}: expected a [{name}] table of keys, got {table!r}")
        sections[name] = build_section(name, section_class(name), table, base_dir)
    return RunConfig(**sections)


def build_section(section: str, cls: type, table: dict, base_dir=None):
    """Instantiate dataclass ``cls`` from a TOML table; errors name ``section.key``."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in table:
        if key not in fields:
            raise ValueError(f"{section}.{key}: unknown key{_suggest(key, fields)}")
    missing = [name for name, f in fields.items()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in table]  # fmt: skip
    if missing:
        raise ValueError(f"{section}.{missing[0]}: required key missing")
    kwargs = {}
    if base_dir is not None:  # a default path (e.g. output.dir = "results") lives beside the file too
        for name, f in fields.items():
            if name not in table and isinstance(f.default, str) and f.default and _is_path_key(section, name):
                kwargs[name] = str((pathlib.Path(base_dir) / f.default).resolve())
    for key, value in table.items():
        value = _tuples(value)
        if base_dir is not None and isinstance(value, str) and value and _is_path_key(section, key):
            path = pathlib.Path(value).expanduser()
            value = str(path if path.is_absolute() else (pathlib.Path(base_dir) / path).resolve())
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        message = str(err)
        head = message.split(":", 1)[0].split("[", 1)[0].strip()
        if head in fields:
            raise ValueError(f"{section}.{message}") from None
        raise ValueError(f"{section}: {message}") from None


def _read_source(source) -> tuple[str, pathlib.Path | None]:
    if isinstance(source, pathlib.Path) or (isinstance(source, str) and "\n" not in source and "=" not in source
                                             and "[" not in source):  # fmt: skip
        path = pathlib.Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"config: no such file {path}")
        try:
            return path.read_text(encoding="utf-8"), path.resolve().parent
        except UnicodeDecodeError:
            raise ValueError(f"config: {path} is not UTF-8 TOML text") from None
    if not isinstance(source, str):
        raise TypeError(f"config: expected a TOML file path or TOML text, got {type(source).__name__}")
    return source, None


def _is_path_key(section: str, key: str) -> bool:
    return (section, key) in PATH_KEYS or key.endswith("_path")


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]}?"
    return f"; expected one of {', '.join(sorted(known))}"


# -- writing ---------------------------------------------------------------------------------------------
def to_toml(config: RunConfig) -> str:
    """The configuration as TOML text (every section, every key that has a value; keys whose value is None
    are left out, which loads back as their default)."""
    if not isinstance(config, RunConfig):
        raise TypeError(f"config: expected a RunConfig, got {type(config).__name__}")
    lines: list[str] = []
    for name in SECTIONS:
        section = getattr(config, name)
        lines.append(f"[{name}]")
        for field in dataclasses.fields(section):
            if not field.init:
                continue
            value = getattr(section, field.name)
            if value is None:
                if field.default is not None:
                    raise ValueError(f"{name}.{field.name}: None cannot be written to TOML (its default is {field.default!r})")
                continue
            lines.append(f"{field.name} = {_toml_value(f'{name}.{field.name}', value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(key: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's string escapes are valid TOML basic-string escapes
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(key, item) for item in value) + "]"
    if isinstance(value, pathlib.PurePath):
        return json.dumps(str(value))
    raise ValueError(f"{key}: a value of type {type(value).__name__} cannot be written to TOML")
