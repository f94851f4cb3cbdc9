"""Multislice ptychography on 4D-STEM scans simulated by abTEM (an independent code) with a known ground
truth: a SrTiO3 [001] slab 31 A thick (16 abTEM slices), 200 keV, 25 mrad, 16 x 16 positions 0.6 A apart,
Poisson noise at 1e5 e/A^2 (tests/ptycho_data.py). mspt reconstructs it with 8 slices."""

import dataclasses
import threading

import numpy as np
import pytest

pytest.importorskip("abtem")
import ptycho_data as pd  # noqa: E402

from mspt.ptycho import PtychoConfig, reconstruct  # noqa: E402

N_SLICES = 8


def run(ds, positions="nominal", **over):
    scan = ds.scan(positions, "entrance")
    config = PtychoConfig(n_slices=N_SLICES, slice_thickness_A=ds.thickness_A / N_SLICES, progress=False, **over)
    return reconstruct(scan, config)


def summed_phase_r(result, ds) -> float:
    """Pearson r of the reconstruction's summed phase against the ground truth, both band-limited to what
    the data resolve (ds.phase_cutoff_invA), over the scanned field of view."""
    phase = pd.bandlimit(result.summed_phase, ds.pixel_size_A, ds.phase_cutoff_invA)
    offset = np.mean(result.nominal_positions_A - result.object_origin_A, axis=0) / ds.pixel_size_A - np.mean(
        ds.nominal_positions_px, axis=0
    )
    return pd.register_phase(phase, ds, offset_px=offset, search_px=1.0).r


def position_error_A(result, ds) -> np.ndarray:
    """Distance of each refined position from the true one (A), the common shift removed (a shift of every
    position is a shift of the object, which the data cannot see)."""
    d = result.positions_A - ds.positions_A
    return np.sqrt(np.sum((d - d.mean(0)) ** 2, axis=1))


@pytest.fixture(scope="module")
def clean():
    return pd.dataset()


def test_summed_phase_correlates_with_the_ground_truth(clean, measured):
    result = run(clean, iterations=20)
    r = measured("ptycho SrTiO3 31 A", "summed-phase r vs truth (20 iterations)", summed_phase_r(result, clean), 0.98, ">")
    assert r >= 0.98
    assert result.loss[-1] < 0.5 * result.loss[0]


def test_perturbed_positions_are_recovered(measured):
    ds = pd.dataset(position_rms_A=0.5 / np.sqrt(2))  # 0.5 A rms in 2D
    before = position_error_A(type("Nominal", (), {"positions_A": ds.nominal_positions_A})(), ds)
    result = run(ds, iterations=30)
    after = position_error_A(result, ds)
    measured("ptycho positions", "rms error before (A)", float(np.sqrt(np.mean(before**2))), 0.45, ">")
    rms = measured("ptycho positions", "rms error after 30 iterations (A)", float(np.sqrt(np.mean(after**2))), 0.1)
    measured("ptycho positions", "summed-phase r vs truth", summed_phase_r(result, ds), 0.98, ">")
    assert rms <= 0.1
    assert after.max() < 0.3, "every position, including those that started in a local minimum"


def test_mistilt_is_recovered(measured):
    ds = pd.dataset(tilt_mrad=(4.0, -3.0))  # 5 mrad
    result = run(ds, iterations=30, refine_tilt_from=2)
    error = float(np.hypot(*(result.tilt_mrad - np.array(ds.tilt_mrad))))
    measured("ptycho mistilt", "tilt error (mrad) for a 5 mrad mistilt", error, 1.0)
    assert error <= 1.0


