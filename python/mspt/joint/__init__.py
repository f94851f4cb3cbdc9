"""Joint multislice ptychographic tomography: the volume refined directly against every tilt's 4D-STEM data.

For each tilt the volume is rotated to the tilt's pose, cut into slabs along the beam (:mod:`.slabs`), each
slab projected (:mod:`.slab_projection`) and turned into a transmission slice, and the multislice model
compared with the measured patterns (:mod:`.model`); :func:`joint_loss_grad` returns the loss and its
gradients w.r.t. the volume, the pose, the probe and the positions; :func:`refine_volume` takes a few
gradient steps on the volume against all tilts (:mod:`.refine`).
"""

from .gradient import joint_loss_grad
from .model import JOINT_WRT, JointGrads, JointModel
from .slab_projection import project_slabs, project_slabs_vjp
from .refine import RefineResult, refine_volume
from .slabs import SlabStack
from .tilt import JointTilt

__all__ = [
    "JOINT_WRT",
    "JointGrads",
    "JointModel",
    "JointTilt",
    "RefineResult",
    "SlabStack",
    "joint_loss_grad",
    "project_slabs",
    "project_slabs_vjp",
    "refine_volume",
]
