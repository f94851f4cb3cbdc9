"""Imports of the simulator's optional dependencies, with the install hint in the error."""

from __future__ import annotations

import importlib


def require(module: str):
    """Import ``module`` (abtem, ase) or raise an ImportError that names the ``sim`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"mspt.simulate needs {module!r} ({err}); install the simulation extra: pip install 'mspt[sim]'"
        ) from None
