"""Stateless operators: NumPy in, NumPy out (single precision; complex128 inputs take the double path);
PyTorch, CuPy, JAX or any DLPack array in, the same kind out on its own device (see ``_arrays``). CUDA
arrays are used in place on their device and the work is queued on the caller's current stream; inside
:func:`synchronous` such calls wait for their work and check their arguments' values as on the CPU.

Naming: ``X_adjoint`` is the exact transpose of a linear operator; ``X_vjp`` is the vector-Jacobian
product of a non-linear one.
"""

from ._device_arrays import synchronous
from .likelihood import likelihood
from .linear import (
    extract_windows,
    extract_windows_adjoint,
    fourier_shift,
    fourier_shift_adjoint,
    illumination,
    overlap_add,
    propagate,
    propagate_adjoint,
    window_power,
)
from .multislice import (
    LIKELIHOODS,
    MultisliceGrads,
    MultisliceTape,
    bandlimit_cutoff_invA,
    multislice_forward,
    multislice_loss_grad,
    multislice_tape_bytes,
    multislice_vjp,
)
from .projector import (
    ProjectionGrads,
    backproject,
    project,
    project_adjoint,
    project_vjp,
    rotation_about_y,
    tilt_series_rotations,
)

__all__ = [
    "LIKELIHOODS",
    "MultisliceGrads",
    "MultisliceTape",
    "ProjectionGrads",
    "backproject",
    "bandlimit_cutoff_invA",
    "extract_windows",
    "extract_windows_adjoint",
    "fourier_shift",
    "fourier_shift_adjoint",
    "illumination",
    "overlap_add",
    "propagate",
    "propagate_adjoint",
    "likelihood",
    "multislice_forward",
    "multislice_loss_grad",
    "multislice_tape_bytes",
    "multislice_vjp",
    "project",
    "project_adjoint",
    "project_vjp",
    "rotation_about_y",
    "synchronous",
    "tilt_series_rotations",
    "window_power",
]


def __getattr__(name):
    # ProjectionOperator subclasses scipy's LinearOperator; importing it on first use keeps scipy optional.
    if name == "ProjectionOperator":
        from .projection_operator import ProjectionOperator

        return ProjectionOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "ProjectionOperator"])
