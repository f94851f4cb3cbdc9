"""The constraints and regularisers of the ptychography engine, each against what it must do."""

import numpy as np
import pytest

from mspt.ptycho.regularise import (
    apply_object_constraint,
    kz_filter,
    orthogonalise_modes,
    shift_slices,
    slice_shear_rate,
    tv_step,
)

RNG = np.random.default_rng(8)


def blobs(shape, count=40, sigma=2.0):
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros(shape)
    for cy, cx in RNG.uniform(0, [h, w], (count, 2)):
        out += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return out


def test_amplitude_constraints():
    o = (RNG.uniform(0.5, 1.5, (2, 8, 8)) * np.exp(1j * RNG.uniform(-3, 3, (2, 8, 8)))).astype(np.complex64)
    clipped = apply_object_constraint(o, "amplitude_le_1")
    np.testing.assert_allclose(np.abs(clipped), np.minimum(np.abs(o), 1), rtol=1e-6)
    np.testing.assert_allclose(np.angle(clipped), np.angle(o), atol=1e-6)
    np.testing.assert_allclose(np.abs(apply_object_constraint(o, "phase_only")), 1, rtol=1e-6)
    assert apply_object_constraint(o, "none") is o
    for constraint in ("amplitude_le_1", "phase_only", "none"):  # in place: the same numbers, in the same array
        inplace = o.copy()
        assert apply_object_constraint(inplace, constraint, out=inplace) is inplace
        np.testing.assert_array_equal(inplace, apply_object_constraint(o, constraint))


def test_kz_filter_keeps_columns_along_the_beam_and_damps_tilted_ones():
    phase = 0.3 * blobs((64, 64))
    columns = np.exp(1j * np.repeat(phase[None], 8, 0))
    np.testing.assert_allclose(kz_filter(columns, 2.0, (0.2, 0.2), 300.0), columns, atol=1e-5)
    # The same columns tilted by 10 mrad: each slice shifted by 2 A * 0.01 / 0.2 A = 0.1 px more.
    tilted = shift_slices(columns, np.column_stack([np.zeros(8), 0.1 * np.arange(8)]))
    filtered = kz_filter(tilted, 2.0, (0.2, 0.2), 300.0)
    before = np.abs(slice_shear_rate(tilted)[1])
    after = np.abs(slice_shear_rate(filtered)[1])
    assert before == pytest.approx(0.1, rel=0.05)
    assert after < 0.5 * before


def test_kz_filter_in_single_precision_matches_double(measured):
    phase = 0.3 * blobs((64, 64))
    stack = 0.95 * np.exp(1j * np.stack([np.roll(phase, s, axis=1) for s in range(6)]))  # tilted columns
    double = kz_filter(stack, 2.0, (0.2, 0.2), 100.0)
    single = kz_filter(stack.astype(np.complex64), 2.0, (0.2, 0.2), 100.0)
    assert single.dtype == np.complex64 and double.dtype == np.complex128
    assert np.abs(double - stack).max() > 0.1  # the filter changes this stack
    error = measured("kz filter", "complex64 vs complex128 max |difference|", np.abs(single - double).max(), 1e-5)
    assert error < 1e-5


def test_shear_rate_of_a_sheared_stack():
    phase = 0.3 * blobs((80, 80))
    stack = np.exp(1j * np.repeat(phase[None], 6, 0))
    sheared = shift_slices(stack, np.column_stack([0.15 * np.arange(6), -0.08 * np.arange(6)]))
    np.testing.assert_allclose(slice_shear_rate(sheared), [0.15, -0.08], atol=0.01)
    np.testing.assert_allclose(slice_shear_rate(stack), [0.0, 0.0], atol=1e-6)


def test_orthogonalised_modes_keep_the_density_matrix():
    modes = (RNG.standard_normal((3, 10, 10)) + 1j * RNG.standard_normal((3, 10, 10))).astype(np.complex64)
    ortho = orthogonalise_modes(modes)
    a, b = modes.reshape(3, -1).astype(complex), ortho.reshape(3, -1).astype(complex)
    np.testing.assert_allclose(a.T @ a.conj(), b.T @ b.conj(), atol=1e-4)
    gram = b.conj() @ b.T
    assert np.abs(gram - np.diag(np.diag(gram))).max() < 1e-3 * np.abs(gram).max()
    assert np.all(np.diff(np.diag(gram).real) <= 0), "strongest mode first"


def test_tv_step_lowers_total_variation_and_keeps_amplitude():
    phase = 0.5 * blobs((48, 48)) + 0.2 * RNG.standard_normal((48, 48))
    o = (0.9 * np.exp(1j * phase))[None].astype(np.complex64)

    def tv(x):
        p = np.angle(x[0])
        return np.abs(np.diff(p, axis=0)).sum() + np.abs(np.diff(p, axis=1)).sum()

    smoothed = tv_step(o, 0.05)
    assert tv(smoothed) < 0.9 * tv(o)
    np.testing.assert_allclose(np.abs(smoothed), 0.9, rtol=1e-5)
