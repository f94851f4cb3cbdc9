"""Stateless operators: NumPy in, NumPy out (single precision; complex128 inputs take the double path).

Naming: ``X_adjoint`` is the exact transpose of a linear operator; ``X_vjp`` is the vector-Jacobian
product of a non-linear one.
"""

from .likelihood import likelihood
from .linear import (
    extract_windows,
    extract_windows_adjoint,
    fourier_shift,
    fourier_shift_adjoint,
    overlap_add,
    propagate,
    propagate_adjoint,
)
from .multislice import (
    LIKELIHOODS,
    MultisliceGrads,
    bandlimit_cutoff_invA,
    multislice_forward,
    multislice_loss_grad,
    multislice_vjp,
)
from .projector import backproject, project, project_adjoint, rotation_about_y, tilt_series_rotations

__all__ = [
    "LIKELIHOODS",
    "MultisliceGrads",
    "backproject",
    "bandlimit_cutoff_invA",
    "extract_windows",
    "extract_windows_adjoint",
    "fourier_shift",
    "fourier_shift_adjoint",
    "overlap_add",
    "propagate",
    "propagate_adjoint",
    "likelihood",
    "multislice_forward",
    "multislice_loss_grad",
    "multislice_vjp",
    "project",
    "project_adjoint",
    "rotation_about_y",
    "tilt_series_rotations",
]
