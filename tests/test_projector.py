"""The tomographic projector: its adjoint (dot-product identity), the determinism of the back-projector, the
physics against analytic line integrals of Gaussian blobs, the tilt sign convention, input validation, and the
CUDA backend against the CPU one (the `gpu` tests skip without a usable GPU)."""

import numpy as np
import pytest

from mspt import _backend, ops

RNG = np.random.default_rng(2024)


def random_rotations(n):
    """Uniformly random proper rotations (T, 3, 3) from QR of Gaussian matrices."""
    out = []
    for _ in range(n):
        q, r = np.linalg.qr(RNG.standard_normal((3, 3)))
        q = q * np.sign(np.diag(r))
        if np.linalg.det(q) < 0:
            q[:, 0] = -q[:, 0]
        out.append(q)
    return np.stack(out)


def rotation_zyz(a_deg, b_deg, c_deg):
    def rz(a):
        c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    return rz(a_deg) @ ops.rotation_about_y(b_deg) @ rz(c_deg)


@pytest.mark.parametrize(
    "volume_shape, proj_shape, voxel, pixel, step",
    [
        ((9, 12, 15), (13, 17), 0.7, 0.6, 0.5),
        ((16, 11, 20), (11, 20), 1.0, None, None),
        ((12, 20, 8), (25, 14), 0.5, 0.55, 0.8),
    ],
)
@pytest.mark.parametrize("poses", ["random", "tilt_series"])
def test_backproject_is_the_adjoint_of_project(volume_shape, proj_shape, voxel, pixel, step, poses):
    rot = random_rotations(4) if poses == "random" else ops.tilt_series_rotations([-70.0, -15.0, 0.0, 45.0, 90.0])
    shifts = RNG.uniform(-2.0, 2.0, (len(rot), 2))
    kw = dict(pixel_size_A=pixel, step_A=step)
    v = RNG.standard_normal(volume_shape).astype(np.float32)
    g = RNG.standard_normal((len(rot), *proj_shape)).astype(np.float32)
    pv = ops.project(v, rot, shifts, voxel, shape=proj_shape, **kw)
    bg = ops.backproject(g, rot, shifts, voxel, volume_shape, **kw)
    assert pv.shape == g.shape and pv.dtype == np.float32
    assert bg.shape == volume_shape and bg.dtype == np.float32
    lhs = np.vdot(pv.astype(np.float64), g.astype(np.float64))
    rhs = np.vdot(v.astype(np.float64), bg.astype(np.float64))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs), (lhs, rhs)
    assert ops.project_adjoint is ops.backproject


def near_y_rotations(n):
    """A tilt series about y, each pose turned by up to 0.6 degrees about x and z (as a pose refinement leaves
    it): its rays drift across a few voxel rows."""
    kick = RNG.uniform(-0.01, 0.01, (n, 3)) * [1.0, 0.0, 1.0]
    return np.stack([rotation_exp(w) @ r for w, r in zip(kick, ops.tilt_series_rotations(np.linspace(-65, 65, n)))])


@pytest.mark.parametrize("poses", ["random", "tilt_series", "near_y"])
def test_backproject_is_deterministic_for_any_thread_count(poses):
    """The back-projector visits projection rows outside and poses inside where every pose keeps its rays within
    a slab's rows (tilt series, near_y), poses outside otherwise (random): either order is fixed."""
    rot = {"random": random_rotations, "tilt_series": lambda n: ops.tilt_series_rotations(np.linspace(-60, 60, n)),
           "near_y": near_y_rotations}[poses](6)  # fmt: skip
    shifts = RNG.uniform(-1.0, 1.0, (6, 2))
    g = RNG.standard_normal((6, 41, 19)).astype(np.float32)
    ref = ops.backproject(g, rot, shifts, 0.8, (17, 41, 19), threads=1)
    for threads in (1, 2, 3, 5):
        got = ops.backproject(g, rot, shifts, 0.8, (17, 41, 19), threads=threads)
        assert np.array_equal(got, ref), threads
    np.testing.assert_array_equal(ops.backproject(g, rot, shifts, 0.8, (17, 41, 19)), ref)


