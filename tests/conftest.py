"""Shared test fixtures and hooks.

``measured`` lets a test record the numbers its assertions were decided on (e.g. the relative error of a
cross-check against an independent code, or how far off a deliberately wrong setting lands); they are
printed in a "measured" section at the end of the run, so a passing run still shows how close it was.
"""

from __future__ import annotations

import pytest

_MEASURED: list[tuple[str, str, float, str, float]] = []


@pytest.fixture(scope="session")
def measured():
    """``measured(test, what, value, bound, relation="<")``: record a measured value and the bound it is held
    to (``relation=">"`` for a lower bound, e.g. a negative control that must differ); returns the value."""

    def record(test: str, what: str, value: float, bound: float, relation: str = "<") -> float:
        if relation not in ("<", ">"):
            raise ValueError(f"relation: expected '<' or '>', got {relation!r}")
        _MEASURED.append((test, what, float(value), relation, float(bound)))
        return float(value)

    return record


def pytest_terminal_summary(terminalreporter):
    if not _MEASURED:
        return
    terminalreporter.section("measured")
    width = max(len(f"{t} {w}") for t, w, *_ in _MEASURED)
    for test, what, value, relation, bound in _MEASURED:
        held = value < bound if relation == "<" else value > bound
        label = f"{test} {what}"
        verdict = "ok" if held else "FAILED"
        terminalreporter.write_line(f"{label:<{width}}  {value:.4g}  (bound {relation} {bound:.4g}: {verdict})")
