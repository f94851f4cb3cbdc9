"""Validation helpers shared by the configuration dataclasses: every error names the field and says what
was expected."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np


def positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> float | int:
    kind = "integer" if integer else "number"
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a positive {kind}, got {value!r}") from None
    if integer and number != value:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    ok = number >= 0 if allow_zero else number > 0
    if not ok or not math.isfinite(number):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name}: expected a {bound} finite {kind}, got {value!r}")
    return number


def fraction(name: str, value: Any, *, low: float = 0.0, high: float = 1.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}") from None
    if not (low <= number <= high):
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}")
    return number


def choice(name: str, value: Any, options: Iterable[str]) -> str:
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")
    return value


def pair(name: str, value: Any, unit: str, *, positive_values: bool = False) -> tuple[float, float]:
    try:
        items = [float(value)] * 2 if np.ndim(value) == 0 else [float(v) for v in np.ravel(value)]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number or a pair (y, x) in {unit}, got {value!r}") from None
    if len(items) != 2 or not all(math.isfinite(v) for v in items):
        raise ValueError(f"{name}: expected a finite pair (y, x) in {unit}, got {value!r}")
    if positive_values and min(items) <= 0:
        raise ValueError(f"{name}: expected positive values in {unit}, got {value!r}")
    return items[0], items[1]


def finite(name: str, value: Any, unit: str = "") -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number{' in ' + unit if unit else ''}, got {value!r}")
    return number
