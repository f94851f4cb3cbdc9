"""DenoiseConfig: the settings of the projection denoising step (TOML section ``[denoise]``)."""

from __future__ import annotations

import dataclasses

from .. import _validate as v

BM3D_PROFILES = ("np", "refilter", "vn", "vn_old", "high", "deb")


@dataclasses.dataclass(frozen=True)
class DenoiseConfig:
    """Settings of :func:`mspt.denoise.denoise`: BM3D on each projection, then a Fourier-sparsity constraint.

    enabled : run the step at all (False passes the projections through unchanged).
    sigma : the noise standard deviation in the images' own units (rad for summed phases), or "auto" to
        estimate it from each image (see :func:`mspt.denoise.estimate_sigma`).
    profile : the ``bm3d`` package's profile: "np" (normal), "refilter" (a second pass that re-filters the
        residual; sharper edges), "vn" / "vn_old" (very noisy data), "high" (higher quality, slower),
        "deb" (deblurring settings).
    fourier_keep : the fraction of the strongest Fourier coefficients of each image that are kept after
        BM3D (in (0, 1]); 1.0 or None skips the constraint. Crystalline projections are sparse in Fourier
        space (Bragg spots); a lower fraction removes more noise and, below what the spots need, signal too.
    progress : show a progress bar over the images of a stack.
    """

    enabled: bool = True
    sigma: float | str = "auto"
    profile: str = "np"
    fourier_keep: float | None = None
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled: expected true or false, got {self.enabled!r}")
        if self.sigma != "auto":
            try:
                v.positive("sigma", self.sigma)
            except ValueError:
                expected = 'a positive number (in the images\' units) or "auto"'
                raise ValueError(f"sigma: expected {expected}, got {self.sigma!r}") from None
        v.choice("profile", self.profile, BM3D_PROFILES)
        if self.fourier_keep is not None:
            keep = v.fraction("fourier_keep", self.fourier_keep)
            if keep <= 0:
                raise ValueError(
                    f"fourier_keep: expected a fraction in (0, 1] (1 skips the constraint), got {self.fourier_keep!r}"
                )
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress: expected true or false, got {self.progress!r}")

    def replace(self, **changes) -> "DenoiseConfig":
        return dataclasses.replace(self, **changes)
