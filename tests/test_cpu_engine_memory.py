"""The memory planner's model of the CPU multislice engine (mspt.ptycho.memory) against the buffers the engine
allocates, as it reports them after a reconstruction's iterations (``scratch_bytes``: summed over its plane
buffers, per thread, per call and per chunk of positions).

The engine works through a call's positions in chunks of max(2t, min(max(16, 4t), 4 MiB / (S x plane bytes)))
positions (t threads), rounded down to a multiple of t: the cases cover each branch of that rule (the thread
bound, the cache bound and the minimum of two per thread), and one thread, which adds each position's
gradients to the totals itself (one position's object-gradient windows, none with one mode, and no
probe-gradient spectra)."""

import numpy as np
import pytest

from mspt import _backend
from mspt.ptycho import PtychoConfig, PtychoEngine, PtychoScan, plan
from mspt.ptycho.memory import UNWRITTEN, cpu_chunk_positions

ENGINE_COMPONENTS = ("engine work buffers", "engine chunk buffers", UNWRITTEN)
PIXEL_A = 0.25

# (threads, slices, modes, pattern (ny, nx), refine probe, refine tilt): the chunk rule's branch in the id.
CASES = {
    "thread bound (16), 2 threads": (2, 2, 1, (32, 40), True, False),
    "cache bound (4), 24 slices": (2, 24, 2, (64, 64), True, True),
    "two per thread (6), 3 threads": (3, 24, 1, (64, 64), False, False),
    "no window buffers, 1 thread 1 mode": (1, 4, 1, (64, 64), True, False),
    "one position's windows, 1 thread 3 modes": (1, 4, 3, (64, 64), True, True),
}


def small_scan(pattern, rng) -> PtychoScan:
    """A 6 x 6 raster scan with Poisson counts (their content does not change what the engine allocates)."""
    ny, nx = pattern
    data = rng.poisson(5.0, (6, 6, ny, nx)).astype(np.float32)
    sampling_invA = (1 / (ny * PIXEL_A), 1 / (nx * PIXEL_A))
    return PtychoScan(data, 200e3, 25.0, scan_step_A=1.0, reciprocal_sampling_invA=sampling_invA)


# The counts are noise, not a sample's patterns: the engine's warning that the probe does not fit them is expected.
@pytest.mark.filterwarnings("ignore::mspt._warning.ReconstructionWarning")
@pytest.mark.parametrize("name", list(CASES))
def test_planned_engine_buffers_equal_the_engines(name, measured):
    threads, n_slices, modes, pattern, refine_probe, refine_tilt = CASES[name]
    config = PtychoConfig(n_slices=n_slices, probe_modes=modes, threads=threads, batch_size=48, iterations=1,
                          refine_probe_from=0 if refine_probe else -1, refine_tilt_from=0 if refine_tilt else -1,
                          refine_positions_from=-1, position_search_A=0.0, progress=False)  # fmt: skip
    scan = small_scan(pattern, np.random.default_rng(1))
    planned = plan(scan, config, "cpu", host_available_bytes=10**10)
    predicted = sum(c.bytes for c in planned.components if c.name in ENGINE_COMPONENTS)

    _backend.clear_engine_cache()  # an engine from another test may hold chunk buffers this run does not ask for
    engine = PtychoEngine.start(scan, config, 5.0 * np.prod(pattern))
    engine.run_iteration()
    S = engine.slices.shape[0]
    assert (S,) + engine.slices.shape[1:] == planned.object_shape
    native, _ = _backend.multislice_engine("cpu", "single", *pattern, S, modes, threads)
    allocated = native.scratch_bytes
    measured(f"cpu engine memory {name}", "|planned / allocated - 1|", abs(predicted / allocated - 1), 1e-12)
    assert predicted == allocated


def test_chunk_rule_branches():
    plane = 64 * 64 * 8  # one 64 x 64 complex64 plane
    assert cpu_chunk_positions(2, 2, plane) == 16  # max(16, 4t): 4 MiB holds 64 positions of 2 slices
    assert cpu_chunk_positions(8, 2, plane) == 32
    assert cpu_chunk_positions(2, 24, plane) == 4  # 4 MiB / (24 planes of 32 KiB) = 5.3: 5, a multiple of 2: 4
    assert cpu_chunk_positions(1, 24, plane) == 5
    assert cpu_chunk_positions(3, 24, plane) == 6  # at least two per thread
    assert cpu_chunk_positions(2, 200, plane) == 4
