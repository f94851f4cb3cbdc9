"""mspt.probe_defocus_A reads a probe's defocus off its phase: checked on abTEM's probes (an independent code,
its own sign convention) placed off the window's centre, and on a shifted mixed-state probe."""

import numpy as np
import pytest

import mspt


@pytest.mark.parametrize("defocus_A", [-80.0, 0.0, 55.0, 200.0])
def test_the_defocus_of_abtem_probes_is_read_back(defocus_A):
    abtem = pytest.importorskip("abtem")
    probe = abtem.Probe(semiangle_cutoff=25, energy=200e3, defocus=defocus_A, gpts=64, sampling=0.2, soft=False)
    wave = probe.build(scan=np.array([[3.7, 8.1]])).compute()  # off the window's centre: a phase ramp
    array = np.asarray(wave.array).reshape(64, 64).T.astype(np.complex64)  # abTEM's (x, y) -> (y, x)
    assert mspt.probe_defocus_A(array, 200e3, 0.2) == pytest.approx(defocus_A, abs=0.05)


def test_a_shifted_mixed_state_probe_reads_its_coherent_defocus():
    probe = mspt.make_probe(200e3, 25, (64, 64), (0.2, 0.2), defocus_A=37.0, shift_px=(1.3, -0.7), modes=3)
    assert mspt.probe_defocus_A(probe) == pytest.approx(37.0, abs=0.05)


def test_bad_probes_are_refused():
    with pytest.raises(ValueError, match="probe: expected complex modes"):
        mspt.probe_defocus_A(np.ones((64, 64)), 200e3, 0.2)
    with pytest.raises(ValueError, match="energy_eV, sampling_A"):
        mspt.probe_defocus_A(np.ones((64, 64), np.complex64))
    with pytest.raises(ValueError, match="no aperture"):
        mspt.probe_defocus_A(np.zeros((64, 64), np.complex64), 200e3, 0.2)
