"""Array interop for the operators: any DLPack / array-interface / CUDA-array-interface input in, the
caller's array type out, on the caller's device.

* CPU arrays (NumPy, PyTorch CPU tensors, JAX CPU arrays, anything with ``__dlpack__`` on the CPU) are
  viewed through DLPack, so a C-contiguous array of the dtype the operator computes in reaches the native
  call in place (zero copy; ``out=`` tensors are written in place). Anything else (another dtype, strided
  views, a PyTorch tensor with its lazy-conjugate bit set) is converted once, by the operator. Results
  come back as ``torch.Tensor`` (sharing memory with the result), ``jax.Array``, or for other DLPack
  producers their module's ``from_dlpack`` where it has one, else NumPy.
* CUDA arrays (PyTorch CUDA tensors, CuPy, anything with ``__cuda_array_interface__`` or a CUDA DLPack
  device) never go through the host: operators that have a CUDA path (``device_path``) run it on the
  arrays' own device, on the caller's current stream, with the arrays used in place (``_device_arrays``
  and ``_on_device``); the others refuse them.

Arguments of one call must all live on one device, in one framework; a mismatch, a device that is neither
CPU nor CUDA, a dtype the argument cannot take, a PyTorch tensor that requires grad (use :mod:`mspt.torch`)
or an ``out`` that is not C-contiguous raises a ValueError naming the argument.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect

import numpy as np

# DLPack device types (dlpack.h): host memory and CUDA device memory.
_DLPACK_CPU = 1
_DLPACK_CUDA = 2

# What each kind of argument may hold: complex fields take real arrays too (a real transmission or probe).
_ACCEPTS = {
    "complex": ("c", "f"),
    "real": ("f", "i", "u"),
    "mask": ("b", "i", "u"),  # booleans, or 0/1 integers
}


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one array lives: its framework ("numpy", "torch", "cupy", "jax" or the module of another
    DLPack producer) and its device ("cpu" or "cuda") with the device index."""

    framework: str
    device: str
    index: int = 0

    def __str__(self) -> str:
        where = "cpu" if self.device == "cpu" else f"cuda:{self.index}"
        return f"a {self.framework} array on {where}"


NUMPY = Placement("numpy", "cpu")


def _framework(x) -> str:
    top = type(x).__module__.split(".")[0]
    return "jax" if top in ("jax", "jaxlib") else top


def is_foreign(x) -> bool:
    """True for an array that is not a NumPy array but speaks DLPack or the CUDA array interface."""
    return not isinstance(x, np.ndarray) and (hasattr(x, "__dlpack__") or hasattr(x, "__cuda_array_interface__"))


def placement(name: str, x) -> Placement:
    """The framework and device of ``x`` (NumPy for plain arrays, lists and scalars)."""
    if not is_foreign(x):
        return NUMPY
    framework = _framework(x)
    if hasattr(x, "__dlpack_device__"):
        try:
            kind, index = (int(v) for v in x.__dlpack_device__())
        except (BufferError, RuntimeError, TypeError, ValueError) as err:
            raise ValueError(
                f"{name}: a {framework} array on a device DLPack cannot describe ({err}); expected CPU or CUDA memory"
            ) from None
        if kind == _DLPACK_CPU:
            return Placement(framework, "cpu")
        if kind == _DLPACK_CUDA:
            return Placement(framework, "cuda", index)
        raise ValueError(f"{name}: arrays on DLPack device type {kind} are not supported (expected CPU or CUDA memory)")
    # Only the CUDA array interface: its device is the one that owns the pointer, CuPy tells it.
    return Placement(framework, "cuda", cupy_module().cuda.runtime.pointerGetAttributes(
        x.__cuda_array_interface__["data"][0]).device)  # fmt: skip


def cupy_module():
    try:
        return importlib.import_module("cupy")
    except ImportError:
        raise ValueError("CUDA arrays other than PyTorch tensors need CuPy (pip install cupy-cuda12x)") from None


def check_torch_tensor(name: str, x) -> None:
    if x.requires_grad:
        raise ValueError(
            f"{name}: a torch tensor that requires grad; mspt.ops does not track gradients. Use mspt.torch "
            "for autograd, or pass tensor.detach()"
        )


def to_numpy(name: str, x, where: Placement | None = None) -> np.ndarray:
    """A NumPy array holding ``x``: a view of the same memory for a CPU array that DLPack can describe.
    Non-array inputs (lists, scalars) go through np.asarray. A CUDA array is refused (ValueError): it is
    never copied to the host behind the caller's back."""
    if isinstance(x, np.ndarray) or not is_foreign(x):
        return np.asarray(x)
    where = placement(name, x) if where is None else where
    if where.device != "cpu":
        raise ValueError(f"{name}: {where}; CUDA arrays stay on their device (this path takes host arrays only)")
    if where.framework == "torch":
        check_torch_tensor(name, x)
        # A lazily conjugated or negated view cannot be exported; resolving it is the one conversion.
        x = x.resolve_conj().resolve_neg()
    try:
        return np.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"{name}: {where} that cannot be read as a strided host array ({err})") from None


def from_numpy(result: np.ndarray, where: Placement):
    """``result`` as the CPU caller's array type (sharing memory where the framework can)."""
    framework = where.framework
    if framework == "numpy":
        return result
    if framework == "torch":
        import torch

        return torch.from_numpy(result)
    if framework == "jax":
        import jax

        return jax.device_put(result, jax.devices("cpu")[0])
    module = importlib.import_module(framework)
    return module.from_dlpack(result) if hasattr(module, "from_dlpack") else result


