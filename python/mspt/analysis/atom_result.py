"""AtomFit: the atoms fitted to a volume on a registered lattice, their statistics and exports."""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from .lattice import LatticeRegistration


@dataclasses.dataclass(frozen=True)
class AtomFit:
    """The sites of a registered lattice in a volume and what was found at each.

    All positions are (x, y, z) in A in the volume's frame (DESIGN.md: from the rotation centre, voxel
    (k, j, i) at ((i - X//2) d, (j - Y//2) d, (k - Z//2) d)).

    positions_A : (N, 3) the fitted atom centre of a found site, the registered site of a missing one.
    sites_A : (N, 3) the registered (ideal) site positions.
    elements : (N,) chemical symbols of the sites.
    site_found : (N,) whether an atom was found at the site (intensity above its species' threshold).
    displacement_A : (N, 3) fitted centre minus registered site; NaN for missing sites.
    intensities : (N,) peak height above the background level at each site (volume units).
    thresholds : species -> the intensity threshold that decided found / missing (volume units).
    background_level : the volume's background level (volume units).
    registration : the lattice's rotation, origin, scale and fit quality.
    unmatched_peaks_A : (M, 3) peaks above the lowest threshold that lie near no site.
    box_lo_A, box_hi_A : (3,) the volume's extent (x, y, z in A, voxel centres).
    """

    positions_A: np.ndarray
    sites_A: np.ndarray
    elements: np.ndarray
    site_found: np.ndarray
    displacement_A: np.ndarray
    intensities: np.ndarray
    thresholds: dict
    background_level: float
    registration: LatticeRegistration
    unmatched_peaks_A: np.ndarray
    box_lo_A: np.ndarray
    box_hi_A: np.ndarray

    @property
    def displacement_magnitude_A(self) -> np.ndarray:
        """(N,) length of each site's displacement (A); NaN for missing sites."""
        return np.linalg.norm(self.displacement_A, axis=1)

    @property
    def species(self) -> list[str]:
        return sorted(set(self.elements.tolist()))

    def summary(self) -> dict:
        """Per species and for all sites: sites, found, found fraction, and the mean, rms and maximum
        displacement length of the found atoms (A); plus the registration's figures."""
        out = {}
        for name, mask in [(s, self.elements == s) for s in self.species] + [("all", np.ones(len(self.elements), bool))]:
            found = mask & self.site_found
            lengths = self.displacement_magnitude_A[found]
            out[name] = {
                "sites": int(mask.sum()),
                "found": int(found.sum()),
                "found_fraction": float(found.sum() / max(1, mask.sum())),
                "displacement_mean_A": float(lengths.mean()) if len(lengths) else float("nan"),
                "displacement_rms_A": float(np.sqrt(np.mean(lengths**2))) if len(lengths) else float("nan"),
                "displacement_max_A": float(lengths.max()) if len(lengths) else float("nan"),
            }
        reg = self.registration
        out["registration"] = {
            "scale": reg.scale,
            "residual_A": reg.residual_A,
            "match_fraction": reg.match_fraction,
            "unmatched_peaks": int(len(self.unmatched_peaks_A)),
        }
        return out

    def to_ase(self, *, include_missing: bool = False):
        """An ASE Atoms of the found atoms (and the missing sites' registered positions when
        ``include_missing``), in the volume's frame; the cell is the volume's box (not periodic). Per-atom
        arrays: ``site_found``, ``displacement_A``, ``intensity``, ``site_A``."""
        from ase import Atoms

        keep = np.ones(len(self.elements), bool) if include_missing else self.site_found
        atoms = Atoms(symbols=self.elements[keep].tolist(), positions=self.positions_A[keep],
                      cell=np.diag(self.box_hi_A - self.box_lo_A), pbc=False)  # fmt: skip
        atoms.arrays["site_found"] = self.site_found[keep].astype(bool)
        atoms.arrays["displacement_A"] = self.displacement_A[keep]
        atoms.arrays["intensity"] = self.intensities[keep].astype(float)
        atoms.arrays["site_A"] = self.sites_A[keep]
        atoms.info["box_lo_A"] = np.asarray(self.box_lo_A, float)
        return atoms

    def save_xyz(self, path, *, include_missing: bool = False) -> pathlib.Path:
        """Extended XYZ (via ASE) of :meth:`to_ase`, positions in the volume's frame with the per-atom arrays."""
        import ase.io

        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(path, self.to_ase(include_missing=include_missing), format="extxyz")
        return path

    def save_cif(self, path) -> pathlib.Path:
        """CIF (via ASE, space group P1) of the found atoms. A CIF holds fractional coordinates inside its
        cell, so the cell is the volume's box with its origin at ``box_lo_A``: add ``box_lo_A`` to the
        positions read back to return to the volume's frame."""
        import ase.io

        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atoms = self.to_ase()
        atoms.positions -= self.box_lo_A
        atoms.pbc = True
        for key in ("site_found", "displacement_A", "intensity", "site_A"):
            del atoms.arrays[key]
        ase.io.write(path, atoms, format="cif")
        return path
