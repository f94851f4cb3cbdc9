"""multislice_vjp and multislice_loss_grad against central finite differences (double-precision path),
and the single-precision path against the double one."""

import math

import numpy as np
import pytest

import mspt
from mspt import ops

ENERGY, SAMPLING, DZ = 200e3, (0.2, 0.25), 2.5


def crandn(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.fixture(scope="module", params=[(1, 3, (24, 24)), (2, 4, (20, 28))], ids=["1mode-3slices", "2modes-4slices"])
def case(request):
    modes, S, window = request.param
    rng = np.random.default_rng(7)
    probe = mspt.make_probe(ENERGY, 22, window, SAMPLING, defocus_A=25, modes=modes).array.astype(np.complex128)
    probe = probe + 0.05 * crandn(rng, *probe.shape) * np.abs(probe).max()
    H, W = 44, 52
    slices = np.exp(1j * 0.4 * rng.standard_normal((S, H, W))) * (1 + 0.1 * rng.standard_normal((S, H, W)))
    positions = np.column_stack([rng.uniform(14, 30, 6), rng.uniform(16, 36, 6)])
    tilt = np.array([4.0, -3.0])
    data = rng.poisson(2e3 * ops.multislice_forward(slices, probe, positions, DZ, ENERGY, SAMPLING, tilt_mrad=tilt)).astype(float)
    return dict(slices=slices, probe=probe, positions=positions, tilt=tilt, data=data, rng=rng)


def quadratic_loss(c, target, **over):
    args = dict(slices=c["slices"], probe=c["probe"], positions=c["positions"], tilt=c["tilt"]) | over
    I = ops.multislice_forward(args["slices"], args["probe"], args["positions"], DZ, ENERGY, SAMPLING, tilt_mrad=args["tilt"])
    return 0.5 * np.sum((I - target) ** 2), I - target


def central_difference(f, h):
    return (f(h) - f(-h)) / (2 * h)


def directional(grad, direction):
    """<grad, direction> in the real inner product: the directional derivative the gradient predicts."""
    return float(np.sum(np.real(np.conj(grad) * direction)))


@pytest.mark.parametrize("wrt", ["slices", "probe", "positions", "tilt"])
def test_vjp_matches_finite_differences(case, wrt):
    rng = case["rng"]
    target = 0.5 * ops.multislice_forward(case["slices"], case["probe"], case["positions"], DZ, ENERGY, SAMPLING)
    _, residual = quadratic_loss(case, target)
    grads = ops.multislice_vjp(residual, case["slices"], case["probe"], case["positions"], DZ, ENERGY, SAMPLING, tilt_mrad=case["tilt"])
    key = {"positions": "positions", "tilt": "tilt"}.get(wrt, wrt)
    value = case[key]
    direction = crandn(rng, *value.shape) if np.iscomplexobj(value) else rng.standard_normal(value.shape)
    h = 1e-6 if wrt != "tilt" else 1e-4
    fd = central_difference(lambda e: quadratic_loss(case, target, **{key: value + e * direction})[0], h)
    grad = {"slices": grads.slices, "probe": grads.probe, "positions": grads.positions_px, "tilt": grads.tilt_mrad}[wrt]
    predicted = directional(grad, direction)
    assert abs(predicted - fd) <= 1e-6 * max(abs(fd), 1e-12) + 1e-12, (predicted, fd)


@pytest.mark.parametrize("likelihood", ["poisson", "amplitude"])
def test_fused_loss_gradient_matches_finite_differences(case, likelihood):
    rng = case["rng"]
    scale = math.sqrt(2e3)
    probe = case["probe"] * scale

    def loss(**over):
        a = dict(slices=case["slices"], probe=probe, positions=case["positions"], tilt=case["tilt"]) | over
        return ops.multislice_loss_grad(
            case["data"], a["slices"], a["probe"], a["positions"], DZ, ENERGY, SAMPLING,
            likelihood=likelihood, tilt_mrad=a["tilt"], wrt=(),
        ).loss  # fmt: skip

    g = ops.multislice_loss_grad(case["data"], case["slices"], probe, case["positions"], DZ, ENERGY, SAMPLING,
                                 likelihood=likelihood, tilt_mrad=case["tilt"])  # fmt: skip
    assert g.loss == pytest.approx(loss(), rel=1e-12)
    assert g.loss_per_position.sum() == pytest.approx(g.loss, rel=1e-12)
    for key, grad, h in [("slices", g.slices, 1e-6), ("probe", g.probe, 1e-6), ("positions", g.positions_px, 1e-6), ("tilt", g.tilt_mrad, 1e-4)]:
        value = {"slices": case["slices"], "probe": probe, "positions": case["positions"], "tilt": case["tilt"]}[key]
        direction = crandn(rng, *value.shape) if np.iscomplexobj(value) else rng.standard_normal(value.shape)
        fd = central_difference(lambda e: loss(**{key: value + e * direction}), h)
        assert directional(grad, direction) == pytest.approx(fd, rel=1e-5), key


def test_fused_gradient_equals_likelihood_then_vjp(case):
    """The fused pass equals forward -> likelihood -> vjp done in separate calls."""
    probe = case["probe"] * math.sqrt(2e3)
    args = (case["slices"], probe, case["positions"], DZ, ENERGY, SAMPLING)
    fused = ops.multislice_loss_grad(case["data"], *args, tilt_mrad=case["tilt"])
    intensity = ops.multislice_forward(*args, tilt_mrad=case["tilt"])
    k = np.fft.fftshift(np.fft.fftfreq(probe.shape[1], SAMPLING[0]))[:, None] ** 2 + np.fft.fftshift(np.fft.fftfreq(probe.shape[2], SAMPLING[1]))[None] ** 2
    band = np.broadcast_to(k < ops.bandlimit_cutoff_invA(SAMPLING) ** 2, intensity.shape)
    loss, dldi = ops.likelihood(intensity, case["data"], "poisson", mask=band)
    split = ops.multislice_vjp(dldi, *args, tilt_mrad=case["tilt"])
    assert fused.loss == pytest.approx(loss, rel=1e-12)
    for a, b in [(fused.slices, split.slices), (fused.probe, split.probe), (fused.positions_px, split.positions_px), (fused.tilt_mrad, split.tilt_mrad)]:
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())


