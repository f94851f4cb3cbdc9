"""Multislice ptychography of one tilt: object slices, mixed-state probe, positions and mistilt from a
4D-STEM scan. ``reconstruct(scan, config) -> PtychoResult``."""

from .config import PtychoConfig
from .engine import PtychoEngine
from .reconstruct import reconstruct
from .result import PtychoResult
from .scan import PtychoScan

__all__ = ["PtychoConfig", "PtychoEngine", "PtychoResult", "PtychoScan", "reconstruct"]
