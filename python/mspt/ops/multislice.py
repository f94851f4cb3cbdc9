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

import collections
import dataclasses
import math
from typing import Iterable

import numpy as np

from .. import _backend
from .. import _validate as _v
from .._native import core as _core
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


class MultisliceTape:
    """The forward state of one :func:`multislice_forward` call (``record_tape=True``), kept so that
    :func:`multislice_vjp` (``tape=``) skips the forward pass it would otherwise run again.

    It holds, per position and probe mode, the wave entering every slice and the far-field spectrum, plus
    the propagated spectra entering slices 1 .. S-1 when recorded ``with_tilt`` (the tilt gradient needs
    them): ``B x M x (S + 1)`` planes of ``ny x nx`` complex values, ``B x M x 2S`` with the tilt spectra
    (:func:`multislice_tape_bytes`). A vjp checks that it gets the recording call's positions, geometry and
    shapes; the slices and probe must be the recording call's too (they are not copied). CPU only.
    """

    __slots__ = ("native", "precision")

    def __init__(self, native, precision: str):
        self.native = native
        self.precision = precision

    def __del__(self):
        if _tape_pool is not None:  # None at interpreter exit
            _tape_pool.give_back(self.native)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return int(self.native.nbytes)

    @property
    def with_tilt(self) -> bool:
        """Whether the spectra for the tilt gradient were recorded."""
        return bool(self.native.with_spectra)

    def __repr__(self) -> str:
        return f"MultisliceTape({self.precision}, {self.nbytes / 2**20:.1f} MiB, with_tilt={self.with_tilt})"


def _tape_class(precision: str):
    return _core.MultisliceTape64 if precision == "double" else _core.MultisliceTape32


class _TapePool:
    """Released tapes, kept for the next recording of the same shape. A fresh tape's memory is faulted in
    (and zeroed by the kernel) page by page on its first write, which costs about a sixth of the forward pass
    it records; a training loop records one tape of the same shape per step, so it reuses one or two. At
    most ``max_tapes`` tapes of at most ``max_tape_bytes`` each wait here, the oldest leave first.

    No lock: tapes come back from ``__del__``, possibly in the middle of another pool call, so the pool uses
    only the deque's atomic append and popleft."""

    def __init__(self, max_tapes: int = 2, max_tape_bytes: int = 256 * 2**20):
        self.max_tapes, self.max_tape_bytes = max_tapes, max_tape_bytes
        self._free: collections.deque = collections.deque()

    def take(self, precision: str, batch: int, n_slices: int, modes: int, ny: int, nx: int, with_tilt: bool):
        cls = _tape_class(precision)
        for _ in range(len(self._free)):
            try:
                native = self._free.popleft()
            except IndexError:  # emptied by another thread
                break
            fits = native.shape == (batch, n_slices, modes, ny, nx) and native.with_spectra == with_tilt
            if isinstance(native, cls) and fits:
                return native
            self._free.append(native)
        return cls(batch, n_slices, modes, ny, nx, with_tilt)

    def give_back(self, native) -> None:
        if native.nbytes > self.max_tape_bytes:
            return
        self._free.append(native)
        while len(self._free) > self.max_tapes:
            try:
                self._free.popleft()
            except IndexError:
                break


_tape_pool = _TapePool()


def multislice_tape_bytes(batch: int, n_slices: int, modes: int, ny: int, nx: int, *, precision: str = "single",
                          with_tilt: bool = False) -> int:  # fmt: skip
    """Bytes a :class:`MultisliceTape` of this shape holds (``precision`` "single" or "double")."""
    if precision not in ("single", "double"):
        raise ValueError(f"precision: expected 'single' or 'double', got {precision!r}")
    shape = (int(batch), int(n_slices), int(modes), int(ny), int(nx))
    return int(_tape_class(precision).bytes_for(*shape, bool(with_tilt)))


def bandlimit_cutoff_invA(sampling_A) -> float:
    """The band limit (1/A): 2/3 of the Nyquist frequency of the coarser axis (abTEM's antialias cutoff)."""
    return 2.0 / 3.0 / (2.0 * max(sampling_A))


