"""The projections stage's figure: every tilt's summed phase, before and after denoising."""

from __future__ import annotations

import math
import pathlib

import numpy as np


def save_projection_report(phase: np.ndarray, denoised: np.ndarray, pixel_size_A: float, path) -> pathlib.Path:
    """A PNG with two rows of panels per group of tilts: summed phase (rad) and its denoised version."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    n = phase.shape[0]
    cols = min(n, 7)
    groups = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * groups, cols, figsize=(2.0 * cols, 4.1 * groups), squeeze=False)
    extent = _extent(phase.shape[1:], pixel_size_A)
    lo, hi = np.percentile(phase, [0.5, 99.5])
    for t in range(groups * cols):
        row, col = 2 * (t // cols), t % cols
        for offset, stack, label in ((0, phase, "phase"), (1, denoised, "denoised")):
            ax = axes[row + offset, col]
            ax.axis("off")
            if t < n:
                ax.imshow(stack[t], cmap="gray", vmin=lo, vmax=hi, extent=extent)
                ax.set_title(f"tilt {t}: {label}", fontsize=8)
    fig.suptitle(f"Summed-phase projections ({pixel_size_A:.3f} A/pixel; grey scale {lo:.2f} to {hi:.2f} rad)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _extent(shape, pixel_size_A: float):
    py, px = shape
    return (-(px // 2) * pixel_size_A, (px - px // 2) * pixel_size_A, (py - py // 2) * pixel_size_A, -(py // 2) * pixel_size_A)