def check_kind(name: str, dtype_kind: str, dtype_name: str, kind: str) -> None:
    """ValueError naming the argument unless a dtype of NumPy kind ``dtype_kind`` (e.g. "c") may be
    passed as a ``kind`` argument."""
    if dtype_kind not in _ACCEPTS[kind]:
        expected = {"complex": "a complex array", "real": "a real array", "mask": "a boolean (or 0/1 integer) array"}
        raise ValueError(f"{name}: expected {expected[kind]}, got dtype {dtype_name}")


def _check_dtype(name: str, arr: np.ndarray, kind: str) -> None:
    if arr.dtype.kind not in _ACCEPTS[kind]:  # the dtype's name is formatted for the error only
        check_kind(name, arr.dtype.kind, str(arr.dtype), kind)


def _convert_result(value, where: Placement, originals: dict):
    """Map NumPy arrays inside an op's result (an array, a tuple, a gradients dataclass) to the caller's
    type; an ``out`` buffer comes back as the caller's own object."""
    if isinstance(value, np.ndarray):
        return originals[id(value)] if id(value) in originals else from_numpy(value, where)
    if isinstance(value, tuple):
        return tuple(_convert_result(v, where, originals) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        changed = {k: _convert_result(v, where, originals) for k, v in fields.items() if isinstance(v, np.ndarray)}
        return dataclasses.replace(value, **changed) if changed else value
    return value


def _caller(given: dict, names) -> tuple[Placement, str | None]:
    """The placement of the first non-NumPy array among the arguments, and that argument's name."""
    for name in names:
        value = given.get(name)
        if value is not None and (where := placement(name, value)) != NUMPY:
            return where, name
    return NUMPY, None


def _run_on_device(op, device_path, bound, kinds: dict, outputs, caller: Placement, first: str):
    """A call on CUDA arrays: every array argument on ``caller``'s device and framework, then the
    operator's CUDA path (``_on_device``), which uses the arrays in place on their own device."""
    given = bound.arguments
    if device_path is None:
        raise ValueError(f"{first}: {caller}, but {op.__name__} runs on the CPU only; pass host arrays")
    if given.get("device", "cuda") != "cuda":
        raise ValueError(f"device: {given['device']!r}, but {first} is {caller}; pass device='cuda' or leave it out")
    for name in (*kinds, *outputs):
        value = given.get(name)
        if value is None or not (isinstance(value, np.ndarray) or is_foreign(value)):
            continue  # scalars, lists, an mspt.Probe: copied to the device by the CUDA path
        where = placement(name, value)
        if where != caller:
            raise ValueError(f"{name}: {where}, but {first} is {caller}; pass every array on one device")
    from . import _device_arrays, _on_device

    bound.apply_defaults()
    arguments = dict(bound.arguments, device="cuda")
    return getattr(_on_device, device_path)(**arguments, call=_device_arrays.DeviceCall(caller, first))


def _to_host_arguments(given: dict, kinds: dict, outputs, caller: Placement, first: str) -> dict:
    """Replace every array argument of a CPU call by its NumPy view; returns {id(view): caller's object}
    for the ``out`` buffers, which go back to the caller as its own objects."""
    originals = {}
    for name in (*kinds, *outputs):
        value = given.get(name)
        if value is None or (not isinstance(value, np.ndarray) and not is_foreign(value)):
            continue  # scalars, lists, an mspt.Probe: the operator reads them as before
        where = placement(name, value)
        if where != caller and where != NUMPY:
            raise ValueError(f"{name}: {where}, but {first} is {caller}; pass every array on one device")
        arr = to_numpy(name, value, where)
        if name in kinds:
            _check_dtype(name, arr, kinds[name])
        elif not arr.flags.c_contiguous or not arr.flags.writeable:
            raise ValueError(f"{name}: expected a C-contiguous, writable {caller.framework} array on the CPU")
        else:
            originals[id(arr)] = value
        given[name] = arr
    return originals


def accepts_arrays(outputs: tuple[str, ...] = (), device_path: str | None = None, **kinds: str):
    """Decorator: the named arguments of an operator accept any array kind (see the module docstring).

    ``kinds`` maps argument names to "complex", "real" or "mask" (the dtypes each may hold); ``outputs``
    names ``out=``-style arguments, which must be C-contiguous and writable. ``device_path`` names the
    operator's CUDA path in ``_on_device`` (same parameters, plus ``call``); without one, CUDA arrays are
    refused. A call with NumPy arrays only runs the operator unchanged (apart from the dtype check)."""
    for kind in kinds.values():
        if kind not in _ACCEPTS:
            raise ValueError(f"kind: expected one of {tuple(_ACCEPTS)}, got {kind!r}")

    def decorate(op):
        signature = inspect.signature(op)
        names = tuple(signature.parameters)
        arrays = (*kinds, *outputs)

        @functools.wraps(op)
        def wrapper(*args, **kwargs):
            # The common call, NumPy arrays only, skips binding the signature (tens of microseconds, paid on
            # every batch of a reconstruction): positions name the arguments as binding would, and a call
            # that does not fit the signature fails in the operator itself.
            named = dict(zip(names, args), **kwargs)
            if not any(is_foreign(named.get(name)) for name in arrays):
                for name, kind in kinds.items():
                    if isinstance(named.get(name), np.ndarray):
                        _check_dtype(name, named[name], kind)
                return op(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            given = bound.arguments
            caller, first = _caller(given, arrays)  # not NumPy: some argument is foreign
            if caller.device == "cuda":
                return _run_on_device(op, device_path, bound, kinds, outputs, caller, first)
            originals = _to_host_arguments(given, kinds, outputs, caller, first)
            return _convert_result(op(*bound.args, **bound.kwargs), caller, originals)

        return wrapper

    return decorate
