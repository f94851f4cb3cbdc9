"""What this installation of mspt can do: version, compiled backends, FFT library, threads, GPUs."""

from __future__ import annotations

import importlib
import platform

import numpy as np

from . import __version__
from ._native import core as _core


def collect() -> dict:
    """A dict describing the installation (what ``mspt info`` prints)."""
    core = _core.build_info()
    info = {
        "mspt": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu backend": f"{_core.__name__} ({core['isa']}; {core['fft']}, OpenMP {core['openmp_threads']} threads, planner {core['fftw_planner']})",
    }
    try:
        cuda = importlib.import_module("mspt._core_cuda")
    except ModuleNotFoundError:
        info["cuda backend"] = "not built (no CUDA compiler or cuFFT at build time, or MSPT_CUDA=OFF)"
        info["gpus"] = "-"
        return info
    except ImportError as err:
        info["cuda backend"] = f"built, but cannot load: {err}"
        info["gpus"] = "-"
        return info
    info["cuda backend"] = f"mspt._core_cuda ({cuda.build_info().get('cufft', 'cuFFT')})" if hasattr(cuda, "build_info") else "mspt._core_cuda"
    devices = cuda.device_info() if cuda.device_count() > 0 else []
    if devices:
        info["gpus"] = "; ".join(
            f"{d['name']} (sm_{d['compute_capability']}, {d['total_memory_bytes'] / 2**30:.0f} GiB)" for d in devices
        )
    else:
        info["gpus"] = f"none usable ({cuda.device_status()})"
    return info


def format_info(info: dict) -> str:
    width = max(len(k) for k in info)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in info.items())
