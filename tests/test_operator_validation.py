"""Bad arguments to the operators are ValueErrors that name the argument and say what was expected."""

import numpy as np
import pytest

import mspt
from mspt import ops

PROBE = mspt.make_probe(200e3, 25, 16, 0.2)
SLICES = np.ones((2, 40, 40), np.complex64)
POS = np.array([[20.0, 20.0]])


def forward(**over):
    args = dict(slices=SLICES, probe=PROBE, positions_px=POS, dz_A=2.0) | over
    return ops.multislice_forward(**args)


@pytest.mark.parametrize(
    "over, message",
    [
        (dict(slices=np.ones((2, 2, 40, 40), np.complex64)), r"slices: expected shape \(S, H, W\)"),
        (dict(slices=np.ones((2, 40, 40), dtype=object)), "slices: expected a complex array"),
        (dict(probe=np.ones((1, 1, 16, 16), np.complex64), energy_eV=200e3, sampling_A=0.2), r"probe: expected shape \(modes, ny, nx\)"),
        (dict(positions_px=np.zeros((3, 3))), r"positions_px: expected shape \(B, 2\)"),
        (dict(positions_px=[[np.nan, 3.0]]), "positions_px: expected finite"),
        (dict(positions_px=[[20.0, 20.0], [3.0, 20.0]]), r"positions_px\[1\] = \(3.0+, 20.0+\).*outside the 40x40 object"),
        (dict(dz_A=0.0), "dz_A: expected a positive"),
        (dict(dz_A="thick"), "dz_A: expected a positive number"),
        (dict(tilt_mrad=(1.0, 2.0, 3.0)), "tilt_mrad: expected a finite pair"),
        (dict(device="tpu"), "device: expected one of"),
    ],
)
def test_forward_rejects(over, message):
    with pytest.raises(ValueError, match=message):
        forward(**over)


def test_energy_and_sampling_are_required_for_a_bare_array_probe():
    with pytest.raises(ValueError, match="energy_eV: required"):
        ops.multislice_forward(SLICES, PROBE.array, POS, 2.0)
    with pytest.raises(ValueError, match="sampling_A: required"):
        ops.multislice_forward(SLICES, PROBE.array, POS, 2.0, energy_eV=200e3)


def test_vjp_rejects_wrong_gradient_shape_and_unknown_wrt():
    with pytest.raises(ValueError, match=r"grad_intensities: expected shape \(1, 16, 16\)"):
        ops.multislice_vjp(np.ones((1, 8, 8)), SLICES, PROBE, POS, 2.0)
    with pytest.raises(ValueError, match="wrt: unknown"):
        ops.multislice_vjp(np.ones((1, 16, 16)), SLICES, PROBE, POS, 2.0, wrt=("object",))


def test_loss_grad_rejects_bad_counts_and_likelihood():
    with pytest.raises(ValueError, match="data: expected finite, non-negative counts"):
        ops.multislice_loss_grad(-np.ones((1, 16, 16)), SLICES, PROBE, POS, 2.0)
    with pytest.raises(ValueError, match=r"data: expected shape \(1, 16, 16\)"):
        ops.multislice_loss_grad(np.ones((2, 16, 16)), SLICES, PROBE, POS, 2.0)
    with pytest.raises(ValueError, match="likelihood: expected one of"):
        ops.multislice_loss_grad(np.ones((1, 16, 16)), SLICES, PROBE, POS, 2.0, likelihood="gaussian")


def test_binding_layer_checks_dtype_and_shape_itself():
    """The native layer validates on its own, for callers that bypass the Python wrappers."""
    from mspt import _core

    engine = _core.MultisliceCpu32(16, 16, 2, 1)
    args = (1.0, 0.025, 0.2, 0.2, 0.0, 0.0, 1.0, True)
    with pytest.raises(ValueError, match="slices: expected dtype complex64, got complex128"):
        engine.run(SLICES.astype(np.complex128), PROBE.array, POS, *args)
    with pytest.raises(ValueError, match=r"probe: this plan expects shape \(1, 16, 16\), got \(1, 8, 8\)"):
        engine.run(SLICES, PROBE.array[:, :8, :8].copy(), POS, *args)
    with pytest.raises(ValueError, match="slices: this plan expects 3 slices, got 2"):
        _core.MultisliceCpu32(16, 16, 3, 1).run(SLICES, PROBE.array, POS, *args)
    with pytest.raises(ValueError, match="positions_px: expected a C-contiguous array"):
        engine.run(SLICES, PROBE.array, np.zeros((2, 4))[:, ::2], *args)
