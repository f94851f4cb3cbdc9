"""mspt.torch: the autograd Functions' gradients are the native vector-Jacobian products, pass
torch.autograd.gradcheck on the double-precision multislice path, follow PyTorch's complex-gradient
convention, and (for the float32 projector) match central differences along random directions; the pose
gradient through a rotation-vector parameter is the native tangent gradient, chained through the SO(3)
left Jacobian away from w = 0. The documented Adam example reconstructs a simulated scan."""

from __future__ import annotations

import math
import pathlib
import runpy

import numpy as np
import pytest

import mspt
from mspt import _backend, ops

torch = pytest.importorskip("torch")
mt = pytest.importorskip("mspt.torch")

ENERGY, SAMPLING, DZ = 200e3, (0.2, 0.25), 2.5


def small_scan(seed=0, dtype=np.complex128):
    rng = np.random.default_rng(seed)
    probe = mspt.make_probe(ENERGY, 22, (12, 12), SAMPLING, defocus_A=25).array.astype(dtype)
    shape = (2, 24, 24)
    slices = (np.exp(1j * 0.3 * rng.standard_normal(shape)) * (1 + 0.05 * rng.standard_normal(shape))).astype(dtype)
    positions = np.array([[11.2, 12.3], [12.7, 11.1], [12.1, 12.9]])  # fractional parts away from 1/2
    return slices, probe, positions, rng


def leaf(array, dtype=None):
    return torch.tensor(array, dtype=dtype).requires_grad_()


