"""The results file's groups that the pipeline writes besides ``ptycho/`` and ``tomo/`` (``mspt.results``
schema, DESIGN.md "Files"): ``projections/{phase (T, Y, X), denoised}`` with attribute ``pixel_size_A``;
``analysis/{resolution_A (3,) z, y, x, atoms_A (N, 3), elements (N,), site_found (N,), displacement_A
(N, 3)}``; and the run's root attributes (``mspt_version``, ``config_toml``, ``created_utc``,
``modified_utc``, plus any the caller adds, e.g. start and finish times).

Failure mode: every write copies the existing file to a temporary file beside it, adds to the copy, and
renames the copy over the original (:mod:`mspt.io.atomic`). A crash mid-write leaves the original file as it
was; an existing group is replaced only with ``overwrite=True`` (FileExistsError otherwise), and no other
group is ever touched. A results file has one writer at a time (the pipeline's driver process).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import h5py
import numpy as np

from .atomic import atomic_path

PROJECTIONS = "projections"
ANALYSIS = "analysis"


def save_projections(path, phase, denoised=None, *, pixel_size_A: float, overwrite: bool = False) -> None:
    """Write ``projections/phase`` (T, Y, X) summed phases (rad) and, if given, ``projections/denoised``
    (same shape) with attribute ``pixel_size_A`` (A)."""
    from .. import _validate as v

    phase = _finite_array("phase", phase, ndim=3)
    arrays = {"phase": phase}
    if denoised is not None:
        denoised = _finite_array("denoised", denoised, ndim=3)
        if denoised.shape != phase.shape:
            raise ValueError(f"denoised: expected the shape of phase {phase.shape}, got {denoised.shape}")
        arrays["denoised"] = denoised
    pixel = v.positive("pixel_size_A", pixel_size_A)

    def write(group: h5py.Group) -> None:
        for name, array in arrays.items():
            group.create_dataset(name, data=array.astype(np.float32), chunks=(1, *array.shape[1:]))
        group.attrs["pixel_size_A"] = float(pixel)

    write_group(path, PROJECTIONS, write, overwrite)


def save_analysis(path, *, resolution_A, atoms_A=None, elements=None, site_found=None, displacement_A=None,
                  overwrite: bool = False, group: str = ANALYSIS) -> None:  # fmt: skip
    """Write the ``analysis`` group (or ``group``, e.g. ``joint/analysis``): ``resolution_A`` (3,) for (z, y, x) in A and, when atoms were fitted,
    ``atoms_A`` (N, 3) (x, y, z) in A, ``elements`` (N,) symbols, ``site_found`` (N,) bool and
    ``displacement_A`` (N, 3) (NaN where no atom was found)."""
    resolution = np.asarray(resolution_A, dtype=float)
    if resolution.shape != (3,) or not np.all(np.isfinite(resolution)) or np.any(resolution <= 0):
        raise ValueError(f"resolution_A: expected three positive finite values (z, y, x) in A, got {resolution_A!r}")
    arrays: dict[str, np.ndarray] = {"resolution_A": resolution}
    atom_fields = {"atoms_A": atoms_A, "elements": elements, "site_found": site_found, "displacement_A": displacement_A}
    given = [name for name, value in atom_fields.items() if value is not None]
    if given and len(given) != len(atom_fields):
        missing = [name for name in atom_fields if name not in given]
        raise ValueError(f"{missing[0]}: expected all of {list(atom_fields)} together, missing {missing}")
    if given:
        atoms = _finite_array("atoms_A", atoms_A, ndim=2)
        n = len(atoms)
        if atoms.shape[1] != 3:
            raise ValueError(f"atoms_A: expected shape (N, 3) of (x, y, z) in A, got {atoms.shape}")
        symbols = np.asarray(elements)
        if symbols.shape != (n,) or symbols.dtype.kind not in "US":
            raise ValueError(f"elements: expected ({n},) chemical symbols, got shape {symbols.shape} of {symbols.dtype}")
        found = np.asarray(site_found)
        if found.shape != (n,) or found.dtype != bool:
            raise ValueError(f"site_found: expected ({n},) booleans, got shape {found.shape} of {found.dtype}")
        displacement = np.asarray(displacement_A, dtype=float)
        if displacement.shape != (n, 3):
            raise ValueError(f"displacement_A: expected shape ({n}, 3), got {displacement.shape}")
        arrays.update(atoms_A=atoms, elements=symbols.astype("S"), site_found=found, displacement_A=displacement)

    def write(group: h5py.Group) -> None:
        for name, array in arrays.items():
            group.create_dataset(name, data=array)

    write_group(path, group, write, overwrite)


def write_run_attributes(path, *, config=None, **attrs) -> None:
    """Set the root attributes: ``mspt_version``, ``modified_utc`` (and ``created_utc`` the first time),
    ``config_toml`` from ``config`` (a :class:`mspt.config.RunConfig` or TOML text), and any string or
    number given as a keyword (e.g. ``started_utc=...``). Other attributes and all groups are kept."""
    from .. import __version__

    values: dict = {}
    for key, value in attrs.items():
        if not isinstance(value, (str, int, float, bool, np.number)):
            raise TypeError(f"{key}: expected a string or a number for a root attribute, got {type(value).__name__}")
        values[key] = value
    if config is not None:
        if not isinstance(config, str):
            from ..config import to_toml

            config = to_toml(config)
        values["config_toml"] = config
    now = _utc_now()
    values.update(mspt_version=__version__, modified_utc=now)
    with atomic_path(path, name="path", copy_existing=True) as tmp:
        with _open_copy(tmp, path) as f:
            if "created_utc" not in f.attrs:
                f.attrs["created_utc"] = now
            for key, value in values.items():
                f.attrs[key] = value


def read_run_attributes(path) -> dict:
    """The root attributes as plain Python values (strings decoded)."""
    with _open(path) as f:
        return {key: (value.decode() if isinstance(value, bytes) else value.tolist() if hasattr(value, "tolist") else value)
                for key, value in f.attrs.items()}  # fmt: skip


def load_projections(path) -> dict:
    """``{"phase", "denoised" (if written), "pixel_size_A"}`` from the ``projections`` group."""
    with _open(path) as f:
        group = _group(f, path, PROJECTIONS)
        out = {name: group[name][()] for name in group}
        out["pixel_size_A"] = float(group.attrs["pixel_size_A"])
    return out


def load_analysis(path, group: str = ANALYSIS) -> dict:
    """The ``analysis`` group's (or ``group``'s) arrays (``elements`` as str)."""
    with _open(path) as f:
        found = _group(f, path, group)
        out = {name: found[name][()] for name in found}
    if "elements" in out:
        out["elements"] = out["elements"].astype(str)
    return out


def write_group(path, name: str, write: Callable[[h5py.Group], None], overwrite: bool) -> None:
    """Create group ``name`` of the results file at ``path`` (created if absent) and fill it with ``write``,
    atomically (a copy written and renamed over the file); an existing group is replaced only with
    ``overwrite``."""
    with atomic_path(path, name="path", copy_existing=True) as tmp:
        with _open_copy(tmp, path) as f:
            if name in f:
                if not overwrite:
                    raise FileExistsError(f"{path}: group {name!r} already exists; pass overwrite=True to replace it")
                del f[name]
            write(f.create_group(name))


def _open_copy(tmp, path) -> h5py.File:
    """The temporary copy of the results file, opened to add to it."""
    try:
        return h5py.File(tmp, "a")
    except OSError as err:
        raise ValueError(f"path: {path} exists but is not a readable HDF5 results file ({err}); nothing was written") from None


def _finite_array(name: str, value, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "uif" or array.ndim != ndim or min(array.shape, default=0) < 1:
        raise ValueError(f"{name}: expected a non-empty real array with {ndim} dimensions, got shape {array.shape} of {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite values, found NaN or infinite ones")
    return array


def _open(path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"path: {path} is not a readable HDF5 results file ({err})") from None


def _group(f: h5py.File, path, name: str) -> h5py.Group:
    if name not in f:
        raise KeyError(f"{path}: no {name!r} group")
    return f[name]


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
