"""Multislice ptychography of one tilt: object slices, mixed-state probe, positions and mistilt from a
4D-STEM scan. ``reconstruct(scan, config) -> PtychoResult``."""

from .._warning import ReconstructionWarning
from .config import PtychoConfig
from .engine import PtychoEngine
from .frc import FRCResult, half_data_frc
from .memory import MemoryPlan, format_plan, plan
from .reconstruct import reconstruct
from .report import save_report
from .result import PtychoResult
from .results_file import load_result, save_result
from .scan import PtychoScan

__all__ = [
    "FRCResult", "MemoryPlan", "PtychoConfig", "PtychoEngine", "PtychoResult", "PtychoScan", "ReconstructionWarning",
    "format_plan", "half_data_frc", "load_result", "plan", "reconstruct", "save_report", "save_result",
]  # fmt: skip
