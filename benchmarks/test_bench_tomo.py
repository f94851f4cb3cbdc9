"""Tomography benchmarks, ratios measured in one run on the same CPU:

* forward + adjoint (project + backproject) with 36 poses against PyTorch ``affine_grid`` + ``grid_sample``
  rotate-and-sum (the reference method's projector; its adjoint is autograd's backward), at 128^3 (256^3
  with ``MSPT_BENCH_LARGE=1``), for a tilt series about y and for general poses, timed in turn;
* giga-updates per second (voxels x projections / s) of project and backproject, for both kinds of poses;
* the cost to converge the phantom alignment case (tests/test_tomo_alignment.py) with the default schedule
  against the reference schedule run through the same operators, in projector calls and seconds, with the
  pose errors each reached. The reference's errors are followed step by step against its calls and reported
  at 1x, 3x, 10x, ... the default's calls, with the calls at which it first matches the default's accuracy or
  the cap it stopped at (3x; 100x with ``MSPT_BENCH_LARGE=1``, within ``MSPT_BENCH_REFERENCE_SECONDS``).
"""

import os
import pathlib
import sys
import time

import numpy as np
import pytest

from mspt.ops import backproject, project, tilt_series_rotations
from mspt.tomo import TomoConfig, reconstruct

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


def rotation_about_z(angle_deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def benchmark_rotations(kind: str) -> np.ndarray:
    """POSES rotations: "about y", the nominal tilt series (-70..70 degrees); or "general", the same tilts between
    rotations about z of -80..80 and 60..-60 degrees, Rz(a) Ry(tilt) Rz(b), whose rays cross voxel rows as much
    as planes and columns (the row that a shortcut for tilts about y cannot flatter)."""
    tilts = tilt_series_rotations(np.linspace(-70, 70, POSES))
    if kind == "about y":
        return tilts
    before, after = np.linspace(-80, 80, POSES), np.linspace(60, -60, POSES)
    return np.stack([rotation_about_z(a) @ r @ rotation_about_z(b) for a, r, b in zip(before, tilts, after)])


POSE_KINDS = ("about y", "general")


def interleaved_best(fns: dict, rounds: int) -> dict:
    """The shortest wall time (s) of each of ``fns`` over ``rounds`` rounds that run them in turn, so that the
    noise of a shared machine reaches all of them alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


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
    """mspt's project + backproject against torch's rotate-and-sum and its backward, for the tilts about y and
    for general poses, the four timed in turn (best of 2 rounds, after one warm-up call each)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    volume = smooth_random_volume(n, rng)
    cotangent = np.ones((POSES, n, n), dtype=np.float32)
    chunk = max(1, int(2**28 // (n**3 * 16)))  # bound torch's grids to ~1 GiB

    def ours(rotation):
        project(volume, rotation, None, 1.0)
        backproject(cotangent, rotation, None, 1.0, volume.shape)

    fns = {}
    for kind in POSE_KINDS:
        rotation = benchmark_rotations(kind)
        fns[("mspt", kind)] = lambda rotation=rotation: ours(rotation)
        fns[("torch", kind)] = lambda rotation=rotation: torch_rotate_and_sum(torch, volume, rotation, chunk)
    for fn in fns.values():
        fn()
    best = interleaved_best(fns, 2)
    benchmark.pedantic(fns[("mspt", "about y")], rounds=1, iterations=1)
    for kind in POSE_KINDS:
        t_ours, t_theirs = best[("mspt", kind)], best[("torch", kind)]
        report(f"tomo forward+adjoint {n}^3 x {POSES} poses {kind} ({THREADS} threads)", mspt_s=t_ours,
               torch_grid_sample_s=t_theirs, speedup=t_theirs / t_ours)  # fmt: skip


@pytest.mark.parametrize("n", SIZES)
def test_gups_cpu(benchmark, report, n):
    """Giga-updates per second (voxels x projections / s) of project and backproject, tilts about y and general
    poses (best of 3, interleaved)."""
    rng = np.random.default_rng(1)
    volume = smooth_random_volume(n, rng)
    fns = {}
    for kind in POSE_KINDS:
        rotation = benchmark_rotations(kind)
        projections = project(volume, rotation, None, 1.0)
        fns[("project", kind)] = lambda rotation=rotation: project(volume, rotation, None, 1.0)
        fns[("backproject", kind)] = lambda rotation=rotation, projections=projections: backproject(
            projections, rotation, None, 1.0, volume.shape)
    best = interleaved_best(fns, 3)
    benchmark.pedantic(fns[("project", "about y")], rounds=1, iterations=1)
    updates = n**3 * POSES
    for kind in POSE_KINDS:
        report(f"tomo GUPS {n}^3 x {POSES} poses {kind} (CPU, {THREADS} threads)",
               project_gups=updates / best[("project", kind)] / 1e9,
               backproject_gups=updates / best[("backproject", kind)] / 1e9)  # fmt: skip


def alignment_case():
    """The phantom alignment case of tests/test_tomo_alignment.py."""
    rng = np.random.default_rng(1)
    centres = blob_positions(rng, 40, 14.0, 3.5)
    amplitudes = rng.uniform(0.6, 1.0, len(centres))
    nominal, rotation, shifts = perturbed_poses(rng, np.linspace(-60, 60, 19), 2.0, 2.0)
    clean = blob_projections(centres, amplitudes, 1.1, rotation, shifts, (48, 48), 1.0)
    data = clean + rng.normal(0.0, 0.01 * clean.max(), clean.shape)
    return data, nominal, rotation, shifts


REFERENCE_MULTIPLES = (1, 3, 10, 30, 100)  # the reference's budget, in multiples of the default's projector calls
LARGE = bool(os.environ.get("MSPT_BENCH_LARGE"))


def follow_reference(data, nominal, rotation, shifts, cap_calls: float, budget_s: float):
    """The reference schedule run at full resolution with every pose parameter refined from its first step (it
    spends no calls on levels where rotations stay fixed), its pose errors recorded after every outer step and
    the run stopped before it would pass ``cap_calls`` projector calls or ``budget_s`` seconds
    -> (result, [(calls, seconds, rotation error deg, shift error A)], the stop's reason)."""
    config = TomoConfig(schedule="reference", progress=False, levels=(1,), iterations=10**6, align_rotation_from=0)
    config = config.replace(final_iterations=config.reference_volume_steps)
    per_step = 2 * config.reference_volume_steps + 2
    trace, reason, started = [], "", time.perf_counter()

    def record(step) -> bool:
        nonlocal reason
        elapsed = time.perf_counter() - started
        trace.append((step.projector_calls, elapsed, *pose_errors(step.rotation, step.shifts_A, rotation, shifts)))
        if step.projector_calls + per_step > cap_calls:
            reason = "call cap"
        elif elapsed * (1 + 1 / len(trace)) > budget_s:
            reason = "time budget"
        return bool(reason)

    result = reconstruct(data, nominal, pixel_size_A=1.0, config=config, callback=record)
    return result, trace, reason


@pytest.mark.parametrize("cap_multiple", [3, pytest.param(100, marks=pytest.mark.skipif(
    not LARGE, reason="set MSPT_BENCH_LARGE=1 for the reference schedule at up to 100x the calls"))])  # fmt: skip
def test_cost_to_converge_default_vs_reference_schedule(benchmark, report, cap_multiple):
    """The reference schedule's pose errors against its projector calls, up to ``cap_multiple`` times the
    default's calls (or ``MSPT_BENCH_REFERENCE_SECONDS``, default 900 s, whichever comes first), and the calls
    at which it first matches the default's rotation and shift errors together, if it does."""
    data, nominal, rotation, shifts = alignment_case()
    t = time.perf_counter()
    default = reconstruct(data, nominal, pixel_size_A=1.0, config=TomoConfig(progress=False))
    t_default = time.perf_counter() - t
    rot_default, shift_default = pose_errors(default.rotation, default.shifts_A, rotation, shifts)
    rot_start, _ = pose_errors(nominal, np.zeros_like(shifts), rotation, shifts)
    # The accuracy the reference is held to is the alignment test's: shifts within 0.1 A, rotations ten times
    # better than the start.
    assert shift_default <= 0.1 and rot_default <= rot_start / 10

    calls = default.projector_calls
    budget_s = float(os.environ.get("MSPT_BENCH_REFERENCE_SECONDS", 900))
    reference, trace, reason = follow_reference(data, nominal, rotation, shifts, cap_multiple * calls, budget_s)
    trace = np.array(trace)  # columns: calls, seconds, rotation error (deg), shift error (A)
    assert np.all(np.diff(trace[:, 0]) > 0) and trace[-1, 0] <= cap_multiple * calls
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)

    report("tomo alignment default schedule", projector_calls=calls, seconds=t_default,
           rotation_error_deg=rot_default, shift_error_A=shift_default)  # fmt: skip
    reached_multiple = cap_multiple if reason == "call cap" else trace[-1, 0] / calls
    for multiple in (m for m in REFERENCE_MULTIPLES if m <= reached_multiple):
        row = trace[np.searchsorted(trace[:, 0], multiple * calls, side="right") - 1]
        report(f"tomo alignment reference schedule at {multiple}x the default's calls", projector_calls=row[0],
               seconds=row[1], rotation_error_deg=row[2], shift_error_A=row[3])  # fmt: skip
    reached = np.flatnonzero((trace[:, 2] <= rot_default) & (trace[:, 3] <= shift_default))
    last = trace[-1]
    if len(reached):
        first = trace[reached[0]]
        report("tomo alignment reference schedule reaches the default's accuracy", projector_calls=first[0],
               seconds=first[1], call_ratio=first[0] / calls)  # fmt: skip
    else:
        report(f"tomo alignment reference schedule did not reach the default's accuracy within "
               f"{last[0] / calls:.3g}x its calls (stopped by the {reason})", projector_calls=last[0],
               seconds=last[1], rotation_error_deg=last[2], shift_error_A=last[3],
               best_rotation_error_deg=trace[:, 2].min(), best_shift_error_A=trace[:, 3].min(),
               call_ratio_at_least=last[0] / calls)  # fmt: skip
    final_rot, final_shift = pose_errors(reference.rotation, reference.shifts_A, rotation, shifts)
    assert (final_rot, final_shift) == pytest.approx((last[2], last[3]))  # the final pass keeps the poses
