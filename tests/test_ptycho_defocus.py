"""The probe's refinement refines the defocus: started from a nominal defocus 25 A off the truth, the
reconstruction's probe_defocus_A (the refined probe's defocus read off its phase, referred to the scan's
defocus plane) lands much closer to the truth (abTEM-simulated SrTiO3, true defocus 100 A), and the depth
self-check warns."""

import dataclasses

import pytest

pytest.importorskip("abtem")
import ptycho_data as pd  # noqa: E402

from mspt.ptycho import PtychoConfig, reconstruct  # noqa: E402

N_SLICES = 4


@pytest.mark.filterwarnings("ignore::mspt.ReconstructionWarning")  # asserted on result.warnings below
@pytest.mark.parametrize("offset_A", [0.0, 25.0, -25.0])
def test_a_wrong_nominal_defocus_is_refined_towards_the_truth(offset_A, measured):
    ds = pd.dataset()
    truth = ds.scan("nominal", "entrance")
    scan = dataclasses.replace(truth, defocus_A=truth.defocus_A + offset_A)
    config = PtychoConfig(n_slices=N_SLICES, slice_thickness_A=ds.thickness_A / N_SLICES, iterations=60, progress=False)
    result = reconstruct(scan, config)
    error = measured("ptycho defocus", f"refined - true defocus (A), nominal {offset_A:+.0f} A off",
                     abs(result.probe_defocus_A - truth.defocus_A), max(2.5, 0.4 * abs(offset_A)))  # fmt: skip
    assert error <= max(2.5, 0.4 * abs(offset_A))
    # The depth self-check flags the wrong nominal defocus too (the object settles off the stack's centre).
    assert ("stack_drift" in [code for code, _ in result.warnings]) == (offset_A != 0)