class CountingDataset:
    """An h5py dataset that records the largest number of patterns any single read returns, and the threads
    that read."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.shape = dataset.shape
        self.largest_read = 0
        self.readers = set()

    def __getitem__(self, key):
        block = self.dataset[key]
        patterns = int(np.prod(block.shape[:-2])) if block.ndim > 2 else 1
        self.largest_read = max(self.largest_read, patterns)
        self.readers.add(threading.current_thread().name.split("_")[0])
        return block


def test_a_scan_larger_than_the_memory_budget_streams_from_its_file(clean, tmp_path, measured):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.create_dataset("data", data=clean.data, chunks=(1, 16, 64, 64))
    with h5py.File(tmp_path / "scan.h5", "r") as f:
        counting = CountingDataset(f["data"])
        scan = dataclasses.replace(clean.scan("nominal", "entrance"), data=counting)
        config = PtychoConfig(n_slices=N_SLICES, slice_thickness_A=clean.thickness_A / N_SLICES, iterations=20,
                              progress=False, batch_size=32, memory_budget_bytes=clean.data.nbytes // 4)  # fmt: skip
        result = reconstruct(scan, config)
    # Whole scan rows (16 patterns) at a time, never the scan (256 patterns); the training batches are read
    # ahead, in a background thread, while the previous batch is fitted.
    assert counting.largest_read <= 16
    assert "mspt-read-ahead" in counting.readers
    r = measured("ptycho streamed from HDF5", "summed-phase r vs truth (20 iterations)", summed_phase_r(result, clean), 0.98, ">")
    assert r >= 0.98


@pytest.mark.gpu
def test_cuda_engine_equals_the_cpu_engine(clean):
    from mspt import _backend

    if not _backend.cuda_available():
        pytest.skip("no usable CUDA GPU")
    cpu = run(clean, iterations=5, device="cpu")
    gpu = run(clean, iterations=5, device="cuda")
    np.testing.assert_allclose(gpu.loss, cpu.loss, rtol=1e-3)
    assert np.linalg.norm(gpu.slices - cpu.slices) / np.linalg.norm(cpu.slices) < 1e-3
    assert np.linalg.norm(gpu.probe - cpu.probe) / np.linalg.norm(cpu.probe) < 1e-3


def test_mixed_state_probe_is_recovered_from_partially_coherent_data(measured):
    """Data from an incoherent source (two probe positions 0.45 A apart, equal weights, so a rank-2 density
    matrix); a 2-mode reconstruction recovers that density matrix, and a 1-mode one cannot."""
    import mspt

    ds = pd.dataset(source_size_A=0.8, source_samples=2)
    shifted = [
        mspt.make_probe(ds.energy_eV, ds.semiangle_mrad, ds.gpts_k, ds.pixel_size_A, defocus_A=ds.defocus_A,
                        aberrations=ds.aberrations, shift_px=o / ds.pixel_size_A).array[0]
        for o in ds.source_offsets_A
    ]  # fmt: skip
    truth = np.stack(shifted).reshape(len(shifted), -1).astype(np.complex128)
    rho_true = truth.T @ truth.conj() / len(shifted)
    true_fractions = np.linalg.eigvalsh(rho_true)[::-1][:2] / np.trace(rho_true).real

    def overlap(result):
        modes = result.probe.reshape(result.probe.shape[0], -1).astype(np.complex128)
        rho = modes.T @ modes.conj()
        inner = lambda a, b: np.real(np.vdot(a, b))  # noqa: E731  (Hilbert-Schmidt inner product)
        return inner(rho_true, rho) / np.sqrt(inner(rho_true, rho_true) * inner(rho, rho))

    one = run(ds, "true", iterations=60, probe_step=1.0, probe_modes=1)
    two = run(ds, "true", iterations=60, probe_step=1.0, probe_modes=2)
    fractions = np.sum(np.abs(two.probe) ** 2, axis=(1, 2)) / np.sum(np.abs(two.probe) ** 2)
    measured("ptycho 2-mode probe", "density-matrix overlap, 1 mode", overlap(one), 0.9)
    o2 = measured("ptycho 2-mode probe", "density-matrix overlap, 2 modes", overlap(two), 0.97, ">")
    measured("ptycho 2-mode probe", f"minor mode fraction (true {true_fractions[1]:.3f})", fractions[1], 0.25, ">")
    r1 = measured("ptycho 2-mode probe", "summed-phase r, 1 mode", summed_phase_r(one, ds), 0.97)
    r2 = measured("ptycho 2-mode probe", "summed-phase r, 2 modes", summed_phase_r(two, ds), 0.98, ">")
    assert o2 >= 0.97 and overlap(one) < 0.9
    assert abs(fractions[1] - true_fractions[1]) < 0.1
    assert r2 >= 0.98 and r2 > r1 + 0.02