@dataclasses.dataclass(frozen=True)
class _Scalars:
    """The validated scalar arguments of a multislice call: everything the engine takes besides arrays."""

    dz_A: float
    wavelength_A: float
    sampling_A: tuple[float, float]
    tan_tilt: tuple[float, float]
    tilt_rad: tuple[float, float]
    cutoff_invA: float
    bandlimit: bool
    threads: int

    def native(self) -> tuple:
        """The engine's ``run`` arguments after the three arrays, in order."""
        return (
            self.dz_A, self.wavelength_A, self.sampling_A[0], self.sampling_A[1], self.tan_tilt[0], self.tan_tilt[1],
            self.cutoff_invA, self.bandlimit,
        )  # fmt: skip

    @property
    def tilt_mrad_factors(self) -> np.ndarray:
        """dL/dtilt_mrad = dL/dtan(tilt) times these: the engine differentiates w.r.t. tan(t), the API speaks mrad."""
        return np.array([1e-3 / math.cos(t) ** 2 for t in self.tilt_rad])


@dataclasses.dataclass(frozen=True)
class _Call:
    """Validated, converted arguments of one call."""

    slices: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    precision: str
    device: str
    scalars: _Scalars

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
        return _backend.multislice_engine(self.device, self.precision, ny, nx, S, M, self.scalars.threads)

    def run(self, **outputs) -> float:
        engine, lock = self.engine()
        with lock:
            return engine.run(self.slices, self.probe, self.positions, *self.scalars.native(), **outputs)


def _finite_positive(name: str, value) -> float:
    return float(_v.positive(name, value))


def _pair(name: str, value, unit: str) -> tuple[float, float]:
    return _v.pair(name, value, unit)


def _probe_defaults(probe, energy_eV, sampling_A):
    """(probe array, energy_eV, sampling_A): an :class:`mspt.Probe` supplies what is not given."""
    if isinstance(probe, Probe):
        energy_eV = probe.energy_eV if energy_eV is None else energy_eV
        sampling_A = probe.sampling_A if sampling_A is None else sampling_A
        probe = probe.array
    if energy_eV is None:
        raise ValueError("energy_eV: required (beam energy in eV) unless probe is an mspt.Probe")
    if sampling_A is None:
        raise ValueError("sampling_A: required (object pixel size (dy, dx) in A) unless probe is an mspt.Probe")
    return probe, energy_eV, sampling_A


def _engine_shapes(slices_shape, probe_shape, positions_shape):
    """The (S, H, W), (M, ny, nx) and (B, 2) shapes the engine takes, from the shapes given: one slice, one
    probe mode and one position may come without their leading axis."""
    slices_shape, probe_shape, positions_shape = tuple(slices_shape), tuple(probe_shape), tuple(positions_shape)
    slices_shape = (1, *slices_shape) if len(slices_shape) == 2 else slices_shape
    probe_shape = (1, *probe_shape) if len(probe_shape) == 2 else probe_shape
    positions_shape = (1, 2) if positions_shape == (2,) else positions_shape
    if len(slices_shape) != 3:
        raise ValueError(f"slices: expected shape (S, H, W) of complex transmission functions, got {slices_shape}")
    if len(probe_shape) != 3:
        raise ValueError(f"probe: expected shape (modes, ny, nx) or (ny, nx), got {probe_shape}")
    if len(positions_shape) != 2 or positions_shape[1] != 2:
        raise ValueError(f"positions_px: expected shape (B, 2) of (y, x) pixel positions, got {positions_shape}")
    return slices_shape, probe_shape, positions_shape


# _scalars' results by their arguments: a reconstruction calls the engine with the same geometry batch after
# batch, and the checks cost tens of microseconds each time (NumPy's dispatch, cold after a native call).
_SCALARS_MEMO: dict = {}
_SCALARS_MEMO_SIZE = 64


