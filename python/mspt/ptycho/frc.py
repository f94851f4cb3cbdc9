"""Half-data Fourier ring correlation: a resolution estimate that needs no ground truth.

The scan's positions are split into two interleaved halves (a checkerboard on a raster, alternate positions
otherwise); each half is reconstructed on its own, from the same start and settings and sharing nothing
else, so their errors from counting noise are independent while the object they see is the same. Their
summed phases are cropped to the scanned field of view, registered by a sub-pixel shift (a global shift of
the object is not fixed by the data), apodised, and correlated ring by ring in Fourier space:

    FRC(k) = Re sum_ring A(k) B*(k) / sqrt(sum_ring |A(k)|^2 sum_ring |B(k)|^2)

The resolution is 1 / (the frequency where the FRC, past its peak, falls below the threshold for good
(two rings in a row)): 1/7 (for two
half-data maps, the frequency where the full-data map correlates with the truth at 0.5, Rosenthal &
Henderson 2003) or the half-bit curve (van Heel & Schatz 2005). Frequencies in 1/A, resolutions in A.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..ops import bandlimit_cutoff_invA
from .config import PtychoConfig
from .scan import PtychoScan

ONE_SEVENTH = 1.0 / 7.0
# Rings two Fourier pixels wide: the Hann taper correlates neighbouring Fourier pixels anyway, and a ring of
# one pixel on a field of view of a few nm holds too few pixels for a steady curve (a ring's FRC scatters by
# about 1 / sqrt(its pixels) where there is no signal, near the 1/7 threshold itself).
RING_WIDTH_PX = 2.0


@dataclasses.dataclass(frozen=True)
class FRCResult:
    """A Fourier ring correlation and the resolution it gives.

    frequencies_invA : (K,) ring centres (1/A); frc : (K,) the correlation per ring; ring_pixels : (K,)
        Fourier pixels per ring; half_bit : (K,) the half-bit threshold per ring.
    resolution_A : the 1/7 estimate; resolution_half_bit_A : the half-bit estimate. Where the FRC never
        falls below a threshold, the resolution is that of the highest ring (a bound: ``*_bounded`` True).
    shift_px : (dy, dx) sub-pixel shift that registered the second map onto the first.
    maps : (2, Y, X) the registered, cropped summed phases that were correlated (rad); ``maps_origin_A``
        (y, x) where their pixel (0, 0) lies in the scan's position frame.
    """

    frequencies_invA: np.ndarray
    frc: np.ndarray
    ring_pixels: np.ndarray
    half_bit: np.ndarray
    resolution_A: float
    resolution_half_bit_A: float
    resolution_bounded: bool
    resolution_half_bit_bounded: bool
    shift_px: np.ndarray
    maps: np.ndarray
    maps_origin_A: np.ndarray

    def as_dict(self) -> dict:
        """The curve and the estimates as plain lists and numbers (for files and reports)."""
        return {
            "frequencies_invA": self.frequencies_invA.tolist(), "frc": self.frc.tolist(),
            "half_bit": self.half_bit.tolist(), "resolution_A": self.resolution_A,
            "resolution_half_bit_A": self.resolution_half_bit_A, "shift_px": self.shift_px.tolist(),
        }  # fmt: skip


# -- the correlation -------------------------------------------------------------------------------------
def _spectrum(image: np.ndarray) -> np.ndarray:
    """The image's spectrum after removing its mean and tapering its edges (a Hann window: the crop's
    edges would otherwise add a cross of spurious correlation)."""
    h, w = image.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    centred = image - np.sum(image * window) / np.sum(window)
    return np.fft.fft2(centred * window)


def _ring_index(shape, pixel_size_A: float, width_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Ring number of every Fourier pixel (rings ``width_px`` Fourier pixels of the shorter side wide) and
    the ring centres (1/A), up to the Nyquist frequency of the shorter side."""
    h, w = shape
    ky = np.fft.fftfreq(h, pixel_size_A)[:, None]
    kx = np.fft.fftfreq(w, pixel_size_A)[None, :]
    width = width_px / (min(h, w) * pixel_size_A)
    rings = np.floor(np.sqrt(ky**2 + kx**2) / width + 0.5).astype(int)
    count = int((0.5 / pixel_size_A) / width) + 1
    return rings, np.arange(count) * width


