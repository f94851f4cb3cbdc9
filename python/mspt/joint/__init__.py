"""Joint multislice ptychographic tomography: the volume refined directly against every tilt's 4D-STEM data.

For each tilt the volume is rotated to the tilt's pose, cut into slabs along the beam (:mod:`.slabs`), each
slab projected (:mod:`.slab_projection`) and turned into a transmission slice, and the multislice model
compared with the measured patterns (:mod:`.model`); :func:`joint_loss_grad` returns the loss and its
gradients w.r.t. the volume, the pose, the probe and the positions. :func:`refine` alternates a volume block
and a per-tilt acquisition block (:mod:`.refine`), starting from the sequential method's result
(:func:`build_start`); the pipeline runs it as its ``[joint]`` stage (:class:`JointConfig`).
"""

from .config import JointConfig
from .gradient import joint_loss_grad
from .model import JOINT_WRT, JointGrads, JointModel
from .refine import JointResult, refine
from .slab_projection import project_slabs, project_slabs_vjp
from .slabs import SlabStack
from .start import build_start, on_voxel_grid
from .tilt import JointTilt

__all__ = [
    "JOINT_WRT",
    "JointConfig",
    "JointGrads",
    "JointModel",
    "JointResult",
    "JointTilt",
    "SlabStack",
    "build_start",
    "on_voxel_grid",
    "joint_loss_grad",
    "project_slabs",
    "project_slabs_vjp",
    "refine",
]
