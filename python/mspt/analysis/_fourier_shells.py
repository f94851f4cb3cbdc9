"""Fourier-space bookkeeping shared by the power-spectrum resolution and the FSC: the half spectrum of a
real volume, shells of |k|, cones about an axis, and threshold crossings of a curve over the shells.

Spectra are taken with ``rfftn`` (the k_x >= 0 half): a real volume's power at -k equals that at k, so each
stored coefficient stands for itself and its mirror (weight 2), except on the k_x = 0 and k_x = Nyquist
planes, which hold both partners already (weight 1). Shells are ``SHELL_WIDTH`` wide in units of the
coarsest frequency step of the volume, centred on its multiples, from the first non-zero shell to the
Nyquist frequency 1 / (2 d) of the voxel size d.
"""

from __future__ import annotations

import dataclasses

import numpy as np

AXES = ("z", "y", "x")
MIN_SIDE_VOXELS = 16


def check_volume(name: str, volume) -> np.ndarray:
    array = np.asarray(volume)
    if array.ndim != 3:
        raise ValueError(f"{name}: expected a volume (z, y, x), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name}: expected real numbers, got dtype {array.dtype}")
    if min(array.shape) < MIN_SIDE_VOXELS:
        raise ValueError(f"{name}: expected at least {MIN_SIDE_VOXELS} voxels along each axis, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def tapered(volume: np.ndarray, fraction: float) -> np.ndarray:
    """The volume less its mean, times a separable Tukey window whose cosine edges span ``fraction`` of each
    side at either end: the box edges then meet without a step, which would otherwise spread power along
    the k axes, exactly the directions the resolution is read along."""
    out = volume.astype(np.float32) - np.float32(volume.mean(dtype=np.float64))
    for axis, n in enumerate(out.shape):
        shape = [1, 1, 1]
        shape[axis] = n
        out *= tukey(n, fraction).reshape(shape)
    return out


def tukey(n: int, fraction: float) -> np.ndarray:
    """A length-n window, 1 in the middle, a raised cosine over ``fraction * n`` samples at either end."""
    edge = int(round(fraction * n))
    window = np.ones(n, dtype=np.float32)
    if edge > 0:
        ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(edge) + 0.5) / edge))
        window[:edge] = ramp
        window[n - edge :] = ramp[::-1]
    return window


@dataclasses.dataclass(frozen=True)
class HalfSpectrumGrid:
    """|k| shells and direction cosines of an ``rfftn`` spectrum of a (Z, Y, X) volume with voxel size d."""

    components: tuple[np.ndarray, np.ndarray, np.ndarray]  # k_z, k_y, k_x (1/A), broadcastable
    shell: np.ndarray  # (Z, Y, X//2+1) int32 shell index of each coefficient
    k_squared: np.ndarray  # (Z, Y, X//2+1) |k|^2 (1/A^2)
    weight: np.ndarray  # (1, 1, X//2+1) how many coefficients of the full spectrum each one stands for
    shell_width_invA: float
    n_shells: int  # shells 1 .. n_shells reach the Nyquist frequency

    @classmethod
    def for_volume(cls, shape: tuple[int, int, int], voxel_size_A: float) -> "HalfSpectrumGrid":
        z, y, x = shape
        kz = np.fft.fftfreq(z, voxel_size_A).astype(np.float32)[:, None, None]
        ky = np.fft.fftfreq(y, voxel_size_A).astype(np.float32)[None, :, None]
        kx = np.fft.rfftfreq(x, voxel_size_A).astype(np.float32)[None, None, :]
        k_squared = kz**2 + ky**2 + kx**2
        width = 1.0 / (min(shape) * voxel_size_A)
        shell = np.rint(np.sqrt(k_squared) / np.float32(width)).astype(np.int32)
        weight = np.full(kx.shape, 2.0)
        weight[..., 0] = 1.0
        if x % 2 == 0:
            weight[..., -1] = 1.0
        return cls((kz, ky, kx), shell, k_squared, weight, width, min(shape) // 2)

    @property
    def k_invA(self) -> np.ndarray:
        """Centres of shells 1 .. n_shells (1/A)."""
        return np.arange(1, self.n_shells + 1) * self.shell_width_invA

    def cone(self, axis: int, half_angle_deg: float) -> np.ndarray:
        """Coefficients within ``half_angle_deg`` of the +/- ``axis`` direction (0, 1, 2 for z, y, x)."""
        cos_squared = np.float32(np.cos(np.radians(half_angle_deg)) ** 2)
        return self.components[axis] ** 2 >= cos_squared * self.k_squared

    def shell_sums(self, values: np.ndarray, where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Weighted sums of ``values`` over shells 1 .. n_shells, and the weighted coefficient counts,
        optionally over the coefficients ``where`` is true only."""
        weight = np.broadcast_to(self.weight, self.shell.shape)
        shell, weighted = self.shell, values * self.weight
        if where is not None:
            shell, weighted, weight = shell[where], weighted[where], weight[where]
        size = self.n_shells + 1
        keep = shell <= self.n_shells
        sums = np.bincount(shell[keep], weights=weighted[keep], minlength=size)[1:size]
        counts = np.bincount(shell[keep], weights=weight[keep], minlength=size)[1:size]
        return sums, counts


def last_crossing_above(k: np.ndarray, ratio: np.ndarray, threshold: float) -> tuple[float, bool]:
    """The highest k at which ``ratio`` still reaches ``threshold`` (interpolated in log(ratio) towards the
    next shell, where the ratio is positive there), and whether it is the last shell (information up to the
    Nyquist frequency: the sampling, not the data, limits it). NaN if no shell reaches the threshold."""
    above = np.flatnonzero(ratio >= threshold)
    if above.size == 0:
        return float("nan"), False
    last = above[-1]
    if last == len(k) - 1:
        return float(k[last]), True
    high, low = ratio[last], ratio[last + 1]
    if low > 0:
        t = np.log(high / threshold) / np.log(high / low)
    else:
        t = (high - threshold) / (high - low)
    return float(k[last] + t * (k[last + 1] - k[last])), False


def first_crossing_below(k: np.ndarray, curve: np.ndarray, threshold: np.ndarray) -> tuple[float, bool]:
    """The first k at which ``curve`` falls below ``threshold`` (one value per shell, or a constant),
    interpolated linearly between the shells either side; the last k and True if it never does."""
    gap = curve - np.broadcast_to(threshold, curve.shape)
    below = np.flatnonzero(gap < 0)
    if below.size == 0:
        return float(k[-1]), True
    first = below[0]
    if first == 0:
        return float(k[0]), False
    t = gap[first - 1] / (gap[first - 1] - gap[first])
    return float(k[first - 1] + t * (k[first] - k[first - 1])), False
