"""Import of the ``bm3d`` package, made to work on NumPy >= 2.4.

bm3d 4.x runs on ``bm4d``, whose noise-spectrum analysis (the path every profile takes when it is given a
noise power spectrum, and that the "refilter" profile needs) calls ``np.trapz``; NumPy 2.4 removed that
name in favour of ``np.trapezoid`` (same arguments, same result). Rather than add ``trapz`` to NumPy for
the whole process, which would hide the removal from every other library and from the user's own code,
the ``np`` name *inside the bm4d module only* is pointed at a thin stand-in that forwards every attribute
to NumPy and adds ``trapz``. Nothing else in the process sees a change.
"""

from __future__ import annotations

import types

import numpy

_INSTALL_HINT = (
    "mspt.denoise needs the 'bm3d' package, a dependency of mspt (pip install bm3d); its compiled core "
    "(bm4d) is built for x86-64 Linux, macOS and Windows only"
)


class _NumpyWithTrapz(types.ModuleType):
    """NumPy as bm4d expects to see it: every attribute forwarded, plus ``trapz`` = ``trapezoid``."""

    trapz = staticmethod(numpy.trapezoid)

    def __getattr__(self, name):
        return getattr(numpy, name)


def load_bm3d():
    """The ``bm3d`` module, with its bm4d core patched (locally) for NumPy releases without ``trapz``."""
    try:
        import bm3d
        import bm4d
    except (ImportError, OSError) as err:  # OSError: bm4d's compiled library does not load on this platform
        raise ImportError(f"{_INSTALL_HINT} ({err})") from err
    if not hasattr(numpy, "trapz") and not isinstance(bm4d.np, _NumpyWithTrapz):
        bm4d.np = _NumpyWithTrapz("numpy")
    return bm3d
