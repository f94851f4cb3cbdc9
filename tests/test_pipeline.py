"""The pipeline end to end (`mspt.run`, `mspt run`): outputs, the projections' frame, refusal to overwrite,
resume after SIGKILL, and Dask fan-out surviving a killed worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest

import pipeline_data

pytest.importorskip("abtem")

import mspt  # noqa: E402
from mspt.pipeline.fanout import run_jobs, tilt_jobs  # noqa: E402
from mspt.ptycho import PtychoConfig, load_result  # noqa: E402


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    return folder, pipeline_data.tiny_series(folder)


@pytest.fixture(scope="module")
def finished_run(series):
    folder, path = series
    config = pipeline_data.tiny_config(folder, path, folder / "reference")
    return folder, config, mspt.run(config, progress=False)


def _centre_crop(image, shape):
    y0 = image.shape[0] // 2 - shape[0] // 2
    x0 = image.shape[1] // 2 - shape[1] // 2
    return image[y0 : y0 + shape[0], x0 : x0 + shape[1]]


def _band_limited(image, fraction=2 / 3):
    """What the data can hold: the multislice band limit, 2/3 of the grid's Nyquist frequency."""
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(image) * (np.hypot(ky, kx) <= fraction / 2)).real


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_run_writes_the_results_schema_and_projections_in_the_rotation_frame(finished_run, series, measured):
    folder, _, result = finished_run
    _, path = series
    with h5py.File(result.results_path, "r") as f:
        assert sorted(f["ptycho"].keys()) == ["000", "001", "002"]
        phase = f["projections/phase"][()]
        assert f["tomo/volume"].ndim == 3 and f["tomo/rotation"].shape == (3, 3, 3)
        assert f["analysis/resolution_A"].shape == (3,)
        assert "config_toml" in f.attrs
    assert load_result(result.results_path, 1).slices.shape[0] == 2
    # Each projection (the summed phase on the common grid) against the simulation's own projected potential
    # of that tilt, cropped about the rotation centre: the frame is right only if they line up.
    with h5py.File(path, "r") as f:
        truth = f["truth/projected_potential_VA"][()] * f["truth"].attrs["interaction_rad_per_VA"]
    worst = 1.0
    for t in range(phase.shape[0]):
        reference = _centre_crop(_band_limited(truth[t]), phase.shape[1:])
        r = _pearson(phase[t], reference)
        worst = min(worst, r)
        # The frame is right to a pixel (0.25 A): every one-pixel shift of the truth correlates worse.
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            assert _pearson(phase[t], np.roll(reference, (dy, dx), axis=(0, 1))) < r
    measured("pipeline", "projection vs truth r (worst tilt, 4 iterations)", worst, 0.75, ">")
    assert worst > 0.75
    for name in ("projections", "tomo", "resolution"):
        assert result.reports[name].exists()
    assert result.exports["volume"].exists()


def test_a_finished_run_is_not_overwritten_and_resume_does_no_work(finished_run):
    folder, config, result = finished_run
    before = result.results_path.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="output.dir"):
        mspt.run(config, progress=False)
    again = mspt.run(config, resume=True, progress=False)
    assert again.timings["tomo"] == 0.0
    with h5py.File(again.results_path, "r") as f:
        assert f["tomo/volume"].shape == h5py.File(result.results_path, "r")["tomo/volume"].shape
    assert result.results_path.stat().st_mtime_ns >= before


def test_resume_with_another_configuration_is_refused(finished_run, series):
    folder, config, result = finished_run
    changed = folder / "changed.toml"
    changed.write_text(config.read_text().replace("iterations = 4", "iterations = 5"))
    with pytest.raises(ValueError, match="different configuration"):
        mspt.run(changed, resume=True, progress=False)


def test_cli_killed_mid_run_resumes_to_the_uninterrupted_result(series, measured):
    folder, path = series
    # The reference: the same command, uninterrupted, in a process of its own like the killed one. FFTW's
    # default planner times candidate algorithms, so two processes may round differently in the last bit;
    # planning by estimate makes every process choose alike, and then resuming must change nothing at all.
    env = dict(os.environ, MSPT_FFTW_PLANNER="estimate")
    # Enough iterations that a tilt lasts long enough (about a second) to be caught mid-way and killed.
    iterations = 40
    reference_config = pipeline_data.tiny_config(folder, path, folder / "uninterrupted", iterations=iterations)
    done = subprocess.run([sys.executable, "-m", "mspt.cli", "run", str(reference_config), "--quiet"],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    reference_results = folder / "uninterrupted" / "results.h5"
    out = folder / "killed"
    config = pipeline_data.tiny_config(folder, path, out, iterations=iterations)
    command = [sys.executable, "-m", "mspt.cli", "run", str(config), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    # Kill it hard once the first tilt has landed and the second is under way.
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "work" / "ptycho_001.checkpoint.h5").exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {process.stderr.read().decode()}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "ptycho" / "ptycho_002.h5").exists()
    leftovers = [p.name for p in out.rglob("*.tmp")]
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    with h5py.File(out / "results.h5", "r") as f, h5py.File(reference_results, "r") as g:
        volume, expected = f["tomo/volume"][()], g["tomo/volume"][()]
        for t in range(3):
            np.testing.assert_array_equal(f[f"ptycho/{t:03d}/object"][()], g[f"ptycho/{t:03d}/object"][()])
    difference = float(np.abs(volume - expected).max() / np.abs(expected).max())
    measured("pipeline", "resumed vs uninterrupted volume (max rel.)", difference, 1e-6)
    assert difference < 1e-6
    # A killed write leaves at most a temporary file, never a half-written result (none is read back).
    assert all(name.endswith(".tmp") for name in leftovers)