def numpy_likelihood_terms(intensity, data, kind, eps=1e-6):
    """Per-pixel likelihood (float64, written independently of the engine) and the sum of its terms'
    magnitudes, which bounds the rounding error of a computation in another precision."""
    ie, d = intensity.astype(np.float64) + eps, data.astype(np.float64)
    if kind == "poisson":
        log_term = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0) / ie), 0.0)
        return ie - d + log_term, np.abs(ie) + np.abs(d) + np.abs(log_term)
    sq, sd = np.sqrt(ie), np.sqrt(d)
    return (sq - sd) ** 2, (sq + sd) ** 2


@pytest.mark.parametrize("likelihood", ["poisson", "amplitude"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["complex64", "complex128"])
def test_loss_only_equals_the_loss_of_the_full_gradient_call(case, likelihood, dtype, measured):
    """wrt=() stops after the forward pass and the likelihood: the forward pass does the same operations on
    the same values (only where its waves are kept differs) and the likelihood is the same code in the same
    order, so the loss and the per-position losses equal the full call's bit for bit. Both also match the
    likelihood of the forward intensities written in numpy, to the rounding of the engine's precision."""
    s, p = case["slices"].astype(dtype), (case["probe"] * math.sqrt(2e3)).astype(dtype)
    args = (case["data"], s, p, case["positions"], DZ, ENERGY, SAMPLING)
    kw = dict(likelihood=likelihood, tilt_mrad=case["tilt"])
    full = ops.multislice_loss_grad(*args, **kw)
    only = ops.multislice_loss_grad(*args, wrt=(), **kw)
    assert only.slices is None and only.probe is None and only.positions_px is None and only.tilt_mrad is None
    assert only.loss == full.loss
    np.testing.assert_array_equal(only.loss_per_position, full.loss_per_position)

    intensity = ops.multislice_forward(*args[1:], tilt_mrad=case["tilt"])
    k2 = (np.fft.fftshift(np.fft.fftfreq(p.shape[1], SAMPLING[0]))[:, None] ** 2
          + np.fft.fftshift(np.fft.fftfreq(p.shape[2], SAMPLING[1]))[None] ** 2)  # fmt: skip
    band = k2 < ops.bandlimit_cutoff_invA(SAMPLING) ** 2
    terms, magnitude = numpy_likelihood_terms(intensity, case["data"].astype(intensity.dtype), likelihood)
    expected = (terms * band).sum(axis=(1, 2))
    # A few roundings of each term in the engine's precision, summed in double.
    unit = np.finfo(intensity.dtype).eps
    bound = 8 * unit * (magnitude * band).sum(axis=(1, 2))
    error = np.abs(only.loss_per_position - expected)
    measured(f"loss only {likelihood} {np.dtype(dtype).name} M={p.shape[0]}", "max error / rounding bound",
             float((error / bound).max()), 1.0)  # fmt: skip
    assert np.all(error <= bound), (error, bound)


@pytest.mark.gpu
@pytest.mark.parametrize("likelihood", ["poisson", "amplitude"])
def test_loss_only_on_the_gpu_equals_the_full_gradient_calls_loss(case, likelihood):
    """The CUDA backend's loss-only path (one wave buffer, no backward pass) against its full gradient call:
    the same kernels on the same values, so the same losses to float32 rounding (the per-position sums are
    the same tree reductions; only the buffers the waves pass through differ)."""
    from mspt import _backend

    if not _backend.cuda_available():
        pytest.skip("no usable CUDA backend")
    s, p = case["slices"].astype(np.complex64), (case["probe"] * math.sqrt(2e3)).astype(np.complex64)
    args = (case["data"], s, p, case["positions"], DZ, ENERGY, SAMPLING)
    kw = dict(likelihood=likelihood, tilt_mrad=case["tilt"], device="cuda")
    full = ops.multislice_loss_grad(*args, **kw)
    only = ops.multislice_loss_grad(*args, wrt=(), **kw)
    np.testing.assert_allclose(only.loss_per_position, full.loss_per_position, rtol=1e-6)
    assert only.loss == pytest.approx(full.loss, rel=1e-6)


def test_single_precision_matches_double(case):
    s64, p64 = case["slices"], case["probe"]
    args = (case["positions"], DZ, ENERGY, SAMPLING)
    I64 = ops.multislice_forward(s64, p64, *args, tilt_mrad=case["tilt"])
    I32 = ops.multislice_forward(s64.astype(np.complex64), p64.astype(np.complex64), *args, tilt_mrad=case["tilt"])
    assert I32.dtype == np.float32 and I64.dtype == np.float64
    assert np.linalg.norm(I32 - I64) / np.linalg.norm(I64) < 1e-5
    g64 = ops.multislice_vjp(I64 - 0.5 * I64.mean(), s64, p64, *args, tilt_mrad=case["tilt"])
    g32 = ops.multislice_vjp(I64 - 0.5 * I64.mean(), s64.astype(np.complex64), p64.astype(np.complex64), *args, tilt_mrad=case["tilt"])
    for a, b in [(g32.slices, g64.slices), (g32.probe, g64.probe), (g32.positions_px, g64.positions_px), (g32.tilt_mrad, g64.tilt_mrad)]:
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-4


def test_results_do_not_depend_on_thread_count(case):
    s, p = case["slices"].astype(np.complex64), case["probe"].astype(np.complex64)
    args = (case["data"].astype(np.float32), s, p * np.float32(math.sqrt(2e3)), case["positions"], DZ, ENERGY, SAMPLING)
    one = ops.multislice_loss_grad(*args, threads=1)
    two = ops.multislice_loss_grad(*args, threads=2)
    np.testing.assert_array_equal(one.slices, two.slices)
    np.testing.assert_array_equal(one.probe, two.probe)
    np.testing.assert_array_equal(one.positions_px, two.positions_px)
    assert one.loss == two.loss


def test_forward_conserves_intensity_in_vacuum():
    """Propagation is unitary inside the band and the probe lies inside it: all electrons arrive."""
    probe = mspt.make_probe(ENERGY, 20, (32, 32), SAMPLING, defocus_A=40, modes=3, electrons=1e4)
    I = ops.multislice_forward(np.ones((5, 48, 48), np.complex64), probe, [[24, 24], [23.6, 25.2]], DZ)
    np.testing.assert_allclose(I.sum(axis=(1, 2)), 1e4, rtol=1e-5)


def test_exit_waves_are_the_far_field_of_the_intensities():
    probe = mspt.make_probe(ENERGY, 20, (32, 32), SAMPLING, defocus_A=40, modes=2)
    rng = np.random.default_rng(5)
    slices = np.exp(1j * 0.3 * rng.standard_normal((3, 40, 40))).astype(np.complex64)
    I, exit_waves = ops.multislice_forward(slices, probe, [[20.3, 19.8], [21, 18]], DZ, return_exit_waves=True, bandlimit=False)
    far = np.fft.fftshift(np.fft.fft2(exit_waves.astype(np.complex128), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(I, (np.abs(far) ** 2).sum(1), rtol=1e-4, atol=1e-6 * I.max())


def test_single_slice_equals_numpy_reference():
    """One slice, one mode: intensity = |F(shifted probe * window)|^2 / n, written independently in numpy."""
    rng = np.random.default_rng(11)
    probe = mspt.make_probe(ENERGY, 25, (24, 24), SAMPLING, defocus_A=10).array[0].astype(np.complex128)
    obj = np.exp(1j * rng.standard_normal((40, 40)))
    y, x = 19.3, 22.7
    shifted = np.fft.ifft2(np.fft.fft2(probe) * np.exp(-2j * np.pi * (np.fft.fftfreq(24)[:, None] * 0.3 + np.fft.fftfreq(24)[None] * -0.3)))
    window = obj[19 - 12 : 19 + 12, 23 - 12 : 23 + 12]
    expected = np.fft.fftshift(np.abs(np.fft.fft2(shifted * window, norm="ortho")) ** 2)
    got = ops.multislice_forward(obj[None], probe, [[y, x]], DZ, ENERGY, SAMPLING, bandlimit=False)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)


def test_the_calling_thread_keeps_its_floating_point_mode():
    """The engine flushes denormals to zero inside its worker threads only for the call: NumPy in the
    calling thread still produces denormals afterwards."""
    tiny = np.float32(1e-38)
    assert tiny / np.float32(10) > 0
    probe = mspt.make_probe(ENERGY, 20, (32, 32), SAMPLING)
    ops.multislice_loss_grad(np.ones((2, 32, 32), np.float32), np.ones((3, 48, 48), np.complex64), probe,
                             [[24, 24], [23.5, 24.5]], DZ)  # fmt: skip
    assert tiny / np.float32(10) > 0


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=["complex64", "complex128"])
def test_vjp_from_a_tape_equals_the_recomputing_vjp(case, dtype):
    """A vjp that starts from the forward pass's tape does, per position, the same floating-point operations
    on the same values as one that reruns the forward pass (the recorded waves are the recomputed ones: same
    inputs, same FFT plans, buffers of the same alignment), so its gradients are equal bit for bit: every
    output, both precisions, each replay of one tape. A tape recorded from other slices gives other gradients:
    the replay reads the tape instead of recomputing."""
    s, p = case["slices"].astype(dtype), case["probe"].astype(dtype)
    args = (s, p, case["positions"], DZ, ENERGY, SAMPLING)
    tilt = case["tilt"]
    intensities, tape = ops.multislice_forward(*args, tilt_mrad=tilt, record_tape=True, tape_with_tilt=True)
    np.testing.assert_array_equal(intensities, ops.multislice_forward(*args, tilt_mrad=tilt))
    weights = np.random.default_rng(3).standard_normal(intensities.shape)
    recomputed = ops.multislice_vjp(weights, *args, tilt_mrad=tilt)
    fields = ("slices", "probe", "positions_px", "tilt_mrad")
    for _ in range(2):
        replayed = ops.multislice_vjp(weights, *args, tilt_mrad=tilt, tape=tape)
        for field in fields:
            np.testing.assert_array_equal(getattr(replayed, field), getattr(recomputed, field))

    B, S, (M, ny, nx) = len(case["positions"]), s.shape[0], p.shape
    precision = "double" if dtype == np.complex128 else "single"
    assert tape.nbytes == ops.multislice_tape_bytes(B, S, M, ny, nx, precision=precision, with_tilt=True)
    assert tape.nbytes >= B * M * 2 * S * ny * nx * np.dtype(dtype).itemsize  # waves, far fields, spectra

    other = (s * np.exp(0.1j)).astype(dtype)
    _, foreign = ops.multislice_forward(other, p, *args[2:], tilt_mrad=tilt, record_tape=True, tape_with_tilt=True)
    stale = ops.multislice_vjp(weights, *args, tilt_mrad=tilt, tape=foreign)
    assert not np.array_equal(stale.probe, recomputed.probe)


def test_tape_refuses_another_call(case):
    s, p = case["slices"].astype(np.complex64), case["probe"].astype(np.complex64)
    positions = case["positions"]
    I, tape = ops.multislice_forward(s, p, positions, DZ, ENERGY, SAMPLING, record_tape=True)
    g = np.ones_like(I)
    wrt = ("slices", "probe", "positions")
    with pytest.raises(ValueError, match="positions_px differ"):
        ops.multislice_vjp(g, s, p, positions + 0.25, DZ, ENERGY, SAMPLING, wrt=wrt, tape=tape)
    with pytest.raises(ValueError, match="geometry"):
        ops.multislice_vjp(g, s, p, positions, 2 * DZ, ENERGY, SAMPLING, wrt=wrt, tape=tape)
    with pytest.raises(ValueError, match="tape_with_tilt"):
        ops.multislice_vjp(g, s, p, positions, DZ, ENERGY, SAMPLING, wrt=("slices", "tilt"), tape=tape)
    with pytest.raises(ValueError, match="precision"):
        ops.multislice_vjp(g, s.astype(np.complex128), p, positions, DZ, ENERGY, SAMPLING, wrt=wrt, tape=tape)
    with pytest.raises(ValueError, match="positions"):
        ops.multislice_vjp(g[:-1], s, p, positions[:-1], DZ, ENERGY, SAMPLING, wrt=wrt, tape=tape)
    with pytest.raises(TypeError, match="MultisliceTape"):
        ops.multislice_vjp(g, s, p, positions, DZ, ENERGY, SAMPLING, wrt=wrt, tape="tape")
    # The refusals left the tape as recorded.
    np.testing.assert_array_equal(
        ops.multislice_vjp(g, s, p, positions, DZ, ENERGY, SAMPLING, wrt=wrt, tape=tape).slices,
        ops.multislice_vjp(g, s, p, positions, DZ, ENERGY, SAMPLING, wrt=wrt).slices,
    )


def test_a_released_tape_is_reused_and_recorded_afresh(case):
    """A dropped tape's memory serves the next recording of the same shape (no fresh pages to fault in), and
    that recording overwrites it: the vjp from the reused tape equals the recomputing vjp of the new call."""
    s, p = case["slices"].astype(np.complex64), case["probe"].astype(np.complex64)
    positions = case["positions"]
    _, first = ops.multislice_forward(s, p, positions, DZ, ENERGY, SAMPLING, record_tape=True)
    memory = first.native
    del first
    other = (s * np.exp(0.2j)).astype(np.complex64)
    I, second = ops.multislice_forward(other, p, positions, DZ, ENERGY, SAMPLING, record_tape=True)
    assert second.native is memory
    wrt = ("slices", "probe", "positions")
    replayed = ops.multislice_vjp(I, other, p, positions, DZ, ENERGY, SAMPLING, wrt=wrt, tape=second)
    recomputed = ops.multislice_vjp(I, other, p, positions, DZ, ENERGY, SAMPLING, wrt=wrt)
    np.testing.assert_array_equal(replayed.slices, recomputed.slices)
    np.testing.assert_array_equal(replayed.positions_px, recomputed.positions_px)
    del second
    _, third = ops.multislice_forward(s, p, positions[:-1], DZ, ENERGY, SAMPLING, record_tape=True)
    assert third.native is not memory and third.native.shape[0] == len(positions) - 1


def numpy_multislice(slices, probe, y, x, dz_A, energy_eV, sampling_A):
    """The band-limited multislice model of one probe position written independently in numpy (float64)."""
    ny, nx = probe.shape
    ky, kx = np.fft.fftfreq(ny, sampling_A[0])[:, None], np.fft.fftfreq(nx, sampling_A[1])[None]
    k2 = ky**2 + kx**2
    band = k2 < ops.bandlimit_cutoff_invA(sampling_A) ** 2
    propagator = np.exp(-1j * np.pi * mspt.wavelength_A(energy_eV) * dz_A * k2) * band
    iy, ix = math.floor(y + 0.5), math.floor(x + 0.5)
    ramp = np.exp(-2j * np.pi * (np.fft.fftfreq(ny)[:, None] * (y - iy) + np.fft.fftfreq(nx)[None] * (x - ix)))
    psi = np.fft.ifft2(np.fft.fft2(probe) * ramp)
    for s, obj in enumerate(slices):
        psi = psi * obj[iy - ny // 2 : iy - ny // 2 + ny, ix - nx // 2 : ix - nx // 2 + nx]
        if s < len(slices) - 1:
            psi = np.fft.ifft2(np.fft.fft2(psi) * propagator)
    return np.fft.fftshift(np.abs(np.fft.fft2(psi, norm="ortho") * band) ** 2)


@pytest.mark.parametrize("window", [(32, 32), (24, 40), (30, 26)], ids=["32x32", "24x40", "30x26"])
@pytest.mark.parametrize("dtype, rtol", [(np.complex128, 1e-10), (np.complex64, 2e-5)], ids=["complex128", "complex64"])
def test_multislice_equals_numpy_reference(window, dtype, rtol):
    """Several slices through the band-limited propagator and far field, against numpy: on windows where the
    engine transforms only the band's rows (32x32, 24x40) and on one whose rows do not keep the planes'
    alignment, where it transforms all of them (30x26)."""
    rng = np.random.default_rng(13)
    probe = mspt.make_probe(ENERGY, 24, window, SAMPLING, defocus_A=30).array[0].astype(np.complex128)
    slices = np.exp(1j * 0.5 * rng.standard_normal((4, 56, 64))) * (1 + 0.1 * rng.standard_normal((4, 56, 64)))
    positions = np.array([[27.3, 31.8], [26.6, 30.2]])
    got = ops.multislice_forward(slices.astype(dtype), probe.astype(dtype), positions, DZ, ENERGY, SAMPLING)
    for b, (y, x) in enumerate(positions):
        expected = numpy_multislice(slices, probe, y, x, DZ, ENERGY, SAMPLING)
        np.testing.assert_allclose(got[b], expected, rtol=rtol, atol=rtol * expected.max())