def fourier_ring_correlation(a, b, pixel_size_A: float, max_frequency_invA: float | None = None,
                             ring_width_px: float = RING_WIDTH_PX):  # fmt: skip
    """FRC of two equally shaped real images (pixel ``pixel_size_A`` A): ring centres (1/A), the correlation
    per ring, and the Fourier pixels per ring, for rings ``ring_width_px`` Fourier pixels wide up to the
    Nyquist frequency of the shorter side (or ``max_frequency_invA``). The images are mean-removed and
    Hann-tapered first."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a, b: expected two images of the same (Y, X) shape, got {a.shape} and {b.shape}")
    if min(a.shape) < 8:
        raise ValueError(f"a, b: expected images of at least 8 x 8 pixels, got {a.shape}")
    fa, fb = _spectrum(a), _spectrum(b)
    rings, centres = _ring_index(a.shape, pixel_size_A, ring_width_px)
    keep = rings < len(centres)
    r = rings[keep]
    cross = np.bincount(r, np.real(fa * np.conj(fb))[keep], len(centres))
    power_a = np.bincount(r, np.abs(fa[keep]) ** 2, len(centres))
    power_b = np.bincount(r, np.abs(fb[keep]) ** 2, len(centres))
    pixels = np.bincount(r, minlength=len(centres))
    with np.errstate(invalid="ignore", divide="ignore"):
        frc = cross / np.sqrt(power_a * power_b)
    last = len(centres) if max_frequency_invA is None else int(np.searchsorted(centres, max_frequency_invA, "right"))
    return centres[:last], np.nan_to_num(frc[:last]), pixels[:last]


def half_bit_threshold(ring_pixels) -> np.ndarray:
    """van Heel & Schatz's half-bit threshold for rings of ``ring_pixels`` Fourier pixels."""
    n = np.sqrt(np.maximum(np.asarray(ring_pixels, dtype=np.float64), 1.0))
    return (0.2071 + 1.9102 / n) / (1.2071 + 0.9102 / n)


def resolution_A(frequencies_invA, frc, threshold, first_ring: int = 1) -> tuple[float, bool]:
    """1 / the frequency where ``frc`` falls below ``threshold`` (a number or one per ring) to stay below
    for the next ring too, searched from the curve's peak on and interpolated linearly between rings;
    returns (resolution, bounded). From the peak: a crystal's spectrum sits on its lattice, and the rings
    below its first lattice frequency hold nothing to correlate. Two rings: a single ring of a few hundred
    Fourier pixels scatters across the threshold by chance. Where the curve never falls below, the
    resolution of the highest ring, bounded=True."""
    k = np.asarray(frequencies_invA, dtype=np.float64)
    excess = np.asarray(frc, dtype=np.float64) - np.broadcast_to(np.asarray(threshold, dtype=np.float64), k.shape)
    peak = first_ring + int(np.argmax(np.asarray(frc)[first_ring:]))
    for i in range(peak + 1, len(k)):
        if excess[i] < 0 and (i + 1 == len(k) or excess[i + 1] < 0):
            k0, k1, e0, e1 = k[i - 1], k[i], excess[i - 1], excess[i]
            return 1.0 / (k0 + (k1 - k0) * e0 / (e0 - e1)) if e0 >= 0 else 1.0 / k0, False
    return 1.0 / k[-1], True