def _memo_key(value):
    """A hashable stand-in for a scalar argument (arrays by dtype, shape and bytes), or None if there is none."""
    if isinstance(value, np.ndarray):
        return None if value.dtype.hasobject else (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (tuple, list)):
        items = tuple(_memo_key(v) for v in value)
        return None if None in items else (type(value).__name__, items)
    if isinstance(value, (bool, int, float, str, type(None), np.number)):
        return (type(value).__name__, value)
    return None


def _scalars(dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, threads) -> _Scalars:
    key = _memo_key((dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, threads))
    found = _SCALARS_MEMO.get(key) if key is not None else None
    if found is None:
        found = _checked_scalars(dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, threads)
        if key is not None:
            if len(_SCALARS_MEMO) >= _SCALARS_MEMO_SIZE:
                _SCALARS_MEMO.clear()
            _SCALARS_MEMO[key] = found
    return found


def _checked_scalars(dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, threads) -> _Scalars:
    dz_A = _finite_positive("dz_A", dz_A)
    wavelength = _wavelength_A(_finite_positive("energy_eV", energy_eV))
    sampling = _pair("sampling_A", sampling_A, "angstrom")
    if min(sampling) <= 0:
        raise ValueError(f"sampling_A: expected positive pixel sizes in angstrom, got {sampling_A!r}")
    tilt = _pair("tilt_mrad", tilt_mrad, "mrad")
    tilt_rad = (tilt[0] * 1e-3, tilt[1] * 1e-3)
    if max(abs(t) for t in tilt_rad) >= math.pi / 2:
        raise ValueError(f"tilt_mrad: expected |tilt| < {1e3 * math.pi / 2:.0f} mrad, got {tilt_mrad!r}")
    return _Scalars(
        dz_A=dz_A, wavelength_A=wavelength, sampling_A=sampling, tan_tilt=(math.tan(tilt_rad[0]), math.tan(tilt_rad[1])),
        tilt_rad=tilt_rad, cutoff_invA=bandlimit_cutoff_invA(sampling), bandlimit=bool(bandlimit),
        threads=0 if threads is None else int(threads),
    )  # fmt: skip


def _prepare(slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, device, threads) -> _Call:
    _backend.check_device(device)
    probe, energy_eV, sampling_A = _probe_defaults(probe, energy_eV, sampling_A)
    slices = np.asarray(slices)
    probe = np.asarray(probe)
    positions = np.asarray(positions_px, dtype=np.float64)
    slices_shape, probe_shape, positions_shape = _engine_shapes(slices.shape, probe.shape, positions.shape)
    slices, probe, positions = slices.reshape(slices_shape), probe.reshape(probe_shape), positions.reshape(positions_shape)
    for name, arr in (("slices", slices), ("probe", probe)):
        if arr.dtype.kind not in "cf":
            raise ValueError(f"{name}: expected a complex array, got dtype {arr.dtype}")
    precision = "double" if (slices.dtype == np.complex128 or probe.dtype == np.complex128) else "single"
    cdtype = np.complex128 if precision == "double" else np.complex64
    slices = np.ascontiguousarray(slices, dtype=cdtype)
    probe = np.ascontiguousarray(probe, dtype=cdtype)
    positions = np.ascontiguousarray(positions)  # each engine checks that every position is finite (windows.h)
    scalars = _scalars(dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, threads)
    return _Call(slices=slices, probe=probe, positions=positions, precision=precision, device=device, scalars=scalars)


