"""Simulated test and demo data: nanocrystals and 4D-STEM tilt series of them (abTEM potentials, mspt
multislice). Needs the ``sim`` extra (abtem, ase). Never the only reference of a test."""

from .nanocube import nanocube, perovskite_srtio3
from .tiltseries import raster_positions_A, tiltseries
from .volume import potential_volume

__all__ = ["nanocube", "perovskite_srtio3", "potential_volume", "raster_positions_A", "tiltseries"]
