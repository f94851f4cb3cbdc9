"""A one-page PNG report of an atom fit: slabs through the volume's centre with the found and missing
sites overlaid, the displacement histograms per species, and the site intensities with their thresholds."""

from __future__ import annotations

import pathlib

import numpy as np

from .. import _validate as v
from .atom_result import AtomFit
from .peaks import voxel_to_xyz

SLAB_A = 2.0  # thickness of the slabs shown; sites within half of it are overlaid


def save_atom_report(fit: AtomFit, volume, voxel_size_A, path) -> pathlib.Path:
    """Draw the report of ``fit`` over ``volume`` (Z, Y, X) with voxel size ``voxel_size_A`` (A) to ``path``
    (PNG); needs matplotlib (the ``viz`` extra)."""
    if not isinstance(fit, AtomFit):
        raise TypeError(f"fit: expected an AtomFit, got {type(fit).__name__}")
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"volume: expected a (Z, Y, X) array, got shape {volume.shape}")
    voxel_size_A = v.positive("voxel_size_A", voxel_size_A)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 10))
    lo = voxel_to_xyz(np.zeros(3), volume.shape, voxel_size_A)
    hi = voxel_to_xyz(np.array(volume.shape) - 1, volume.shape, voxel_size_A)
    half = max(0, int(round(0.5 * SLAB_A / voxel_size_A)))
    colours = {s: f"C{n}" for n, s in enumerate(fit.species)}
    # (normal axis in (x, y, z) order, the volume axis it is, the two in-plane (x, y, z) axes)
    for ax, (normal, volume_axis, (a, b)) in zip(axes[0], [(2, 0, (0, 1)), (1, 1, (0, 2)), (0, 2, (1, 2))]):
        centre = volume.shape[volume_axis] // 2
        slab = np.take(volume, range(max(0, centre - half), centre + half + 1), axis=volume_axis).mean(axis=volume_axis)
        # slab axes are the remaining volume axes in (z, y, x) order, i.e. (b, a) of the plane shown
        ax.imshow(slab, cmap="gray", origin="lower", extent=(lo[a], hi[a], lo[b], hi[b]))
        near = np.abs(fit.sites_A[:, normal]) <= 0.5 * SLAB_A
        for species, colour in colours.items():
            found = near & fit.site_found & (fit.elements == species)
            ax.plot(fit.positions_A[found, a], fit.positions_A[found, b], "o", mfc="none", mec=colour, ms=5, label=f"{species} found")
        missing = near & ~fit.site_found
        ax.plot(fit.sites_A[missing, a], fit.sites_A[missing, b], "x", color="red", ms=7, label="missing")
        names = "xyz"
        ax.set_xlabel(f"{names[a]} (A)")
        ax.set_ylabel(f"{names[b]} (A)")
        ax.set_title(f"slab |{names[normal]}| <= {0.5 * SLAB_A:g} A")
    axes[0, 0].legend(fontsize=8, loc="upper right")

    ax = axes[1, 0]
    lengths = fit.displacement_magnitude_A
    bins = np.linspace(0, max(0.1, np.nanmax(lengths, initial=0.0)), 30)
    for species, colour in colours.items():
        chosen = fit.site_found & (fit.elements == species)
        ax.hist(lengths[chosen], bins=bins, histtype="step", color=colour, label=f"{species} (n={chosen.sum()})")
    ax.set_xlabel("displacement (A)")
    ax.set_ylabel("sites")
    ax.legend(fontsize=8)
    ax.set_title("displacement length")

    ax = axes[1, 1]
    for axis, name in enumerate("xyz"):
        ax.hist(fit.displacement_A[fit.site_found, axis], bins=30, histtype="step", label=name)
    ax.set_xlabel("displacement component (A)")
    ax.legend(fontsize=8)
    ax.set_title("displacement components")

    ax = axes[1, 2]
    for species, colour in colours.items():
        chosen = fit.elements == species
        ax.hist(fit.intensities[chosen], bins=40, histtype="step", color=colour, label=species)
        ax.axvline(fit.thresholds[species], color=colour, ls="--")
    summary = fit.summary()
    ax.set_title("site intensities, thresholds; found " + ", ".join(
        f"{s} {summary[s]['found_fraction']:.1%}" for s in fit.species), fontsize=9)  # fmt: skip
    ax.set_xlabel("height above background")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
