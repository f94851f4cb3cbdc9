"""Exports for other programs: a volume as MRC (``mrcfile``) or TIFF (``tifffile``, ImageJ stack), atoms as
XYZ or CIF (ASE). Writes are atomic and never replace a file without ``overwrite=True``.

MRC: the (Z, Y, X) volume as sections z, rows y, columns x, the voxel size in the header and the origin set
so that voxel (k, j, i) sits at ((i - X//2) d, (j - Y//2) d, (k - Z//2) d), the rotation-centre frame.
TIFF: a float32 ImageJ stack of z slices with pixel size and z spacing d in angstrom.
XYZ: positions (x, y, z) in A in the volume's frame, as given. CIF: a P1 cell spanning the atoms'
bounding box plus ``margin_A``; the frame is shifted so the cell starts at 0 (CIF stores fractional
coordinates), by the offset this function returns.
"""

from __future__ import annotations

import importlib
import pathlib

import numpy as np

from .. import _validate as v
from .atomic import atomic_path


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"this export needs {module!r} ({err}); install it with: pip install {extra}") from None


def _volume(volume) -> np.ndarray:
    array = np.asarray(volume)
    if array.ndim != 3 or min(array.shape) < 1 or array.dtype.kind not in "uif":
        raise ValueError(f"volume: expected a real (Z, Y, X) array, got shape {array.shape} of {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("volume: expected finite values, found NaN or infinite ones")
    return np.ascontiguousarray(array, dtype=np.float32)


def export_mrc(path, volume, voxel_size_A: float, *, overwrite: bool = False) -> pathlib.Path:
    """Write ``volume`` (Z, Y, X) as an MRC file with its voxel size (A) and rotation-centre origin."""
    mrcfile = _require("mrcfile", "mrcfile")
    data = _volume(volume)
    d = float(v.positive("voxel_size_A", voxel_size_A))
    with atomic_path(path, name="path", overwrite=overwrite) as tmp:
        with mrcfile.new(tmp) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = d
            z, y, x = data.shape
            mrc.header.origin = (-(x // 2) * d, -(y // 2) * d, -(z // 2) * d)
    return pathlib.Path(path)


def export_tiff(path, volume, voxel_size_A: float, *, overwrite: bool = False) -> pathlib.Path:
    """Write ``volume`` (Z, Y, X) as a float32 ImageJ TIFF stack with pixel size and spacing in A."""
    tifffile = _require("tifffile", "tifffile")
    data = _volume(volume)
    d = float(v.positive("voxel_size_A", voxel_size_A))
    with atomic_path(path, name="path", overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / d, 1.0 / d),
                         metadata={"spacing": d, "unit": "angstrom", "axes": "ZYX"})  # fmt: skip
    return pathlib.Path(path)


def _atoms(positions_A, elements):
    ase = _require("ase", "sim")
    positions = np.asarray(positions_A, dtype=float)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) < 1:
        raise ValueError(f"positions_A: expected shape (N, 3) of (x, y, z) in A, got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions_A: expected finite positions")
    symbols = [str(e) for e in np.asarray(elements).reshape(-1)]
    if len(symbols) != len(positions):
        raise ValueError(f"elements: expected {len(positions)} chemical symbols (one per position), got {len(symbols)}")
    try:
        return ase.Atoms(symbols=symbols, positions=positions)
    except (KeyError, ValueError) as err:
        raise ValueError(f"elements: expected chemical symbols such as 'Co' or 'O' ({err})") from None


def export_xyz(path, positions_A, elements, *, overwrite: bool = False) -> pathlib.Path:
    """Write atoms (positions (N, 3) as (x, y, z) in A, elements (N,) symbols) as an XYZ file."""
    atoms = _atoms(positions_A, elements)
    ase_io = _require("ase.io", "sim")
    with atomic_path(path, name="path", overwrite=overwrite) as tmp:
        ase_io.write(tmp, atoms, format="xyz")
    return pathlib.Path(path)


def export_cif(path, positions_A, elements, *, margin_A: float = 2.0, overwrite: bool = False) -> np.ndarray:
    """Write atoms as a P1 CIF whose cell is their bounding box plus ``margin_A`` on every side; returns
    the offset (3,) in A added to the positions (cell coordinates = positions + offset)."""
    atoms = _atoms(positions_A, elements)
    margin = float(v.positive("margin_A", margin_A))
    ase_io = _require("ase.io", "sim")
    lo = atoms.positions.min(axis=0) - margin
    offset = -lo
    atoms.positions += offset
    atoms.cell = np.ptp(atoms.positions, axis=0) + 2 * margin
    with atomic_path(path, name="path", overwrite=overwrite) as tmp:
        ase_io.write(tmp, atoms, format="cif")
    return offset


def export_atoms(path, positions_A, elements, *, overwrite: bool = False):
    """Write atoms as XYZ or CIF, chosen by the file's suffix (.xyz / .cif)."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix == ".xyz":
        return export_xyz(path, positions_A, elements, overwrite=overwrite)
    if suffix == ".cif":
        return export_cif(path, positions_A, elements, overwrite=overwrite)
    raise ValueError(f"path: expected a .xyz or .cif file name, got {str(path)!r}")


def export_volume(path, volume, voxel_size_A: float, *, overwrite: bool = False) -> pathlib.Path:
    """Write a volume as MRC or TIFF, chosen by the file's suffix (.mrc / .tif / .tiff)."""
    suffix = pathlib.Path(path).suffix.lower()
    if suffix == ".mrc":
        return export_mrc(path, volume, voxel_size_A, overwrite=overwrite)
    if suffix in (".tif", ".tiff"):
        return export_tiff(path, volume, voxel_size_A, overwrite=overwrite)
    raise ValueError(f"path: expected a .mrc, .tif or .tiff file name, got {str(path)!r}")
