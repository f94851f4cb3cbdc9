"""Simulated test and demo data: nanocrystals and 4D-STEM tilt series of them (abTEM potentials, mspt
multislice). Needs the ``sim`` extra (abtem, ase). Never the only reference of a test."""

from .nanocube import nanocube, perovskite_srtio3
from .tiltseries import raster_positions_A, tiltseries

__all__ = ["nanocube", "perovskite_srtio3", "raster_positions_A", "tiltseries"]
