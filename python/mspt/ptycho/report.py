"""A one-page PNG report of a reconstructed tilt: summed phase, probe modes, refined positions and the
refined scan model over the nominal scan, the training / validation loss curves with the stop marked, and
the self-check warnings that fired."""

from __future__ import annotations

import pathlib

import numpy as np

from .result import PtychoResult
from .scan_model import describe_affine


def save_report(result: PtychoResult, path) -> pathlib.Path:
    """Draw the report to ``path`` (PNG); needs matplotlib (the ``viz`` extra)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    modes = result.probe.shape[0]
    fig, axes = plt.subplots(2, 2 + max(0, modes - 1), figsize=(4 * (2 + max(0, modes - 1)), 8), squeeze=False)
    ax = axes[0, 0]
    extent = _extent(result)
    image = ax.imshow(result.summed_phase, cmap="gray", extent=extent, origin="upper")
    fig.colorbar(image, ax=ax, label="rad")
    ax.set_title("summed phase")
    ax.set_xlabel("x (A)")
    ax.set_ylabel("y (A)")

    ax = axes[0, 1]
    ax.plot(result.nominal_positions_A[:, 1], result.nominal_positions_A[:, 0], "+", color="0.6", label="nominal")
    if result.position_offsets_A is not None and not np.allclose(result.scan_affine, np.eye(2)):
        model = result.positions_A - result.position_offsets_A  # the nominal scan through the scan model
        ax.plot(model[:, 1], model[:, 0], "x", ms=3, color="C2", label="scan model")
    ax.plot(result.positions_A[:, 1], result.positions_A[:, 0], ".", ms=3, label="refined")
    held = result.validation_indices
    if len(held):
        ax.plot(result.positions_A[held, 1], result.positions_A[held, 0], "o", mfc="none", color="C3", label="held out")
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.legend(fontsize=8)
    affine = describe_affine(result.scan_affine)
    ax.set_title(
        f"positions, tilt ({result.tilt_mrad[0]:.2f}, {result.tilt_mrad[1]:.2f}) mrad\n"
        f"scan scale ({affine['scale_y']:.4f}, {affine['scale_x']:.4f}), rotation {affine['rotation_deg']:.2f} deg, "
        f"drift ({result.scan_drift_A[0]:.2f}, {result.scan_drift_A[1]:.2f}) A",
        fontsize=8,
    )  # fmt: skip

    total = np.sum(np.abs(result.probe) ** 2)
    for m in range(modes):
        ax = axes[1, m] if m < axes.shape[1] else None
        if ax is None:
            break
        ax.imshow(np.abs(result.probe[m]) ** 2, cmap="magma")
        title = f"probe mode {m} ({np.sum(np.abs(result.probe[m]) ** 2) / total:.1%})"
        if m == 0 and result.probe_defocus_A is not None:
            title += f"\nrefined defocus {result.probe_defocus_A:.1f} A"
        ax.set_title(title, fontsize=9)
        ax.axis("off")

    ax = axes[0, -1] if axes.shape[1] > 2 else axes[1, 1]
    iterations = np.arange(1, len(result.loss) + 1)
    ax.plot(iterations, result.loss, label="training")
    if np.any(np.isfinite(result.validation_loss)):
        ax.plot(iterations, result.validation_loss, label="validation")
    if result.best_iteration > 0:
        ax.axvline(result.best_iteration, color="k", ls=":", label=f"returned state (iteration {result.best_iteration})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss per pattern")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(result.stop_reason, fontsize=8, wrap=True)
    if result.frc is not None:
        _draw_frc(ax.inset_axes([0.56, 0.52, 0.42, 0.44]), result.frc)
    for extra in axes.ravel()[modes + 2 :]:
        if not extra.has_data():
            extra.axis("off")
    if result.warnings:
        text = "\n".join(f"WARNING {code}: {message}" for code, message in result.warnings)
        fig.text(0.01, 0.005, text, fontsize=7, color="C3", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.04 * len(result.warnings), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _extent(result: PtychoResult):
    h, w = result.summed_phase.shape
    (y0, x0), (dy, dx) = result.object_origin_A, result.pixel_size_A
    return (x0 - dx / 2, x0 + (w - 0.5) * dx, y0 + (h - 0.5) * dy, y0 - dy / 2)


def _draw_frc(ax, frc: dict):
    """The half-data FRC self-check: the curve, its 1/7 and half-bit thresholds and the resolutions."""
    k = np.asarray(frc["frequencies_invA"])
    ax.plot(k, frc["frc"], color="k", lw=1)
    ax.axhline(1 / 7, color="C3", lw=0.8, ls="--")
    ax.plot(k, frc["half_bit"], color="C0", lw=0.8, ls=":")
    for resolution, colour in ((frc["resolution_A"], "C3"), (frc["resolution_half_bit_A"], "C0")):
        ax.axvline(1 / resolution, color=colour, lw=0.8)
    ax.set_ylim(-0.2, 1.05)
    ax.tick_params(labelsize=6)
    ax.set_xlabel("1/A", fontsize=6, labelpad=1)
    ax.set_title(f"half-data FRC: {frc['resolution_A']:.2f} A (1/7), {frc['resolution_half_bit_A']:.2f} A (half-bit)",
                 fontsize=6)  # fmt: skip
