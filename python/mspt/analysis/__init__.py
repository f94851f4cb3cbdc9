"""Analysis of reconstructed volumes: resolution (power spectrum, FSC), lattice registration and atom fitting."""

from .atom_fit import fit_lattice, site_thresholds
from .atom_widths import AtomWidths, atom_widths
from .atom_report import save_atom_report
from .atom_result import AtomFit
from .config import AnalysisConfig
from .fsc import FSC, fsc, half_bit_threshold
from .lattice import LatticeMismatchError, LatticeRegistration, load_structure
from .resolution import Resolution, resolution
from .resolution_report import save_resolution_report

__all__ = [
    "AnalysisConfig", "AtomFit", "AtomWidths", "atom_widths", "LatticeMismatchError", "LatticeRegistration", "fit_lattice", "load_structure",
    "save_atom_report", "site_thresholds", "FSC", "Resolution", "fsc", "half_bit_threshold", "resolution", "save_resolution_report",
]  # fmt: skip
