"""Tomography checkpoints, written atomically by the same code as the ptychography checkpoints
(:mod:`mspt.ptycho.checkpoint`: temporary file + rename). The run's arrays are datasets; its counters and
configuration fingerprint go in the JSON ``meta``; the tomography loop draws no random numbers."""

from __future__ import annotations

import numpy as np

from ..ptycho.checkpoint import load_state, save_state

# load_state reads these ptychography histories; a tomography checkpoint stores them empty.
_PTYCHO_ONLY = ("validation_history", "discrepancy_history")


def save_tomo_checkpoint(path, arrays: dict, meta: dict) -> None:
    state = {name: np.asarray(value) for name, value in arrays.items()}
    state.update({name: np.zeros(0) for name in _PTYCHO_ONLY})
    state.setdefault("loss_history", np.zeros(0))
    state["rng_state"] = None
    save_state(path, state, {"kind": "tomo", **meta})


def load_tomo_checkpoint(path) -> tuple[dict, dict]:
    state, meta = load_state(path)
    if meta.get("kind") != "tomo":
        raise ValueError(f"checkpoint_path: {path} is not an mspt tomography checkpoint")
    for name in (*_PTYCHO_ONLY, "rng_state"):
        state.pop(name, None)
    state["loss_history"] = np.asarray(state["loss_history"], dtype=float)
    return state, meta