def reference_corners(rot, shifts, voxel, shape, proj_shape, pixel, step):
    """The projector from its definition in float64, independent of the native code: pixel (j, i) of pose t samples
    the volume at R^T ((i - Px//2) p - dx, (j - Py//2) p - dy, (s - h) step) for s = 0 .. 2h (h step covering the
    volume's footprint sphere), trilinearly, zero outside; the line integral is the sum of the samples times the
    step. -> (flat pixel index, flat voxel index, trilinear weight) of every sample corner inside the volume."""
    nz, ny, nx = shape
    half = int(np.ceil(voxel * np.sqrt(sum((n // 2 + 1) ** 2 for n in shape)) / step))
    zs = (np.arange(2 * half + 1) - half) * step
    py, px = proj_shape
    y, x = np.meshgrid((np.arange(py) - py // 2) * pixel, (np.arange(px) - px // 2) * pixel, indexing="ij")
    pixels, voxels, weights = [], [], []
    for t in range(len(rot)):
        q = np.stack(np.broadcast_arrays((x - shifts[t, 1])[..., None], (y - shifts[t, 0])[..., None], zs), -1)
        p = q.reshape(-1, 3) @ rot[t] / voxel  # rows: R^T q in (x, y, z) voxel units
        f = p[:, ::-1] + np.array([nz // 2, ny // 2, nx // 2])  # (k, j, i)
        pixel_index = t * py * px + np.repeat(np.arange(py * px), len(zs))
        base = np.floor(f).astype(int)
        frac = f - base
        for corner in np.ndindex(2, 2, 2):
            idx = base + corner
            inside = np.all((idx >= 0) & (idx < shape), axis=1)
            pixels.append(pixel_index[inside])
            voxels.append(np.ravel_multi_index(idx[inside].T, shape))
            weights.append(np.prod(np.where(corner, frac, 1.0 - frac), axis=1)[inside])
    return np.concatenate(pixels), np.concatenate(voxels), np.concatenate(weights)


def reference_projection(v, rot, shifts, voxel, proj_shape, pixel, step):
    pixels, voxels, w = reference_corners(rot, shifts, voxel, v.shape, proj_shape, pixel, step)
    out = np.bincount(pixels, weights=w * v.astype(np.float64).ravel()[voxels], minlength=len(rot) * np.prod(proj_shape))
    return out.reshape(len(rot), *proj_shape) * step


def reference_backprojection(g, rot, shifts, voxel, shape, pixel, step):
    pixels, voxels, w = reference_corners(rot, shifts, voxel, shape, g.shape[1:], pixel, step)
    out = np.bincount(voxels, weights=w * g.astype(np.float64).ravel()[pixels], minlength=np.prod(shape))
    return out.reshape(shape) * step


@pytest.mark.parametrize("poses", ["tilt_series", "mixed"])
def test_projector_pair_matches_a_float64_reference_across_slabs(measured, poses):
    """The native projector samples a zero-padded copy of the volume, and the back-projector gathers slab by slab
    (16 rows of the volume) into zero-padded accumulators; 40 rows make three slabs, one partial. The volume is
    random up to its faces. Poses: a tilt series about y (pixel rows on voxel rows: every ray's cells straddle two
    rows, one with weight 0, so rays at a slab's last row reach the next slab too), and a mix of tilts, general
    rotations and an exact axis permutation whose rays run along y, across every slab, with samples on voxel
    planes and slab faces. Measured max error / max value: about 1e-7 (float32 output). The adjoint identity is
    checked on <P v, P v> = <v, P^T P v>, free of cancellation: measured 3e-9."""
    rng = np.random.default_rng(5)
    shape, voxel, pixel, step = (9, 40, 11), 0.8, 0.8, 0.6
    if poses == "tilt_series":
        rot = ops.tilt_series_rotations([-70.0, -20.0, 0.0, 33.0, 90.0])
        shifts = np.zeros((len(rot), 2))
    else:
        rot = np.concatenate([ops.tilt_series_rotations([-70.0, 0.0, 33.0, 90.0]), random_rotations(2),
                              [[[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]]])  # fmt: skip
        shifts = rng.uniform(-1.5, 1.5, (len(rot), 2))
        shifts[-1] = 0.0
    proj_shape = (41, 12)
    v = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal((len(rot), *proj_shape)).astype(np.float32)
    kw = dict(pixel_size_A=pixel, step_A=step)
    pv = ops.project(v, rot, shifts, voxel, shape=proj_shape, **kw)
    ref = reference_projection(v, rot, shifts, voxel, proj_shape, pixel, step)
    error = np.abs(pv - ref).max() / np.abs(ref).max()
    assert measured(f"project vs float64 reference ({poses})", "max error / max", error, 1e-6) < 1e-6
    got = ops.backproject(g, rot, shifts, voxel, shape, **kw)
    ref = reference_backprojection(g, rot, shifts, voxel, shape, pixel, step)
    error = np.abs(got - ref).max() / np.abs(ref).max()
    assert measured(f"backproject vs float64 reference ({poses})", "max error / max", error, 1e-6) < 1e-6
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(ops.backproject(g, rot, shifts, voxel, shape, threads=threads, **kw), got)
    lhs = np.vdot(pv.astype(np.float64), pv.astype(np.float64))
    rhs = np.vdot(v.astype(np.float64), ops.backproject(pv, rot, shifts, voxel, shape, **kw).astype(np.float64))
    adjoint = abs(lhs - rhs) / abs(lhs)
    assert measured(f"project/backproject ({poses})", "adjoint relative error", adjoint, 1e-6) < 1e-6


@pytest.mark.parametrize("poses", ["tilt_series", "mixed"])
def test_the_cuda_kernels_per_pixel_body_matches_the_float64_reference(measured, poses):
    """The CUDA projector runs project_pixel (kernels/projector_body.h) once per pixel; the CPU projector works in
    blocks of samples. The native module's _project_pixelwise runs that per-pixel body on the CPU, so the CPU
    tests check the GPU's arithmetic: against the float64 reference and the CPU projector (the same weights,
    other roundings of the sums), on random volumes, tilts, general rotations and an axis permutation."""
    from mspt._native import core

    rng = np.random.default_rng(7)
    shape, voxel, pixel, step, proj_shape = (9, 40, 11), 0.8, 0.8, 0.6, (41, 12)
    rot = ops.tilt_series_rotations([-70.0, -20.0, 0.0, 33.0, 90.0])
    if poses == "mixed":
        rot = np.concatenate([rot, random_rotations(2), [[[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]]])
    shifts = rng.uniform(-1.5, 1.5, (len(rot), 2)) if poses == "mixed" else np.zeros((len(rot), 2))
    v = rng.standard_normal(shape).astype(np.float32)
    pixelwise = core._project_pixelwise(v, rot, shifts, voxel, *proj_shape, pixel, step)
    ref = reference_projection(v, rot, shifts, voxel, proj_shape, pixel, step)
    error = np.abs(pixelwise - ref).max() / np.abs(ref).max()
    assert measured(f"CUDA body, project vs float64 reference ({poses})", "max error / max", error, 1e-6) < 1e-6
    blocks = ops.project(v, rot, shifts, voxel, shape=proj_shape, pixel_size_A=pixel, step_A=step)
    assert np.abs(pixelwise - blocks).max() / np.abs(ref).max() < 1e-6


def test_baseline_and_avx2_builds_agree(measured):
    """The baseline build reads and adds to a cell's corners in scalar code, the AVX2 build in vectors: the same
    weights, other roundings of the sums. Each is an adjoint pair, and they agree to float rounding (measured
    about 1e-7); the adjoint identity is checked on <P v, P v> = <v, P^T P v>, free of cancellation."""
    import importlib

    from mspt import _core as baseline

    try:
        avx2 = importlib.import_module("mspt._core_avx2")
    except ImportError:
        pytest.skip("no AVX2 build on this platform")
    if not (baseline.cpu_supports("avx2") and baseline.cpu_supports("fma")):
        pytest.skip("this processor lacks AVX2/FMA")
    rng = np.random.default_rng(6)
    shape, proj_shape, voxel, pixel, step = (13, 35, 18), (37, 20), 0.7, 0.65, 0.55
    rot = np.concatenate([ops.tilt_series_rotations([-60.0, 10.0]), random_rotations(2), near_y_rotations(2)])
    shifts = rng.uniform(-1.0, 1.0, (len(rot), 2))
    v = rng.standard_normal(shape).astype(np.float32)
    results = {}
    for name, core in (("baseline", baseline), ("avx2", avx2)):
        pv = core.project(v, rot, shifts, voxel, *proj_shape, pixel, step, 0)
        bpv = core.backproject(pv, rot, shifts, voxel, *shape, pixel, step, 0)
        lhs, rhs = np.vdot(pv.astype(np.float64), pv), np.vdot(v.astype(np.float64), bpv)
        assert abs(lhs - rhs) <= 1e-6 * abs(lhs), (name, lhs, rhs)
        results[name] = pv, bpv
    for what, a, b in zip(("project", "backproject"), results["avx2"], results["baseline"]):
        difference = np.abs(a - b).max() / np.abs(b).max()
        assert measured("AVX2 vs baseline build", f"{what} max difference / max", difference, 1e-6) < 1e-6


def gaussian_volume(shape, voxel, centres, amps, sigma):
    z, y, x = ((np.arange(n) - n // 2) * voxel for n in shape)
    vol = np.zeros(shape)
    for (cx, cy, cz), a in zip(centres, amps):
        vol += a * np.exp(
            -((x[None, None, :] - cx) ** 2 + (y[None, :, None] - cy) ** 2 + (z[:, None, None] - cz) ** 2) / (2 * sigma**2)
        )
    return vol


def gaussian_projection(rot, shift, shape, pixel, centres, amps, sigma):
    """Analytic line integral along z of the rotated Gaussians: amplitude A sqrt(2 pi) sigma at (R c), shifted."""
    y = (np.arange(shape[0]) - shape[0] // 2) * pixel
    x = (np.arange(shape[1]) - shape[1] // 2) * pixel
    out = np.zeros(shape)
    for c, a in zip(centres, amps):
        rx, ry, _ = rot @ c
        r2 = (x[None, :] - shift[1] - rx) ** 2 + (y[:, None] - shift[0] - ry) ** 2
        out += a * np.sqrt(2 * np.pi) * sigma * np.exp(-r2 / (2 * sigma**2))
    return out


def test_projection_of_gaussians_matches_analytic_line_integrals():
    """Trilinear interpolation of a sampled Gaussian smooths it by about (d^2 / 12) f'': the relative error
    goes as ~0.08 (d / sigma)^2 (1.3e-2 at sigma = 2.5 voxels, measured). sigma = 12 voxels brings it under
    1e-3 (about 6-7e-4 here); the Riemann sum along the ray is exact to far below that at step = d."""
    voxel, pixel, sigma_vox = 0.5, 0.45, 12
    sigma = sigma_vox * voxel
    shape = (144, 148, 146)
    centres = np.array([[1.0, -0.5, 1.5], [-1.2, 0.8, -0.7], [0.3, 1.1, -1.4]]) * sigma
    amps = [1.0, 0.7, 1.3]
    vol = gaussian_volume(shape, voxel, centres, amps, sigma).astype(np.float32)
    rot = np.stack(
        [ops.rotation_about_y(0.0), ops.rotation_about_y(30.0), ops.rotation_about_y(-60.0), rotation_zyz(37, 52, -71)]
    )
    shifts = np.array([[0.0, 0.0], [0.3, -0.7], [-0.45, 0.2], [0.6, 0.25]])
    proj_shape = (144, 144)
    got = ops.project(vol, rot, shifts, voxel, shape=proj_shape, pixel_size_A=pixel)
    for t in range(len(rot)):
        ref = gaussian_projection(rot[t], shifts[t], proj_shape, pixel, centres, amps, sigma)
        err = np.linalg.norm(got[t] - ref) / np.linalg.norm(ref)
        assert err < 1e-3, (t, err)


def test_positive_tilt_moves_plus_z_towards_plus_x():
    voxel, sigma = 1.0, 2.0
    shape = (32, 32, 32)
    vol = gaussian_volume(shape, voxel, [(0.0, 0.0, 8.0)], [1.0], sigma).astype(np.float32)
    proj = ops.project(vol, ops.tilt_series_rotations([0.0, 30.0, -30.0]), None, voxel)
    x = np.arange(32) - 16
    centroid_x = [(p.sum(axis=0) * x).sum() / p.sum() for p in proj]
    assert abs(centroid_x[0]) < 0.05
    assert centroid_x[1] == pytest.approx(8.0 * np.sin(np.radians(30.0)), abs=0.1)
    assert centroid_x[2] == pytest.approx(-8.0 * np.sin(np.radians(30.0)), abs=0.1)


def test_shift_moves_the_projection():
    vol = gaussian_volume((24, 24, 24), 1.0, [(0.0, 0.0, 0.0)], [1.0], 2.0).astype(np.float32)
    p = ops.project(vol, ops.tilt_series_rotations([0.0]), [[2.0, -3.0]], 1.0)[0]
    j, i = np.unravel_index(np.argmax(p), p.shape)
    assert (j - 12, i - 12) == (2, -3)


def test_bad_inputs_name_the_argument():
    vol = np.zeros((8, 8, 8), np.float32)
    rot = ops.tilt_series_rotations([0.0, 10.0])
    with pytest.raises(ValueError, match="volume"):
        ops.project(np.zeros((8, 8)), rot)
    with pytest.raises(ValueError, match="rotation"):
        ops.project(vol, np.eye(3))
    with pytest.raises(ValueError, match=r"rotation\[1\].*orthonormal"):
        ops.project(vol, np.stack([np.eye(3), 1.1 * np.eye(3)]))
    with pytest.raises(ValueError, match="determinant"):
        ops.project(vol, np.diag([1.0, 1.0, -1.0])[None])
    with pytest.raises(ValueError, match="shifts_A"):
        ops.project(vol, rot, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="voxel_size_A"):
        ops.project(vol, rot, None, -1.0)
    with pytest.raises(ValueError, match="pixel_size_A"):
        ops.project(vol, rot, None, 1.0, pixel_size_A=0.0)
    with pytest.raises(ValueError, match="step_A"):
        ops.project(vol, rot, None, 1.0, step_A=float("nan"))
    with pytest.raises(ValueError, match="shape"):
        ops.project(vol, rot, None, 1.0, shape=(8, 0))
    with pytest.raises(ValueError, match="threads"):
        ops.project(vol, rot, threads=0)
    with pytest.raises(ValueError, match="device"):
        ops.project(vol, rot, device="tpu")
    g = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="projections"):
        ops.backproject(g[:1], rot, None, 1.0, (8, 8, 8))
    with pytest.raises(ValueError, match="volume_shape"):
        ops.backproject(g, rot, None, 1.0, (8, 8))
    with pytest.raises(ValueError, match="volume_shape"):
        ops.backproject(g, rot, None, 1.0)
    with pytest.raises(ValueError, match="tilts_deg"):
        ops.tilt_series_rotations([])


# ---------------------------------------------------------------------------------------------------------------
# project_vjp: gradients w.r.t. the pose (tangent-space rotation vector, shifts) and the volume


def rotation_exp(w):
    """exp([w]x) by Rodrigues' formula: the rotation by |w| radians about w."""
    w = np.asarray(w, dtype=float)
    theta = np.linalg.norm(w)
    if theta == 0.0:
        return np.eye(3)
    k = w / theta
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(theta) * K + (1.0 - np.cos(theta)) * (K @ K)


def _vjp_problem(sigma_vox=8.0):
    """A smooth volume (Gaussian blobs of sigma_vox voxels, down to 1e-4 of their peak at the volume's faces so
    that the drop to zero outside adds no kink), four poses (an axis-aligned one whose samples all sit on voxel
    planes, two tilt-series poses, a general rotation), shifts that keep the rows of the tilt-series poses (a
    ray of a pose about y stays in one row of voxels) 1/32 voxel off the voxel planes, and a target from
    perturbed poses so that the residual is structured and the gradients are far from zero."""
    voxel = 0.8
    sigma = sigma_vox * voxel
    centres = np.array([[0.75, -0.5, 0.5], [-1.0, 0.75, -0.5], [0.5, 1.0, 1.0], [-0.5, -0.75, -1.0]]) * sigma
    half = int(np.ceil(np.abs(centres).max() / voxel + 4.3 * sigma_vox))
    shape = (2 * half, 2 * half - 2, 2 * half + 2)
    vol = gaussian_volume(shape, voxel, centres, [1.0, 0.7, 1.3, -0.6], sigma).astype(np.float32)
    rot = np.stack(
        [np.eye(3), ops.rotation_about_y(35.0), ops.rotation_about_y(-62.0), rotation_zyz(37.0, 52.0, -71.0)]
    )
    shifts = np.array([[0.0, 0.0], [0.425, -0.3077], [-0.275, 0.1513], [-0.2, 0.7]])
    kick = np.array([[0.03, -0.02, 0.05], [-0.02, 0.04, 0.01], [0.01, 0.02, -0.03], [0.02, -0.01, 0.02]])
    target_rot = np.stack([rotation_exp(w) @ r for w, r in zip(kick, rot)])
    kw = dict(shape=(2 * half, 2 * half + 6), pixel_size_A=0.75)
    target = ops.project(vol, target_rot, shifts + [0.5, -0.4], voxel, **kw).astype(np.float64)
    return vol, rot, shifts, voxel, kw, target


def _loss(vol, rot, shifts, voxel, kw, target):
    return 0.5 * np.sum((ops.project(vol, rot, shifts, voxel, **kw).astype(np.float64) - target) ** 2)


def test_project_vjp_pose_matches_central_finite_differences():
    """Through the float32 projector. The loss is piecewise smooth in the pose: its curvature jumps wherever a
    sample crosses a voxel plane (a kink of the trilinear interpolant), so a central difference carries an
    error that grows with h (the crossings it straddles), besides the float32 rounding that grows as 1/h.
    The kinks' weight relative to the gradient scales as voxel / sigma; sigma = 8 voxels and h = 5e-5 rad
    (1e-3 A for the shifts) keep both small. The axis-aligned pose puts every sample on voxel planes, where
    the vjp takes the mean of the two one-sided slopes, the derivative the central difference sees.
    Measured |fd - vjp| / |vjp| per pose: rotation 2.2e-5, 1.6e-4, 4.1e-4, 2.9e-5; shifts below 1e-4 (see
    the printout). The exact check, free of kinks and rounding, is the float64 one below."""
    vol, rot, shifts, voxel, kw, target = _vjp_problem()
    residual = ops.project(vol, rot, shifts, voxel, **kw).astype(np.float64) - target
    grads = ops.project_vjp(residual, vol, rot, shifts, voxel, **kw)
    assert grads.rotation_vector.shape == (4, 3) and grads.rotation_vector.dtype == np.float64
    assert grads.shifts_A.shape == (4, 2) and grads.shifts_A.dtype == np.float64
    h_rot, h_shift = 5e-5, 1e-3
    for t in range(len(rot)):
        fd_rot = np.zeros(3)
        for a in range(3):
            w = np.zeros(3)
            w[a] = h_rot
            plus, minus = rot.copy(), rot.copy()
            plus[t], minus[t] = rotation_exp(w) @ rot[t], rotation_exp(-w) @ rot[t]
            fd_rot[a] = (_loss(vol, plus, shifts, voxel, kw, target) - _loss(vol, minus, shifts, voxel, kw, target)) / (
                2 * h_rot
            )
        fd_shift = np.zeros(2)
        for a in range(2):
            plus, minus = shifts.copy(), shifts.copy()
            plus[t, a] += h_shift
            minus[t, a] -= h_shift
            fd_shift[a] = (_loss(vol, rot, plus, voxel, kw, target) - _loss(vol, rot, minus, voxel, kw, target)) / (
                2 * h_shift
            )
        err_rot = np.linalg.norm(fd_rot - grads.rotation_vector[t]) / np.linalg.norm(fd_rot)
        err_shift = np.linalg.norm(fd_shift - grads.shifts_A[t]) / np.linalg.norm(fd_shift)
        print(f"pose {t}: rotation {err_rot:.2e}, shifts {err_shift:.2e}")
        assert err_rot < 1e-3, (t, fd_rot, grads.rotation_vector[t])
        assert err_shift < 1e-3, (t, fd_shift, grads.shifts_A[t])


def test_project_vjp_pose_matches_a_float64_reference_projector():
    """An independent float64 projector (the same ray samples, trilinear interpolation by scipy's
    map_coordinates) differentiated with h = 1e-7 rad / A, small enough that hardly any sample crosses a
    voxel plane (h = 1e-6 already straddles one for the general pose, an error of 1e-6): the vjp agrees to
    ~1e-9 relative (see the printout)."""
    ndimage = pytest.importorskip("scipy.ndimage")
    vol, rot, shifts, voxel, kw, target = _vjp_problem(4.0)
    nz, ny, nx = vol.shape
    py, px = kw["shape"]
    pixel, step = kw["pixel_size_A"], voxel
    extent = np.array([nz // 2 + 1, ny // 2 + 1, nx // 2 + 1], float)
    half = int(np.ceil(voxel * np.linalg.norm(extent) / step))
    z = (np.arange(2 * half + 1) - half) * step
    j, i = np.meshgrid(np.arange(py), np.arange(px), indexing="ij")
    v64 = vol.astype(np.float64)

    def project64(r, s):
        qx = np.broadcast_to(((i - px // 2) * pixel - s[1])[..., None], (py, px, z.size))
        qy = np.broadcast_to(((j - py // 2) * pixel - s[0])[..., None], (py, px, z.size))
        qz = np.broadcast_to(z, (py, px, z.size))
        p = np.stack([qx, qy, qz], -1) @ r  # R^T q, as rows
        coords = np.stack([p[..., 2] / voxel + nz // 2, p[..., 1] / voxel + ny // 2, p[..., 0] / voxel + nx // 2])
        values = ndimage.map_coordinates(v64, coords.reshape(3, -1), order=1, mode="grid-constant", cval=0.0)
        return values.reshape(py, px, -1).sum(-1) * step

    h = 1e-7
    for t in (1, 2, 3):
        ref = project64(rot[t], shifts[t])
        native = ops.project(vol, rot[t : t + 1], shifts[t : t + 1], voxel, **kw)[0]
        assert np.abs(native - ref).max() <= 1e-6 * np.abs(ref).max()
        residual = ref - target[t]

        def loss(r, s):
            return 0.5 * np.sum((project64(r, s) - target[t]) ** 2)

        grads = ops.project_vjp(residual[None], vol, rot[t : t + 1], shifts[t : t + 1], voxel, **kw)
        fd_rot = np.array(
            [
                (loss(rotation_exp(h * w) @ rot[t], shifts[t]) - loss(rotation_exp(-h * w) @ rot[t], shifts[t]))
                / (2 * h)
                for w in np.eye(3)
            ]
        )
        fd_shift = np.array(
            [(loss(rot[t], shifts[t] + h * e) - loss(rot[t], shifts[t] - h * e)) / (2 * h) for e in np.eye(2)]
        )
        err_rot = np.linalg.norm(fd_rot - grads.rotation_vector[0]) / np.linalg.norm(fd_rot)
        err_shift = np.linalg.norm(fd_shift - grads.shifts_A[0]) / np.linalg.norm(fd_shift)
        print(f"pose {t} (float64 reference): rotation {err_rot:.1e}, shifts {err_shift:.1e}")
        assert err_rot < 1e-6 and err_shift < 1e-6, (t, err_rot, err_shift)


def test_project_vjp_volume_is_the_backprojection_and_matches_the_directional_derivative():
    """L is quadratic in the volume, so its central difference along any direction u is exact up to rounding
    (h = 1 here): (L(v + u) - L(v - u)) / 2 = <project(u), r> = <u, backproject(r)>. Measured relative error
    1e-7 to a few 1e-6 depending on u (the float32 projections' rounding; 3.4e-6 here)."""
    vol, rot, shifts, voxel, kw, target = _vjp_problem()
    residual = (ops.project(vol, rot, shifts, voxel, **kw).astype(np.float64) - target).astype(np.float32)
    grads = ops.project_vjp(residual, vol, rot, shifts, voxel, wrt=("volume",), **kw)
    assert grads.rotation_vector is None and grads.shifts_A is None
    ref = ops.backproject(residual, rot, shifts, voxel, vol.shape, pixel_size_A=kw["pixel_size_A"])
    assert grads.volume.dtype == np.float32 and np.array_equal(grads.volume, ref)
    u = (0.1 * RNG.standard_normal(vol.shape)).astype(np.float32)
    fd = (_loss(vol + u, rot, shifts, voxel, kw, target) - _loss(vol - u, rot, shifts, voxel, kw, target)) / 2
    an = np.vdot(grads.volume.astype(np.float64), u.astype(np.float64))
    print(f"volume: fd {fd:.8e} vjp {an:.8e} rel {abs(fd - an) / abs(an):.2e}")
    assert abs(fd - an) <= 1e-4 * abs(an), (fd, an)


def test_project_vjp_pose_is_deterministic_and_selects_wrt():
    vol, rot, shifts, voxel, kw, target = _vjp_problem()
    g = RNG.standard_normal((len(rot), *kw["shape"])).astype(np.float32)
    ref = ops.project_vjp(g, vol, rot, shifts, voxel, wrt=("rotation", "shifts"), threads=1, **kw)
    assert ref.volume is None
    for threads in (2, 3, 7):
        got = ops.project_vjp(g, vol, rot, shifts, voxel, wrt=("rotation", "shifts"), threads=threads, **kw)
        assert np.array_equal(got.rotation_vector, ref.rotation_vector)
        assert np.array_equal(got.shifts_A, ref.shifts_A)
    only = ops.project_vjp(g, vol, rot, shifts, voxel, wrt="shifts", **kw)
    assert only.volume is None and only.rotation_vector is None
    np.testing.assert_array_equal(only.shifts_A, ref.shifts_A)


def test_project_vjp_bad_inputs_name_the_argument():
    vol = np.zeros((8, 8, 8), np.float32)
    rot = ops.tilt_series_rotations([0.0, 10.0])
    g = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="wrt"):
        ops.project_vjp(g, vol, rot, wrt=("pose",))
    with pytest.raises(ValueError, match="grad_projections"):
        ops.project_vjp(g[:1], vol, rot)
    with pytest.raises(ValueError, match="grad_projections"):
        ops.project_vjp(g[0], vol, rot)
    with pytest.raises(ValueError, match="volume"):
        ops.project_vjp(g, vol[0], rot)
    with pytest.raises(ValueError, match="shape"):
        ops.project_vjp(g, vol, rot, shape=(8, 9))
    with pytest.raises(ValueError, match="rotation"):
        ops.project_vjp(g, vol, np.eye(3))
    with pytest.raises(ValueError, match="shifts_A"):
        ops.project_vjp(g, vol, rot, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="threads"):
        ops.project_vjp(g, vol, rot, threads=-1)


def test_native_pose_vjp_validates_its_arrays():
    from mspt._native import core

    vol = np.zeros((8, 8, 8), np.float32)
    rot = ops.tilt_series_rotations([0.0, 10.0])
    shifts = np.zeros((2, 2))
    g = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="grad_projections"):
        core.project_pose_vjp(g.astype(np.float64), vol, rot, shifts, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="grad_projections"):
        core.project_pose_vjp(g[:1], vol, rot, shifts, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="volume"):
        core.project_pose_vjp(g, vol[0], rot, shifts, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="shifts_A"):
        core.project_pose_vjp(g, vol, rot, shifts[:1], 1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# ProjectionOperator: the projector as a scipy LinearOperator


def rotation_about_x(tilt_deg):
    return rotation_exp([np.radians(tilt_deg), 0.0, 0.0])


def test_projection_operator_dot_product_identity():
    rot = random_rotations(3)
    shifts = RNG.uniform(-1.0, 1.0, (3, 2))
    A = ops.ProjectionOperator((10, 12, 14), rot, shifts, 0.7, shape=(13, 11), pixel_size_A=0.6, step_A=0.5)
    assert A.shape == (3 * 13 * 11, 10 * 12 * 14)
    x = RNG.standard_normal(A.shape[1])
    y = RNG.standard_normal(A.shape[0])
    Ax, ATy = A.matvec(x), A.rmatvec(y)
    assert Ax.shape == (A.shape[0],) and ATy.shape == (A.shape[1],)
    lhs, rhs = np.dot(Ax, y), np.dot(x, ATy)
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs), (lhs, rhs)
    assert abs(np.dot(A.H @ y, x) - rhs) <= 1e-12 * abs(rhs)
    np.testing.assert_array_equal(
        Ax.reshape(3, 13, 11),
        ops.project(
            x.reshape(10, 12, 14).astype(np.float32), rot, shifts, 0.7, shape=(13, 11), pixel_size_A=0.6, step_A=0.5
        ),
    )


def test_projection_operator_lsqr_recovers_a_phantom():
    """24 tilts over +-70 deg about y and 5 about x make the problem well posed; lsqr recovers a blob phantom
    (correlation 0.998 inside the sphere of radius 10 voxels after 50 iterations, measured)."""
    from scipy.sparse.linalg import lsqr

    shape = (24, 24, 24)
    centres = np.array([[3.0, -2.0, 1.5], [-4.0, 3.0, -2.0], [1.0, 4.0, -4.0], [-2.0, -4.0, 4.0]])
    phantom = gaussian_volume(shape, 1.0, centres, [1.0, 0.8, 1.2, 0.6], 1.8)
    about_x = np.stack([rotation_about_x(a) for a in (-60.0, -30.0, 0.0, 30.0, 60.0)])
    rot = np.concatenate([ops.tilt_series_rotations(np.linspace(-70.0, 70.0, 24)), about_x])
    A = ops.ProjectionOperator(shape, rot)
    b = A.matvec(phantom.ravel())
    x = lsqr(A, b, atol=1e-6, btol=1e-6, iter_lim=50)[0].reshape(shape)
    z, y, xx = np.meshgrid(*(np.arange(n) - n // 2 for n in shape), indexing="ij")
    inside = z**2 + y**2 + xx**2 <= 10**2
    corr = np.corrcoef(x[inside], phantom[inside])[0, 1]
    print(f"lsqr correlation inside: {corr:.4f}")
    assert corr > 0.95, corr


def test_import_mspt_does_not_need_scipy():
    import subprocess
    import sys

    code = "import sys, mspt, mspt.ops; assert 'scipy' not in sys.modules, 'scipy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------------
# The CUDA backend against the CPU backend: the same kernel bodies; the GPU back-projection adds with atomics
# (not bitwise reproducible) and the GPU pose sums use another order, so they agree to rounding, not bitwise.


def _require_cuda():
    if not _backend.cuda_available():
        pytest.skip("no usable CUDA backend")


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


CUDA_CASES = [
    ((9, 12, 15), (13, 17), 0.7, 0.6, 0.5),
    ((16, 11, 20), (11, 20), 1.0, None, None),
    ((12, 20, 8), (25, 14), 0.5, 0.55, 0.8),
]


@pytest.mark.gpu
@pytest.mark.parametrize("volume_shape, proj_shape, voxel, pixel, step", CUDA_CASES)
def test_cuda_project_and_backproject_match_cpu(volume_shape, proj_shape, voxel, pixel, step):
    _require_cuda()
    rng = np.random.default_rng(31)
    rot = np.concatenate([random_rotations(3), ops.tilt_series_rotations([-60.0, 0.0, 90.0])])
    shifts = rng.uniform(-2.0, 2.0, (len(rot), 2))
    kw = dict(pixel_size_A=pixel, step_A=step)
    v = rng.standard_normal(volume_shape).astype(np.float32)
    g = rng.standard_normal((len(rot), *proj_shape)).astype(np.float32)
    p_cpu = ops.project(v, rot, shifts, voxel, shape=proj_shape, **kw)
    p_gpu = ops.project(v, rot, shifts, voxel, shape=proj_shape, device="cuda", **kw)
    assert p_gpu.dtype == np.float32 and p_gpu.shape == p_cpu.shape
    assert _rel(p_gpu, p_cpu) < 1e-5
    b_cpu = ops.backproject(g, rot, shifts, voxel, volume_shape, **kw)
    b_gpu = ops.backproject(g, rot, shifts, voxel, volume_shape, device="cuda", **kw)
    assert b_gpu.dtype == np.float32 and b_gpu.shape == volume_shape
    assert _rel(b_gpu, b_cpu) < 1e-5
    # The GPU pair is an adjoint pair too.
    lhs = np.vdot(p_gpu.astype(np.float64), g.astype(np.float64))
    rhs = np.vdot(v.astype(np.float64), b_gpu.astype(np.float64))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs), (lhs, rhs)


@pytest.mark.gpu
def test_cuda_project_vjp_matches_cpu():
    _require_cuda()
    vol, rot, shifts, voxel, kw, target = _vjp_problem()
    residual = (ops.project(vol, rot, shifts, voxel, **kw).astype(np.float64) - target).astype(np.float32)
    cpu = ops.project_vjp(residual, vol, rot, shifts, voxel, wrt=("volume", "rotation", "shifts"), **kw)
    gpu = ops.project_vjp(
        residual, vol, rot, shifts, voxel, wrt=("volume", "rotation", "shifts"), device="cuda", **kw
    )
    assert gpu.rotation_vector.dtype == np.float64 and gpu.rotation_vector.shape == (len(rot), 3)
    assert gpu.shifts_A.dtype == np.float64 and gpu.shifts_A.shape == (len(rot), 2)
    assert _rel(gpu.rotation_vector, cpu.rotation_vector) < 1e-4
    assert _rel(gpu.shifts_A, cpu.shifts_A) < 1e-4
    assert _rel(gpu.volume, cpu.volume) < 1e-5
    # Per projection as well, so that no pose hides behind a larger one.
    for t in range(len(rot)):
        assert _rel(gpu.rotation_vector[t], cpu.rotation_vector[t]) < 1e-4, t
        assert _rel(gpu.shifts_A[t], cpu.shifts_A[t]) < 1e-4, t


@pytest.mark.gpu
def test_cuda_native_projector_validates_its_arrays():
    _require_cuda()
    core = _backend.cuda_module()
    vol = np.zeros((8, 8, 8), np.float32)
    rot = ops.tilt_series_rotations([0.0, 10.0])
    shifts = np.zeros((2, 2))
    g = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="volume"):
        core.project(vol.astype(np.float64), rot, shifts, 1.0, 8, 8, 1.0, 1.0)
    with pytest.raises(ValueError, match="shifts_A"):
        core.project(vol, rot, shifts[:1], 1.0, 8, 8, 1.0, 1.0)
    with pytest.raises(ValueError, match="projections"):
        core.backproject(g[:1], rot, shifts, 1.0, 8, 8, 8, 1.0, 1.0)
    with pytest.raises(ValueError, match="grad_projections"):
        core.project_pose_vjp(g.astype(np.float64), vol, rot, shifts, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="rotation"):
        core.project_pose_vjp(g, vol, rot[0], shifts, 1.0, 1.0, 1.0)


def test_cuda_device_raises_runtime_error_without_a_gpu():
    if _backend.cuda_available():
        pytest.skip("a usable CUDA backend is present")
    vol = np.zeros((8, 8, 8), np.float32)
    rot = ops.tilt_series_rotations([0.0, 10.0])
    g = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.project(vol, rot, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.backproject(g, rot, None, 1.0, (8, 8, 8), device="cuda")
    with pytest.raises(RuntimeError, match="CUDA"):
        ops.project_vjp(g, vol, rot, device="cuda")
