"""Stateless operators: NumPy in, NumPy out (single precision; complex128 inputs take the double path).

Naming: ``X_adjoint`` is the exact transpose of a linear operator; ``X_vjp`` is the vector-Jacobian
product of a non-linear one.
"""

from .likelihood import likelihood
from .multislice import (
    LIKELIHOODS,
    MultisliceGrads,
    bandlimit_cutoff_invA,
    multislice_forward,
    multislice_loss_grad,
    multislice_vjp,
)

__all__ = [
    "LIKELIHOODS",
    "MultisliceGrads",
    "bandlimit_cutoff_invA",
    "likelihood",
    "multislice_forward",
    "multislice_loss_grad",
    "multislice_vjp",
]
