"""Atomic checkpoints of a reconstruction's state: written to a temporary file beside the target and
renamed over it, so a crash never leaves a half-written checkpoint and never destroys the previous one."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

import h5py
import numpy as np

FORMAT = "mspt.ptycho.checkpoint/1"


def save_state(path, state: dict, meta: dict | None = None) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["meta"] = json.dumps(meta or {})
            for key, value in state.items():
                if key == "rng_state":
                    f.attrs["rng_state"] = json.dumps(value)
                else:
                    f.create_dataset(key, data=np.asarray(value))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_state(path) -> tuple[dict, dict]:
    path = pathlib.Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"checkpoint_path: {path} is not a readable HDF5 checkpoint ({err})") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"checkpoint_path: {path} is not an mspt ptychography checkpoint (format {f.attrs.get('format')!r})")
        state = {key: f[key][()] for key in f.keys()}
        state["rng_state"] = json.loads(f.attrs["rng_state"])
        for key in ("loss_history", "validation_history", "discrepancy_history"):
            state[key] = list(np.atleast_1d(state[key]))
        meta = json.loads(f.attrs["meta"])
    return state, meta
