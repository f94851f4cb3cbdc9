"""The joint multislice-tomography chain for one tilt (mspt.joint): its gradient against central finite
differences along random directions, and its forward model against project-then-multislice by hand.

The multislice runs in double precision (complex128 probe); the projector is single precision only, so the
volume and pose gradients are also checked through an independent float64 projector (scipy's trilinear
``map_coordinates`` on the native projector's ray samples) swapped in for the forward pass, where central
differences are exact to ~1e-6; through the native float32 projector the pose check is held to what float32
differences support.
"""

from __future__ import annotations

import numpy as np
import pytest

import mspt
from mspt import _backend, ops
from mspt.joint import JointGrads, SlabStack, joint_loss_grad, project_slabs
from mspt.joint import slabs as slabs_module
from mspt.tomo.rotations import rotation_exp

SHAPE = (12, 32, 32)  # (Z, Y, X) voxels
VOXEL = 0.4  # A
ENERGY = 80e3  # eV
N_SLICES, DZ = 3, 1.6  # slabs, A
SETTINGS = dict(voxel_size_A=VOXEL, n_slices=N_SLICES, slice_thickness_A=DZ, energy_eV=ENERGY, batch_size=7)


def _blobs(seed: int) -> np.ndarray:
    """Gaussian blobs (2 voxels wide, up to ~1 rad of summed phase): smooth, so the trilinear interpolant's
    kinks weigh little in the finite differences."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    vol = np.zeros(SHAPE)
    for _ in range(12):
        c = rng.uniform([3, 8, 8], [SHAPE[0] - 3, SHAPE[1] - 8, SHAPE[2] - 8])
        vol += rng.uniform(150, 300) * np.exp(-((k - c[0]) ** 2 + (j - c[1]) ** 2 + (i - c[2]) ** 2) / 8.0)
    return vol.astype(np.float32)


@pytest.fixture(scope="module")
def problem():
    """A tilt at a general pose, 25 positions, patterns simulated from a different volume (so the loss and
    its gradients are far from zero)."""
    rng = np.random.default_rng(0)
    probe = mspt.make_probe(ENERGY, 25, 16, VOXEL, defocus_A=20, electrons=1e4).array.astype(np.complex128)
    yy, xx = np.meshgrid(np.arange(12, 21, 2.0), np.arange(12, 21, 2.0), indexing="ij")
    positions = np.stack([yy.ravel(), xx.ravel()], 1) + rng.uniform(-0.3, 0.3, (yy.size, 2))
    rotation = rotation_exp([0.05, 0.3, -0.02])
    shifts = np.array([0.2, -0.3])
    truth = project_slabs(
        _blobs(2), rotation, shifts, VOXEL, SlabStack(N_SLICES, DZ, VOXEL), shape=SHAPE[1:], pixel_size_A=VOXEL
    )
    slices = np.exp(1j * mspt.interaction_parameter(ENERGY) * truth.astype(np.float64))
    patterns = ops.multislice_forward(slices, probe, positions, DZ, ENERGY, (VOXEL, VOXEL))
    state = dict(volume=_blobs(1), rotation=rotation, shifts_A=shifts, probe=probe, positions_px=positions)
    return state, patterns


def _loss(state, patterns, **change) -> float:
    s = {**state, **change}
    return joint_loss_grad(
        s["volume"], s["rotation"], s["shifts_A"], s["probe"], s["positions_px"], patterns, wrt=(), **SETTINGS
    ).loss


def _grads(state, patterns) -> JointGrads:
    return joint_loss_grad(
        state["volume"], state["rotation"], state["shifts_A"], state["probe"], state["positions_px"], patterns,
        **SETTINGS,
    )  # fmt: skip


def _direction(shape, seed: int) -> np.ndarray:
    """A random direction (standard normal entries), fixed by its seed."""
    return np.random.default_rng(seed).standard_normal(shape)


def _central(f, h: float) -> float:
    return (f(h) - f(-h)) / (2 * h)


def _project64(volume, rotation, shifts_A, voxel_size_A, *, shape, pixel_size_A, **_):
    """A float64 stand-in for ops.project (one pose): rays sampled every voxel along z over the volume's
    bounding sphere, trilinear interpolation by scipy, zero outside."""
    ndimage = pytest.importorskip("scipy.ndimage")
    nz, ny, nx = volume.shape
    py, px = shape
    half = int(np.ceil(np.linalg.norm([nz // 2 + 1, ny // 2 + 1, nx // 2 + 1])))
    z = (np.arange(2 * half + 1) - half) * voxel_size_A
    j, i = np.meshgrid(np.arange(py), np.arange(px), indexing="ij")
    x_ray = ((i - px // 2) * pixel_size_A - shifts_A[0, 1])[..., None]
    y_ray = ((j - py // 2) * pixel_size_A - shifts_A[0, 0])[..., None]
    q = np.stack(np.broadcast_arrays(x_ray, y_ray, z), -1)
    p = q @ rotation[0]  # rows R^T q: the volume-frame point each sample reads
    centre = np.array([nx // 2, ny // 2, nz // 2])
    coords = (p / voxel_size_A + centre)[..., ::-1].reshape(-1, 3).T  # (k, j, i)
    values = ndimage.map_coordinates(np.asarray(volume, np.float64), coords, order=1, mode="grid-constant")
    return (values.reshape(py, px, -1).sum(-1) * voxel_size_A)[None]


@pytest.fixture
def float64_projector(monkeypatch, problem, measured):
    """Swap the float64 reference in for ops.project, once it agrees with the native projector."""
    state = problem[0]
    kw = dict(shape=SHAPE[1:], pixel_size_A=VOXEL)
    native = ops.project(state["volume"], state["rotation"][None], state["shifts_A"][None], VOXEL)
    reference = _project64(state["volume"], state["rotation"][None], state["shifts_A"][None], VOXEL, **kw)
    agreement = np.abs(native - reference).max() / np.abs(reference).max()
    assert measured("joint float64 projector", "max |native - reference| / max", agreement, 1e-6) < 1e-6
    monkeypatch.setattr(ops, "project", _project64)


def test_volume_gradient_matches_central_differences(problem, measured):
    """Float32 projector, h = 0.03 V along a random direction (the loss is smooth in the volume): measured
    1.4e-4 relative."""
    state, patterns = problem
    grads = _grads(state, patterns)
    u = _direction(SHAPE, 10).astype(np.float32)
    fd = _central(lambda h: _loss(state, patterns, volume=state["volume"] + h * u), 0.03)
    analytic = float(np.sum(grads.volume.astype(np.float64) * u))
    err = measured("joint volume", "|fd - vjp| / |vjp| (float32 projector)", abs(fd - analytic) / abs(analytic), 1e-3)
    assert err < 1e-3, (fd, analytic)


def test_volume_and_pose_gradients_match_float64_differences(problem, float64_projector, measured):
    """With the float64 forward projector and h = 1e-7 (rad, A), 1e-2 V: the remaining difference is the
    float32 back-projection in the gradient. Measured 2e-9 (rotation), 1.2e-7 (shifts), 3.7e-7 (volume)."""
    state, patterns = problem
    grads = _grads(state, patterns)  # the gradient itself runs the native float32 vjp
    w = _direction(3, 11)
    s = _direction(2, 12)
    u = _direction(SHAPE, 10).astype(np.float32)
    rot = state["rotation"]
    checks = {
        "rotation vector": (
            _central(lambda h: _loss(state, patterns, rotation=rotation_exp(h * w) @ rot), 1e-7),
            grads.rotation_vector @ w,
        ),
        "shifts": (
            _central(lambda h: _loss(state, patterns, shifts_A=state["shifts_A"] + h * s), 1e-7),
            grads.shifts_A @ s,
        ),
        "volume": (
            _central(lambda h: _loss(state, patterns, volume=state["volume"].astype(np.float64) + h * u), 1e-2),
            float(np.sum(grads.volume.astype(np.float64) * u)),
        ),
    }
    for name, (fd, analytic) in checks.items():
        err = abs(fd - analytic) / abs(analytic)
        measured(f"joint {name}", "|fd - vjp| / |vjp| (float64 projector)", err, 1e-5)
        assert err < 1e-5, (name, fd, analytic)


def test_pose_gradient_needs_the_moving_slabs(problem, float64_projector, measured, monkeypatch):
    """Negative control: leaving out the slab weights' dependence on the pose (dm_s/dw = 0) must miss the
    float64 central difference by far more than the check above allows. About the tilt axis y, where the
    slabs move most, the slab term is ~4 % of the gradient here (measured)."""
    state, patterns = problem
    w = np.array([0.0, 1.0, 0.0])
    rot = state["rotation"]
    fd = _central(lambda h: _loss(state, patterns, rotation=rotation_exp(h * w) @ rot), 1e-7)
    monkeypatch.setattr(slabs_module.SlabStack, "weight_derivative", lambda self, s, depth: np.zeros_like(depth))
    wrong = _grads(state, patterns).rotation_vector @ w
    err = measured("joint rotation without slab motion", "|fd - vjp| / |fd|", abs(fd - wrong) / abs(fd), 1e-2, ">")
    assert err > 1e-2


def test_pose_gradient_through_the_float32_projector(problem, measured):
    """The native chain end to end: float32 rounding (growing as 1/h) and trilinear kinks (growing with h)
    bound central differences; h = 3e-5 rad and 1e-4 A balance them. Measured 5.3e-5 (rotation) and 3.6e-4
    (shifts) relative."""
    state, patterns = problem
    grads = _grads(state, patterns)
    w = _direction(3, 11)
    s = _direction(2, 12)
    rot = state["rotation"]
    fd_rot = _central(lambda h: _loss(state, patterns, rotation=rotation_exp(h * w) @ rot), 3e-5)
    fd_shift = _central(lambda h: _loss(state, patterns, shifts_A=state["shifts_A"] + h * s), 1e-4)
    err_rot = abs(fd_rot - grads.rotation_vector @ w) / abs(fd_rot)
    err_shift = abs(fd_shift - grads.shifts_A @ s) / abs(fd_shift)
    measured("joint rotation vector", "|fd - vjp| / |fd| (float32 projector)", err_rot, 1e-2)
    measured("joint shifts", "|fd - vjp| / |fd| (float32 projector)", err_shift, 1e-2)
    assert err_rot < 1e-2 and err_shift < 1e-2, (err_rot, err_shift)


def test_probe_and_positions_gradients_match_central_differences(problem, measured):
    """Double-precision multislice, h = 1e-5: measured 4.5e-8 (probe) and 1.3e-8 (positions) relative."""
    state, patterns = problem
    grads = _grads(state, patterns)
    probe, positions = state["probe"], state["positions_px"]
    p = _direction(probe.shape, 13) + 1j * _direction(probe.shape, 14)
    q = _direction(positions.shape, 15)
    checks = {
        "probe": (
            _central(lambda h: _loss(state, patterns, probe=probe + h * p), 1e-5),
            float(np.sum(grads.probe.real * p.real + grads.probe.imag * p.imag)),
        ),
        "positions": (
            _central(lambda h: _loss(state, patterns, positions_px=positions + h * q), 1e-5),
            float(np.sum(grads.positions_px * q)),
        ),
    }
    for name, (fd, analytic) in checks.items():
        err = measured(f"joint {name}", "|fd - vjp| / |vjp|", abs(fd - analytic) / abs(analytic), 1e-6)
        assert err < 1e-6, (name, fd, analytic)


def test_one_slab_equals_project_then_multislice_by_hand(problem, measured):
    """S = 1: the slab weight is one everywhere, so the chain is t = exp(i sigma project(volume)) followed by
    the multislice likelihood, and dL/dvolume = backproject(sigma Im(conj(t) dL/dt))."""
    state, patterns = problem
    vol, rot, shifts = state["volume"], state["rotation"], state["shifts_A"]
    sigma = mspt.interaction_parameter(ENERGY)
    settings = {**SETTINGS, "n_slices": 1, "slice_thickness_A": 8.0}
    chain = joint_loss_grad(vol, rot, shifts, state["probe"], state["positions_px"], patterns, **settings)
    phase = sigma * ops.project(vol, rot[None], shifts[None], VOXEL).astype(np.float64)
    t = np.exp(1j * phase)
    by_hand = ops.multislice_loss_grad(patterns, t, state["probe"], state["positions_px"], 8.0, ENERGY, (VOXEL, VOXEL))
    grad_phase = sigma * np.imag(np.conj(t) * by_hand.slices)
    grad_volume = ops.backproject(grad_phase, rot[None], shifts[None], VOXEL, SHAPE)
    err_loss = abs(chain.loss - by_hand.loss) / by_hand.loss
    measured("joint one slab", "loss relative difference", err_loss, 1e-12)
    err_volume = measured(
        "joint one slab",
        "volume gradient max relative difference",
        np.abs(chain.volume - grad_volume).max() / np.abs(grad_volume).max(),
        1e-6,
    )
    assert err_loss < 1e-12 and err_volume < 1e-6
    assert np.abs(chain.probe - by_hand.probe).max() <= 1e-12 * np.abs(by_hand.probe).max()
    assert np.abs(chain.positions_px - by_hand.positions_px).max() <= 1e-12 * np.abs(by_hand.positions_px).max()


def test_thin_layer_lies_in_the_middle_slab_only(problem, measured):
    """A one-voxel layer through the rotation centre, slightly tilted, lies inside the middle of three
    2.4 A slabs: the chain is multislice through (1, exp(i sigma project(layer)), 1) computed by hand."""
    state, patterns = problem
    layer = np.zeros(SHAPE, np.float32)
    layer[SHAPE[0] // 2] = _blobs(3)[SHAPE[0] // 2]
    rot, shifts = rotation_exp([0.02, 0.05, 0.0]), state["shifts_A"]
    settings = {**SETTINGS, "slice_thickness_A": 2.4}
    chain = joint_loss_grad(layer, rot, shifts, state["probe"], state["positions_px"], patterns, wrt=(), **settings)
    phase = mspt.interaction_parameter(ENERGY) * ops.project(layer, rot[None], shifts[None], VOXEL)[0].astype(float)
    t = np.exp(1j * phase)
    slices = np.stack([np.ones_like(t), t, np.ones_like(t)]).astype(np.complex128)
    by_hand = ops.multislice_loss_grad(
        patterns, slices, state["probe"], state["positions_px"], 2.4, ENERGY, (VOXEL, VOXEL), wrt=()
    )
    err = measured("joint thin layer", "loss relative difference", abs(chain.loss - by_hand.loss) / by_hand.loss, 1e-12)
    assert err < 1e-12
    # The check sees which slab holds the layer: in the entrance slab the loss differs.
    entrance = ops.multislice_loss_grad(
        patterns, slices[[1, 0, 2]], state["probe"], state["positions_px"], 2.4, ENERGY, (VOXEL, VOXEL), wrt=()
    )
    moved = abs(entrance.loss - by_hand.loss) / by_hand.loss
    assert measured("joint thin layer", "loss change with the layer in the entrance slab", moved, 1e-6, ">") > 1e-6


def test_slab_projections_sum_to_the_full_projection(problem, measured):
    """The slab weights are a partition of unity, so the S slab projections add up to the projection."""
    state = problem[0]
    vol, rot, shifts = state["volume"], state["rotation"], state["shifts_A"]
    stack = SlabStack(N_SLICES, DZ, VOXEL)
    depth = slabs_module.rotated_coordinates_A(SHAPE, VOXEL, rot)[2]
    weights = np.stack([stack.weight(s, depth) for s in range(N_SLICES)])
    assert np.all(weights >= 0) and np.allclose(weights.sum(0), 1.0, rtol=0, atol=1e-12)
    assert np.all(weights[1][np.abs(depth) < DZ / 2 - VOXEL / 2] == 1.0)  # the middle slab owns its range
    parts = project_slabs(vol, rot, shifts, VOXEL, stack, shape=SHAPE[1:], pixel_size_A=VOXEL)
    full = ops.project(vol, rot[None], shifts[None], VOXEL)[0]
    err = np.abs(parts.sum(0) - full).max() / full.max()
    measured("joint slabs", "|sum of slabs - projection| / max", err, 1e-6)
    assert err < 1e-6
    assert all(np.abs(p).max() > 0.05 * full.max() for p in parts)  # every slab sees matter


def test_batches_give_the_same_loss_and_gradients(problem):
    state, patterns = problem
    args = (state["volume"], state["rotation"], state["shifts_A"], state["probe"], state["positions_px"], patterns)
    one = joint_loss_grad(*args, **{**SETTINGS, "batch_size": 1})
    whole = joint_loss_grad(*args, **{**SETTINGS, "batch_size": 1000})
    assert abs(one.loss - whole.loss) <= 1e-12 * whole.loss
    for name in ("volume", "rotation_vector", "shifts_A", "probe", "positions_px"):
        a, b = getattr(one, name), getattr(whole, name)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), name


def test_wrt_selects_the_gradients(problem):
    state, patterns = problem
    args = (state["volume"], state["rotation"], state["shifts_A"], state["probe"], state["positions_px"], patterns)
    only = joint_loss_grad(*args, wrt=("shifts", "probe"), **SETTINGS)
    full = _grads(state, patterns)
    assert only.volume is None and only.rotation_vector is None and only.positions_px is None
    assert np.allclose(only.shifts_A, full.shifts_A, rtol=1e-12, atol=0)
    assert np.allclose(only.probe, full.probe, rtol=1e-12, atol=0)
    assert only.loss == full.loss


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(volume=np.zeros((4, 4))), "volume"),
        (dict(rotation=np.eye(2)), "rotation"),
        (dict(rotation=2 * np.eye(3)), "rotation"),
        (dict(shifts_A=[0.0, np.nan]), "shifts_A"),
        (dict(probe=np.ones((16, 16))), "probe"),
        (dict(positions_px=np.zeros((25, 3))), "positions_px"),
        (dict(patterns=np.zeros((24, 16, 16))), "patterns"),
        (dict(n_slices=0), "n_slices"),
        (dict(slice_thickness_A=-1.0), "slice_thickness_A"),
        (dict(ramp_A=5.0), "ramp_A"),
        (dict(voxel_size_A=0.0), "voxel_size_A"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(wrt=("volume", "tilt")), "wrt"),
        (dict(shape=(32,)), "shape"),
        (dict(likelihood="gaussian"), "likelihood"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_inputs_name_the_field(problem, change, field):
    state, patterns = problem
    kwargs = {**state, "patterns": patterns, **SETTINGS, **change}
    with pytest.raises(ValueError, match=field):
        joint_loss_grad(**kwargs)


@pytest.mark.gpu
def test_cuda_chain_matches_cpu(problem):
    """The same single-precision chain (complex64 probe: the CUDA multislice has no double path) on the GPU
    and the CPU: equal to float32 rounding."""
    if not _backend.cuda_available():
        pytest.skip("no usable CUDA backend")
    state, patterns = problem
    single = {**state, "probe": state["probe"].astype(np.complex64)}
    args = [single[k] for k in ("volume", "rotation", "shifts_A", "probe", "positions_px")] + [patterns]
    cpu = joint_loss_grad(*args, **SETTINGS)
    gpu = joint_loss_grad(*args, device="cuda", **SETTINGS)
    assert gpu.loss == pytest.approx(cpu.loss, rel=1e-5)
    for name in ("volume", "rotation_vector", "shifts_A", "probe", "positions_px"):
        a, b = np.asarray(getattr(gpu, name)), np.asarray(getattr(cpu, name))
        assert np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(b), name
