"""Held-out scan positions: the joint refinement's check on itself.

A few positions of every tilt are kept out of the fit. Their loss under the current volume and acquisition
(the *validation loss*) falls while the refinement learns the object and rises when it starts fitting the
training patterns' noise; the refinement returns the state with the lowest validation loss. Their patterns
stay unseen, but their probe windows overlap their neighbours' by most of their area, so the check is on
the noise the volume, probe and pose pick up, not on the object far from the data. Held-out positions are not
refined; they follow the position corrections of their nearest training neighbours (kept on the grid), so a
common drift of the positions does not read as a worse fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .acquisition import window_bounds
from .tilt import JointTilt

NEIGHBOURS = 4


class PatternSubset:
    """The patterns at ``indices`` (increasing) of a lazy (N, ky, kx) stack, itself sliceable lazily."""

    def __init__(self, patterns, indices: np.ndarray):
        self.patterns = patterns
        self.indices = np.asarray(indices, dtype=np.int64)
        self.shape = (self.indices.size, *tuple(patterns.shape)[1:])

    def __getitem__(self, batch: slice) -> np.ndarray:
        chosen = self.indices[batch]
        read = getattr(self.patterns, "read", None)  # a scan's own reader (detector transpose included)
        return read(chosen) if read is not None else np.asarray(self.patterns[chosen])


@dataclasses.dataclass(frozen=True)
class Split:
    """One tilt split into the positions fitted (``train``) and those held out (``validation``, or None)."""

    train: JointTilt
    validation: JointTilt | None
    train_indices: np.ndarray
    validation_indices: np.ndarray
    grid: tuple[int, int]

    def with_train(self, train: JointTilt) -> "Split":
        """This split after the training tilt was refined: the held-out positions take the refined pose and
        probe, and the mean position correction of their nearest training neighbours."""
        if self.validation is None:
            return dataclasses.replace(self, train=train)
        correction = train.positions_px - self.train.positions_px
        moved = self.validation.positions_px + _neighbour_mean(self.train.positions_px, correction,
                                                               self.validation.positions_px)  # fmt: skip
        moved = np.clip(moved, *window_bounds(self.validation.probe.shape[-2:], self.grid))
        validation = dataclasses.replace(self.validation, rotation=train.rotation, shifts_A=train.shifts_A,
                                         probe=train.probe, positions_px=moved)  # fmt: skip
        return dataclasses.replace(self, train=train, validation=validation)

    def merged(self, full: JointTilt) -> JointTilt:
        """``full`` (the unsplit tilt) with this split's refined acquisition for every position."""
        positions = np.empty_like(full.positions_px)
        positions[self.train_indices] = self.train.positions_px
        if self.validation is not None:
            positions[self.validation_indices] = self.validation.positions_px
        return dataclasses.replace(full, rotation=self.train.rotation, shifts_A=self.train.shifts_A,
                                   probe=self.train.probe, positions_px=positions)  # fmt: skip


def split_tilt(tilt: JointTilt, fraction: float, rng: np.random.Generator, grid: tuple[int, int]) -> Split:
    """Hold out ``fraction`` of ``tilt``'s positions (at least one when the fraction is positive, never all);
    ``grid`` (Py, Px) is the projection grid the positions must stay on."""
    n = tilt.positions_px.shape[0]
    held = min(n - 1, max(1, round(fraction * n))) if fraction > 0 and n > 1 else 0
    validation_indices = np.sort(rng.choice(n, held, replace=False)) if held else np.zeros(0, np.int64)
    train_indices = np.setdiff1d(np.arange(n), validation_indices)

    def subset(indices):
        patterns = tilt.patterns if indices.size == n else PatternSubset(tilt.patterns, indices)
        return dataclasses.replace(tilt, positions_px=tilt.positions_px[indices], patterns=patterns)

    return Split(train=subset(train_indices), validation=subset(validation_indices) if held else None,
                 train_indices=train_indices, validation_indices=validation_indices, grid=tuple(grid))  # fmt: skip


def _neighbour_mean(points: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    distance = np.linalg.norm(queries[:, None, :] - points[None, :, :], axis=-1)
    nearest = np.argsort(distance, axis=1)[:, :NEIGHBOURS]
    return values[nearest].mean(axis=1)
