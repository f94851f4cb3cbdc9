"""A one-page PNG report of a tomographic reconstruction: central slices of the volume on the three axes, its
projection along z, the loss per outer step, and per tilt the residual and the pose corrections."""

from __future__ import annotations

import pathlib

import numpy as np

from .result import TomoResult
from .rotations import rotation_log


def _tilts_deg(result: TomoResult) -> np.ndarray:
    r = result.initial_rotation
    return np.degrees(np.arctan2(r[:, 0, 2], r[:, 2, 2]))


def save_tomo_report(result: TomoResult, path) -> pathlib.Path:
    """Draw the report to ``path`` (PNG); needs matplotlib (the ``viz`` extra)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    volume, d = result.volume, result.voxel_size_A
    nz, ny, nx = volume.shape
    fig, axes = plt.subplots(2, 4, figsize=(17, 8))
    views = [
        ("slice z = 0 (y, x)", volume[nz // 2], (nx, ny), ("x (A)", "y (A)")),
        ("slice y = 0 (z, x)", volume[:, ny // 2], (nx, nz), ("x (A)", "z (A)")),
        ("slice x = 0 (z, y)", volume[:, :, nx // 2], (ny, nz), ("y (A)", "z (A)")),
        ("projection along z", volume.sum(axis=0) * d, (nx, ny), ("x (A)", "y (A)")),
    ]  # fmt: skip
    for ax, (title, image, (w, h), (xlabel, ylabel)) in zip(axes[0], views):
        extent = (-(w // 2) * d, (w - w // 2) * d, (h - h // 2) * d, -(h // 2) * d)
        shown = ax.imshow(image, cmap="gray", extent=extent)
        fig.colorbar(shown, ax=ax, shrink=0.8)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)

    ax = axes[1, 0]
    steps = np.arange(1, len(result.loss) + 1)
    ax.semilogy(steps, result.loss, ".-")
    for factor in np.unique(result.levels):
        first = steps[result.levels == factor][0]
        ax.axvline(first - 0.5, color="0.7", lw=0.8)
        ax.text(first, ax.get_ylim()[1], f"x{factor}", va="top", fontsize=8)
    ax.set_xlabel("outer step")
    ax.set_ylabel("|Ax - b|^2 / |b|^2")
    ax.set_title(f"loss ({result.projector_calls:.0f} projector calls)")

    tilts = _tilts_deg(result)
    ax = axes[1, 1]
    ax.plot(tilts, result.residuals, "o-")
    ax.set_xlabel("tilt (deg)")
    ax.set_ylabel("|A_t x - b_t| / |b_t|")
    ax.set_title("per-tilt residual")

    ax = axes[1, 2]
    w = np.degrees(rotation_log(result.rotation @ np.swapaxes(result.initial_rotation, 1, 2)))
    for k, name in enumerate("xyz"):
        ax.plot(tilts, w[:, k], "o-", ms=3, label=f"w_{name}")
    ax.set_xlabel("tilt (deg)")
    ax.set_ylabel("rotation correction (deg)")
    ax.legend(fontsize=8)
    ax.set_title("rotation corrections (lab frame)")

    ax = axes[1, 3]
    shift = result.shifts_A - result.initial_shifts_A
    ax.plot(tilts, shift[:, 0], "o-", ms=3, label="dy")
    ax.plot(tilts, shift[:, 1], "o-", ms=3, label="dx")
    ax.set_xlabel("tilt (deg)")
    ax.set_ylabel("shift correction (A)")
    ax.legend(fontsize=8)
    ax.set_title("shift corrections")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
