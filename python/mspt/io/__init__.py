"""File input and output: tilt series (``mspt.tiltseries`` HDF5, py4DSTEM / EMD 1.0, the formats rosettasciio
reads), the results file's projection and analysis groups and run attributes, and exports (MRC / TIFF
volumes, XYZ / CIF atoms).

Every write is atomic (temporary file + rename, :mod:`mspt.io.atomic`) and never replaces an existing file or
group without ``overwrite=True``.
"""

from .calibration import ScanCalibration
from .exports import export_atoms, export_cif, export_mrc, export_tiff, export_volume, export_xyz
from .results import (
    load_analysis,
    load_projections,
    read_run_attributes,
    save_analysis,
    save_projections,
    write_run_attributes,
)
from .rosettasciio import load_rosettasciio
from .loading import load_tiltseries
from .tiltseries import TiltSeries
from .tiltseries_writer import save_tiltseries

__all__ = [
    "ScanCalibration", "TiltSeries", "export_atoms", "export_cif", "export_mrc", "export_tiff", "export_volume",
    "export_xyz", "load_analysis", "load_projections", "load_rosettasciio", "load_tiltseries",
    "read_run_attributes", "save_analysis", "save_projections", "save_tiltseries", "write_run_attributes",
]  # fmt: skip
