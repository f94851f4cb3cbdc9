"""mspt.tomo: a run resumed from its checkpoint ends where an uninterrupted run ends; the results file keeps
other groups and round-trips; the report is drawn."""

import sys

import h5py
import numpy as np
import pytest

from mspt.tomo import TomoConfig, load_tomo_result, reconstruct, save_tomo_report, save_tomo_result

from test_tomo_phantom import blob_positions, blob_projections, perturbed_poses

RUN = sys.modules["mspt.tomo.reconstruct"]


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def small_case():
    rng = np.random.default_rng(5)
    centres = blob_positions(rng, 8, 6.0, 3.0)
    nominal, rotation, shifts = perturbed_poses(rng, np.linspace(-60, 60, 7), 1.0, 1.0)
    data = blob_projections(centres, np.ones(len(centres)), 1.2, rotation, shifts, (20, 20), 1.0)
    config = TomoConfig(levels=(2, 1), iterations=(2, 2), volume_iterations=3, joint_iterations=3,
                        final_iterations=3, progress=False)  # fmt: skip
    return data.astype(np.float32), nominal, config


def test_resume_ends_where_an_uninterrupted_run_ends(small_case, tmp_path, monkeypatch, measured):
    data, nominal, config = small_case
    whole = reconstruct(data, nominal, pixel_size_A=1.0, config=config)
    config = config.replace(checkpoint_every=1, checkpoint_path=str(tmp_path / "tomo.ckpt"))
    saves = []
    original = RUN.save_tomo_checkpoint

    def crash_after_third(*args, **kw):
        original(*args, **kw)
        saves.append(1)
        if len(saves) == 3:  # into the second level: the support and the pyramid state must come back too
            raise Crash

    monkeypatch.setattr(RUN, "save_tomo_checkpoint", crash_after_third)
    with pytest.raises(Crash):
        reconstruct(data, nominal, pixel_size_A=1.0, config=config)
    monkeypatch.setattr(RUN, "save_tomo_checkpoint", original)
    with pytest.raises(FileExistsError, match="checkpoint_path"):
        reconstruct(data, nominal, pixel_size_A=1.0, config=config)
    resumed = reconstruct(data, nominal, pixel_size_A=1.0, config=config, resume=True)
    difference = float(np.max(np.abs(resumed.volume - whole.volume)))
    assert measured("tomo resume", "max |volume difference|", difference, 1e-7) < 1e-7
    assert np.array_equal(resumed.rotation, whole.rotation)
    assert np.array_equal(resumed.shifts_A, whole.shifts_A)
    assert np.array_equal(resumed.loss, whole.loss)
    assert resumed.projector_calls == whole.projector_calls
    with pytest.raises(ValueError, match="checkpoint_path"):
        reconstruct(data, nominal, pixel_size_A=1.0, config=config.replace(volume_iterations=4), resume=True)


def test_results_file_round_trips_and_keeps_other_groups(small_case, tmp_path):
    data, nominal, config = small_case
    result = reconstruct(data, nominal, pixel_size_A=1.0, config=config)
    path = tmp_path / "results.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("projections/phase", data=data)
    save_tomo_result(path, result)
    back = load_tomo_result(path)
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["projections/phase"][()], data)
        assert f["tomo/volume"].dtype == np.float32 and f["tomo/volume"].shape == result.volume.shape
        assert f["tomo"].attrs["voxel_size_A"] == result.voxel_size_A
    for name in ("volume", "rotation", "shifts_A", "loss", "support", "residuals", "levels"):
        assert np.array_equal(getattr(back, name), getattr(result, name)), name
    assert back.config == result.config
    with pytest.raises(FileExistsError, match="tomo"):
        save_tomo_result(path, result)
    save_tomo_result(path, result, overwrite=True)
    assert load_tomo_result(path).projector_calls == result.projector_calls


def test_report_is_drawn(small_case, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    data, nominal, config = small_case
    result = reconstruct(data, nominal, pixel_size_A=1.0, config=config)
    image = imread(save_tomo_report(result, tmp_path / "tomo.png"))
    assert image.shape[0] > 400 and image.shape[1] > 1000
    assert np.std(image[..., :3]) > 0.05  # panels were drawn, not a blank page
