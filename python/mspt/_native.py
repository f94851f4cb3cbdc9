"""The CPU core for this processor: ``_core_avx2`` (AVX2 + FMA) where the processor has those instructions,
else ``_core`` (the baseline build, which runs everywhere). ``MSPT_CPU_ISA=baseline`` forces the baseline."""

from __future__ import annotations

import importlib
import os

from . import _core as baseline


def _select():
    wanted = os.environ.get("MSPT_CPU_ISA", "auto").lower()
    if wanted not in ("auto", "avx2", "baseline"):
        raise ValueError(f"MSPT_CPU_ISA: expected 'auto', 'avx2' or 'baseline', got {wanted!r}")
    if wanted == "baseline":
        return baseline
    if baseline.cpu_supports("avx2") and baseline.cpu_supports("fma"):
        try:
            return importlib.import_module("mspt._core_avx2")
        except ImportError:
            if wanted == "avx2":
                raise
    elif wanted == "avx2":
        raise RuntimeError("MSPT_CPU_ISA=avx2: this processor lacks AVX2 or FMA")
    return baseline


core = _select()
