"""The joint model of one tilt's scan: volume -> slab projections -> transmission slices -> multislice.

Chain, for one tilt at pose (R, shifts):

    P_s  = slab projections of the volume (V A), s = 0 .. S-1            (:mod:`.slab_projection`)
    t_s  = exp(i sigma P_s)                                               (sigma: mspt.interaction_parameter)
    I_b  = multislice far field of the probe at position b through t_0 .. t_S-1
    L    = sum_b likelihood(I_b, patterns_b)

and back: ``dL/dP_s = sigma Im(conj(t_s) dL/dt_s)`` (with the PyTorch convention dL/dt = dL/dRe + i dL/dIm
of :func:`mspt.ops.multislice_loss_grad`), then through the slab projections to the volume and the pose.
Scan positions are streamed in batches: at any time the volume, the S slices and one batch of patterns are
in memory (``patterns`` may be an HDF5 dataset or any array that slices lazily).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from .. import _validate as _v
from .. import ops
from ..constants import interaction_parameter
from . import _inputs
from .slab_projection import project_slabs, project_slabs_vjp
from .slabs import SlabStack

JOINT_WRT = ("volume", "rotation", "shifts", "probe", "positions")


@dataclasses.dataclass(frozen=True)
class JointGrads:
    """The loss of one tilt and its gradients; ``None`` where not requested.

    loss : summed likelihood over the tilt's patterns (the model's ``likelihood``).
    volume : (Z, Y, X) float32, dL/dvolume (1 / volume unit).
    rotation_vector : (3,) float64, dL/dw of the pose update R <- exp([w]x) R at w = 0 (1/rad).
    shifts_A : (2,) float64, dL/d(dy, dx) (1/A).
    probe : (M, ny, nx) complex, dL/dRe + i dL/dIm of the probe modes.
    positions_px : (B, 2) float64, dL/d(y, x) (1/pixel).
    """

    loss: float
    volume: np.ndarray | None = None
    rotation_vector: np.ndarray | None = None
    shifts_A: np.ndarray | None = None
    probe: np.ndarray | None = None
    positions_px: np.ndarray | None = None


def _wrt(wrt) -> frozenset[str]:
    chosen = frozenset({wrt} if isinstance(wrt, str) else wrt)
    unknown = chosen - set(JOINT_WRT)
    if unknown:
        raise ValueError(f"wrt: unknown {sorted(unknown)}; expected a subset of {JOINT_WRT}")
    return chosen


@dataclasses.dataclass(frozen=True)
class JointModel:
    """The settings shared by every tilt of a joint refinement.

    voxel_size_A : voxel size (A). n_slices, slice_thickness_A : the slab stack (:class:`.slabs.SlabStack`).
    energy_eV : beam energy (eV).
    pixel_size_A : projection (object) pixel size (A); default the voxel size.
    shape : (Py, Px) of the projections (the object); default the volume's (Y, X) field of view in pixels.
    ramp_A : width of the slab boundaries' linear ramps (A); default the voxel size (at most the slab).
    likelihood : "poisson" or "amplitude" (as in :func:`mspt.ops.multislice_loss_grad`).
    batch_size : scan positions per multislice call (bounds the memory).
    device : "cpu" or "cuda", for the projector and the multislice alike. threads : CPU threads.
    """

    voxel_size_A: float
    n_slices: int
    slice_thickness_A: float
    energy_eV: float
    pixel_size_A: float | None = None
    shape: tuple[int, int] | None = None
    ramp_A: float | None = None
    likelihood: str = "poisson"
    batch_size: int = 256
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self):
        _v.positive("voxel_size_A", self.voxel_size_A)
        _v.positive("energy_eV", self.energy_eV)
        if self.pixel_size_A is not None:
            _v.positive("pixel_size_A", self.pixel_size_A)
        _v.positive("batch_size", self.batch_size, integer=True)
        _v.choice("likelihood", self.likelihood, ops.LIKELIHOODS)
        _v.choice("device", self.device, ("cpu", "cuda"))
        if self.shape is not None:
            ok = np.shape(self.shape) == (2,) and all(int(n) == n and n >= 1 for n in self.shape)
            if not ok:
                raise ValueError(f"shape: expected (Py, Px), two positive integers, got {self.shape!r}")
        _ = self.slabs  # building the stack validates n_slices, slice_thickness_A and ramp_A

    @property
    def slabs(self) -> SlabStack:
        # The default ramp is one voxel, but never wider than a slab (voxels coarser than the slabs).
        ramp = min(self.voxel_size_A, self.slice_thickness_A) if self.ramp_A is None else self.ramp_A
        return SlabStack(self.n_slices, self.slice_thickness_A, ramp)

    @property
    def pixel_A(self) -> float:
        return float(self.voxel_size_A if self.pixel_size_A is None else self.pixel_size_A)

    @property
    def sigma(self) -> float:
        """The interaction parameter (rad / (V A))."""
        return interaction_parameter(self.energy_eV)

    def grid_shape(self, volume: np.ndarray) -> tuple[int, int]:
        """(Py, Px): the projection grid the slices and probe windows live on."""
        if self.shape is not None:
            return tuple(int(n) for n in self.shape)
        return tuple(max(1, round(n * self.voxel_size_A / self.pixel_A)) for n in volume.shape[1:])

    def transmissions(self, volume, rotation, shifts_A, dtype=np.complex64) -> np.ndarray:
        """The S transmission slices (S, Py, Px) exp(i sigma P_s) of ``volume`` at one pose, entrance first."""
        vol = _inputs.volume(volume)
        projections = project_slabs(
            vol, _inputs.rotation(rotation), _inputs.shifts(shifts_A), self.voxel_size_A, self.slabs,
            shape=self.grid_shape(vol), pixel_size_A=self.pixel_A, device=self.device, threads=self.threads,
        )  # fmt: skip
        return np.exp(1j * self.sigma * projections.astype(np.float64)).astype(dtype)

    def forward(self, volume, rotation, shifts_A, probe, positions_px, tilt_mrad=(0.0, 0.0)) -> np.ndarray:
        """Far-field intensities (B, ny, nx) of one tilt's scan (float64 for a complex128 probe); ``tilt_mrad``
        the beam tilt (ty, tx) in the multislice."""
        probe = _inputs.probe(probe)
        positions = _inputs.positions(positions_px)
        slices = self.transmissions(volume, rotation, shifts_A, _complex_dtype(probe))
        return np.concatenate(
            [
                ops.multislice_forward(
                    slices, probe, positions[start : start + self.batch_size], self.slice_thickness_A,
                    self.energy_eV, (self.pixel_A, self.pixel_A), tilt_mrad=tilt_mrad, device=self.device,
                    threads=self.threads,
                )  # fmt: skip
                for start in range(0, positions.shape[0], self.batch_size)
            ]
        )

    def tilt_loss_grad(self, volume, tilt, *, wrt: Iterable[str] = JOINT_WRT, **changes) -> JointGrads:
        """:meth:`loss_grad` of a :class:`~mspt.joint.JointTilt`; keyword ``changes`` replace its fields
        (e.g. ``probe=`` a trial probe) for this evaluation."""
        fields = {name: changes.get(name, getattr(tilt, name))
                  for name in ("rotation", "shifts_A", "probe", "positions_px", "patterns", "tilt_mrad")}  # fmt: skip
        return self.loss_grad(volume, fields["rotation"], fields["shifts_A"], fields["probe"], fields["positions_px"],
                              fields["patterns"], wrt=wrt, tilt_mrad=fields["tilt_mrad"])  # fmt: skip

    def loss_grad(
        self, volume, rotation, shifts_A, probe, positions_px, patterns, *, wrt: Iterable[str] = JOINT_WRT,
        tilt_mrad=(0.0, 0.0),
    ) -> JointGrads:
        """The loss of one tilt's ``patterns`` (B, ny, nx, counts, zero frequency at the centre; sliced one
        batch at a time) and its gradients ``wrt`` a subset of ("volume", "rotation", "shifts", "probe",
        "positions"). ``probe`` (M, ny, nx) or (ny, nx) is the wave at the entrance of the first slab
        (complex128 runs the CPU multislice in double; the CUDA multislice and the native projector are
        single precision); ``positions_px`` (B, 2) are window centres (y, x) in projection pixels."""
        vol = _inputs.volume(volume)
        rot = _inputs.rotation(rotation)
        shifts = _inputs.shifts(shifts_A)
        probe = _inputs.probe(probe)
        positions = _inputs.positions(positions_px)
        wrt = _wrt(wrt)
        _inputs.patterns_shape(patterns, positions.shape[0], probe.shape[1:])
        complex_dtype = _complex_dtype(probe)
        slices = self.transmissions(vol, rot, shifts, complex_dtype)

        need_slices = bool(wrt & {"volume", "rotation", "shifts"})
        ms_wrt = ({"slices"} if need_slices else set()) | (wrt & {"probe", "positions"})
        loss = 0.0
        grad_slices = np.zeros(slices.shape, np.complex128) if need_slices else None  # summed over many batches
        grad_probe = np.zeros(probe.shape, complex_dtype) if "probe" in wrt else None
        grad_positions = np.zeros(positions.shape) if "positions" in wrt else None
        for start in range(0, positions.shape[0], self.batch_size):
            batch = slice(start, start + self.batch_size)
            part = ops.multislice_loss_grad(
                np.asarray(patterns[batch]), slices, probe, positions[batch], self.slice_thickness_A,
                self.energy_eV, (self.pixel_A, self.pixel_A), likelihood=self.likelihood, wrt=ms_wrt,
                tilt_mrad=tilt_mrad, device=self.device, threads=self.threads,
            )  # fmt: skip
            loss += part.loss
            if grad_slices is not None:
                grad_slices += part.slices
            if grad_probe is not None:
                grad_probe += part.probe
            if grad_positions is not None:
                grad_positions[batch] = part.positions_px

        pose = ops.ProjectionGrads()
        if need_slices:
            grad_projections = self.sigma * np.imag(np.conj(slices) * grad_slices)
            pose = project_slabs_vjp(
                grad_projections, vol, rot, shifts, self.voxel_size_A, self.slabs, pixel_size_A=self.pixel_A,
                wrt=wrt & {"volume", "rotation", "shifts"}, device=self.device, threads=self.threads,
            )  # fmt: skip
        return JointGrads(
            loss=loss, volume=pose.volume, rotation_vector=pose.rotation_vector, shifts_A=pose.shifts_A,
            probe=grad_probe, positions_px=grad_positions,
        )  # fmt: skip


def _complex_dtype(probe: np.ndarray):
    return np.complex128 if probe.dtype == np.complex128 else np.complex64
