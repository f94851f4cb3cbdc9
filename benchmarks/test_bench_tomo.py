"""Tomography benchmarks, ratios measured in one run on the same CPU:

* forward + adjoint (project + backproject) with 36 poses against PyTorch ``affine_grid`` + ``grid_sample``
  rotate-and-sum (the reference method's projector; its adjoint is autograd's backward), at 128^3 (256^3
  with ``MSPT_BENCH_LARGE=1``);
* giga-updates per second (voxels x projections / s) of project and backproject;
* the cost to converge the phantom alignment case (tests/test_tomo_alignment.py) with the default schedule
  against the reference schedule run through the same operators, in projector calls and seconds, with the
  pose errors each reached. The reference schedule is capped (``MSPT_BENCH_REFERENCE_CALLS`` projector
  calls, default 3x what the default schedule used): report what it reached within the cap.
"""

import os
import pathlib
import sys
import time

import numpy as np
import pytest

from mspt.ops import backproject, project, tilt_series_rotations
from mspt.tomo import TomoConfig, reconstruct
from timing import best_of  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from test_tomo_phantom import blob_positions, blob_projections, perturbed_poses, pose_errors  # noqa: E402

SIZES = [128, pytest.param(256, marks=pytest.mark.skipif(not os.environ.get("MSPT_BENCH_LARGE"),
                                                          reason="set MSPT_BENCH_LARGE=1 for 256^3"))]  # fmt: skip
POSES = 36
THREADS = os.cpu_count()


def smooth_random_volume(n: int, rng) -> np.ndarray:
    volume = rng.random((n, n, n)).astype(np.float32)
    axis = np.arange(n) - n // 2
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    volume[z**2 + y**2 + x**2 > (0.45 * n) ** 2] = 0  # inside the sphere every pose sees whole
    return volume


def torch_rotate_and_sum(torch, volume, rotation, chunk: int):
    """Forward (rotate with affine_grid + grid_sample, trilinear, zeros outside; sum along z) and the adjoint
    (autograd backward of <projections, cotangent>), chunked over poses to bound memory."""
    n = volume.shape[-1]
    vol = torch.from_numpy(volume)[None, None].requires_grad_(True)
    cotangent = torch.ones(chunk, n, n)
    for start in range(0, len(rotation), chunk):
        # affine_grid maps output (x, y, z) in [-1, 1] to input coordinates: the input point R^T q.
        theta = torch.from_numpy(np.ascontiguousarray(np.swapaxes(rotation[start:start + chunk], 1, 2))).float()
        theta = torch.cat([theta, torch.zeros(len(theta), 3, 1)], dim=2)
        grid = torch.nn.functional.affine_grid(theta, (len(theta), 1, n, n, n), align_corners=False)
        sampled = torch.nn.functional.grid_sample(vol.expand(len(theta), -1, -1, -1, -1), grid,
                                                  mode="bilinear", padding_mode="zeros", align_corners=False)
        projections = sampled.sum(dim=2)[:, 0]  # (chunk, Y, X)
        (projections * cotangent[: len(theta)]).sum().backward()
    return vol.grad


@pytest.mark.parametrize("n", SIZES)
def test_forward_adjoint_vs_torch_grid_sample(benchmark, report, n):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    volume = smooth_random_volume(n, rng)
    rotation = tilt_series_rotations(np.linspace(-70, 70, POSES))
    cotangent = np.ones((POSES, n, n), dtype=np.float32)

    def ours():
        project(volume, rotation, None, 1.0)
        backproject(cotangent, rotation, None, 1.0, volume.shape)

    chunk = max(1, int(2**28 // (n**3 * 16)))  # bound torch's grids to ~1 GiB

    def theirs():
        torch_rotate_and_sum(torch, volume, rotation, chunk)

    ours()
    theirs()
    t_ours = best_of(ours, 2)
    t_theirs = best_of(theirs, 2)
    benchmark.pedantic(ours, rounds=1, iterations=1)
    report(f"tomo forward+adjoint {n}^3 x {POSES} poses", mspt_s=t_ours, torch_grid_sample_s=t_theirs,
           speedup=t_theirs / t_ours)  # fmt: skip


def test_gups_cpu(benchmark, report):
    n = 128
    rng = np.random.default_rng(1)
    volume = smooth_random_volume(n, rng)
    rotation = tilt_series_rotations(np.linspace(-70, 70, POSES))
    projections = project(volume, rotation, None, 1.0)
    t_project = best_of(lambda: project(volume, rotation, None, 1.0), 2)
    t_back = best_of(lambda: backproject(projections, rotation, None, 1.0, volume.shape), 2)
    benchmark.pedantic(lambda: project(volume, rotation, None, 1.0), rounds=1, iterations=1)
    updates = n**3 * POSES
    report(f"tomo GUPS {n}^3 x {POSES} poses (CPU, {THREADS} threads)", project_gups=updates / t_project / 1e9,
           backproject_gups=updates / t_back / 1e9)  # fmt: skip


def alignment_case():
    """The phantom alignment case of tests/test_tomo_alignment.py."""
    rng = np.random.default_rng(1)
    centres = blob_positions(rng, 40, 14.0, 3.5)
    amplitudes = rng.uniform(0.6, 1.0, len(centres))
    nominal, rotation, shifts = perturbed_poses(rng, np.linspace(-60, 60, 19), 2.0, 2.0)
    clean = blob_projections(centres, amplitudes, 1.1, rotation, shifts, (48, 48), 1.0)
    data = clean + rng.normal(0.0, 0.01 * clean.max(), clean.shape)
    return data, nominal, rotation, shifts


def test_cost_to_converge_default_vs_reference_schedule(benchmark, report):
    data, nominal, rotation, shifts = alignment_case()
    t = time.perf_counter()
    default = reconstruct(data, nominal, pixel_size_A=1.0, config=TomoConfig(progress=False))
    t_default = time.perf_counter() - t
    rot_default, shift_default = pose_errors(default.rotation, default.shifts_A, rotation, shifts)

    cap = float(os.environ.get("MSPT_BENCH_REFERENCE_CALLS", 3 * default.projector_calls))
    reference_config = TomoConfig(schedule="reference", progress=False)
    per_step = 2 * reference_config.reference_volume_steps + 2
    steps = max(3, int(cap // per_step))
    levels = reference_config.levels
    reference_config = reference_config.replace(iterations=tuple(steps // len(levels) for _ in levels),
                                                final_iterations=reference_config.reference_volume_steps)  # fmt: skip
    t = time.perf_counter()
    reference = reconstruct(data, nominal, pixel_size_A=1.0, config=reference_config)
    t_reference = time.perf_counter() - t
    rot_reference, shift_reference = pose_errors(reference.rotation, reference.shifts_A, rotation, shifts)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    report("tomo alignment default schedule", projector_calls=default.projector_calls, seconds=t_default,
           rotation_error_deg=rot_default, shift_error_A=shift_default)  # fmt: skip
    report("tomo alignment reference schedule (capped)", projector_calls=reference.projector_calls,
           seconds=t_reference, rotation_error_deg=rot_reference, shift_error_A=shift_reference,
           call_ratio=reference.projector_calls / default.projector_calls)  # fmt: skip
