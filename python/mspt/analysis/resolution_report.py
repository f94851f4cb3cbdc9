"""A PNG figure of a resolution analysis: the directional power spectra against the noise floor with each
axis's cut-off marked, and, when given, Fourier shell correlation curves with their thresholds."""

from __future__ import annotations

import pathlib

import numpy as np

from .fsc import FSC, ONE_SEVENTH
from .resolution import Resolution

_AXIS_NAMES = ("z (axial)", "y", "x")


def save_resolution_report(result: Resolution, path, fsc: FSC | list[FSC] | None = None) -> pathlib.Path:
    """Draw ``result`` (and the ``fsc`` curve or curves, if given) to ``path`` (PNG); needs matplotlib (the
    ``viz`` extra)."""
    if not isinstance(result, Resolution):
        raise TypeError(f"result: expected an mspt.analysis.Resolution, got {type(result).__name__}")
    curves = [] if fsc is None else [fsc] if isinstance(fsc, FSC) else list(fsc)
    for index, curve in enumerate(curves):
        if not isinstance(curve, FSC):
            raise TypeError(f"fsc[{index}]: expected an mspt.analysis.FSC, got {type(curve).__name__}")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    fig, axes = plt.subplots(1, 1 + bool(curves), figsize=(6 * (1 + bool(curves)), 4.5), squeeze=False)
    ax = axes[0, 0]
    for axis, (name, spectrum) in enumerate(zip(_AXIS_NAMES, result.spectra)):
        line = ax.semilogy(result.k_invA, spectrum, label=f"{name}: {result.resolution_A[axis]:.2f} A")[0]
        if np.isfinite(result.resolution_A[axis]):
            ax.axvline(1.0 / result.resolution_A[axis], color=line.get_color(), ls=":")
    ax.axhline(result.noise_power, color="k", lw=1, label="noise floor")
    ax.axhline(result.threshold_power, color="k", lw=1, ls="--", label=f"noise x {1 + result.snr_threshold:g}")
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel("power per coefficient")
    ax.set_title(f"power spectrum in {result.cone_half_angle_deg:g} deg cones")
    ax.legend(fontsize=8)

    if curves:
        ax = axes[0, 1]
        for curve in curves:
            where = "full shells" if curve.cone_axis is None else f"cone about {curve.cone_axis}"
            label = (
                f"{where}: {curve.resolution_half_bit_A:.2f} A (half-bit), "
                f"{curve.resolution_one_seventh_A:.2f} A (1/7)"
            )
            line = ax.plot(curve.k_invA, curve.fsc, label=label)[0]
            ax.plot(curve.k_invA, curve.half_bit, color=line.get_color(), ls="--", lw=0.8)
        ax.axhline(ONE_SEVENTH, color="k", lw=0.8, ls=":", label="1/7")
        ax.set_ylim(-0.1, 1.05)
        ax.set_xlabel("spatial frequency (1/A)")
        ax.set_ylabel("FSC")
        ax.set_title("Fourier shell correlation (dashed: half-bit)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
