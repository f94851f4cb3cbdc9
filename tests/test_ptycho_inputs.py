"""PtychoScan / PtychoConfig reject bad input with the field's name and what was expected, before any work."""

import numpy as np
import pytest

from mspt.ptycho import PtychoConfig, PtychoScan, reconstruct


def centred_patterns(shape=(4, 5, 16, 16)):
    data = np.zeros(shape, np.float32)
    data[..., 6:10, 6:10] = 10.0
    return data


def scan(**over):
    args = dict(data=centred_patterns(), energy_eV=200e3, semiangle_mrad=25, scan_step_A=0.5, reciprocal_sampling_invA=0.2) | over
    return PtychoScan(**args)


@pytest.mark.parametrize(
    "over, message",
    [
        (dict(data=np.zeros((16, 16))), r"data: expected shape \(scan_y, scan_x, k_y, k_x\)"),
        (dict(data=np.zeros((4, 4, 4, 4))), "data: expected patterns of at least 8x8"),
        (dict(energy_eV=-1), "energy_eV: expected a positive"),
        (dict(semiangle_mrad=float("nan")), "semiangle_mrad"),
        (dict(scan_step_A=None), "scan_step_A: required"),
        (dict(scan_step_A=(0.5, 0.0)), "scan_step_A: expected positive values"),
        (dict(reciprocal_sampling_invA=None), "give exactly one detector calibration"),
        (dict(detector_sampling_mrad=1.0), "give exactly one detector calibration"),
        (dict(defocus_A="far"), "defocus_A: expected a finite number"),
        (dict(defocus_reference="top"), "defocus_reference: expected one of"),
        (dict(positions_A=np.zeros((7, 2))), r"positions_A: expected shape \(20, 2\)"),
        (dict(tilt_mrad=(1, 2, 3)), "tilt_mrad: expected a finite pair"),
    ],
)
def test_scan_rejects(over, message):
    with pytest.raises(ValueError, match=message):
        scan(**over)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d.__setitem__((1, 2, 3, 3), np.nan), "data: pattern 7 contains NaN"),
        (lambda d: d.__setitem__((0, 1, 8, 8), -3.0), "data: pattern 1 contains negative counts"),
        (lambda d: d.__setitem__(Ellipsis, np.roll(d, 5, axis=-1)), r"centre of mass is at \(7.5, 12.5\) px"),
        (lambda d: d.__setitem__(Ellipsis, 0.0), "the scan holds no counts"),
    ],
)
def test_pattern_checks_name_the_problem(corrupt, message):
    data = centred_patterns()
    corrupt(data)
    with pytest.raises(ValueError, match=message):
        reconstruct(scan(data=data), PtychoConfig(iterations=1, progress=False))


@pytest.mark.parametrize(
    "over, message",
    [
        (dict(n_slices=0), "n_slices"),
        (dict(n_slices=2.5), "n_slices: expected a positive integer"),
        (dict(slice_thickness_A=-2), "slice_thickness_A"),
        (dict(likelihood="gauss"), "likelihood: expected one of"),
        (dict(batch_size=0), "batch_size"),
        (dict(object_step=3.0), r"object_step: expected a number in \[0.0, 2.0\]"),
        (dict(refine_probe_from=-4), "refine_probe_from: expected an iteration index"),
        (dict(object_constraint="real"), "object_constraint: expected one of"),
        (dict(checkpoint_every=5), "checkpoint_path: required"),
        (dict(device="gpu"), "device: expected one of"),
        (dict(stack_centre_A=float("inf")), "stack_centre_A: expected a finite number"),
    ],
)
def test_config_rejects(over, message):
    with pytest.raises(ValueError, match=message):
        PtychoConfig(**over)


def test_raster_positions_follow_step_and_rotation():
    s = scan(scan_rotation_deg=90.0, scan_step_A=(0.5, 1.0))
    p = s.positions().reshape(4, 5, 2)
    # A 90 degree rotation turns the x (column) step into +y.
    np.testing.assert_allclose(p[0, 1] - p[0, 0], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(p[1, 0] - p[0, 0], [0.0, -0.5], atol=1e-12)
    np.testing.assert_allclose(p.reshape(-1, 2).mean(0), 0.0, atol=1e-12)


def test_detector_calibration_in_mrad_and_transpose():
    data = centred_patterns((2, 2, 16, 20))
    s = PtychoScan(data, 200e3, 25, scan_step_A=0.5, detector_sampling_mrad=1.0, detector_transpose=True)
    assert s.pattern_shape == (20, 16)
    lam = s.wavelength_A
    np.testing.assert_allclose(s.sampling_A, (lam / (20 * 1e-3), lam / (16 * 1e-3)))
    np.testing.assert_array_equal(s.read([3, 0]), np.swapaxes(data.reshape(4, 16, 20)[[3, 0]], -1, -2))


def test_lazy_hdf5_reading_matches_memory(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = np.random.default_rng(0).poisson(3.0, (3, 4, 16, 16)).astype(np.float32)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["data"] = data
    with h5py.File(tmp_path / "scan.h5", "r") as f:
        lazy = scan(data=f["data"])
        idx = [11, 2, 5, 0, 11]
        np.testing.assert_array_equal(lazy.read(idx), data.reshape(12, 16, 16)[idx])


def test_a_few_patterns_of_a_row_are_read_without_the_rest_of_it(tmp_path):
    """The held-out positions take a few patterns from many scan rows: those are read on their own, while a
    row a batch wants much of is read whole; both give the same patterns."""
    h5py = pytest.importorskip("h5py")
    data = np.random.default_rng(1).poisson(3.0, (4, 16, 8, 8)).astype(np.float32)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.create_dataset("data", data=data, chunks=(1, 1, 8, 8))
    with h5py.File(tmp_path / "scan.h5", "r") as f:
        reads = []

        class Recording:
            shape = f["data"].shape

            def __getitem__(self, key):
                block = f["data"][key]
                reads.append(int(np.prod(block.shape[:-2])))
                return block

        lazy = scan(data=Recording())
        sparse = [3, 37, 35, 60]  # rows 0, 2, 2, 3: one, two and one of 16 patterns
        np.testing.assert_array_equal(lazy.read(sparse), data.reshape(64, 8, 8)[sparse])
        assert reads == [1, 2, 1]
        reads.clear()
        dense = list(range(16, 28)) + [5]  # 12 of row 1's 16, one of row 0's
        np.testing.assert_array_equal(lazy.read(dense), data.reshape(64, 8, 8)[dense])
        assert reads == [1, 16]
