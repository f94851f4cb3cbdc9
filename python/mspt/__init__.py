"""mspt: multi-slice ptychographic electron tomography.

4D-STEM tilt series -> per-tilt multislice ptychography -> denoised projections -> tomography with joint
alignment -> 3D atomic volume and atomic model. Lengths in angstrom, energies in eV, probe angles in mrad.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from . import ops
from .constants import interaction_parameter, wavelength_A
from .probe import Probe, make_probe

try:
    __version__ = _version("mspt")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = ["Probe", "make_probe", "ops", "wavelength_A", "interaction_parameter", "__version__"]
