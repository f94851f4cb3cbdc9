"""save_joint_report: a figure of the joint refinement, the start (the sequential volume) against the result."""

from __future__ import annotations

import pathlib

import numpy as np

from .refine import JointResult


def save_joint_report(start: np.ndarray, result: JointResult, voxel_size_A: float, path) -> pathlib.Path:
    """A PNG: central (x, z) and (x, y) sections of the start and refined potentials (V, same grey scale),
    and the training and held-out losses after each block (the returned block marked)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    nz, ny, nx = start.shape
    d = float(voxel_size_A)
    half = lambda n: ((-(n // 2) - 0.5) * d, (n - n // 2 - 0.5) * d)  # voxel edges; centres at (i - n//2) d  # noqa: E731
    xz = (*half(nx), *half(nz)[::-1])
    xy = (*half(nx), *half(ny)[::-1])
    hi = float(np.percentile(np.concatenate([start.ravel(), result.volume.ravel()]), 99.9)) or 1.0
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.6))
    panels = [(start[:, ny // 2, :], xz, "start (sequential): x-z section", "z (A)"),
              (result.volume[:, ny // 2, :], xz, "joint: x-z section", "z (A)"),
              (start[nz // 2], xy, "start (sequential): x-y section", "y (A)"),
              (result.volume[nz // 2], xy, "joint: x-y section", "y (A)")]  # fmt: skip
    for ax, (image, extent, title, ylabel) in zip(axes, panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=hi, extent=extent)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (A)")
        ax.set_ylabel(ylabel)
    ax = axes[4]
    steps = np.arange(len(result.loss))
    ax.plot(steps, result.loss, "k-")
    for block, marker in (("volume", "o"), ("acquisition", "s")):
        chosen = [i for i, b in enumerate(result.blocks) if b == block]
        ax.plot(steps[chosen], result.loss[chosen], marker, label=f"after {block} block")
    ax.set_xlabel("block")
    ax.set_ylabel("training loss (summed)")
    if np.any(np.isfinite(result.validation_loss)):
        held = ax.twinx()
        held.plot(steps, result.validation_loss, "r--", label="held-out positions")
        held.axvline(result.best_block, color="r", lw=0.8)
        held.set_ylabel("held-out loss (summed)", color="r")
        held.legend(fontsize=8, loc="lower left")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"loss; {result.passes:.1f} passes over the data; returned: block {result.best_block} "
                 f"({result.stop_reason})", fontsize=9)  # fmt: skip
    fig.suptitle(f"Joint refinement (potential in V, grey scale 0 to {hi:.0f} V; {d:.3f} A voxels)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
