"""CUDA arrays of the caller's framework, as the native device entry points take them.

One operator call on CUDA arrays gets a :class:`DeviceCall`: the caller's framework (PyTorch, CuPy, or
another producer read through CuPy) on the caller's device. It does, in that framework, what the call needs:

* describe an argument for the native code as a descriptor ``(pointer, shape, dtype name)`` of
  C-contiguous device memory; the caller's own array when it already has the operator's dtype and layout
  (zero copy), else one conversion by the caller's library on the same device (``tensor.to(dtype)
  .contiguous()``, ``cupy.ascontiguousarray``), which is also how a lazily conjugated or negated PyTorch
  view is resolved. Lists, tuples and scalars are copied to the device once;
* allocate outputs with the caller's library on the same device (``torch.empty(..., device=...)``,
  ``cupy.empty`` under ``cupy.cuda.Device``);
* name the stream the work is queued on: the caller's current stream on that device
  (``torch.cuda.current_stream(device).cuda_stream``, ``cupy.cuda.get_current_stream().ptr``; 0 is the
  legacy default stream).

Work on PyTorch and CuPy arrays is stream-ordered: it is queued after what the caller queued on its current
stream, results are ready for whatever the caller queues there next, and the call returns without waiting,
unless it runs inside :func:`synchronous`. Arrays of other producers (``__cuda_array_interface__`` or CUDA
DLPack, e.g. JAX or Numba) are read through CuPy (``cupy.asarray`` / ``cupy.from_dlpack``, which follow
the producer's stream semantics) on CuPy's current stream, and those calls wait for their work before
returning, since their framework does not share CuPy's notion of a current stream.
"""

from __future__ import annotations

import abc

import contextlib
import contextvars
import dataclasses
import importlib

import numpy as np

from ._arrays import check_kind, check_torch_tensor, cupy_module

_SYNCHRONOUS = contextvars.ContextVar("mspt_ops_synchronous", default=False)


@contextlib.contextmanager
def synchronous():
    """Within this context, operators on CUDA arrays wait for their work before returning and check their
    arguments' values on the host as the CPU path does: probe windows inside the object (ValueError naming
    ``positions_px[b]`` instead of NaN results), finite positions and cotangents, orthonormal rotations,
    finite shifts. For debugging; the default is asynchronous, stream-ordered work."""
    token = _SYNCHRONOUS.set(True)
    try:
        yield
    finally:
        _SYNCHRONOUS.reset(token)


@dataclasses.dataclass(frozen=True)
class Description:
    """What the native code needs to know about an array: its device pointer, shape and dtype (NumPy's kind
    letter and name, e.g. "c", "complex64"), and whether its memory is C-contiguous as it stands."""

    pointer: int
    shape: tuple[int, ...]
    kind: str
    dtype: str
    contiguous: bool


@dataclasses.dataclass(frozen=True)
class DeviceArray:
    """One argument ready for the native code: the array (the caller's, or its one conversion, kept alive by
    this object for the call) and its description."""

    array: object
    pointer: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def native(self) -> tuple:
        """The descriptor the native device entry points take."""
        return (self.pointer, self.shape, self.dtype.name)

    def with_leading_axis(self) -> DeviceArray:
        """The same memory seen with a leading axis of 1 (one slice, one mode, one position)."""
        return DeviceArray(self.array[None], self.pointer, (1, *self.shape), self.dtype)


class Framework(abc.ABC):
    """The operations a call needs from the caller's array library, on CUDA device ``index``."""

    synchronizes = False  # whether calls must wait for their work (no shared notion of a current stream)

    def __init__(self, index: int):
        self.index = index

    def adopt(self, x):
        """The caller's array as this framework's array, without a copy."""
        return x

    @abc.abstractmethod
    def describe(self, name: str, x) -> Description:
        ...

    @abc.abstractmethod
    def convert(self, x, dtype: np.dtype):
        """``x`` as a C-contiguous array of ``dtype`` on the same device (one copy)."""

    @abc.abstractmethod
    def upload(self, host: np.ndarray):
        ...

    @abc.abstractmethod
    def empty(self, shape: tuple[int, ...], dtype: np.dtype):
        ...

    @abc.abstractmethod
    def zeros(self, shape: tuple[int, ...], dtype: np.dtype):
        ...

    @abc.abstractmethod
    def broadcast(self, x, shape: tuple[int, ...]):
        """``x`` repeated to ``shape`` (NumPy's broadcasting), C-contiguous, on the device."""

    @abc.abstractmethod
    def stream(self) -> int:
        """The caller's current stream on this device, as a cudaStream_t integer (0: legacy default)."""

    @abc.abstractmethod
    def to_host(self, x) -> np.ndarray:
        """A host copy (waits for the stream): for the value checks of a synchronous call and the loss."""

    def all_true(self, condition) -> bool:
        return bool(condition.all())

    @abc.abstractmethod
    def isfinite(self, x):
        ...

    def result(self, x):
        """An output as the caller's array type."""
        return x


