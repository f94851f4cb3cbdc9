"""The memory plan of the case users report failing on an 80 GB GPU in peer codes: 400 x 400 positions of
144 x 144 patterns, 13 slices, 5 probe modes (300 keV, 0.1 A pixels, 0.4 A steps). Printed, not run: the
plan needs the scan's shape and calibrations only. Planned for an 80 GB device and a 512 GB host, and for
a 128 GB host (where the 13 GB of patterns are still held) and a 32 GB one (where they are streamed).
"""

import numpy as np

from mspt.ptycho import PtychoConfig, PtychoScan, plan

GB = 10**9


class ShapeOnly:
    """A scan file's shape and dtype, without its 13 GB of patterns."""

    def __init__(self, shape):
        self.shape, self.dtype = shape, np.dtype(np.float32)

    def __getitem__(self, key):
        raise AssertionError("planning reads no pattern")


def large_case():
    scan = PtychoScan(data=ShapeOnly((400, 400, 144, 144)), energy_eV=300e3, semiangle_mrad=25.0, scan_step_A=0.4,
                      reciprocal_sampling_invA=1 / (144 * 0.1))  # fmt: skip
    config = PtychoConfig(n_slices=13, probe_modes=5, batch_size="auto", memory_budget_bytes="auto", device="cuda")
    return scan, config


def test_plan_of_the_large_case_on_an_80_gb_gpu(benchmark, report):
    scan, config = large_case()
    memory_plan = benchmark(plan, scan, config, host_available_bytes=512 * GB, device_free_bytes=80 * GB)
    print("\n" + str(memory_plan))
    assert memory_plan.fits
    report("memory plan 400x400 x 144^2, 13 slices, 5 modes, 80 GB GPU",
           device_peak_GB=memory_plan.device_peak_bytes / GB, host_peak_GB=memory_plan.host_peak_bytes / GB,
           batch=memory_plan.batch_size, gpu_chunk=memory_plan.cuda_chunk,
           streamed=memory_plan.patterns_streamed)  # fmt: skip
    for host_GB in (128, 32):
        smaller = plan(scan, config, host_available_bytes=host_GB * GB, device_free_bytes=80 * GB)
        print(f"\n{host_GB} GB host:\n{smaller}")
        report(f"memory plan, same case, {host_GB} GB host", host_peak_GB=smaller.host_peak_bytes / GB,
               streamed=smaller.patterns_streamed, fits=smaller.fits)  # fmt: skip