def test_multislice_passes_gradcheck_on_the_double_path():
    slices, probe, positions, _ = small_scan()
    inputs = (leaf(slices), leaf(probe), leaf(positions), leaf([3.0, -2.0], torch.float64))

    def model(s, p, q, tilt):
        return mt.multislice(s, p, q, DZ, ENERGY, SAMPLING, tilt_mrad=tilt)

    assert model(*inputs).dtype == torch.float64
    assert torch.autograd.gradcheck(model, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_multislice_gradients_are_the_native_vjp(dtype):
    slices, probe, positions, rng = small_scan(1, dtype)
    s, p, q = leaf(slices), leaf(probe), leaf(positions)
    tilt = leaf([2.0, 1.0], torch.float64)
    intensities = mt.multislice(s, p, q, DZ, ENERGY, SAMPLING, tilt_mrad=tilt)
    weights = rng.standard_normal(intensities.shape).astype(intensities.detach().numpy().dtype)
    (intensities * torch.from_numpy(weights)).sum().backward()
    native = ops.multislice_vjp(weights, slices, probe, positions, DZ, ENERGY, SAMPLING, tilt_mrad=(2.0, 1.0))
    np.testing.assert_array_equal(s.grad.numpy(), native.slices)
    np.testing.assert_array_equal(p.grad.numpy(), native.probe)
    np.testing.assert_array_equal(q.grad.numpy(), native.positions_px)
    np.testing.assert_array_equal(tilt.grad.numpy(), native.tilt_mrad)
    assert s.grad.dtype == s.dtype and q.grad.dtype == torch.float64


@pytest.mark.parametrize("tilt_grad", [False, True], ids=["no-tilt-grad", "tilt-grad"])
def test_saved_waves_give_the_recomputed_gradients(tilt_grad, monkeypatch):
    """On the CPU the forward pass keeps its wavefields (a tape) for the backward pass by default; with
    save_waves=False, or a tape larger than SAVE_WAVES_MAX_BYTES, the backward pass recomputes them. The
    gradients are the same bit for bit either way, also when one graph is backpropagated twice."""
    slices, probe, positions, rng = small_scan(4, np.complex64)
    weights = torch.from_numpy(rng.standard_normal((len(positions), 12, 12)).astype(np.float32))

    def step(save_waves, backward_passes=1):
        s, p, q = leaf(slices), leaf(probe), leaf(positions)
        tilt = leaf([2.0, 1.0], torch.float64) if tilt_grad else torch.tensor([2.0, 1.0], dtype=torch.float64)
        intensities = mt.multislice(s, p, q, DZ, ENERGY, SAMPLING, tilt_mrad=tilt, save_waves=save_waves)
        tape = intensities.grad_fn.tape
        loss = (intensities * weights).sum()
        for _ in range(backward_passes):
            loss.backward(retain_graph=True)
        grads = [t.grad.numpy() for t in (s, p, q)] + ([tilt.grad.numpy()] if tilt_grad else [])
        return tape, grads

    kept, with_tape = step(None)
    none, recomputed = step(False)
    assert none is None and kept is not None and kept.with_tilt == tilt_grad
    for a, b in zip(with_tape, recomputed):
        np.testing.assert_array_equal(a, b)
    _, twice = step(True, backward_passes=2)  # the tape is read twice
    for a, b in zip(twice, recomputed):
        np.testing.assert_array_equal(a, 2 * b)

    monkeypatch.setattr(mt, "SAVE_WAVES_MAX_BYTES", kept.nbytes - 1)
    assert step(None)[0] is None
    assert step(True)[0] is not None  # an explicit request ignores the limit
    recorded = []  # nothing requires grad: nothing to keep
    forward = ops.multislice_forward

    def spy(*args, **kwargs):
        recorded.append(kwargs["record_tape"])
        return forward(*args, **kwargs)

    monkeypatch.setattr(ops, "multislice_forward", spy)
    s = torch.tensor(slices)
    assert mt.multislice(s, torch.tensor(probe), positions, DZ, ENERGY, SAMPLING, save_waves=True).grad_fn is None
    assert recorded == [False]
    with pytest.raises(ValueError, match="save_waves"):
        mt.multislice(s, torch.tensor(probe), positions, DZ, ENERGY, SAMPLING, save_waves="yes")


def test_complex_gradient_is_torchs_convention(measured):
    """PyTorch's gradient of a real loss is dL/dRe + i dL/dIm: the directional derivative along a complex
    direction v is Re <grad, v>, and the same loss written in plain torch (|FFT|^2 of one slice) gets the
    same gradient from torch's own autograd."""
    slices, probe, positions, rng = small_scan(2)
    s = leaf(slices[:1])
    intensities = mt.multislice(
        s, torch.tensor(probe), torch.tensor(positions[:1]), DZ, ENERGY, SAMPLING, bandlimit=False
    )
    target = torch.from_numpy(rng.uniform(0, 1e-3, intensities.shape))
    loss = ((intensities - target) ** 2).sum()
    loss.backward()

    def loss_at(e, v):
        I = ops.multislice_forward(slices[:1] + e * v, probe, positions[:1], DZ, ENERGY, SAMPLING, bandlimit=False)
        return np.sum((I - target.numpy()) ** 2)

    v = rng.standard_normal(slices[:1].shape) + 1j * rng.standard_normal(slices[:1].shape)
    fd = (loss_at(1e-6, v) - loss_at(-1e-6, v)) / 2e-6
    predicted = float(np.sum(np.real(np.conj(s.grad.numpy()) * v)))
    rel = measured(
        "torch multislice", "directional derivative vs central difference (rel)", abs(predicted - fd) / abs(fd), 1e-6
    )
    assert rel < 1e-6

    # The same single-slice model in plain torch: window, shift of the integer-placed probe, |FFT|^2.
    y, x = positions[0]
    iy, ix = round(y), round(x)
    ky = torch.fft.fftfreq(12, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(12, dtype=torch.float64)[None]
    ramp = torch.exp(-2j * math.pi * (ky * (y - iy) + kx * (x - ix)))
    shifted = torch.fft.ifft2(torch.fft.fft2(torch.tensor(probe[0])) * ramp)
    s2 = leaf(slices[:1])
    window = s2[0, iy - 6 : iy + 6, ix - 6 : ix + 6]
    far = torch.fft.fftshift(torch.fft.fft2(shifted * window, norm="ortho"))
    plain = ((far.abs() ** 2 - target[0]) ** 2).sum()
    plain.backward()
    rel = measured(
        "torch multislice",
        "gradient vs plain-torch autograd (rel)",
        (torch.linalg.norm(s2.grad - s.grad) / torch.linalg.norm(s.grad)).item(),
        1e-10,
    )
    assert rel < 1e-10


def gaussian_volume(shape, centres, sigma):
    z, y, x = np.meshgrid(*(np.arange(n) - n // 2 for n in shape), indexing="ij")
    return sum(np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2)) for cx, cy, cz in centres)


def projection_problem():
    shape = (24, 26, 28)  # blobs of sigma = 5 voxels: smooth enough for central differences through trilinear kinks
    volume = gaussian_volume(shape, [(2.0, -1.0, 1.5), (-3.0, 2.5, -2.0), (1.0, 3.0, -1.0)], 5.0).astype(np.float32)
    rotation = ops.tilt_series_rotations([-25.0, 5.0, 35.0])
    shifts = np.array([[0.3, -0.2], [0.0, 0.4], [-0.25, 0.1]])
    target = ops.project(volume, ops.tilt_series_rotations([-24.0, 6.0, 33.5]), shifts + 0.3, 0.8).astype(np.float64)
    return volume, rotation, shifts, target


def test_project_gradients_are_the_native_vjp():
    volume, rotation, shifts, target = projection_problem()
    v, sh = leaf(volume), leaf(shifts)
    w = torch.zeros((3, 3), dtype=torch.float64, requires_grad=True)
    projections = mt.project(v, mt.rotation_update(w, torch.from_numpy(rotation)), sh, 0.8)
    residual = projections.double() - torch.from_numpy(target)
    (0.5 * (residual**2).sum()).backward()
    native = ops.project_vjp(residual.detach().numpy(), volume, rotation, shifts, 0.8)
    np.testing.assert_array_equal(v.grad.numpy(), native.volume)
    np.testing.assert_array_equal(sh.grad.numpy(), native.shifts_A)
    # w.grad passes through matrix_exp's autograd at w = 0: the tangent gradient up to float64 rounding.
    np.testing.assert_allclose(
        w.grad.numpy(), native.rotation_vector, rtol=1e-12, atol=1e-12 * np.abs(native.rotation_vector).max()
    )


def left_jacobian(w):
    """SO(3) left Jacobian: exp([w + d]x) = exp([J d]x) exp([w]x) to first order (written independently)."""
    theta = np.linalg.norm(w)
    k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    return np.eye(3) + (1 - math.cos(theta)) / theta**2 * k + (theta - math.sin(theta)) / theta**3 * k @ k


def test_rotation_vector_gradient_away_from_zero_is_the_left_jacobian_chain():
    volume, rotation, shifts, target = projection_problem()
    w0 = np.array([[0.02, -0.01, 0.015], [-0.03, 0.02, 0.0], [0.01, 0.01, -0.02]])
    w = leaf(w0)
    rot_w = mt.rotation_update(w, torch.from_numpy(rotation))
    residual = mt.project(torch.from_numpy(volume), rot_w, torch.from_numpy(shifts), 0.8).double() - torch.from_numpy(
        target
    )
    (0.5 * (residual**2).sum()).backward()
    tangent = ops.project_vjp(
        residual.detach().numpy(), volume, rot_w.detach().numpy(), shifts, 0.8, wrt="rotation"
    ).rotation_vector
    expected = np.stack([left_jacobian(wt).T @ g for wt, g in zip(w0, tangent)])
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


def test_project_gradient_matches_central_differences_along_random_directions(measured):
    """Through the float32 projector (no double path): a directional derivative in (volume, w, shifts)
    jointly against a central difference at float32 tolerance (smooth blobs keep the trilinear kinks small)."""
    volume, rotation, shifts, target = projection_problem()
    rng = np.random.default_rng(4)
    dv, dw, ds = rng.standard_normal(volume.shape), rng.standard_normal((3, 3)) * 0.05, rng.standard_normal((3, 2))

    def loss(e):
        w = torch.from_numpy(e * dw)
        p = mt.project(
            torch.from_numpy((volume + e * dv).astype(np.float32)),
            mt.rotation_update(w, rotation),
            torch.from_numpy(shifts + e * ds),
            0.8,
        )
        return 0.5 * float(((p.double() - torch.from_numpy(target)) ** 2).sum())

    v, w, s = leaf(volume), torch.zeros((3, 3), dtype=torch.float64, requires_grad=True), leaf(shifts)
    p = mt.project(v, mt.rotation_update(w, rotation), s, 0.8)
    (0.5 * ((p.double() - torch.from_numpy(target)) ** 2).sum()).backward()
    predicted = float((v.grad.double().numpy() * dv).sum() + (w.grad.numpy() * dw).sum() + (s.grad.numpy() * ds).sum())
    h = 1e-3
    fd = (loss(h) - loss(-h)) / (2 * h)
    rel = measured(
        "torch project", "directional derivative vs central difference (rel)", abs(predicted - fd) / abs(fd), 1e-3
    )
    assert rel < 1e-3, (predicted, fd)


def test_rotation_matrix_gradient_is_tangent_and_broadcast_shift_is_summed():
    volume, rotation, shifts, target = projection_problem()
    rot = leaf(rotation)
    one_shift = leaf([0.2, -0.1], torch.float64)
    residual = mt.project(torch.from_numpy(volume), rot, one_shift, 0.8).double() - torch.from_numpy(target)
    (0.5 * (residual**2).sum()).backward()
    native = ops.project_vjp(residual.detach().numpy(), volume, rotation, np.array([0.2, -0.1]), 0.8)
    # <dL/dR, [e_a]x R> recovers the tangent gradient component a.
    basis = np.eye(3)
    for t in range(3):
        for a in range(3):
            e = mt.skew(torch.from_numpy(basis[a])).numpy()
            assert np.sum(rot.grad.numpy()[t] * (e @ rotation[t])) == pytest.approx(
                native.rotation_vector[t, a], rel=1e-12
            )
    np.testing.assert_allclose(one_shift.grad.numpy(), native.shifts_A.sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda s, p, q: mt.multislice(s.real, p, q, DZ, ENERGY, SAMPLING),
            ValueError,
            "slices: expected a complex64 or complex128 tensor",
        ),
        (
            lambda s, p, q: mt.multislice(s.numpy(), p, q, DZ, ENERGY, SAMPLING),
            TypeError,
            "slices: expected a torch.Tensor",
        ),
        (
            lambda s, p, q: mt.multislice(s, p.to("meta"), q, DZ, ENERGY, SAMPLING),
            ValueError,
            "probe: a tensor on meta, but slices is on cpu",
        ),
        (
            lambda s, p, q: mt.multislice(s, p, q.to(torch.complex128), DZ, ENERGY, SAMPLING),
            ValueError,
            "positions_px: expected a real floating tensor",
        ),
        (lambda s, p, q: mt.multislice(s, p, q, -1.0, ENERGY, SAMPLING), ValueError, "dz_A: expected a positive"),
        (
            lambda s, p, q: mt.project(torch.ones(4, 4, 4, dtype=torch.int64), np.eye(3)[None]),
            ValueError,
            "volume: expected a real floating tensor",
        ),
        (
            lambda s, p, q: mt.project(torch.ones(4, 4, 4), torch.eye(3)[None].to("meta")),
            ValueError,
            "rotation: a tensor on meta",
        ),
    ],
)
def test_bad_tensors_name_the_argument(call, error, message):
    slices, probe, positions, _ = small_scan()
    with pytest.raises(error, match=message):
        call(torch.from_numpy(slices), torch.from_numpy(probe), torch.from_numpy(positions))


