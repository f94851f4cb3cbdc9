"""The run's output folder: ``results.h5`` and what sits beside it.

Each tilt's ptychography result is written once, atomically, to ``ptycho/ptycho_NNN.h5`` by its job and
linked into ``results.h5`` as group ``ptycho/NNN`` (an HDF5 external link, resolved relative to the
results file): the results file stays small, so every later atomic write of it (a copy of the file plus
the new group, renamed over it) costs little even when the tilts' objects add up to gigabytes.
Readers see the DESIGN.md schema; keep the ``ptycho/`` folder beside ``results.h5`` when moving a run.
"""

from __future__ import annotations

import pathlib
import shutil

import h5py
import numpy as np

from ..io import atomic, export_volume, export_xyz, save_analysis, save_projections, write_run_attributes

TILT_FOLDER = "ptycho"


class ResultsStore:
    """Writes and reads one run's outputs; the pipeline's driver process is its only writer."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.out_dir = self.path.parent
        self.reports: dict[str, pathlib.Path] = {}
        self.exports: dict[str, pathlib.Path] = {}

    # -- state -------------------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        if not self.path.exists():
            return False
        with h5py.File(self.path, "r") as f:
            return name in f

    def read(self, name: str) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            return f[name][()]

    def read_root_attr(self, key: str):
        if not self.path.exists():
            return None
        with h5py.File(self.path, "r") as f:
            value = f.attrs.get(key)
        return value.decode() if isinstance(value, bytes) else value

    def discard(self, work_dir: pathlib.Path) -> None:
        """Remove a previous run's results (only called with ``overwrite``)."""
        for path in (self.path, work_dir, self.out_dir / TILT_FOLDER):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def discard_group(self, name: str) -> None:
        """Remove group ``name`` from the results file (atomically)."""
        with atomic.atomic_path(self.path, name="output.dir", copy_existing=True) as tmp:
            with h5py.File(tmp, "a") as f:
                if name in f:
                    del f[name]

    # -- writers -----------------------------------------------------------------------------------------
    def write_root_attrs(self, *, config_toml: str | None = None, **attrs) -> None:
        write_run_attributes(self.path, config=config_toml, **attrs)

    def tilt_file(self, index: int) -> pathlib.Path:
        return self.out_dir / TILT_FOLDER / f"ptycho_{index:03d}.h5"

    def link_ptycho(self, index: int) -> None:
        """Link tilt ``index``'s own file into ``results.h5`` as ``ptycho/NNN``."""
        target = self.tilt_file(index)
        name = f"ptycho/{index:03d}"
        with atomic.atomic_path(self.path, name="output.dir", copy_existing=True) as tmp:
            with h5py.File(tmp, "a") as f:
                if name in f:
                    del f[name]
                f.require_group("ptycho")
                f[name] = h5py.ExternalLink(str(target.relative_to(self.out_dir)), name)

    def add_projections(self, phase: np.ndarray, denoised: np.ndarray, pixel_size_A: float) -> None:
        save_projections(self.path, phase, denoised, pixel_size_A=pixel_size_A, overwrite=True)

    def add_tomo(self, result) -> None:
        from ..tomo import save_tomo_result

        save_tomo_result(self.path, result, overwrite=True)

    def add_analysis(self, res, fit, group: str = "analysis") -> None:
        """A volume's resolution and atom fit (None: no fit) as ``group``."""
        atoms = {} if fit is None else dict(
            atoms_A=fit.positions_A, elements=np.asarray(fit.elements).astype(str),
            site_found=np.asarray(fit.site_found, bool), displacement_A=fit.displacement_A,
        )  # fmt: skip
        save_analysis(self.path, resolution_A=res.resolution_A, overwrite=True, group=group, **atoms)

    def add_report(self, name: str, path) -> None:
        self.reports[name] = pathlib.Path(path)

    def export_volume(self, volume: np.ndarray, voxel_size_A: float) -> None:
        self.exports["volume"] = export_volume(self.out_dir / "volume.mrc", volume, voxel_size_A, overwrite=True)

    def export_atoms(self, fit) -> None:
        found = np.asarray(fit.site_found, bool)
        self.exports["atoms"] = export_xyz(
            self.out_dir / "atoms.xyz", np.asarray(fit.positions_A)[found], np.asarray(fit.elements)[found], overwrite=True
        )

    # -- readers -----------------------------------------------------------------------------------------
    def ptycho_results(self) -> list:
        from ..ptycho import load_result

        with h5py.File(self.path, "r") as f:
            indices = sorted(int(k) for k in f["ptycho"].keys())
        return [load_result(self.path, i) for i in indices]

    def tomo_result(self):
        from ..tomo import load_tomo_result

        return load_tomo_result(self.path)