@accepts_arrays(outputs=("out",), device_path="multislice_forward", slices="complex", probe="complex", positions_px="real")
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
    record_tape: bool = False,
    tape_with_tilt: bool = False,
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
    record_tape : also return a :class:`MultisliceTape` of this pass, for :func:`multislice_vjp` to start
        from (CPU only; memory: :func:`multislice_tape_bytes`).
    tape_with_tilt : record in the tape what the tilt gradient needs too (about twice the memory).
    device : "cpu" or "cuda" (NumPy arrays on the current CUDA device). CUDA arrays (PyTorch, CuPy, ...) run
        on their own GPU, in place, on the caller's current stream, and come back as the caller's type
        (docs: embedding).
    threads : CPU threads (default: OpenMP's).
    out : optional (B, ny, nx) array for the intensities.

    Returns
    -------
    intensities : (B, ny, nx) float32 (float64 for complex128 inputs), zero frequency at (ny//2, nx//2);
        ``(intensities, exit_waves)`` with ``return_exit_waves``, the tape last with ``record_tape``.
    """
    call = _prepare(slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, device, threads)
    B, S, M, ny, nx = call.shape
    if out is None:
        out = np.empty((B, ny, nx), dtype=call.real_dtype)
    exit_waves = np.empty((B, M, ny, nx), dtype=call.complex_dtype) if return_exit_waves else None
    tape = None
    if record_tape:
        if call.device != "cpu":
            raise ValueError("record_tape: the CUDA backend keeps no tape (its vjp reruns the forward pass cheaply)")
        tape = MultisliceTape(_tape_pool.take(call.precision, B, S, M, ny, nx, bool(tape_with_tilt)), call.precision)
    call.run(intensities=out, exit_waves=exit_waves, tape=None if tape is None else tape.native)
    results = (out,) + ((exit_waves,) if return_exit_waves else ()) + ((tape,) if record_tape else ())
    return results if len(results) > 1 else out


def _wrt_set(wrt: Iterable[str]) -> set[str]:
    wrt = {wrt} if isinstance(wrt, str) else set(wrt)
    unknown = wrt - set(_WRT)
    if unknown:
        raise ValueError(f"wrt: unknown {sorted(unknown)}; expected a subset of {_WRT}")
    return wrt


def _gradient_outputs(call: _Call, wrt: set[str], slices_into: np.ndarray | None = None) -> dict:
    """The gradient arrays a call fills; the slice gradient goes to ``slices_into`` where one is given."""
    B, S, M, ny, nx = call.shape
    slices = np.empty(call.slices.shape, call.complex_dtype) if slices_into is None else slices_into
    return dict(
        grad_slices=slices if "slices" in wrt else None,
        grad_probe=np.empty((M, ny, nx), call.complex_dtype) if "probe" in wrt else None,
        grad_positions=np.empty((B, 2), np.float64) if "positions" in wrt else None,
        grad_tilt=np.empty(2, np.float64) if "tilt" in wrt else None,
    )


def _accumulator(value, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An ``accumulate_slices`` argument checked: the caller's own array, added to in place."""
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape) or value.dtype != dtype:
        got = f"dtype {value.dtype}, shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise ValueError(f"accumulate_slices: expected a {np.dtype(dtype).name} array of shape {tuple(shape)}, got {got}")
    if not value.flags.c_contiguous or not value.flags.writeable:
        raise ValueError("accumulate_slices: expected a C-contiguous, writable array (it is added to in place)")
    return value


def _grads(call: _Call, outputs: dict, **extra) -> MultisliceGrads:
    tilt = outputs["grad_tilt"]
    if tilt is not None:
        tilt = tilt * call.scalars.tilt_mrad_factors
    return MultisliceGrads(
        slices=outputs["grad_slices"], probe=outputs["grad_probe"], positions_px=outputs["grad_positions"],
        tilt_mrad=tilt, **extra,
    )  # fmt: skip


@accepts_arrays(
    device_path="multislice_vjp", grad_intensities="real", slices="complex", probe="complex", positions_px="real"
)
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
    tape: MultisliceTape | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> MultisliceGrads:
    """Vector-Jacobian product of :func:`multislice_forward`: given ``grad_intensities = dL/dI`` (B, ny, nx),
    the gradients of L w.r.t. the slices, probe modes, positions (1/px) and beam tilt (1/mrad).
    ``wrt`` picks which ones to compute. Arguments as in :func:`multislice_forward`.

    Without ``tape`` it runs the forward pass again; with the :class:`MultisliceTape` that
    ``multislice_forward(..., record_tape=True)`` returned for these same arguments it starts from the
    recorded pass (the same numbers, bit for bit, in about half the time)."""
    call = _prepare(slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, device, threads)
    wrt = _wrt_set(wrt)
    if tape is not None:
        _check_tape(tape, call, wrt)
    B, S, M, ny, nx = call.shape
    g = np.ascontiguousarray(grad_intensities, dtype=call.real_dtype)
    if g.shape != (B, ny, nx):
        raise ValueError(f"grad_intensities: expected shape {(B, ny, nx)}, got {g.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError("grad_intensities: expected finite values")
    outputs = _gradient_outputs(call, wrt)
    call.run(source=1, grad_intensities=g, tape=None if tape is None else tape.native, **outputs)
    return _grads(call, outputs)


def _check_tape(tape, call: _Call, wrt: set[str]) -> None:
    """The Python-side checks of a tape (the native ones compare positions, geometry and shapes)."""
    if not isinstance(tape, MultisliceTape):
        raise TypeError(
            f"tape: expected a MultisliceTape from multislice_forward(record_tape=True), got {type(tape).__name__}"
        )
    if call.device != "cpu":
        raise ValueError("tape: the CUDA backend keeps no tape; pass tape=None")
    if tape.precision != call.precision:
        raise ValueError(f"tape: recorded in {tape.precision} precision, this call runs in {call.precision}")
    if "tilt" in wrt and not tape.with_tilt:
        raise ValueError("tape: recorded without tape_with_tilt=True, which the tilt gradient needs")


@accepts_arrays(
    outputs=("accumulate_slices",), device_path="multislice_loss_grad", data="real", slices="complex", probe="complex",
    positions_px="real",
)
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
    accumulate_slices=None,
) -> MultisliceGrads:
    """Likelihood of measured patterns ``data`` (B, ny, nx, counts, zero frequency at the centre) under the
    multislice model, and its gradients, in one pass (no intensities stored).

    ``likelihood="poisson"`` sums the Poisson deviance ``I - d + d log(d / I)``; ``"amplitude"`` sums
    ``(sqrt(I) - sqrt(d))^2``. With ``bandlimit=True`` detector pixels outside the band limit, which the
    model cannot reach, are left out. ``check_data=False`` skips the check that the counts are finite and
    non-negative (for callers that checked them once already). ``wrt=()`` computes the loss alone: the
    engine stops after the forward pass and the likelihood (no backward pass, no per-slice waves kept), in
    about the time of :func:`multislice_forward`, and its loss equals a gradient call's bit for bit.
    ``accumulate_slices``: a C-contiguous (S, H, W) array of the slices' complex dtype that the slice
    gradient is added to in place (and that comes back as ``MultisliceGrads.slices``) instead of a new
    array: a loop over batches keeps one zeroed buffer and clears only the windows it used, rather than
    clearing and allocating a whole object per batch.
    Returns :class:`MultisliceGrads` with ``loss`` and ``loss_per_position`` set."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood: expected one of {tuple(LIKELIHOODS)}, got {likelihood!r}")
    call = _prepare(slices, probe, positions_px, dz_A, energy_eV, sampling_A, tilt_mrad, bandlimit, device, threads)
    B, S, M, ny, nx = call.shape
    d = np.ascontiguousarray(data, dtype=call.real_dtype)
    if d.shape != (B, ny, nx):
        raise ValueError(f"data: expected shape {(B, ny, nx)} (positions, ky, kx), got {d.shape}")
    if check_data and (not np.all(np.isfinite(d)) or np.any(d < 0)):
        raise ValueError("data: expected finite, non-negative counts")
    wrt = _wrt_set(wrt)
    accumulate = accumulate_slices is not None and "slices" in wrt
    into = _accumulator(accumulate_slices, call.slices.shape, call.complex_dtype) if accumulate else None
    outputs = _gradient_outputs(call, wrt, slices_into=into)
    per_position = np.empty(B, np.float64)
    loss = call.run(source=2, data=d, likelihood=LIKELIHOODS[likelihood], eps=float(eps), loss_per_position=per_position,
                    accumulate_slices=accumulate, **outputs)  # fmt: skip
    return _grads(call, outputs, loss=float(loss), loss_per_position=per_position)
