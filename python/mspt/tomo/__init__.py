"""Tomography with joint rigid alignment: from per-tilt projections and nominal poses to a volume and refined
poses. ``reconstruct(projections, rotation, shifts_A, pixel_size_A=..., config=TomoConfig()) -> TomoResult``."""

from .config import TomoConfig
from .reconstruct import reconstruct
from .report import save_tomo_report
from .result import TomoResult, TomoStep
from .results_file import load_tomo_result, save_tomo_result

__all__ = ["TomoConfig", "TomoResult", "TomoStep", "load_tomo_result", "reconstruct", "save_tomo_report",
           "save_tomo_result"]