def test_dask_fan_out_survives_a_killed_worker(series, tmp_path, measured):
    distributed = pytest.importorskip("distributed")
    folder, path = series
    config = PtychoConfig(n_slices=2, slice_thickness_A=6.0, iterations=6, stop="fixed", validation_fraction=0.0,
                          threads=1, progress=False)  # fmt: skip
    serial_dir, dask_dir = tmp_path / "serial", tmp_path / "dask"
    serial = tilt_jobs(path, range(3), config, serial_dir, lambda i: serial_dir / f"{i}.h5", checkpoint_every=1)
    run_jobs(serial)
    jobs = tilt_jobs(path, range(3), config, dask_dir, lambda i: dask_dir / f"{i}.h5", checkpoint_every=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            killed = []

            def kill_a_busy_worker():
                deadline = time.time() + 120
                while time.time() < deadline and not killed:
                    busy = [w for w, tasks in client.processing().items() if tasks]
                    if busy and any(dask_dir.glob("*.checkpoint.h5")):
                        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    time.sleep(0.05)

            watcher = threading.Thread(target=kill_a_busy_worker, daemon=True)
            watcher.start()
            outputs = run_jobs(jobs, scheduler=cluster.scheduler_address)
            watcher.join()
    assert killed, "no worker was killed mid-tilt"
    # Worker processes plan their FFTs afresh (FFTW times candidate algorithms), so they may round
    # differently from this process in the last bits: equal to float32 precision, not bit for bit.
    worst = 0.0
    for index, output in enumerate(outputs):
        a, b = load_result(output, index), load_result(serial_dir / f"{index}.h5", index)
        worst = max(worst, float(np.abs(a.slices - b.slices).max()))
    measured("pipeline", "dask (worker killed) vs serial, max |object diff|", worst, 1e-5)
    assert worst < 1e-5


def test_bad_runs_are_refused_before_any_work_with_the_field_named(tmp_path):
    from mspt.pipeline.sequential import _check_tomo_memory
    from mspt.tomo import TomoConfig

    missing = tmp_path / "missing.toml"
    missing.write_text('[input]\ntiltseries = "nowhere.h5"\n[output]\ndir = "out"\n')
    with pytest.raises((FileNotFoundError, ValueError), match="nowhere.h5"):
        mspt.run(missing, progress=False)
    assert not (tmp_path / "out" / "results.h5").exists()
    # A misspelt key through the command line: exit status 1 and the key path with a suggestion.
    typo = tmp_path / "typo.toml"
    typo.write_text('[input]\ntiltseries = "x.h5"\n[ptycho]\nn_slice = 4\n')
    cli = subprocess.run([sys.executable, "-m", "mspt.cli", "run", str(typo)], capture_output=True, text=True)
    assert cli.returncode == 1 and "ptycho.n_slice" in cli.stderr and "n_slices" in cli.stderr
    # A volume that cannot fit: MemoryError with the numbers and what to change.
    with pytest.raises(MemoryError, match="voxel_size_A"):
        _check_tomo_memory((36, 512, 512), 0.1, TomoConfig(volume_shape=(4096, 4096, 4096)))
    # The joint refinement: 512^3 at 8 L-BFGS pairs is 24 float64 volumes, 25.8 GB; refused on 24 GB.
    from mspt.joint import JointConfig
    from mspt.pipeline.joint_stage import check_joint_memory, joint_memory_bytes

    assert joint_memory_bytes((512, 512, 512), JointConfig()) == 24 * 8 * 512**3
    with pytest.raises(MemoryError, match="memory_vectors"):
        check_joint_memory((512, 512, 512), JointConfig(), available_bytes=24 * 2**30)
    check_joint_memory((512, 512, 512), JointConfig(memory_vectors=2), available_bytes=24 * 2**30)


def test_joint_stage_resumes_a_finished_run_from_the_cli(finished_run, tmp_path):
    """``[joint] enabled`` added to a finished sequential run and resumed from the CLI: the joint stage
    alone runs (the sequential results stay bit-identical), writes its group, analysis, report and export,
    lowers the loss; a second resume does no work; a changed [joint] re-runs it; a changed [tomo] is refused."""
    folder, config, result = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(result.out_dir, run_dir)
    joint_toml = tmp_path / "joint.toml"
    text = config.read_text().replace(str(result.out_dir), str(run_dir))
    joint_toml.write_text(text + JOINT_TOML.format(outer=1))
    with h5py.File(run_dir / "results.h5", "r") as f:
        sequential = f["tomo/volume"][()]
    cli = subprocess.run([sys.executable, "-m", "mspt.cli", "run", str(joint_toml), "--resume", "--quiet"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "joint refinement: resolution (z, y, x)" in cli.stdout
    with h5py.File(run_dir / "results.h5", "r") as f:
        assert np.array_equal(f["tomo/volume"][()], sequential)
        loss, blocks = f["joint/loss"][()], f["joint/blocks"][()].astype(str)
        volume = f["joint/volume"][()]
        assert f["joint/analysis/resolution_A"].shape == (3,)
        assert f["joint/rotation"].shape == (3, 3, 3) and f["joint/probe"].ndim == 4
        assert [f[f"joint/positions_px/{i:03d}"].shape for i in range(3)] == [(144, 2)] * 3
        voxel = f["joint"].attrs["voxel_size_A"]
    assert tuple(blocks) == ("start", "volume", "acquisition") and loss[-1] < loss[0]
    assert voxel == pytest.approx(0.25) and np.all(volume >= 0)  # the ptychography pixel, by default
    assert (run_dir / "report_joint.png").stat().st_size > 0 and (run_dir / "volume_joint.mrc").exists()

    again = mspt.run(joint_toml, resume=True, progress=False)
    assert again.timings["joint"] == 0.0 and again.joint["resolution_A"] is not None
    joint_toml.write_text(text + JOINT_TOML.format(outer=2))
    rerun = mspt.run(joint_toml, resume=True, progress=False)
    assert rerun.timings["joint"] > 0
    with h5py.File(run_dir / "results.h5", "r") as f:
        assert f["joint/loss"].shape == (5,)
    joint_toml.write_text(text.replace("final_iterations = 5", "final_iterations = 6") + JOINT_TOML.format(outer=2))
    with pytest.raises(ValueError, match="changed: tomo"):
        mspt.run(joint_toml, resume=True, progress=False)


JOINT_TOML = """
[joint]
enabled = true
outer_iterations = {outer}
volume_evaluations = 4
acquisition_evaluations = 2
refine = ["poses", "positions"]
progress = false
"""


def test_joint_start_refocuses_each_probe_to_the_slab_stack(finished_run):
    """build_start hands the joint model the ptychography's physical probe at the joint stack's entrance:
    a probe given (as make_probe defines defocus) at the entrance of a ptychography stack centred 2 A
    downstream and re-centred by 1.5 A comes out equal to make_probe's probe at the entrance of a 3 x 5 A
    slab stack centred on the rotation centre; positions land on the grid centred on the rotation axis."""
    import dataclasses

    from mspt.joint import build_start
    from mspt.pipeline.outputs import ResultsStore

    folder, config, result = finished_run
    store = ResultsStore(result.results_path)
    tilt = store.ptycho_results()[0]
    energy, pixel = 200e3, float(tilt.pixel_size_A[0])
    crossover = 40.0  # the probe's crossover, A downstream of the rotation-centre plane
    ptycho_config = tilt.config.replace(stack_centre_A=2.0)
    given_at = 2.0 - ptycho_config.thickness_A / 2 - 1.5
    window = tilt.probe.shape[-1]
    probe = mspt.make_probe(energy, 25.0, window, pixel, defocus_A=crossover - given_at, electrons=1e4).array
    moved = dataclasses.replace(tilt, config=ptycho_config, stack_shift_A=1.5, probe=probe, tilt_mrad=np.zeros(2))
    with mspt.io.load_tiltseries(folder / "tiltseries.h5") as series:
        results = [moved] * series.n_tilts
        model, tilts, volume = build_start(series, results, store.tomo_result(), n_slices=3, slice_thickness_A=5.0)
    expected = mspt.make_probe(energy, 25.0, window, pixel, defocus_A=crossover + 7.5, electrons=1e4).array
    error = np.linalg.norm(tilts[0].probe - expected) / np.linalg.norm(expected)
    assert error < 1e-4, error
    assert model.voxel_size_A == pytest.approx(pixel) and volume.shape[0] == round(store.tomo_result().volume.shape[0] * 0.5 / pixel)
    centre = np.array(model.shape) // 2
    assert np.allclose(tilts[0].positions_px, tilt.positions_A / pixel + centre)