@pytest.mark.gpu
def test_cuda_tensors_match_the_cpu():
    if not (_backend.cuda_available() and torch.cuda.is_available()):
        pytest.skip("no usable CUDA backend and torch CUDA device")
    slices, probe, positions, rng = small_scan(5, np.complex64)
    grads = {}
    for device in ("cpu", "cuda"):
        s, p = (torch.from_numpy(a).to(device).requires_grad_() for a in (slices, probe))
        intensities = mt.multislice(s, p, torch.from_numpy(positions).to(device), DZ, ENERGY, SAMPLING)
        assert intensities.device.type == device
        intensities.square().sum().backward()
        grads[device] = (intensities.detach().cpu(), s.grad.cpu(), p.grad.cpu())
    for cpu, gpu in zip(grads["cpu"], grads["cuda"]):
        assert (torch.linalg.norm(gpu - cpu) / torch.linalg.norm(cpu)).item() < 1e-3


def test_documented_adam_example_reconstructs_the_scan(measured, capsys):
    """docs/examples/torch_adam.py, the page's PyTorch example, run as written: 50 Adam steps recover the
    summed phase of a 2-slice object (correlation 0.989 measured)."""
    example = pathlib.Path(__file__).resolve().parents[1] / "docs" / "examples" / "torch_adam.py"
    result = runpy.run_path(str(example), run_name="__main__")
    assert "summed-phase correlation" in capsys.readouterr().out
    correlation = measured("torch Adam example", "summed-phase correlation", result["correlation"], 0.97, ">")
    assert correlation > 0.97
