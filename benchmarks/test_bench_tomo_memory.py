"""Peak memory of a whole tomography run (mspt.tomo.reconstruct: pre-alignment, pyramid, pose refinement,
final pass) against the size of its volume: the issue asks for 512^3 volumes on a 24 GB machine, with the
projections streamed in batches and no T x N^3 intermediate.

Each run is a fresh subprocess, so its peak resident set (ru_maxrss) is its own. The schedule is shortened
(memory depends on the arrays a step holds, not on how many steps run); its volume correlation with the
phantom is reported so a broken run cannot pass for a cheap one. N = 128 by default, 512 with
``MSPT_BENCH_LARGE=1`` (minutes on 2 cores).
"""

import json
import os
import subprocess
import sys

import pytest

SIZES = [128, pytest.param(512, marks=pytest.mark.skipif(not os.environ.get("MSPT_BENCH_LARGE"),
                                                          reason="set MSPT_BENCH_LARGE=1 for 512^3"))]  # fmt: skip
TILTS = 36
GB = 1e9

RUN = r"""
import json, resource, sys, time
import numpy as np
from mspt.ops import project, tilt_series_rotations
from mspt.tomo import TomoConfig, reconstruct

n = int(sys.argv[1]); tilts = int(sys.argv[2])
rng = np.random.default_rng(0)
# A phantom of 64 balls of 3 to 8 % of the edge, stamped in local windows (a whole-volume evaluation per ball
# would cost more than the reconstruction).
phantom = np.zeros((n, n, n), np.float32)
for _ in range(64):
    r = int(rng.uniform(0.03, 0.08) * n)
    c = rng.integers(n // 4 + r, 3 * n // 4 - r, 3)
    g = np.arange(-r, r + 1)
    ball = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2 <= r * r).astype(np.float32)
    phantom[c[0] - r:c[0] + r + 1, c[1] - r:c[1] + r + 1, c[2] - r:c[2] + r + 1] += rng.uniform(0.5, 1.0) * ball
rotation = tilt_series_rotations(np.linspace(-70, 70, tilts))
data = project(phantom, rotation, None, 1.0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
config = TomoConfig(levels=(4, 2, 1), iterations=(2, 1, 1), volume_iterations=3, final_iterations=3,
                    progress=False)
t = time.perf_counter()
result = reconstruct(data, rotation, pixel_size_A=1.0, config=config)
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
inside = result.support
r = float(np.corrcoef(result.volume[inside], phantom[inside])[0, 1])
print(json.dumps(dict(peak_bytes=peak, before_bytes=base, seconds=seconds, r=r, calls=result.projector_calls)))
"""


@pytest.mark.parametrize("n", SIZES)
def test_tomography_peak_memory(benchmark, report, n):
    proc = subprocess.run([sys.executable, "-c", RUN, str(n), str(TILTS)], capture_output=True, text=True,
                          timeout=7200)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    volume_bytes = 4 * n**3
    benchmark.extra_info.update(out)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    report(f"tomography {n}^3 x {TILTS} tilts, whole run (shortened schedule)", peak_GB=out["peak_bytes"] / GB,
           peak_in_volumes=out["peak_bytes"] / volume_bytes,
           run_growth_in_volumes=(out["peak_bytes"] - out["before_bytes"]) / volume_bytes, seconds=out["seconds"], projector_calls=out["calls"],
           r_inside_support=out["r"])  # fmt: skip
    assert out["r"] > 0.5  # a real reconstruction, not an empty one
    if n == 512:
        assert out["peak_bytes"] < 24 * GB
