"""resolution(): how far along each axis a volume carries information above its noise, from its 3D power
spectrum alone (no second, independent reconstruction needed).

Criterion. The volume (less its mean, edges tapered) is Fourier transformed; its power |F(k)|^2 is averaged
over shells of |k| within a cone of half-angle ``cone_half_angle_deg`` about each axis (z: the beam at zero
tilt, the axial direction; y and x: transverse). White noise has a flat power spectrum, so its level, the
*noise floor* N, is read from the data where a volume resolved no better than twice the voxel size holds
nothing else: the corners of the spectrum beyond the Nyquist sphere, |k| > 1 / (2 d). The signal power along
a direction is then S(k) = P(k) - N, and the resolution along it is 1 / k_c at the highest k_c where
S(k) / N still reaches ``snr_threshold`` (1 by default: the signal's power equals the noise's). For a
volume of atoms blurred by a Gaussian of standard deviation s along an axis, S(k) falls as
exp(-4 pi^2 s^2 k^2), and k_c is where that meets snr_threshold * N.

The estimate assumes the noise is white (or at least flat beyond the information limit); a reconstruction
whose noise is coloured can pass its own ``noise_power`` (in this function's units: mean |F|^2 per
coefficient of the tapered volume). A volume with information up to the Nyquist frequency along an axis
reports 2 d there and flags it in ``at_nyquist``: finer sampling would be needed to measure it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _validate as v
from ._fourier_shells import HalfSpectrumGrid, check_volume, last_crossing_above, tapered


@dataclasses.dataclass(frozen=True)
class Resolution:
    """What :func:`resolution` measured.

    resolution_A : (z, y, x) resolution in A, the order of the results file's ``analysis/resolution_A``.
    at_nyquist : (z, y, x) whether the information reached the Nyquist frequency (the value is then 2 d,
        a bound set by the sampling).
    k_invA : (n,) shell centres (1/A).
    spectra : (3, n) mean power per shell in the cones about z, y and x.
    counts : (3, n) Fourier coefficients per shell and cone.
    noise_power : the noise floor N (mean power per coefficient); threshold_power = N * (1 + snr_threshold)
        is the total power at which a spectrum meets the criterion.
    """

    resolution_A: tuple[float, float, float]
    at_nyquist: tuple[bool, bool, bool]
    k_invA: np.ndarray
    spectra: np.ndarray
    counts: np.ndarray
    noise_power: float
    snr_threshold: float
    cone_half_angle_deg: float
    voxel_size_A: float

    @property
    def axial_A(self) -> float:
        """Resolution along z (the beam direction at zero tilt; the missing-wedge axis)."""
        return self.resolution_A[0]

    @property
    def transverse_A(self) -> float:
        """Mean of the y and x resolutions."""
        return 0.5 * (self.resolution_A[1] + self.resolution_A[2])

    @property
    def threshold_power(self) -> float:
        return self.noise_power * (1.0 + self.snr_threshold)


def resolution(
    volume,
    voxel_size_A: float,
    *,
    cone_half_angle_deg: float = 15.0,
    snr_threshold: float = 1.0,
    taper: float = 0.1,
    smoothing_shells: int = 3,
    noise_power: float | None = None,
) -> Resolution:
    """Resolution (A) of ``volume`` (z, y, x) along z, y and x from its 3D power spectrum (see the module
    docstring for the criterion).

    voxel_size_A : the voxel size d (A), the same along every axis.
    cone_half_angle_deg : half-angle of the cone of directions about each axis averaged into its spectrum
        (narrower: closer to the axis, noisier).
    snr_threshold : signal-to-noise power ratio that defines the cut-off.
    taper : fraction of each side over which the volume is tapered to zero before the transform.
    smoothing_shells : each shell's mean power is taken over this many neighbouring shells (odd; 1 keeps
        shells apart): a cone holds few coefficients per shell at low k, and a noisy spectrum would place
        the last crossing of the threshold too far out.
    noise_power : the noise floor, if known; None estimates it from the spectrum's corners.
    """
    volume = check_volume("volume", volume)
    voxel_size_A = v.positive("voxel_size_A", voxel_size_A)
    cone_half_angle_deg = _half_angle(cone_half_angle_deg)
    snr_threshold = v.positive("snr_threshold", snr_threshold)
    taper = v.fraction("taper", taper, high=0.5)
    v.positive("smoothing_shells", smoothing_shells, integer=True)
    if smoothing_shells % 2 == 0:
        raise ValueError(f"smoothing_shells: expected an odd number of shells, got {smoothing_shells!r}")
    if noise_power is not None:
        noise_power = v.positive("noise_power", noise_power)

    grid = HalfSpectrumGrid.for_volume(volume.shape, voxel_size_A)
    power = np.abs(np.fft.rfftn(tapered(volume, taper))) ** 2
    if noise_power is None:
        noise_power = noise_floor(power, grid)

    spectra, counts, limits, at_nyquist = [], [], [], []
    for axis in range(3):
        sums, count = grid.shell_sums(power, grid.cone(axis, cone_half_angle_deg))
        spectrum = _running_sum(sums, smoothing_shells) / np.maximum(_running_sum(count, smoothing_shells), 1)
        k_c, limited = last_crossing_above(grid.k_invA, spectrum / noise_power - 1.0, snr_threshold)
        spectra.append(spectrum)
        counts.append(count)
        limits.append(1.0 / k_c if k_c > 0 else float("nan"))
        at_nyquist.append(limited)
    return Resolution(
        resolution_A=tuple(limits),
        at_nyquist=tuple(at_nyquist),
        k_invA=grid.k_invA,
        spectra=np.array(spectra),
        counts=np.array(counts),
        noise_power=float(noise_power),
        snr_threshold=float(snr_threshold),
        cone_half_angle_deg=float(cone_half_angle_deg),
        voxel_size_A=float(voxel_size_A),
    )


def noise_floor(power: np.ndarray, grid: HalfSpectrumGrid) -> float:
    """Mean power of the coefficients beyond the Nyquist sphere (the spectrum's corners)."""
    corners = grid.shell > grid.n_shells
    weight = np.broadcast_to(grid.weight, power.shape)[corners]
    return float(np.sum(power[corners] * weight) / np.sum(weight))


def _running_sum(values: np.ndarray, width: int) -> np.ndarray:
    return np.convolve(values, np.ones(width), mode="same")


def _half_angle(value) -> float:
    angle = v.positive("cone_half_angle_deg", value)
    if angle > 90:
        raise ValueError(f"cone_half_angle_deg: expected an angle in (0, 90] degrees, got {value!r}")
    return angle

