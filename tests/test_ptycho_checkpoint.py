"""Checkpoint / resume: a run interrupted and resumed ends exactly where an uninterrupted run ends; checkpoints
are written atomically and never silently mixed with other settings."""

import numpy as np
import pytest

import mspt
from mspt import ops
from mspt.ptycho import PtychoConfig, PtychoScan, reconstruct


@pytest.fixture(scope="module")
def small_scan():
    rng = np.random.default_rng(4)
    sampling, k, n, step = 0.25, 32, 8, 1.0
    h = w = 80
    yy, xx = np.mgrid[:h, :w]
    phase = np.zeros((2, h, w))
    for s in range(2):
        for cy, cx in rng.uniform(10, 70, (25, 2)):
            phase[s] += 0.4 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    grid = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) - (n - 1) / 2) * step
    probe = mspt.make_probe(200e3, 25, k, sampling, defocus_A=30, electrons=2e4)
    intensities = ops.multislice_forward(np.exp(1j * phase), probe, grid / sampling + 40, 4.0)
    data = rng.poisson(intensities).astype(np.float32).reshape(n, n, k, k)
    return PtychoScan(data, 200e3, 25, scan_step_A=step, reciprocal_sampling_invA=1 / (k * sampling),
                      defocus_A=30, defocus_reference="entrance")  # fmt: skip


def config(tmp_path, **over):
    base = dict(n_slices=2, slice_thickness_A=4.0, iterations=6, batch_size=16, refine_probe_from=1,
                refine_positions_from=2, refine_tilt_from=3, progress=False, checkpoint_every=2,
                checkpoint_path=str(tmp_path / "run.h5"))  # fmt: skip
    return PtychoConfig(**(base | over))


def test_resume_ends_where_an_uninterrupted_run_ends(small_scan, tmp_path):
    full = reconstruct(small_scan, config(tmp_path / "a"))
    # An "interrupted" run: it stops after 4 iterations, its last checkpoint at 4.
    reconstruct(small_scan, config(tmp_path / "b", iterations=4))
    resumed = reconstruct(small_scan, config(tmp_path / "b"), resume=True)
    np.testing.assert_array_equal(resumed.slices, full.slices)
    np.testing.assert_array_equal(resumed.probe, full.probe)
    np.testing.assert_array_equal(resumed.positions_A, full.positions_A)
    np.testing.assert_array_equal(resumed.tilt_mrad, full.tilt_mrad)
    np.testing.assert_array_equal(resumed.loss, full.loss)
    assert len(full.loss) == 6 and full.loss[-1] < full.loss[0]


def test_resume_refuses_a_checkpoint_of_other_settings(small_scan, tmp_path):
    reconstruct(small_scan, config(tmp_path, iterations=2))
    with pytest.raises(ValueError, match="was written with different settings"):
        reconstruct(small_scan, config(tmp_path, batch_size=8), resume=True)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(small_scan, tmp_path, monkeypatch):
    from mspt.ptycho import checkpoint as ckpt

    reconstruct(small_scan, config(tmp_path, iterations=2))
    before = (tmp_path / "run.h5").read_bytes()

    def broken_dataset(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.h5py.File, "create_dataset", broken_dataset)
    with pytest.raises(OSError, match="disk full"):
        reconstruct(small_scan, config(tmp_path, iterations=4), resume=True)
    assert (tmp_path / "run.h5").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]


def test_a_corrupt_checkpoint_is_a_named_error(small_scan, tmp_path):
    (tmp_path / "run.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="checkpoint_path: .* is not a readable HDF5 checkpoint"):
        reconstruct(small_scan, config(tmp_path), resume=True)


def test_a_new_run_never_replaces_an_existing_checkpoint(small_scan, tmp_path):
    reconstruct(small_scan, config(tmp_path, iterations=2))
    before = (tmp_path / "run.h5").read_bytes()
    with pytest.raises(FileExistsError, match="checkpoint_path: .* already exists; pass resume=True"):
        reconstruct(small_scan, config(tmp_path, iterations=2))
    assert (tmp_path / "run.h5").read_bytes() == before
    reconstruct(small_scan, config(tmp_path, iterations=2), overwrite=True)


def test_result_round_trips_through_the_results_file_and_draws_a_report(small_scan, tmp_path):
    from mspt.ptycho import load_result, save_report, save_result

    result = reconstruct(small_scan, config(tmp_path, checkpoint_every=0, checkpoint_path=None))
    save_result(tmp_path / "results.h5", result, tilt=3)
    back = load_result(tmp_path / "results.h5", tilt=3)
    np.testing.assert_array_equal(back.slices, result.slices)
    np.testing.assert_array_equal(back.validation_loss, result.validation_loss)
    assert back.stop_reason == result.stop_reason and back.config == result.config
    assert back.best_iteration == result.best_iteration
    assert result.probe_defocus_A is not None and back.probe_defocus_A == result.probe_defocus_A
    with pytest.raises(FileExistsError, match="'ptycho/003' already exists"):
        save_result(tmp_path / "results.h5", result, tilt=3)
    save_result(tmp_path / "results.h5", result, tilt=4)  # another tilt joins the same file
    png = save_report(result, tmp_path / "tilt003.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
