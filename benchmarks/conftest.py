"""Benchmarks report ratios measured in one run (engine over the pure-FFT floor, mspt over a peer), with
the machine noted; absolute times on a shared machine mean little."""

import os
import platform

import pytest

# mspt first: the OpenMP settings it makes at import (idle threads spin briefly, then sleep) then hold for
# every OpenMP runtime loaded after it too, pyfftw's among them, so that the FFT floor's idle threads do not
# spin into the engine's time (OpenMP's default spin lasts milliseconds).
import mspt  # noqa: F401, E402

RESULTS: list[tuple[str, dict]] = []


def machine() -> str:
    import mspt

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, mspt {mspt.__version__}"


@pytest.fixture
def report():
    """Record a row of figures for the end-of-run summary."""

    def add(name: str, **figures):
        RESULTS.append((name, figures))

    return add


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    terminalreporter.section("mspt benchmark ratios (measured in this run)")
    terminalreporter.write_line(f"machine: {machine()}")
    for name, figures in RESULTS:
        text = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{name}: {text}")
