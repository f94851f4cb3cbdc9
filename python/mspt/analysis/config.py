"""AnalysisConfig: the settings of the analysis stage (TOML section ``[analysis]``), validated on creation.

The atom-fitting defaults suit oxide and metal nanocrystals reconstructed at 0.2-0.5 A voxels with atoms
at least ~1.5 A apart; the settings to check are ``search_radius_A`` (larger than the displacements to be
measured, smaller than half the closest atom spacing) and ``scale_tolerance`` (how far the voxel-size
calibration may be off).
"""

from __future__ import annotations

import dataclasses

from .. import _validate as v


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    """Settings of :func:`mspt.analysis.fit_lattice`.

    Peaks
        smoothing_A : Gaussian smoothing (sigma, A) of the volume before peaks are found and fitted; it
            lowers noise without moving an isolated atom's centre. 0 disables it.
        min_separation_A : local maxima closer than this (A) are one peak (the weaker one is dropped).
        peak_threshold_sigma : a local maximum is a peak when it stands this many noise sigmas above the
            background level (both estimated from the volume's voxel histogram).
        peak_threshold_fraction : and at least this fraction of the strongest peaks' height (the median
            of the ten highest local maxima) above that level. A reconstruction with a support and a
            non-negativity constraint has a near-noiseless background with faint ripples; this keeps them out.
    Registration
        scale_tolerance : the lattice's scale is searched within 1 +- this (voxel-size calibration error).
        angular_step_deg : step of the global orientation search (degrees); the best orientations found
            on that grid are then refined continuously.
        min_match_fraction : the registration fails with :class:`LatticeMismatchError` when fewer than
            this share of the peaks lie within ``search_radius_A`` of a lattice site (0 never fails).
    Sites
        search_radius_A : each site's atom is searched for within this distance (A) of its registered
            position; it bounds the displacements that can be measured.
        site_threshold : "auto" (per species, a two-class split of the site intensities between the
            background level and the occupied-site level, see :func:`mspt.analysis.site_thresholds`) or
            a number (one intensity threshold in the volume's units for every species).
    """

    smoothing_A: float = 0.15
    min_separation_A: float = 1.2
    peak_threshold_sigma: float = 5.0
    peak_threshold_fraction: float = 0.1
    scale_tolerance: float = 0.05
    angular_step_deg: float = 8.0
    min_match_fraction: float = 0.5
    search_radius_A: float = 0.7
    site_threshold: float | str = "auto"

    def __post_init__(self):
        v.positive("smoothing_A", self.smoothing_A, allow_zero=True)
        v.positive("min_separation_A", self.min_separation_A)
        v.positive("peak_threshold_sigma", self.peak_threshold_sigma)
        v.fraction("peak_threshold_fraction", self.peak_threshold_fraction, high=1.0)
        v.fraction("scale_tolerance", self.scale_tolerance, high=0.5)
        v.fraction("angular_step_deg", self.angular_step_deg, low=1.0, high=20.0)
        v.fraction("min_match_fraction", self.min_match_fraction)
        v.positive("search_radius_A", self.search_radius_A)
        if self.search_radius_A >= self.min_separation_A:
            raise ValueError(
                f"search_radius_A: expected less than min_separation_A = {self.min_separation_A} A "
                f"(a site's search sphere must not reach a neighbouring peak), got {self.search_radius_A!r}"
            )
        if self.site_threshold != "auto":
            try:
                v.finite("site_threshold", self.site_threshold)
            except ValueError:
                raise ValueError(f'site_threshold: expected "auto" or a finite number, got {self.site_threshold!r}') from None

    def replace(self, **changes) -> "AnalysisConfig":
        return dataclasses.replace(self, **changes)
