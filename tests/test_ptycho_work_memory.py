"""What the ptychography loop allocates beyond its state, measured with tracemalloc (NumPy's arrays are traced;
the native engine's own scratch is not, and the planner counts it separately): a read holds its batch and one
block from the file, an iteration one object gradient at a time, the object constraint one real stack, the kz
filter one complex stack."""

import tracemalloc

import numpy as np
import pytest

import mspt
from mspt import ops
from mspt.ptycho import PtychoConfig, PtychoEngine, PtychoScan
from mspt.ptycho.regularise import apply_object_constraint, kz_filter


def traced_peak(fn):
    """(peak bytes NumPy and Python allocated while ``fn()`` ran, counting its result; its result)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        return tracemalloc.get_traced_memory()[1] - before, result
    finally:
        tracemalloc.stop()


def test_a_read_holds_the_batch_and_one_block_of_the_file(tmp_path, measured):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(3)
    data = rng.poisson(20.0, (16, 12, 32, 32)).astype(np.uint16)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["raster"] = data
        f["listed"] = data.reshape(-1, 32, 32)
    flat = data.reshape(-1, 32, 32)
    idx = rng.permutation(len(flat))[:96]
    calibration = dict(energy_eV=200e3, semiangle_mrad=25.0, detector_sampling_mrad=1.0, detector_transpose=True)
    with h5py.File(tmp_path / "scan.h5", "r") as f:
        raster = PtychoScan(f["raster"], scan_step_A=0.5, **calibration)
        listed = PtychoScan(f["listed"], positions_A=np.zeros((len(flat), 2)), **calibration)
        raster.read(idx[:2]), listed.read(idx[:2])  # h5py's first selections import and cache what they use
        repeated = np.concatenate([idx, idx[:5]])  # a position asked for twice comes back twice
        peak, got = traced_peak(lambda: raster.read(repeated))
        np.testing.assert_array_equal(got, np.swapaxes(flat[repeated], -1, -2).astype(np.float32))
        assert got.dtype == np.float32 and got.flags.c_contiguous
        row = data[0].nbytes
        rows = measured("ptycho read", "raster file: peak beyond the batch (scan rows)", (peak - got.nbytes) / row, 2.5)
        assert rows <= 2.5
        peak, got = traced_peak(lambda: listed.read(idx))
        np.testing.assert_array_equal(got, np.swapaxes(flat[idx], -1, -2).astype(np.float32))
        # The batch as float32, and the selection as read, in the file's dtype (uint16: half as many bytes).
        share = measured("ptycho read", "list-of-positions file: peak / batch", peak / got.nbytes, 1.6)
        assert share <= 1.6


@pytest.fixture(scope="module")
def small_scan():
    rng = np.random.default_rng(5)
    sampling, k, n = 0.25, 32, 8
    h = w = 80
    yy, xx = np.mgrid[:h, :w]
    phase = np.zeros((2, h, w))
    for s in range(2):
        for cy, cx in rng.uniform(10, 70, (25, 2)):
            phase[s] += 0.4 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    grid = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) - (n - 1) / 2) * 1.0
    probe = mspt.make_probe(200e3, 25, k, sampling, defocus_A=30, electrons=2e4)
    intensities = ops.multislice_forward(np.exp(1j * phase), probe, grid / sampling + 40, 4.0)
    data = rng.poisson(intensities).astype(np.float32).reshape(n, n, k, k)
    return PtychoScan(data, 200e3, 25, scan_step_A=1.0, reciprocal_sampling_invA=1 / (k * sampling),
                      defocus_A=30, defocus_reference="entrance")  # fmt: skip


def test_an_iteration_holds_one_object_gradient_at_a_time(small_scan, measured):
    config = PtychoConfig(n_slices=4, slice_thickness_A=2.0, batch_size=16, refine_probe_from=0,
                          refine_positions_from=0, position_search_A=0.0, stop="fixed", progress=False, threads=1)  # fmt: skip
    engine = PtychoEngine.start(small_scan, config, small_scan.check_patterns())
    engine.run_iteration()  # the curvature sample and the first-call caches, outside the measurement
    peak, _ = traced_peak(engine.run_iteration)
    batch = 16 * np.prod(small_scan.pattern_shape) * 4
    # One gradient stack (the pass's accumulator) and the batch: the object step works in the batch's
    # windows and needs no object-sized scratch (the rest is the probe's and the positions' small arrays).
    stacks = measured("ptycho iteration", "traced peak beyond the batch (object stacks)",
                      (peak - batch) / engine.slices.nbytes, 1.2)  # fmt: skip
    assert stacks <= 1.2


def test_the_constraint_and_the_kz_filter_work_in_one_stack(measured):
    rng = np.random.default_rng(9)
    shape = (8, 128, 128)
    slices = (rng.uniform(0.7, 1.2, shape) * np.exp(1j * rng.uniform(-1, 1, shape))).astype(np.complex64)
    expected = apply_object_constraint(slices, "amplitude_le_1")
    peak, got = traced_peak(lambda: apply_object_constraint(slices, "amplitude_le_1", out=slices))
    assert got is slices
    np.testing.assert_array_equal(got, expected)
    # Native, in place: no scratch at all.
    share = measured("ptycho object constraint", "in place: traced peak / stack", peak / slices.nbytes, 0.01)
    assert share <= 0.01
    peak, filtered = traced_peak(lambda: kz_filter(slices, 2.0, (0.2, 0.2), 100.0))
    assert filtered.dtype == np.complex64
    # The result's stack and one slice's weights (three float32 planes), with 5 % to spare.
    bound = 1.05 + 3 * 4 * shape[1] * shape[2] / slices.nbytes
    stacks = measured("ptycho kz filter", "traced peak / stack (result included)", peak / slices.nbytes, bound)
    assert stacks <= bound
