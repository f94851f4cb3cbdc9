"""Regularisation weights chosen by the data: each candidate runs a short reconstruction from the same start,
and the one whose held-out (validation) patterns are predicted best wins. No ground truth needed."""

from __future__ import annotations

from .config import PtychoConfig
from .engine import PtychoEngine
from .scan import PtychoScan

CANDIDATES = {
    "kz_strength": (0.0, 30.0, 100.0, 300.0),
    "tv_weight": (0.0, 0.002, 0.005, 0.01),
}
TRIAL_ITERATIONS = 8


def choose_regularisation(scan: PtychoScan, config: PtychoConfig, mean_counts: float) -> tuple[PtychoConfig, dict]:
    """Replace every "auto" weight of ``config`` by the candidate with the lowest validation loss after
    TRIAL_ITERATIONS iterations (weights tuned one after the other, kz first). Returns the concrete config
    and, per tuned weight, the chosen value and every candidate's validation loss."""
    chosen: dict = {}
    for field, candidates in CANDIDATES.items():
        if getattr(config, field) != "auto":
            continue
        untuned = {name: 0.0 for name in CANDIDATES if getattr(config, name) == "auto" and name != field}
        scores = {}
        for value in candidates:
            trial = config.replace(**untuned, **{field: value}, stop="validation", iterations=TRIAL_ITERATIONS,
                                   checkpoint_every=0, checkpoint_path=None, progress=False)  # fmt: skip
            engine = PtychoEngine.start(scan, trial, mean_counts)
            for _ in range(TRIAL_ITERATIONS):
                engine.run_iteration()
            scores[value] = engine.stop.best_validation
        best = min(scores, key=scores.get)
        config = config.replace(**{field: best})
        chosen[field] = {"value": best, "validation_loss": scores}
    return config, chosen
