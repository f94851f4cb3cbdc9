"""Self-checks of a ptychography run that need no ground truth; each fires a ReconstructionWarning once per
run, recorded in ``PtychoResult.warnings`` as (code, message).

* probe_intensity: the probe's total intensity (what the model puts on the detector before any scattering
  loss) left PROBE_INTENSITY_RANGE times the data's mean counts per pattern: it collapsed (the object took
  over its intensity, or the model cannot explain most counts) or grew far beyond the counts (the object
  absorbs what a thin sample cannot: typically an impossible detector or scan calibration).
* raster_grid_artefact: the summed phase's power spectrum (over the scanned field of view) has a peak at
  the scan grid's reciprocal vectors, GRID_PEAK_RATIO times the median power on the same ring: the raster's
  illumination pattern printed into the object (too little overlap, a wrong probe or wrong positions).
* positions_runaway: the positions' own offsets (beyond the scan model or the removed global part) reach
  RUNAWAY_RMS_STEPS nominal scan steps rms, or one of them RUNAWAY_MAX_STEPS steps: the updates are no longer
  corrections of a scan but a different scan (a real scan's jitter stays well inside a step; a single
  position may legitimately be found a few steps off).
* loss_diverging: the training loss is not finite, or rose above LOSS_RISE times its lowest value so far.
* stack_drift: the depth centre of the phase contrast (each slice weighted by its phase variance over the
  field of view) sits more than STACK_DRIFT_FRACTION of the stack's thickness from its centre: the sample
  is moving out of the stack along the beam (wrong defocus or thickness).

Every check is cheap: a sum over the probe, one FFT of the summed phase every GRID_CHECK_EVERY iterations,
arithmetic on the positions and the loss history, the variance of each slice's phase.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._warning import ReconstructionWarning

PROBE_INTENSITY_RANGE = (0.5, 2.0)
GRID_PEAK_RATIO = 30.0
LOSS_RISE = 2.0
RUNAWAY_RMS_STEPS = 1.0
RUNAWAY_MAX_STEPS = 3.0
STACK_DRIFT_FRACTION = 0.25
GRID_CHECK_EVERY = 5
# The loss settles for a few iterations after each new kind of refinement starts; divergence is judged after.
LOSS_CHECK_FROM = 3
CODES = ("probe_intensity", "raster_grid_artefact", "positions_runaway", "loss_diverging", "stack_drift")


def probe_intensity_ratio(probe: np.ndarray, mean_counts: float) -> float:
    """Total probe intensity (all modes) over the data's mean counts per pattern."""
    return float(np.sum(np.abs(probe) ** 2) / mean_counts)


def grid_peak_ratio(phase: np.ndarray, nominal_px: np.ndarray, step_vectors_px: np.ndarray) -> float:
    """Largest power of the summed phase ``phase`` (over the bounding box of the nominal positions (N, 2))
    at a reciprocal vector of the scan grid (rows of ``step_vectors_px``: the grid's two steps (y, x) in
    pixels), over the median power on the same |k| ring (nearest FFT pixel; the window is tapered)."""
    lo = np.floor(nominal_px.min(0)).astype(int)
    hi = np.ceil(nominal_px.max(0)).astype(int) + 1
    patch = phase[lo[0] : hi[0], lo[1] : hi[1]].astype(np.float64)
    if min(patch.shape) < 8:
        return 0.0
    patch = (patch - patch.mean()) * np.outer(np.hanning(patch.shape[0]), np.hanning(patch.shape[1]))
    power = np.abs(np.fft.fft2(patch)) ** 2
    ky = np.fft.fftfreq(patch.shape[0])[:, None]
    kx = np.fft.fftfreq(patch.shape[1])[None, :]
    radius = np.hypot(ky, kx)
    width = 1.5 / min(patch.shape)  # the ring: a frequency pixel and a half either side
    reciprocal = np.linalg.inv(np.asarray(step_vectors_px, dtype=float)).T  # rows: cycles per pixel (y, x)
    best = 0.0
    for g in (*reciprocal, reciprocal[0] + reciprocal[1], reciprocal[0] - reciprocal[1]):
        k = float(np.hypot(*g))
        if k >= 0.5 or k * min(patch.shape) < 2:  # beyond Nyquist, or fewer than two periods in the window
            continue
        iy = int(round(g[0] * patch.shape[0])) % patch.shape[0]
        ix = int(round(g[1] * patch.shape[1])) % patch.shape[1]
        ring = power[np.abs(radius - k) < width]
        best = max(best, float(power[iy, ix] / (np.median(ring) + 1e-30)))
    return best


