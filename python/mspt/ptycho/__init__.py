"""Multislice ptychography of one tilt: object slices, mixed-state probe, positions and mistilt from a
4D-STEM scan. ``reconstruct(scan, config) -> PtychoResult``."""

from .config import PtychoConfig
from .engine import PtychoEngine
from .reconstruct import reconstruct
from .report import save_report
from .result import PtychoResult
from .results_file import load_result, save_result
from .scan import PtychoScan

__all__ = [
    "PtychoConfig", "PtychoEngine", "PtychoResult", "PtychoScan", "load_result", "reconstruct", "save_report",
    "save_result",
]  # fmt: skip
