"""mspt: multi-slice ptychographic electron tomography.

4D-STEM tilt series -> per-tilt multislice ptychography -> denoised projections -> tomography with joint
alignment -> 3D atomic volume and atomic model. Lengths in angstrom, energies in eV, probe angles in mrad.
"""

import os as _os

# Idle OpenMP threads sleep instead of spinning: the native core runs one parallel region per batch, and
# spinning workers steal cores from the rest of the process (and from other jobs on shared nodes), which
# costs far more than a wake-up. Set OMP_WAIT_POLICY yourself to override; it must be set before the
# OpenMP runtime starts, i.e. before mspt's core is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from importlib.metadata import PackageNotFoundError, version as _version  # noqa: E402

from . import ops  # noqa: E402
from ._warning import ReconstructionWarning  # noqa: E402
from .constants import interaction_parameter, wavelength_A
from .probe import Probe, make_probe
from .probe_defocus import probe_defocus_A

try:
    __version__ = _version("mspt")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"



def run(config, **options):
    """Run the whole sequential pipeline of ``config`` (a TOML path or text, or an mspt.config.RunConfig).

    See :func:`mspt.pipeline.run` for the options (``out``, ``resume``, ``overwrite``, ``scheduler``,
    ``device``, ``progress``); returns a :class:`mspt.pipeline.PipelineResult`.
    """
    from .pipeline import run as run_pipeline

    return run_pipeline(config, **options)


__all__ = ["Probe", "run", "ReconstructionWarning", "make_probe", "probe_defocus_A", "ops", "wavelength_A", "interaction_parameter", "__version__"]
