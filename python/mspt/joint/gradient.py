"""joint_loss_grad: the joint model's loss and gradients for one tilt, as one function call."""

from __future__ import annotations

from collections.abc import Iterable

from .model import JOINT_WRT, JointGrads, JointModel


def joint_loss_grad(
    volume,
    rotation,
    shifts_A,
    probe,
    positions_px,
    patterns,
    *,
    voxel_size_A: float,
    n_slices: int,
    slice_thickness_A: float,
    energy_eV: float,
    pixel_size_A: float | None = None,
    shape=None,
    ramp_A: float | None = None,
    likelihood: str = "poisson",
    batch_size: int = 256,
    wrt: Iterable[str] = JOINT_WRT,
    device: str = "cpu",
    threads: int | None = None,
) -> JointGrads:
    """The loss of one tilt's patterns under the joint model and its gradients w.r.t. the volume, the pose
    (rotation vector, shifts), the probe and the positions.

    volume (Z, Y, X) in volts; rotation (3, 3) and shifts_A (2,) (dy, dx) in A: the tilt's pose; probe
    (M, ny, nx) or (ny, nx) complex at the entrance of the first slab; positions_px (B, 2) (y, x) in
    projection pixels; patterns (B, ny, nx) counts. The keyword settings are :class:`.model.JointModel`'s;
    see :meth:`.model.JointModel.loss_grad` and the chain in :mod:`.model`.
    """
    model = JointModel(
        voxel_size_A=voxel_size_A, n_slices=n_slices, slice_thickness_A=slice_thickness_A, energy_eV=energy_eV,
        pixel_size_A=pixel_size_A, shape=None if shape is None else tuple(shape), ramp_A=ramp_A,
        likelihood=likelihood, batch_size=batch_size, device=device, threads=threads,
    )  # fmt: skip
    return model.loss_grad(volume, rotation, shifts_A, probe, positions_px, patterns, wrt=wrt)