class TorchCuda(Framework):
    def __init__(self, index: int):
        super().__init__(index)
        import torch

        self.torch = torch
        self.device = torch.device("cuda", index)

    def describe(self, name, x):
        check_torch_tensor(name, x)
        dtype = x.dtype
        if dtype.is_complex:
            kind = "c"
        elif dtype.is_floating_point:
            kind = "f"
        else:
            kind = "b" if dtype == self.torch.bool else "u" if dtype == self.torch.uint8 else "i"
        # A lazily conjugated or negated view holds the other value in memory: it is not usable in place.
        plain = not (x.is_conj() or x.is_neg())
        contiguous = plain and x.is_contiguous()
        return Description(x.data_ptr(), tuple(x.shape), kind, str(dtype).removeprefix("torch."), contiguous)

    def _dtype(self, dtype: np.dtype):
        return getattr(self.torch, np.dtype(dtype).name)

    def convert(self, x, dtype):
        return x.resolve_conj().resolve_neg().to(dtype=self._dtype(dtype)).contiguous()

    def upload(self, host):
        return self.torch.from_numpy(np.ascontiguousarray(host)).to(self.device)

    def empty(self, shape, dtype):
        return self.torch.empty(shape, dtype=self._dtype(dtype), device=self.device)

    def zeros(self, shape, dtype):
        return self.torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def broadcast(self, x, shape):
        return x.expand(shape).contiguous()

    def stream(self):
        return int(self.torch.cuda.current_stream(self.device).cuda_stream)

    def to_host(self, x):
        return x.cpu().numpy()

    def isfinite(self, x):
        return self.torch.isfinite(x)


class CupyCuda(Framework):
    def __init__(self, index: int):
        super().__init__(index)
        self.cupy = cupy_module()

    def describe(self, name, x):
        return Description(int(x.data.ptr), tuple(x.shape), x.dtype.kind, x.dtype.name, bool(x.flags.c_contiguous))

    def convert(self, x, dtype):
        with self.cupy.cuda.Device(self.index):
            return self.cupy.ascontiguousarray(x, dtype=dtype)

    def upload(self, host):
        with self.cupy.cuda.Device(self.index):
            return self.cupy.asarray(np.ascontiguousarray(host))

    def empty(self, shape, dtype):
        with self.cupy.cuda.Device(self.index):
            return self.cupy.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype):
        with self.cupy.cuda.Device(self.index):
            return self.cupy.zeros(shape, dtype=dtype)

    def broadcast(self, x, shape):
        with self.cupy.cuda.Device(self.index):
            return self.cupy.ascontiguousarray(self.cupy.broadcast_to(x, shape))

    def stream(self):
        with self.cupy.cuda.Device(self.index):
            return int(self.cupy.cuda.get_current_stream().ptr)

    def to_host(self, x):
        return self.cupy.asnumpy(x)

    def isfinite(self, x):
        return self.cupy.isfinite(x)


class ForeignCuda(CupyCuda):
    """CUDA arrays of another producer, viewed through CuPy; results go back through the producer's
    ``from_dlpack`` where its module has one (JAX: ``jax.dlpack.from_dlpack``), else stay CuPy arrays."""

    synchronizes = True

    def __init__(self, index: int, framework: str):
        super().__init__(index)
        self.framework = framework

    def adopt(self, x):
        with self.cupy.cuda.Device(self.index):
            if hasattr(x, "__cuda_array_interface__"):
                return self.cupy.asarray(x)
            return self.cupy.from_dlpack(x)

    def result(self, x):
        if self.framework == "jax":
            import jax.dlpack

            return jax.dlpack.from_dlpack(x)
        module = importlib.import_module(self.framework)
        return module.from_dlpack(x) if hasattr(module, "from_dlpack") else x


# The frameworks whose arrays are used as they are; any other producer goes through ForeignCuda.
FRAMEWORKS: dict[str, type[Framework]] = {"torch": TorchCuda, "cupy": CupyCuda}


