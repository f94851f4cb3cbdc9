"""mspt: multi-slice ptychographic electron tomography.

4D-STEM tilt series -> per-tilt multislice ptychography -> denoised projections -> tomography with joint
alignment -> 3D atomic volume and atomic model. Lengths in angstrom, energies in eV, probe angles in mrad.
"""

import os as _os

# Idle OpenMP threads spin for about a tenth of a millisecond, then sleep. Waking a sleeping worker costs
# tens of microseconds, and a reconstruction's batches start a few parallel regions each, a Python step
# apart: two threads spent a quarter of an iteration waking each other (64^2 patterns). Spinning for
# longer (OpenMP's default, milliseconds) steals cores from the rest of the process and from other jobs on
# shared nodes. Set OMP_WAIT_POLICY (or GOMP_SPINCOUNT) yourself to override; it must be set before the
# OpenMP runtime starts, i.e. before mspt's core is first imported.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _os.environ.setdefault("GOMP_SPINCOUNT", "1000")  # GNU OpenMP: a bounded spin before the sleep

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
