"""Backend selection: the CPU core (always built) and the CUDA core (built where nvcc was found, loaded on
first use so that ``import mspt`` never needs a GPU driver). Engines are cached per shape and reused, so
repeated stateless calls do not re-plan FFTs or re-allocate scratch."""

from __future__ import annotations

import collections
import importlib
import threading

from ._native import core as _core

DEVICES = ("cpu", "cuda")
_ENGINE_CACHE_SIZE = 8
_engines: "collections.OrderedDict[tuple, tuple[object, threading.Lock]]" = collections.OrderedDict()
_engines_lock = threading.Lock()
_cuda_module = None


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {DEVICES}, got {device!r}")
    return device


def cuda_module():
    """The CUDA backend module, loaded on first use; RuntimeError saying what is missing otherwise."""
    global _cuda_module
    if _cuda_module is not None:
        return _cuda_module
    try:
        module = importlib.import_module("mspt._core_cuda")
    except ModuleNotFoundError as err:
        if err.name != "mspt._core_cuda":
            raise RuntimeError(f"the CUDA backend could not load a library it needs: {err}") from err
        raise RuntimeError(
            "this mspt was built without its CUDA backend (no CUDA compiler or no cuFFT was found at build time, "
            "or MSPT_CUDA=OFF). "
            "Install the CUDA toolkit (nvcc) and `pip install nvidia-cufft` if it lacks cuFFT, then "
            "reinstall mspt with `pip install . -C cmake.define.MSPT_CUDA=ON`."
        ) from err
    except ImportError as err:
        raise RuntimeError(f"the CUDA backend is built but cannot be loaded (CUDA runtime or cuFFT missing?): {err}") from err
    count = module.device_count()
    if count <= 0:
        raise RuntimeError(f"the CUDA backend is built but sees no usable GPU: {module.device_status()}")
    _cuda_module = module
    return module


def cuda_available() -> bool:
    try:
        cuda_module()
    except RuntimeError:
        return False
    return True


def multislice_engine(device: str, precision: str, ny: int, nx: int, n_slices: int, modes: int, threads: int = 0,
                      index: int | None = None):  # fmt: skip
    """A cached (engine, lock) pair for this shape. Hold the lock while the engine runs: its scratch is shared.

    ``index`` is the CUDA device of a "cuda" engine (default: the current device of the CUDA backend);
    engines are cached per device."""
    check_device(device)
    if device == "cuda" and index is None:
        index = int(cuda_module().current_device())
    key = ("multislice", device, index, precision, ny, nx, n_slices, modes, threads)
    with _engines_lock:
        if key in _engines:
            _engines.move_to_end(key)
            return _engines[key]
    if device == "cpu":
        cls = _core.MultisliceCpu64 if precision == "double" else _core.MultisliceCpu32
        engine = cls(ny, nx, n_slices, modes, threads)
    else:
        if precision == "double":
            raise ValueError("dtype: the CUDA backend runs in single precision; pass complex64 arrays")
        engine = cuda_module().MultisliceCuda32(ny, nx, n_slices, modes, threads, device=index)
    entry = (engine, threading.Lock())
    with _engines_lock:
        _engines[key] = entry
        while len(_engines) > _ENGINE_CACHE_SIZE:
            _engines.popitem(last=False)
    return entry


def clear_engine_cache() -> None:
    """Free every cached engine (their FFT plans and scratch buffers)."""
    with _engines_lock:
        _engines.clear()
