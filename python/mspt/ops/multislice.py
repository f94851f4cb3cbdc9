"""The multislice model of a ptychographic scan, its vector-Jacobian product and its fused likelihood gradient.

Model, per probe position b (window centre ``positions_px[b] = (y, x)`` in object pixels):

    psi_0   = probe modes Fourier-shifted by the position's fractional part
    psi_s+1 = P_dz[ psi_s * O_s(window) ]            for s = 0 .. S-2   (Fresnel propagator, band-limited)
    I_b     = sum_modes | F[ psi_S-1 * O_S-1 ] |^2 / n  (orthonormal FFT, zero frequency at the centre)

so ``sum(I_b) == sum(|probe|^2)`` for a pure-phase object (inside the band limit). The propagator is
``exp(-i pi lambda dz |k|^2 - 2 pi i dz (ky tan ty + kx tan tx))`` inside ``|k| < 2/3`` of the Nyquist
frequency and 0 outside; with ``bandlimit=True`` the far field is cut at the same radius (abTEM's
multislice does the same, so its patterns and ours agree). Gradients of a real loss w.r.t. complex
arrays follow PyTorch's convention ``dL/dRe + i dL/dIm``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import numpy as np

from .. import _backend
from .. import _validate as _v
from ..constants import wavelength_A as _wavelength_A
from ..probe import Probe
from ._arrays import accepts_arrays

LIKELIHOODS = {"poisson": 0, "amplitude": 1}
_WRT = ("slices", "probe", "positions", "tilt")


@dataclasses.dataclass(frozen=True)
class MultisliceGrads:
    """Gradients of a real loss. ``None`` where not requested.

    slices : (S, H, W) complex, dL/dRe + i dL/dIm of the transmission slices.
    probe : (M, ny, nx) complex, likewise for the probe modes.
    positions_px : (B, 2) float64, dL/d(y, x) in 1/pixel.
    tilt_mrad : (2,) float64, dL/d(tilt_y, tilt_x) in 1/mrad.
    loss : the summed loss (fused likelihood gradient only), loss_per_position (B,) likewise.
    """

    slices: np.ndarray | None = None
    probe: np.ndarray | None = None
    positions_px: np.ndarray | None = None
    tilt_mrad: np.ndarray | None = None
    loss: float | None = None
    loss_per_position: np.ndarray | None = None


def bandlimit_cutoff_invA(sampling_A) -> float:
    """The band limit (1/A): 2/3 of the Nyquist frequency of the coarser axis (abTEM's antialias cutoff)."""
    return 2.0 / 3.0 / (2.0 * max(sampling_A))


@dataclasses.dataclass(frozen=True)
class _Call:
    """Validated, converted arguments of one call."""

    slices: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    precision: str
    dz_A: float
    wavelength_A: float
    sampling_A: tuple[float, float]
    tan_tilt: tuple[float, float]
    tilt_rad: tuple[float, float]
    cutoff_invA: float
    bandlimit: bool
    device: str
    threads: int

    @property
    def real_dtype(self):
        return np.float64 if self.precision == "double" else np.float32

    @property
    def complex_dtype(self):
        return np.complex128 if self.precision == "double" else np.complex64

    @property
    def shape(self):
        S = self.slices.shape[0]
        M, ny, nx = self.probe.shape
        return self.positions.shape[0], S, M, ny, nx

    def engine(self):
        B, S, M, ny, nx = self.shape
        return _backend.multislice_engine(self.device, self.precision, ny, nx, S, M, self.threads)

    def run(self, **outputs) -> float:
        engine, lock = self.engine()
        with lock:
            return engine.run(
                self.slices, self.probe, self.positions, self.dz_A, self.wavelength_A, self.sampling_A[0],
                self.sampling_A[1], self.tan_tilt[0], self.tan_tilt[1], self.cutoff_invA, self.bandlimit, **outputs,
            )  # fmt: skip


def _finite_positive(name: str, value) -> float:
    return float(_v.positive(name, value))


def _pair(name: str, value, unit: str) -> tuple[float, float]:
    return _v.pair(name, value, unit)


def _prepare(slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, device, threads) -> _Call:
    _backend.check_device(device)
    if isinstance(probe, Probe):
        energy_eV = probe.energy_eV if energy_eV is None else energy_eV
        sampling_A = probe.sampling_A if sampling_A is None else sampling_A
        probe = probe.array
    if energy_eV is None:
        raise ValueError("energy_eV: required (beam energy in eV) unless probe is an mspt.Probe")
    if sampling_A is None:
        raise ValueError("sampling_A: required (object pixel size (dy, dx) in A) unless probe is an mspt.Probe")
    slices = np.asarray(slices)
    probe = np.asarray(probe)
    if slices.ndim == 2:
        slices = slices[None]
    if probe.ndim == 2:
        probe = probe[None]
    if slices.ndim != 3:
        raise ValueError(f"slices: expected shape (S, H, W) of complex transmission functions, got {slices.shape}")
    if probe.ndim != 3:
        raise ValueError(f"probe: expected shape (modes, ny, nx) or (ny, nx), got {probe.shape}")
    for name, arr in (("slices", slices), ("probe", probe)):
        if not (np.issubdtype(arr.dtype, np.complexfloating) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{name}: expected a complex array, got dtype {arr.dtype}")
    precision = "double" if (slices.dtype == np.complex128 or probe.dtype == np.complex128) else "single"
    cdtype = np.complex128 if precision == "double" else np.complex64
    slices = np.ascontiguousarray(slices, dtype=cdtype)
    probe = np.ascontiguousarray(probe, dtype=cdtype)
    positions = np.ascontiguousarray(positions_px, dtype=np.float64)
    if positions.ndim == 1 and positions.shape == (2,):
        positions = positions[None]
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions_px: expected shape (B, 2) of (y, x) pixel positions, got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions_px: expected finite positions")
    dz_A = _finite_positive("dz_A", dz_A)
    wavelength = _wavelength_A(_finite_positive("energy_eV", energy_eV))
    sampling = _pair("sampling_A", sampling_A, "angstrom")
    if min(sampling) <= 0:
        raise ValueError(f"sampling_A: expected positive pixel sizes in angstrom, got {sampling_A!r}")
    tilt = _pair("tilt_mrad", tilt_mrad, "mrad")
    tilt_rad = (tilt[0] * 1e-3, tilt[1] * 1e-3)
    if max(abs(t) for t in tilt_rad) >= math.pi / 2:
        raise ValueError(f"tilt_mrad: expected |tilt| < {1e3 * math.pi / 2:.0f} mrad, got {tilt_mrad!r}")
    threads = 0 if threads is None else int(threads)
    return _Call(
        slices=slices, probe=probe, positions=positions, precision=precision, dz_A=dz_A, wavelength_A=wavelength,
        sampling_A=sampling, tan_tilt=(math.tan(tilt_rad[0]), math.tan(tilt_rad[1])), tilt_rad=tilt_rad,
        cutoff_invA=bandlimit_cutoff_invA(sampling), bandlimit=bool(bandlimit), device=device, threads=threads,
    )  # fmt: skip


@accepts_arrays(outputs=("out",), slices="complex", probe="complex", positions_px="real")
def multislice_forward(
    slices,
    probe,
    positions_px,
    dz_A: float,
    energy_eV: float | None = None,
    sampling_A=None,
    *,
    tilt_mrad=(0.0, 0.0),
    bandlimit: bool = True,
    return_exit_waves: bool = False,
    device: str = "cpu",
    threads: int | None = None,
    out: np.ndarray | None = None,
):
    """Far-field intensities of a batch of probe positions through S transmission slices.

    Parameters
    ----------
    slices : (S, H, W) complex transmission functions, entrance to exit (or (H, W) for one slice).
    probe : (M, ny, nx) or (ny, nx) complex probe modes on the window, or an :class:`mspt.Probe`.
    positions_px : (B, 2) window centres (y, x) in object pixels; sub-pixel parts are Fourier shifts.
    dz_A : slice thickness (A), the propagation distance between consecutive slices.
    energy_eV : beam energy (eV); taken from ``probe`` when it is an :class:`mspt.Probe`.
    sampling_A : object pixel size (dy, dx) in A; likewise.
    tilt_mrad : beam tilt (ty, tx) in mrad, applied in every propagation (mistilt).
    bandlimit : also cut the far field at 2/3 Nyquist (the propagator always is).
    return_exit_waves : also return the real-space exit waves (B, M, ny, nx).
    device : "cpu" or "cuda".
    threads : CPU threads (default: OpenMP's).
    out : optional (B, ny, nx) array for the intensities.

    Returns
    -------
    intensities : (B, ny, nx) float32 (float64 for complex128 inputs), zero frequency at (ny//2, nx//2);
        ``(intensities, exit_waves)`` with ``return_exit_waves``.
    """
    call = _prepare(slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, device, threads)
    B, S, M, ny, nx = call.shape
    if out is None:
        out = np.empty((B, ny, nx), dtype=call.real_dtype)
    exit_waves = np.empty((B, M, ny, nx), dtype=call.complex_dtype) if return_exit_waves else None
    call.run(intensities=out, exit_waves=exit_waves)
    return (out, exit_waves) if return_exit_waves else out


def _wrt_set(wrt: Iterable[str]) -> set[str]:
    wrt = {wrt} if isinstance(wrt, str) else set(wrt)
    unknown = wrt - set(_WRT)
    if unknown:
        raise ValueError(f"wrt: unknown {sorted(unknown)}; expected a subset of {_WRT}")
    return wrt


def _gradient_outputs(call: _Call, wrt: set[str]) -> dict:
    B, S, M, ny, nx = call.shape
    return dict(
        grad_slices=np.empty(call.slices.shape, call.complex_dtype) if "slices" in wrt else None,
        grad_probe=np.empty((M, ny, nx), call.complex_dtype) if "probe" in wrt else None,
        grad_positions=np.empty((B, 2), np.float64) if "positions" in wrt else None,
        grad_tilt=np.empty(2, np.float64) if "tilt" in wrt else None,
    )


def _grads(call: _Call, outputs: dict, **extra) -> MultisliceGrads:
    tilt = outputs["grad_tilt"]
    if tilt is not None:
        # The engine differentiates w.r.t. tan(t); the API speaks mrad.
        tilt = tilt * np.array([1e-3 / math.cos(t) ** 2 for t in call.tilt_rad])
    return MultisliceGrads(
        slices=outputs["grad_slices"], probe=outputs["grad_probe"], positions_px=outputs["grad_positions"],
        tilt_mrad=tilt, **extra,
    )  # fmt: skip


@accepts_arrays(grad_intensities="real", slices="complex", probe="complex", positions_px="real")
def multislice_vjp(
    grad_intensities,
    slices,
    probe,
    positions_px,
    dz_A: float,
    energy_eV: float | None = None,
    sampling_A=None,
    *,
    tilt_mrad=(0.0, 0.0),
    bandlimit: bool = True,
    wrt: Iterable[str] = _WRT,
    device: str = "cpu",
    threads: int | None = None,
) -> MultisliceGrads:
    """Vector-Jacobian product of :func:`multislice_forward`: given ``grad_intensities = dL/dI`` (B, ny, nx),
    the gradients of L w.r.t. the slices, probe modes, positions (1/px) and beam tilt (1/mrad).
    ``wrt`` picks which ones to compute. Arguments as in :func:`multislice_forward`."""
    call = _prepare(slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, device, threads)
    B, S, M, ny, nx = call.shape
    g = np.ascontiguousarray(grad_intensities, dtype=call.real_dtype)
    if g.shape != (B, ny, nx):
        raise ValueError(f"grad_intensities: expected shape {(B, ny, nx)}, got {g.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError("grad_intensities: expected finite values")
    outputs = _gradient_outputs(call, _wrt_set(wrt))
    call.run(source=1, grad_intensities=g, **outputs)
    return _grads(call, outputs)


@accepts_arrays(data="real", slices="complex", probe="complex", positions_px="real")
def multislice_loss_grad(
    data,
    slices,
    probe,
    positions_px,
    dz_A: float,
    energy_eV: float | None = None,
    sampling_A=None,
    *,
    likelihood: str = "poisson",
    eps: float = 1e-6,
    tilt_mrad=(0.0, 0.0),
    bandlimit: bool = True,
    wrt: Iterable[str] = _WRT,
    device: str = "cpu",
    threads: int | None = None,
    check_data: bool = True,
) -> MultisliceGrads:
    """Likelihood of measured patterns ``data`` (B, ny, nx, counts, zero frequency at the centre) under the
    multislice model, and its gradients, in one pass (no intensities stored).

    ``likelihood="poisson"`` sums the Poisson deviance ``I - d + d log(d / I)``; ``"amplitude"`` sums
    ``(sqrt(I) - sqrt(d))^2``. With ``bandlimit=True`` detector pixels outside the band limit, which the
    model cannot reach, are left out. ``check_data=False`` skips the check that the counts are finite and
    non-negative (for callers that checked them once already). Returns :class:`MultisliceGrads` with
    ``loss`` and ``loss_per_position`` set."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood: expected one of {tuple(LIKELIHOODS)}, got {likelihood!r}")
    call = _prepare(slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, device, threads)
    B, S, M, ny, nx = call.shape
    d = np.ascontiguousarray(data, dtype=call.real_dtype)
    if d.shape != (B, ny, nx):
        raise ValueError(f"data: expected shape {(B, ny, nx)} (positions, ky, kx), got {d.shape}")
    if check_data and (not np.all(np.isfinite(d)) or np.any(d < 0)):
        raise ValueError("data: expected finite, non-negative counts")
    outputs = _gradient_outputs(call, _wrt_set(wrt))
    per_position = np.empty(B, np.float64)
    loss = call.run(source=2, data=d, likelihood=LIKELIHOODS[likelihood], eps=float(eps), loss_per_position=per_position, **outputs)
    return _grads(call, outputs, loss=float(loss), loss_per_position=per_position)
