"""Joint refinement: the time of one full pass over every tilt's data (loss and volume gradient through slab
projections, multislice and their adjoints) against the sum of one ptychography iteration per tilt on the
same data (same slices, positions, batch size and threads). Ratio measured in one run.

Data: the demo's geometry scaled down (a 2-cell SrTiO3 cube, 5 tilts over +-60 degrees, a 16 x 16 scan of
64^2 patterns at 0.2 A; abTEM potentials through mspt.simulate), 4 slices of 4 A; the joint volume at the
ptychography pixel (the stage's default).
"""

from __future__ import annotations

import numpy as np
import pytest
from timing import best_of, timed_pedantic

pytest.importorskip("abtem")

from mspt.io import load_tiltseries  # noqa: E402
from mspt.joint import JointModel, JointTilt  # noqa: E402
from mspt.joint.start import ScanPatterns, grid_shape  # noqa: E402
from mspt.joint.volume_block import total_loss_grad  # noqa: E402
from mspt.ptycho import PtychoConfig, PtychoEngine  # noqa: E402

N_SLICES, DZ, BATCH = 4, 4.0, 64


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    from mspt.simulate import nanocube, tiltseries

    path = tmp_path_factory.mktemp("joint_bench") / "series.h5"
    tiltseries(nanocube("SrTiO3", 2), np.linspace(-60, 60, 5), path, scan_shape=(16, 16), scan_step_A=0.8,
               gpts=64, sampling_A=0.2, dose_e_per_A2=1e5, seed=0)  # fmt: skip
    return load_tiltseries(path)


def test_joint_pass_against_per_tilt_ptychography_iterations(series, benchmark, report):
    config = PtychoConfig(n_slices=N_SLICES, slice_thickness_A=DZ, batch_size=BATCH, iterations=1, progress=False,
                          validation_fraction=0.0, stop="fixed", threads=None)  # fmt: skip
    engines = []
    for index in range(series.n_tilts):
        scan = series.scan(index)
        engines.append(PtychoEngine.start(scan, config, scan.check_patterns()))
    pixel = float(engines[0].sampling_A[0])
    positions_A = [series.scan(i).positions() for i in range(series.n_tilts)]
    window = engines[0].probe.shape[-2:]
    shape = grid_shape(positions_A, window, pixel)
    model = JointModel(voxel_size_A=pixel, n_slices=N_SLICES, slice_thickness_A=DZ, energy_eV=series.calibration.energy_eV,
                       pixel_size_A=pixel, shape=shape, batch_size=BATCH)  # fmt: skip
    # The stage's volume: the scanned field of view (the tomography's "auto" shape) at the ptychography pixel.
    n = 2 * round(np.abs(positions_A[0]).max() / pixel)
    volume = np.full((n, n, n), 1.0, np.float32)  # the pass's cost does not depend on the values
    tilts = [JointTilt(series.rotations[i], np.zeros(2), engines[i].probe, positions_A[i] / pixel + np.array(shape) // 2,
                       ScanPatterns(series.scan(i))) for i in range(series.n_tilts)]  # fmt: skip

    def ptycho_iterations():
        for engine in engines:
            engine.run_iteration()

    def joint_pass():
        return total_loss_grad(model, volume, tilts)

    ptycho_s = best_of(ptycho_iterations, 2)
    (loss, grad), joint_s = timed_pedantic(benchmark, joint_pass, rounds=2)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    ratio = joint_s / ptycho_s
    benchmark.extra_info.update(joint_pass_s=joint_s, ptycho_iterations_s=ptycho_s, ratio=ratio)
    report("joint pass over all tilts / one ptycho iteration per tilt", joint_pass_s=joint_s,
           ptycho_iterations_s=ptycho_s, ratio=ratio, tilts=series.n_tilts, volume=str(volume.shape))  # fmt: skip