# -- registration ----------------------------------------------------------------------------------------
def register_shift(reference: np.ndarray, moving: np.ndarray, upsample: int = 20) -> np.ndarray:
    """The shift (dy, dx) in pixels that, applied to ``moving``, best aligns it with ``reference``:
    the cross-correlation peak, refined on a grid 1/``upsample`` pixel fine around it (a local DFT)."""
    fr, fm = _spectrum(reference), _spectrum(moving)
    product = fr * np.conj(fm)
    correlation = np.fft.ifft2(product).real
    h, w = correlation.shape
    peak = np.array(np.unravel_index(np.argmax(correlation), correlation.shape), dtype=float)
    peak = np.where(peak > np.array([h, w]) // 2, peak - np.array([h, w]), peak)
    # Refine: evaluate the correlation on a fine grid of +-1 pixel around the peak (matrix-multiply DFT).
    offsets = np.arange(-upsample, upsample + 1) / upsample
    ky = np.fft.fftfreq(h)[None, :]
    kx = np.fft.fftfreq(w)[:, None]
    rows = np.exp(2j * np.pi * (peak[0] + offsets)[:, None] * ky)  # (U, h)
    cols = np.exp(2j * np.pi * kx * (peak[1] + offsets)[None, :])  # (w, U)
    fine = (rows @ product @ cols).real
    i, j = np.unravel_index(np.argmax(fine), fine.shape)
    return np.array([peak[0] + offsets[i], peak[1] + offsets[j]])


def fourier_shift_image(image: np.ndarray, shift_px) -> np.ndarray:
    """``image`` shifted by (dy, dx) pixels (periodic, sub-pixel: a Fourier phase ramp)."""
    h, w = image.shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.fftfreq(w)[None, :]
    ramp = np.exp(-2j * np.pi * (ky * shift_px[0] + kx * shift_px[1]))
    return np.fft.ifft2(np.fft.fft2(image) * ramp).real


# -- the half-data check --------------------------------------------------------------------------------
def interleaved_halves(scan: PtychoScan) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved halves of the scan's positions (flat indices): the two colours of a checkerboard on a
    raster, (scan_y, scan_x) data (each half still covers the whole field of view evenly), alternate
    positions otherwise."""
    n = scan.n_positions
    if len(scan.data.shape) == 4:
        sy, sx = scan.data.shape[:2]
        rows, cols = np.divmod(np.arange(n), sx)
        colour = (rows + cols) % 2
    else:
        colour = np.arange(n) % 2
    return np.nonzero(colour == 0)[0], np.nonzero(colour == 1)[0]


class _PatternSubset:
    """The patterns of some positions of a scan, as a lazily indexed (N', k_y, k_x) array in the scan's own
    detector orientation (the subset scan transposes them as the scan would)."""

    def __init__(self, scan: PtychoScan, indices: np.ndarray):
        self._source = dataclasses.replace(scan, detector_transpose=False)
        self._indices = np.asarray(indices, dtype=np.int64)
        self.shape = (len(self._indices), *scan.data.shape[-2:])
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key):
        return self._source.read(self._indices[key])


def subset_scan(scan: PtychoScan, indices) -> PtychoScan:
    """The scan restricted to the positions ``indices`` (flat), with their positions in the same frame."""
    indices = np.asarray(indices, dtype=np.int64)
    return dataclasses.replace(scan, data=_PatternSubset(scan, indices), positions_A=scan.positions()[indices])


def half_data_frc(scan: PtychoScan, config: PtychoConfig = PtychoConfig()) -> FRCResult:
    """Reconstruct two interleaved halves of ``scan`` with ``config`` (same seed and start, nothing else
    shared) and correlate their summed phases over the scanned field of view. Returns an :class:`FRCResult`
    with the 1/7 and half-bit resolutions (A). A batch size of "auto" is resolved for the whole scan: the
    halves run the algorithm the whole scan's reconstruction runs, with half its data."""
    from .memory import plan
    from .reconstruct import reconstruct

    if not isinstance(scan, PtychoScan):
        raise TypeError(f"scan: expected an mspt.ptycho.PtychoScan, got {type(scan).__name__}")
    if not isinstance(config, PtychoConfig):
        raise TypeError(f"config: expected an mspt.ptycho.PtychoConfig, got {type(config).__name__}")
    if scan.n_positions < 8:
        raise ValueError(f"scan: a half-data FRC needs at least 8 positions, got {scan.n_positions}")
    sampling = scan.sampling_A
    if not math.isclose(sampling[0], sampling[1], rel_tol=1e-6):
        raise ValueError(f"scan: the FRC needs square pixels, got {sampling} A")
    if config.batch_size == "auto":
        config = config.replace(batch_size=plan(scan, config, mean_counts=scan.check_patterns()).batch_size)
    half_config = config.replace(self_check="none", checkpoint_every=0, checkpoint_path=None)
    halves = [reconstruct(subset_scan(scan, idx), half_config) for idx in interleaved_halves(scan)]
    maps, shift, origin = _registered_field_of_view(scan, halves)
    # Beyond the multislice band limit nothing is reconstructed (both maps hold only what the phase's
    # nonlinearity folds there): the rings stop at it.
    frequencies, frc, pixels = fourier_ring_correlation(maps[0], maps[1], sampling[0], bandlimit_cutoff_invA(sampling))
    half_bit = half_bit_threshold(pixels)
    seventh, seventh_bounded = resolution_A(frequencies, frc, ONE_SEVENTH)
    half, half_bounded = resolution_A(frequencies, frc, half_bit)
    return FRCResult(
        frequencies_invA=frequencies, frc=frc, ring_pixels=pixels, half_bit=half_bit, resolution_A=seventh,
        resolution_half_bit_A=half, resolution_bounded=seventh_bounded, resolution_half_bit_bounded=half_bounded,
        shift_px=shift, maps=maps, maps_origin_A=origin,
    )  # fmt: skip


def field_of_view_px(scan: PtychoScan, object_origin_A, pixel_size_A) -> tuple[slice, slice]:
    """Rows and columns of an object grid (pixel (0, 0) at ``object_origin_A``) inside the bounding box
    of the scan's positions: the region every reconstruction of the scan illuminates."""
    positions = scan.positions()
    lo = np.ceil((positions.min(0) - object_origin_A) / pixel_size_A).astype(int)
    hi = np.floor((positions.max(0) - object_origin_A) / pixel_size_A).astype(int) + 1
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


def _registered_field_of_view(scan: PtychoScan, halves) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both halves' summed phases on the first's grid over the scanned field of view, the second shifted
    onto the first (their grids' offset from the bookkeeping, then a sub-pixel registration)."""
    first, second = halves
    pixel = np.array(first.pixel_size_A)
    fov = field_of_view_px(scan, first.object_origin_A, pixel)
    # Where the first grid's pixel (0, 0) lies on the second grid.
    offset = (np.asarray(first.object_origin_A) - np.asarray(second.object_origin_A)) / pixel
    moved = fourier_shift_image(second.summed_phase, -offset)  # on the first grid (same shape if equal)
    shape = np.minimum(first.summed_phase.shape, moved.shape)
    a = first.summed_phase[: shape[0], : shape[1]][fov]
    b = moved[: shape[0], : shape[1]][fov]
    shift = register_shift(a, b)
    full_shift = -offset + shift
    b = fourier_shift_image(second.summed_phase, full_shift)[: shape[0], : shape[1]][fov]
    origin = np.asarray(first.object_origin_A) + np.array([fov[0].start, fov[1].start]) * pixel
    return np.stack([a, b]), full_shift, origin


def with_half_data_frc(scan: PtychoScan, config: PtychoConfig, result):
    """``result`` (a PtychoResult of ``scan``) with its half-data FRC resolution and curve filled in."""
    frc = half_data_frc(scan, config)
    return dataclasses.replace(result, frc_resolution_A=frc.resolution_A, frc=frc.as_dict())
