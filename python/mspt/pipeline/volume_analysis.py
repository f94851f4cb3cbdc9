"""The analysis every reconstructed volume gets in a run (the sequential one and the joint one): resolution
from the power spectrum and, with a structure, lattice registration and atom fitting."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from .._warning import ReconstructionWarning

log = logging.getLogger("mspt.pipeline")


def analyse_volume(config, volume: np.ndarray, voxel_size_A: float, stage: str):
    """(resolution, atom fit or None, summary) of ``volume``; ``stage`` names it in the log. A structure that
    does not register is a finding, not a crash: it is logged, warned about and put in the summary."""
    from ..analysis import LatticeMismatchError, fit_lattice, load_structure, resolution

    res = resolution(volume, voxel_size_A)
    summary: dict = {"resolution_A": tuple(float(r) for r in res.resolution_A)}
    fit = None
    if config.input.structure:
        try:
            fit = fit_lattice(volume, voxel_size_A, load_structure(config.input.structure), config=config.analysis)
        except LatticeMismatchError as err:
            log.warning("%s: no atom fit: %s", stage, err)
            warnings.warn(ReconstructionWarning("atom_fit_failed", str(err)), stacklevel=3)
            summary["atom_fit_error"] = str(err)
        else:
            summary["found_fraction"] = float(np.mean(fit.site_found))
    log.info("%s: resolution (z, y, x) = %s A; %s", stage, summary["resolution_A"],
             f"{100 * summary['found_fraction']:.1f} % of sites found" if fit is not None else "no atom fit")  # fmt: skip
    return res, fit, summary
