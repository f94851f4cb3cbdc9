"""fsc(): Fourier shell correlation between two independent reconstructions of one object (e.g. from the
odd and the even tilts), over full shells or, for the missing wedge, over cones about one axis.

FSC(k) = sum Re(F_a F_b*) / sqrt(sum |F_a|^2 sum |F_b|^2) over the Fourier coefficients of a shell (or of the
part of it inside the cone). For halves a = s + n_a, b = s + n_b with independent noise it tends to
SNR / (1 + SNR), SNR the shell's signal-to-noise power ratio of one half. Resolution criteria, each read
where the curve first falls below it:

- 1/7 (Rosenthal & Henderson 2003): the full volume (both halves averaged) has a signal-to-noise
  ratio of about 1/3 in amplitude there;
- half-bit (van Heel & Schatz 2005): (0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n)) for a shell of n
  coefficients, the level at which the shell carries half a bit of information; it adapts to small shells
  and cones.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _validate as v
from ._fourier_shells import AXES, HalfSpectrumGrid, check_volume, first_crossing_below, tapered

ONE_SEVENTH = 1.0 / 7.0


def half_bit_threshold(n_coefficients) -> np.ndarray:
    """The half-bit threshold for shells of ``n_coefficients`` Fourier coefficients each."""
    root = np.sqrt(np.maximum(np.asarray(n_coefficients, dtype=float), 1.0))
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


@dataclasses.dataclass(frozen=True)
class FSC:
    """What :func:`fsc` measured.

    k_invA : (n,) shell centres (1/A); fsc : (n,) the correlation per shell; n_coefficients : (n,) Fourier
        coefficients per shell (of the full spectrum, inside the cone if one was asked for).
    half_bit : (n,) the half-bit threshold of each shell.
    resolution_one_seventh_A, resolution_half_bit_A : 1 / k where the curve first falls below each
        criterion (A); 2 d when it never does (``reaches_nyquist``: the sampling limits it).
    cone_axis : None for full shells, else "z", "y" or "x" with ``cone_half_angle_deg``.
    """

    k_invA: np.ndarray
    fsc: np.ndarray
    n_coefficients: np.ndarray
    half_bit: np.ndarray
    resolution_one_seventh_A: float
    resolution_half_bit_A: float
    reaches_nyquist: tuple[bool, bool]
    cone_axis: str | None
    cone_half_angle_deg: float | None
    voxel_size_A: float


def fsc(
    a,
    b,
    voxel_size_A: float,
    *,
    cone_axis: str | None = None,
    cone_half_angle_deg: float = 30.0,
    taper: float = 0.0,
) -> FSC:
    """Fourier shell correlation of volumes ``a`` and ``b`` (z, y, x), same shape, voxel size ``voxel_size_A``.

    cone_axis : None for full shells; "z" (axial: the missing-wedge direction), "y" or "x" for the conical
        FSC over the directions within ``cone_half_angle_deg`` of that axis.
    taper : fraction of each side over which both volumes are tapered to zero (as in :func:`resolution`).
        Off by default: the taper's own spectrum mixes neighbouring shells (and, in a cone, directions from
        outside it), which flattens a steep FSC; use it, or mask the halves, when structure reaches the box
        edges, whose step would otherwise correlate the halves along the k axes.
    """
    a = check_volume("a", a)
    b = check_volume("b", b)
    if a.shape != b.shape:
        raise ValueError(f"b: expected the shape of a {a.shape}, got {b.shape}")
    voxel_size_A = v.positive("voxel_size_A", voxel_size_A)
    taper = v.fraction("taper", taper, high=0.5)
    where = None
    grid = HalfSpectrumGrid.for_volume(a.shape, voxel_size_A)
    if cone_axis is not None:
        v.choice("cone_axis", cone_axis, AXES)
        cone_half_angle_deg = v.positive("cone_half_angle_deg", cone_half_angle_deg)
        if cone_half_angle_deg > 90:
            raise ValueError(f"cone_half_angle_deg: expected an angle in (0, 90] degrees, got {cone_half_angle_deg!r}")
        where = grid.cone(AXES.index(cone_axis), cone_half_angle_deg)

    spectrum_a = np.fft.rfftn(tapered(a, taper))
    spectrum_b = np.fft.rfftn(tapered(b, taper))
    cross, counts = grid.shell_sums(np.real(spectrum_a * np.conj(spectrum_b)), where)
    power_a, _ = grid.shell_sums(np.abs(spectrum_a) ** 2, where)
    power_b, _ = grid.shell_sums(np.abs(spectrum_b) ** 2, where)
    curve = cross / np.sqrt(np.maximum(power_a * power_b, np.finfo(float).tiny))
    half_bit = half_bit_threshold(counts)

    k = grid.k_invA
    k_seventh, seventh_limited = first_crossing_below(k, curve, ONE_SEVENTH)
    k_half_bit, half_bit_limited = first_crossing_below(k, curve, half_bit)
    return FSC(
        k_invA=k,
        fsc=curve,
        n_coefficients=counts,
        half_bit=half_bit,
        resolution_one_seventh_A=1.0 / k_seventh,
        resolution_half_bit_A=1.0 / k_half_bit,
        reaches_nyquist=(seventh_limited, half_bit_limited),
        cone_axis=cone_axis,
        cone_half_angle_deg=cone_half_angle_deg if cone_axis is not None else None,
        voxel_size_A=float(voxel_size_A),
    )