def depth_centre_offset(slices: np.ndarray, mask: np.ndarray) -> float:
    """Depth centre of the phase contrast relative to the stack centre, in units of the stack thickness
    (-1/2: the entrance, +1/2: the exit): each slice weighted by its phase variance over ``mask``."""
    n = slices.shape[0]
    if n < 3:
        return 0.0
    contrast = np.array([np.var(np.angle(s)[mask]) for s in slices])
    if contrast.sum() <= 0:
        return 0.0
    depth = (np.arange(n) + 0.5) / n - 0.5
    return float(np.sum(contrast * depth) / contrast.sum())


class Diagnostics:
    """The run's record of self-check warnings: each code fires once (warnings.warn and ``records``)."""

    def __init__(self, records: list[tuple[str, str]] | None = None):
        self.records: list[tuple[str, str]] = list(records or [])

    @property
    def codes(self) -> list[str]:
        return [code for code, _ in self.records]

    def fire(self, code: str, message: str) -> None:
        if code in self.codes:
            return
        self.records.append((code, message))
        warnings.warn(ReconstructionWarning(code, message), stacklevel=5)  # the caller of run_iteration

    def check_probe(self, probe: np.ndarray, mean_counts: float) -> None:
        ratio = probe_intensity_ratio(probe, mean_counts)
        low, high = PROBE_INTENSITY_RANGE
        if not low <= ratio <= high:
            what = "collapsed" if not ratio >= low else "grew"
            self.fire("probe_intensity",
                      f"the probe's intensity {what} to {ratio:.2f} times the data's mean counts per pattern "
                      f"(expected {low} to {high}); check the detector calibration, the dose normalisation and "
                      "the probe step")  # fmt: skip

    def check_loss(self, history: list[float]) -> None:
        if not history:
            return
        last = history[-1]
        if not math.isfinite(last):
            self.fire("loss_diverging", f"the loss is {last} at iteration {len(history)}; lower the step sizes")
        elif len(history) > LOSS_CHECK_FROM and last > LOSS_RISE * min(history):
            self.fire("loss_diverging",
                      f"the loss rose to {last / min(history):.1f} times its lowest value by iteration "
                      f"{len(history)}; lower object_step / probe_step / position_step")  # fmt: skip

    def check_positions(self, offsets_px: np.ndarray, step_px: float) -> None:
        distance = np.hypot(offsets_px[:, 0], offsets_px[:, 1]) / step_px  # in scan steps
        if len(distance) == 0:
            return
        rms, largest = float(np.sqrt(np.mean(distance**2))), float(distance.max())
        if rms > RUNAWAY_RMS_STEPS or largest > RUNAWAY_MAX_STEPS:
            self.fire("positions_runaway",
                      f"the positions moved {rms:.2f} scan steps rms (at most {largest:.2f}) from where the scan "
                      f"puts them (limits {RUNAWAY_RMS_STEPS} rms, {RUNAWAY_MAX_STEPS} for one); check the "
                      "position step sizes, scan_step_A, scan_rotation_deg and the detector calibration, or "
                      "refine a scan model")  # fmt: skip

    def check_grid(self, phase: np.ndarray, nominal_px: np.ndarray, step_vectors_px: np.ndarray) -> None:
        ratio = grid_peak_ratio(phase, nominal_px, step_vectors_px)
        if ratio > GRID_PEAK_RATIO:
            self.fire("raster_grid_artefact",
                      f"the summed phase has a peak {ratio:.0f} times its ring's median power at the scan "
                      "grid's period: the raster is printed into the object (too little probe overlap, a "
                      "wrong probe or wrong positions)")  # fmt: skip

    def check_stack(self, slices: np.ndarray, mask: np.ndarray) -> None:
        offset = depth_centre_offset(slices, mask)
        if abs(offset) > STACK_DRIFT_FRACTION:
            side = "exit" if offset > 0 else "entrance"
            self.fire("stack_drift",
                      f"the phase contrast's depth centre sits {offset:+.2f} of the stack's thickness from its "
                      f"centre (towards the {side}): check the defocus and the stack's thickness and placement "
                      "(stack_centre_A)")  # fmt: skip