class DeviceCall:
    """The CUDA side of one operator call on ``caller``'s arrays (``caller`` is the placement of the
    argument named ``first``; see ``_arrays``). Every array argument must already be known to share that
    placement."""

    def __init__(self, caller, first: str):
        cls = FRAMEWORKS.get(caller.framework)
        self.framework = cls(caller.index) if cls is not None else ForeignCuda(caller.index, caller.framework)
        self.caller, self.first, self.index = caller, first, caller.index
        self.synchronize = self.framework.synchronizes or _SYNCHRONOUS.get()
        self.stream = self.framework.stream()

    def input(self, name: str, value, kind: str, dtype, *, single_precision: bool = False) -> DeviceArray | None:
        """An input argument as ``dtype``, C-contiguous, on the call's device: the caller's array in place
        when it is that already, else converted once by the caller's library. None stays None.
        ``single_precision``: a complex128 array is refused rather than rounded (on the CPU it would select
        the double-precision engine, which the GPU does not have)."""
        if value is None:
            return None
        if _is_array(value):
            x = self.framework.adopt(value)
        else:  # a list, tuple or scalar: one host -> device copy (which may wait for the stream)
            x = self.framework.upload(np.asarray(value))
        d = self.framework.describe(name, x)
        check_kind(name, d.kind, d.dtype, kind)
        if single_precision and d.dtype == "complex128":
            raise ValueError(f"{name}: complex128, but the CUDA backend runs in single precision; pass complex64 arrays")
        dtype = np.dtype(dtype)
        if d.dtype != dtype.name or not d.contiguous:
            x = self.framework.convert(x, dtype)
            d = self.framework.describe(name, x)
        return DeviceArray(x, d.pointer, d.shape, dtype)

    def upload(self, host: np.ndarray, dtype) -> DeviceArray:
        """A host array (an mspt.Probe's) copied to the call's device as ``dtype`` (the copy may wait for
        the stream)."""
        return self._wrap(self.framework.upload(np.ascontiguousarray(host, dtype=dtype)), dtype)

    def output(self, name: str, value, shape: tuple[int, ...], dtype) -> DeviceArray:
        """An ``out=`` argument: the caller's array of exactly this shape and dtype, C-contiguous, written
        in place (no conversion: a converted copy would not be the caller's buffer)."""
        dtype = np.dtype(dtype)
        x = self.framework.adopt(value) if _is_array(value) else None
        d = None if x is None else self.framework.describe(name, x)
        if d is None or d.dtype != dtype.name or d.shape != tuple(shape) or not d.contiguous:
            got = "a non-array" if d is None else f"dtype {d.dtype}, shape {d.shape}" + (
                "" if d.contiguous else ", not C-contiguous")  # fmt: skip
            raise ValueError(
                f"{name}: expected a C-contiguous {dtype.name} {self.caller.framework} array of shape {tuple(shape)} "
                f"on cuda:{self.index}, got {got}"
            )
        return DeviceArray(x, d.pointer, d.shape, dtype)

    def empty(self, shape: tuple[int, ...], dtype) -> DeviceArray:
        """A fresh output buffer of the caller's library on the call's device."""
        return self._wrap(self.framework.empty(tuple(int(v) for v in shape), np.dtype(dtype)), dtype)

    def zeros(self, shape: tuple[int, ...], dtype) -> DeviceArray:
        return self._wrap(self.framework.zeros(tuple(int(v) for v in shape), np.dtype(dtype)), dtype)

    def broadcast(self, arr: DeviceArray, shape: tuple[int, ...]) -> DeviceArray:
        """``arr`` repeated to ``shape`` in a new buffer (a (2,) shift for every pose)."""
        return self._wrap(self.framework.broadcast(arr.array, tuple(shape)), arr.dtype)

    def scale_elements(self, arr: DeviceArray, factors) -> None:
        """``arr[i] *= factors[i]`` in place, on the stream, with the factors as kernel arguments (an upload
        of them would wait for the stream)."""
        for i, factor in enumerate(factors):
            arr.array[i] *= float(factor)

    def _wrap(self, x, dtype) -> DeviceArray:
        d = self.framework.describe("output", x)
        return DeviceArray(x, d.pointer, d.shape, np.dtype(dtype))

    def to_host(self, arr: DeviceArray) -> np.ndarray:
        return self.framework.to_host(arr.array)

    def all_finite(self, arr: DeviceArray) -> bool:
        """Whether every element is finite (reads a flag back: the call waits for the stream)."""
        return self.framework.all_true(self.framework.isfinite(arr.array))

    def all_nonnegative(self, arr: DeviceArray) -> bool:
        return self.framework.all_true(arr.array >= 0)

    def result(self, arr: DeviceArray | None):
        """An output (or None) as the caller's array type."""
        return None if arr is None else self.framework.result(arr.array)

    def placement_kwargs(self) -> dict:
        """The device, stream and waiting arguments of every native device entry point."""
        return dict(device=self.index, stream=self.stream, synchronize=self.synchronize)


def native(arr: DeviceArray | None):
    """The descriptor of an optional argument (None stays None)."""
    return None if arr is None else arr.native


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) or hasattr(value, "__dlpack__") or hasattr(value, "__cuda_array_interface__")
