"""Likelihoods against closed forms and finite differences."""

import numpy as np
import pytest

from mspt import ops

RNG = np.random.default_rng(2)


@pytest.mark.parametrize("kind", ["poisson", "amplitude"])
def test_likelihood_closed_form_and_gradient(kind):
    i = RNG.uniform(0.5, 20, (4, 9, 9))
    d = RNG.poisson(i).astype(float)
    loss, grad = ops.likelihood(i, d, kind, eps=0.0)
    if kind == "poisson":
        with np.errstate(divide="ignore", invalid="ignore"):
            expected = np.sum(i - d + np.where(d > 0, d * np.log(d / i), 0.0))
    else:
        expected = np.sum((np.sqrt(i) - np.sqrt(d)) ** 2)
    assert loss == pytest.approx(expected, rel=1e-12)
    direction = RNG.standard_normal(i.shape)
    h = 1e-6
    fd = (ops.likelihood(i + h * direction, d, kind, eps=0.0)[0] - ops.likelihood(i - h * direction, d, kind, eps=0.0)[0]) / (2 * h)
    assert np.sum(grad * direction) == pytest.approx(fd, rel=1e-6)


def test_poisson_deviance_is_zero_at_a_perfect_fit_and_mask_drops_pixels():
    i = RNG.uniform(1, 5, (3, 8, 8))
    loss, grad = ops.likelihood(i, i, "poisson", eps=0.0)
    assert loss == pytest.approx(0.0, abs=1e-10)
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)
    d = i + 1.0
    mask = np.zeros(i.shape, bool)
    mask[:, :4] = True
    full, _ = ops.likelihood(i[:, :4], d[:, :4], "poisson")
    masked, g = ops.likelihood(i, d, "poisson", mask=mask)
    assert masked == pytest.approx(full, rel=1e-12)
    assert np.all(g[:, 4:] == 0)


def test_likelihood_rejects_mismatched_shapes_and_kinds():
    with pytest.raises(ValueError, match="data: expected the shape of intensity"):
        ops.likelihood(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="kind: expected one of"):
        ops.likelihood(np.ones(3), np.ones(3), kind="l2")
