"""When to stop a reconstruction without a ground truth.

* Validation: a fixed random subset of the scan positions never takes part in an update; the likelihood of
  their patterns under the current model is an unbiased estimate of how well the model predicts data it was
  not fitted to. It falls while the reconstruction learns the sample and rises once it starts to fit the
  noise of the training patterns. The run keeps the state with the lowest validation loss and stops when it
  has not improved for ``patience`` iterations.
* Discrepancy (Poisson data, no split): the mean Poisson deviance per pattern against the value expected
  from counting noise alone at the model's intensities; a ratio at or below 1 means the model explains the
  data down to the noise, and more iterations can only fit noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np

STOP_RULES = ("validation", "discrepancy", "fixed")


def choose_validation(n_positions: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the validation positions: ``fraction`` of them (at least one), drawn at random so
    they spread over the field of view; none when the scan is too small to spare any (fewer than 20)."""
    if fraction <= 0 or n_positions < 20:
        return np.zeros(0, dtype=np.int64)
    count = max(1, int(round(fraction * n_positions)))
    return np.sort(rng.permutation(n_positions)[:count]).astype(np.int64)


def expected_poisson_deviance(mean: np.ndarray) -> np.ndarray:
    """E[d log(d / mu) - (d - mu)] for Poisson counts d of mean mu: the expected value of mspt's Poisson
    deviance per pixel when the model is exact. Exact sums below mu = 30, the expansion
    1/2 + 1/(12 mu) + 1/(12 mu^2) above (its error there is below 1e-5)."""
    mu = np.asarray(mean, dtype=np.float64)
    out = np.empty_like(mu)
    large = mu >= 30
    out[large] = 0.5 + 1 / (12 * mu[large]) + 1 / (12 * mu[large] ** 2)
    small = mu[~large]
    if small.size:
        k = np.arange(0, 100, dtype=np.float64)[:, None]
        safe = np.maximum(small, 1e-300)[None, :]
        log_p = k * np.log(safe) - safe - np.cumsum(np.log(np.maximum(k, 1)), axis=0)
        terms = np.where(k > 0, k * np.log(np.maximum(k, 1) / safe), 0.0)
        out[~large] = np.where(small > 0, np.sum(np.exp(log_p) * terms, axis=0), 0.0)
    return out


@dataclasses.dataclass
class StopState:
    """The stopping rule's memory: histories, the best state so far, and the outcome."""

    validation_history: list = dataclasses.field(default_factory=list)
    discrepancy_history: list = dataclasses.field(default_factory=list)
    best_validation: float = float("inf")
    best_iteration: int = -1
    patience_from: int = -1  # patience also counts from here (a change of step restarts it)
    stop_reason: str = ""

    def record(self, validation: float, discrepancy: float, iteration: int) -> bool:
        """Add one iteration's figures; True when this iteration is the best so far by validation loss."""
        self.validation_history.append(validation)
        self.discrepancy_history.append(discrepancy)
        if np.isfinite(validation) and validation < self.best_validation:
            self.best_validation = validation
            self.best_iteration = iteration
            return True
        return False

    def stalled(self, iteration: int, patience: int) -> bool:
        """Whether the validation loss has not improved for ``patience`` iterations after ``iteration``."""
        return self.best_iteration >= 0 and iteration - max(self.best_iteration, self.patience_from) > patience

    def should_stop(self, rule: str, iteration: int, patience: int) -> bool:
        """Decide after ``iteration`` iterations; sets ``stop_reason`` when stopping."""
        if rule == "validation" and self.stalled(iteration, patience):
            self.stop_reason = (
                f"validation loss has not improved for {patience} iterations; best at iteration {self.best_iteration}"
            )
            return True
        if rule == "discrepancy" and self.discrepancy_history and self.discrepancy_history[-1] <= 1.0:
            self.stop_reason = f"discrepancy principle: deviance at the counting-noise level after iteration {iteration}"
            return True
        return False
