"""Wall-clock timing shared by the benchmarks (imported as ``timing``: pytest puts this folder on sys.path)."""

from __future__ import annotations

import time


def best_of(fn, rounds: int) -> float:
    """The shortest of ``rounds`` wall times of ``fn()`` in seconds: the least disturbed by a noisy machine."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def timed_pedantic(benchmark, fn, rounds: int):
    """``benchmark.pedantic(fn)`` that also returns the shortest wall time it measured itself, so a test's
    figures exist when pytest-benchmark is disabled (``--benchmark-disable`` runs ``fn`` once, without stats)."""
    times = []

    def timed():
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
        return result

    result = benchmark.pedantic(timed, rounds=rounds, iterations=1)
    return result, min(times)
