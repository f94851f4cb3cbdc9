"""Atomic file writes: a file is written under a temporary name beside its target and renamed over it, so a
crash or an error never leaves a half-written file and never destroys the previous version.

For an HDF5 file that gains a group, the existing file is first copied to the temporary name and the new
group written into the copy: slower than appending in place for large files, but a write can then never
corrupt or lose what the file already held (an interrupted in-place HDF5 append can)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator


def _writable_dir(name: str, directory: pathlib.Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"{name}: no write permission in {directory}")


@contextlib.contextmanager
def atomic_path(path, *, name: str = "path", overwrite: bool = False, copy_existing: bool = False) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path``; when the block ends without an error it replaces ``path``.

    overwrite : replace an existing ``path`` (otherwise FileExistsError naming ``name``).
    copy_existing : start from a copy of the existing file (to add to it); implies replacing it.
    """
    path = pathlib.Path(path)
    if path.exists() and not (overwrite or copy_existing):
        raise FileExistsError(f"{name}: {path} already exists; pass overwrite=True to replace it")
    _writable_dir(name, path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = pathlib.Path(tmp)
    try:
        if copy_existing and path.exists():
            shutil.copyfile(path, tmp_path)
        else:
            tmp_path.unlink()  # writers create the file themselves (h5py, mrcfile refuse an existing one)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp's 0600 would outlive the rename
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
