"""A one-page PNG report of a reconstructed tilt: summed phase, probe modes, refined positions over the
nominal ones, and the training / validation loss curves with the stop marked."""

from __future__ import annotations

import pathlib

import numpy as np

from .result import PtychoResult


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
    ax.plot(result.positions_A[:, 1], result.positions_A[:, 0], ".", ms=3, label="refined")
    held = result.validation_indices
    if len(held):
        ax.plot(result.positions_A[held, 1], result.positions_A[held, 0], "o", mfc="none", color="C3", label="held out")
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.legend(fontsize=8)
    ax.set_title(f"positions, tilt ({result.tilt_mrad[0]:.2f}, {result.tilt_mrad[1]:.2f}) mrad")

    total = np.sum(np.abs(result.probe) ** 2)
    for m in range(modes):
        ax = axes[1, m] if m < axes.shape[1] else None
        if ax is None:
            break
        ax.imshow(np.abs(result.probe[m]) ** 2, cmap="magma")
        ax.set_title(f"probe mode {m} ({np.sum(np.abs(result.probe[m]) ** 2) / total:.1%})")
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
    for extra in axes.ravel()[modes + 2 :]:
        if not extra.has_data():
            extra.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _extent(result: PtychoResult):
    h, w = result.summed_phase.shape
    (y0, x0), (dy, dx) = result.object_origin_A, result.pixel_size_A
    return (x0 - dx / 2, x0 + (w - 0.5) * dx, y0 + (h - 0.5) * dy, y0 - dy / 2)
