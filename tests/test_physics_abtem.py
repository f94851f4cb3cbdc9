"""Physics cross-checks against abTEM, an independent multislice code: the probe, free-space propagation and
the diffraction patterns of multi-slice crystals, each to a relative L2 error below 1e-3.

How the two codes are put on the same problem (DESIGN.md, "Conventions" and "Testing"):

* Axes. abTEM indexes its arrays (x, y), mspt (y, x): abTEM's arrays are transposed before any comparison.
  abTEM's scan positions are (x, y) in angstrom; mspt's are window centres (y, x) in object pixels, and a
  probe at pixel p sits at p * sampling in abTEM's frame (both place a probe at position 0 on pixel 0).
* Aberrations. Both use Krivanek coefficients C_nm / phi_nm with defocus = -C10 (positive defocus puts
  the crossover downstream); the same numbers go to both codes. Both refer the defocus to the plane where the
  probe meets the first slice (abTEM: the entrance surface of the potential box), so nothing is converted.
* Band limit. abTEM's multislice multiplies the wave by each transmission function band-limited to 2/3 of
  Nyquist, then propagates with a propagator band-limited the same way. Its `transmission_function()` returns
  the raw exp(i sigma V), so the slices handed to mspt are abTEM's own transmission functions, band-limited
  here with a hard cut at the same radius; abTEM's antialias taper is set to 0 to make its cut hard too.
* Exit plane. abTEM propagates after every slice including the last; mspt's exit wave is the last slice's.
  Far-field intensities agree regardless (inside the band limit the propagator is a pure phase, outside it
  is 0, and mspt cuts its far field at the same radius). Exit waves are compared by giving mspt one extra
  slice of vacuum (ones), which adds exactly that last propagation.
* Normalisation. abTEM's probe sums |psi|^2 to 1/N over its N grid points (its diffraction patterns to 1),
  mspt's probe and patterns to `electrons` = 1 (orthonormal FFT): patterns are compared as they come,
  abTEM's real-space waves are scaled by sqrt(N).
* Precision. abTEM computes the references in float64, mspt in single precision (its compute path).
"""

from __future__ import annotations

import numpy as np
import pytest

abtem = pytest.importorskip("abtem")
pytest.importorskip("ase")
from ase.build import bulk  # noqa: E402
from ase.spacegroup import crystal  # noqa: E402

import mspt  # noqa: E402

TOL = 1e-3

# abTEM settings for every reference simulation: hard antialias cut, float64, eager arrays, plain NumPy FFTs
# (no FFTW planning on the CI machine), no progress bars.
ABTEM_SETTINGS = {
    "antialias.taper": 0.0,
    "precision": "float64",
    "dask.lazy": False,
    "fft": "numpy",
    "diagnostics.progress_bar": False,
}


def rel_l2(value: np.ndarray, reference: np.ndarray) -> float:
    value = np.asarray(value, dtype=np.complex128 if np.iscomplexobj(value) else np.float64)
    reference = np.asarray(reference, dtype=value.dtype)
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def xy_to_yx(array) -> np.ndarray:
    """abTEM's (..., x, y) array as mspt's (..., y, x)."""
    return np.swapaxes(np.asarray(array), -1, -2)


def bandlimit(transmission: np.ndarray, sampling: tuple[float, float]) -> np.ndarray:
    """Hard band limit at 2/3 of the Nyquist frequency of the coarser axis, on the last two axes (any order,
    given the sampling of those axes)."""
    k0 = np.fft.fftfreq(transmission.shape[-2], sampling[0])[:, None]
    k1 = np.fft.fftfreq(transmission.shape[-1], sampling[1])[None, :]
    cutoff = 2.0 / 3.0 / (2.0 * max(sampling))
    inside = k0**2 + k1**2 < cutoff**2
    return np.fft.ifft2(np.fft.fft2(transmission, axes=(-2, -1)) * inside, axes=(-2, -1))


def abtem_scan(positions_px: np.ndarray, sampling_yx: tuple[float, float]):
    """mspt pixel positions (y, x) as an abTEM scan of (x, y) positions in angstrom."""
    positions_px = np.asarray(positions_px, dtype=float)
    xy_A = np.stack([positions_px[:, 1] * sampling_yx[1], positions_px[:, 0] * sampling_yx[0]], axis=1)
    return abtem.CustomScan(xy_A)


def strontium_titanate(repetitions):
    a = 3.905
    unit = crystal(
        ["Sr", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)], spacegroup=221,
        cellpar=[a, a, a, 90, 90, 90],
    )  # fmt: skip
    return unit * repetitions, a


def silicon(repetitions):
    a = 5.431
    return bulk("Si", "diamond", a=a, cubic=True) * repetitions, a


# --------------------------------------------------------------------------------------------------------
# 1. Probe
# --------------------------------------------------------------------------------------------------------

PROBE_GRID = dict(gpts=128, sampling=0.1)  # 12.8 A window; band limit 3.33 1/A, apertures below 1 1/A
PROBE_CASES = {
    "200keV-df0-Cs1um": (200e3, 25.0, 0.0, {"C30": 1e4}),
    "200keV-df50-Cs1um": (200e3, 25.0, 50.0, {"C30": 1e4}),
    "200keV-df-30-Cs1um": (200e3, 25.0, -30.0, {"C30": 1e4}),
    "80keV-df0-Cs1um": (80e3, 25.0, 0.0, {"C30": 1e4}),
    "80keV-df50-Cs1um": (80e3, 25.0, 50.0, {"C30": 1e4}),
    "80keV-df-30-Cs1um": (80e3, 25.0, -30.0, {"C30": 1e4}),
    "200keV-astigmatism-coma": (200e3, 25.0, 20.0, {"C30": 1e4, "C12": 30.0, "phi12": 0.4, "C21": 300.0, "phi21": 1.1}),
    "80keV-trefoil-C32": (80e3, 20.0, -10.0, {"C23": 400.0, "phi23": 0.3, "C32": 2e3, "phi32": -0.8}),
}  # fmt: skip


@pytest.fixture(scope="session")
def probes():
    """Per case: (mspt probe, abTEM probe, abTEM probe left in its (x, y) order), unit-norm complex128
    (y, x) arrays centred on pixel (ny // 2, nx // 2)."""
    n, s = PROBE_GRID["gpts"], PROBE_GRID["sampling"]
    out = {}
    with abtem.config.set(ABTEM_SETTINGS):
        for name, (energy, semiangle, defocus, aberrations) in PROBE_CASES.items():
            ours = mspt.make_probe(energy, semiangle, n, s, defocus_A=defocus, aberrations=aberrations)
            theirs = abtem.Probe(
                semiangle_cutoff=semiangle, energy=energy, gpts=n, sampling=s, soft=False, defocus=defocus,
                **aberrations,
            )  # fmt: skip
            # abTEM puts the probe at its scan position; pixel (n//2, n//2) is mspt's window centre.
            wave = np.asarray(theirs.build(scan=[(n // 2 * s, n // 2 * s)], lazy=False).array).reshape(n, n)
            a = ours.array[0].astype(np.complex128)
            b = xy_to_yx(wave).astype(np.complex128)
            out[name] = (a / np.linalg.norm(a), b / np.linalg.norm(b), wave / np.linalg.norm(wave))
    return out


@pytest.mark.parametrize("case", list(PROBE_CASES))
def test_probe_intensity_matches_abtem(probes, case, measured):
    ours, theirs, _ = probes[case]
    err = measured("probe intensity", case, rel_l2(np.abs(ours) ** 2, np.abs(theirs) ** 2), TOL)
    assert err < TOL


@pytest.mark.parametrize("case", list(PROBE_CASES))
def test_probe_complex_wave_matches_abtem(probes, case, measured):
    # No global phase is removed: both codes build the spectrum as A(k) exp(-i chi(k)) with chi(0) = 0 and
    # no other constant phase, and place the probe at the same pixel, so the complex fields agree as built.
    ours, theirs, _ = probes[case]
    err = measured("probe complex", case, rel_l2(ours, theirs), TOL)
    assert err < TOL


def test_probe_comparison_sees_the_azimuth_convention(probes, measured):
    # Guards against a comparison that cannot fail. With astigmatism and coma the probe has no mirror
    # symmetry, so (a) abTEM's array left in its (x, y) order (a swap of axes, phi -> pi/2 - phi) and (b) mspt's
    # probe with every phi_nm negated (a mirror, e.g. a flipped ky) must both be far from abTEM's probe.
    name = "200keV-astigmatism-coma"
    ours, theirs, untransposed = probes[name]
    err = measured("probe complex", f"{name} untransposed (must differ)", rel_l2(ours, untransposed), 100 * TOL, ">")
    assert err > 100 * TOL
    energy, semiangle, defocus, aberrations = PROBE_CASES[name]
    mirrored = {k: (-v if k.startswith("phi") else v) for k, v in aberrations.items()}
    wrong = mspt.make_probe(energy, semiangle, PROBE_GRID["gpts"], PROBE_GRID["sampling"], defocus_A=defocus,
                            aberrations=mirrored).array[0].astype(np.complex128)  # fmt: skip
    wrong /= np.linalg.norm(wrong)
    err = measured("probe complex", f"{name} phi_nm negated (must differ)", rel_l2(wrong, theirs), 100 * TOL, ">")
    assert err > 100 * TOL


# --------------------------------------------------------------------------------------------------------
# 2. Free-space propagation
# --------------------------------------------------------------------------------------------------------

VACUUM = dict(energy=200e3, semiangle=25.0, defocus=-20.0, aberrations={"C30": 1e4}, gpts=128, sampling=0.1,
              dz=2.5, num_slices=8, positions=[[64.0, 64.0], [64.3, 63.75]])  # fmt: skip


@pytest.fixture(scope="session")
def vacuum():
    p = VACUUM
    n, s, S, dz = p["gpts"], p["sampling"], p["num_slices"], p["dz"]
    positions = np.array(p["positions"])
    probe = mspt.make_probe(p["energy"], p["semiangle"], n, s, defocus_A=p["defocus"], aberrations=p["aberrations"])
    # S + 1 slices of ones: S propagations of dz, the same distance as abTEM's S slices of thickness dz.
    ones = np.ones((S + 1, n, n), np.complex64)
    intensities, exit_waves = mspt.ops.multislice_forward(ones, probe, positions, dz, return_exit_waves=True)
    with abtem.config.set(ABTEM_SETTINGS):
        empty = abtem.PotentialArray(np.zeros((S, n, n)), slice_thickness=dz, sampling=s)
        ref = abtem.Probe(
            semiangle_cutoff=p["semiangle"], energy=p["energy"], soft=False, defocus=p["defocus"], **p["aberrations"]
        )  # fmt: skip
        waves = ref.multislice(empty, scan=abtem_scan(positions, (s, s)), lazy=False)
        patterns = ref.multislice(
            empty, scan=abtem_scan(positions, (s, s)), detectors=abtem.PixelatedDetector(max_angle="full"), lazy=False
        )  # fmt: skip
        # The same propagation one slice short: how far off a wrong distance lands (the comparison's power).
        short = ref.multislice(abtem.PotentialArray(np.zeros((S - 1, n, n)), slice_thickness=dz, sampling=s),
                               scan=abtem_scan(positions, (s, s)), lazy=False)  # fmt: skip
    scale = np.sqrt(n * n)  # abTEM's real-space waves sum |psi|^2 to 1 / (number of grid points)
    return dict(
        ours=exit_waves[:, 0], theirs=xy_to_yx(waves.array) * scale, short=xy_to_yx(short.array) * scale,
        ours_I=intensities, theirs_I=xy_to_yx(patterns.array),
    )  # fmt: skip


def test_vacuum_propagation_matches_abtem(vacuum, measured):
    for b in range(len(vacuum["ours"])):
        err = measured("vacuum exit wave", f"position {b}", rel_l2(vacuum["ours"][b], vacuum["theirs"][b]), TOL)
        assert err < TOL
        err = measured("vacuum pattern", f"position {b}", rel_l2(vacuum["ours_I"][b], vacuum["theirs_I"][b]), TOL)
        assert err < TOL
        off = rel_l2(vacuum["ours"][b], vacuum["short"][b])
        measured("vacuum exit wave", f"position {b} vs dz shorter (must differ)", off, 100 * TOL, ">")
        assert off > 100 * TOL


# --------------------------------------------------------------------------------------------------------
# 3. Diffraction patterns of multi-slice crystals
# --------------------------------------------------------------------------------------------------------

# Full-size windows: the probe window is the whole (periodic) object grid, positions at its centre plus
# sub-pixel offsets (the window covers rows [floor(y + 0.5) - ny // 2, + ny), so y in [63.5, 64.5) on 128).
CRYSTALS = {
    "SrTiO3-3x3x5-infinite-200keV": dict(
        structure=(strontium_titanate, (3, 3, 5)), slices_per_cell=2, projection="infinite", gpts=128,
        energy=200e3, semiangle=25.0, defocus=30.0, aberrations={"C30": 1e4},
        positions=[[64.0, 64.0], [64.3, 63.8], [63.6, 64.45], [64.49, 64.0]],
    ),
    "Si-2x2x5-finite-80keV": dict(
        structure=(silicon, (2, 2, 5)), slices_per_cell=4, projection="finite", gpts=128,
        energy=80e3, semiangle=20.0, defocus=-20.0, aberrations={"C30": 5e3, "C12": 15.0, "phi12": 0.7},
        positions=[[64.0, 64.0], [64.25, 63.7], [63.55, 64.4]],
    ),
}  # fmt: skip


def _crystal_potential(case):
    make, repetitions = case["structure"]
    atoms, a = make(repetitions)
    dz = a / case["slices_per_cell"]
    potential = abtem.Potential(
        atoms, gpts=case["gpts"], slice_thickness=dz, projection=case["projection"], parametrization="lobato"
    )  # fmt: skip
    num_slices = repetitions[2] * case["slices_per_cell"]
    assert potential.num_slices == num_slices and np.allclose(potential.slice_thickness, dz)
    return potential, dz


def _abtem_probe(case):
    return abtem.Probe(
        semiangle_cutoff=case["semiangle"], energy=case["energy"], soft=False, defocus=case["defocus"],
        **case["aberrations"],
    )  # fmt: skip


@pytest.fixture(scope="session")
def crystal_full_window():
    """Per crystal: mspt's and abTEM's patterns (B, ny, nx); for the first crystal also the exit waves."""
    out = {}
    with abtem.config.set(ABTEM_SETTINGS):
        for name, case in CRYSTALS.items():
            potential, dz = _crystal_potential(case)
            built = potential.build(lazy=False)
            sx, sy = built.sampling
            transmission = np.asarray(built.transmission_function(case["energy"]).array)  # (S, x, y), raw
            slices = xy_to_yx(bandlimit(transmission, (sx, sy))).astype(np.complex64)
            positions = np.array(case["positions"])
            probe = mspt.make_probe(
                case["energy"], case["semiangle"], case["gpts"], (sy, sx), defocus_A=case["defocus"],
                aberrations=case["aberrations"],
            )  # fmt: skip
            ours = mspt.ops.multislice_forward(slices, probe, positions, dz)
            ref = _abtem_probe(case)
            scan = abtem_scan(positions, (sy, sx))
            patterns = ref.multislice(built, scan=scan, detectors=abtem.PixelatedDetector(max_angle="full"), lazy=False)
            assert patterns.shape[-2:] == (case["gpts"],) * 2  # the full reciprocal grid, nothing cropped
            assert np.allclose(patterns.sampling, (1 / (case["gpts"] * sx), 1 / (case["gpts"] * sy)))
            result = dict(ours=ours, theirs=xy_to_yx(patterns.array))
            if not out:
                # Exit waves: one extra vacuum slice gives mspt abTEM's final propagation (see module doc).
                extra = np.concatenate([slices, np.ones_like(slices[:1])])
                _, exit_waves = mspt.ops.multislice_forward(extra, probe, positions, dz, return_exit_waves=True)
                waves = ref.multislice(built, scan=scan, lazy=False)
                result["ours_wave"] = exit_waves[:, 0]
                result["theirs_wave"] = xy_to_yx(waves.array) * case["gpts"]  # abTEM: sum |psi|^2 = 1 / gpts^2
                # The comparison's power: abTEM's patterns with the positions 0.05 pixel off.
                off = ref.multislice(built, scan=abtem_scan(positions + [0.05, 0.0], (sy, sx)),
                                     detectors=abtem.PixelatedDetector(max_angle="full"), lazy=False)  # fmt: skip
                result["theirs_off"] = xy_to_yx(off.array)
            out[name] = result
    return out


@pytest.mark.parametrize("name", list(CRYSTALS))
def test_crystal_patterns_match_abtem(crystal_full_window, name, measured):
    r = crystal_full_window[name]
    assert r["ours"].shape == r["theirs"].shape
    errors = [measured(f"{name} pattern", f"position {b}", rel_l2(r["ours"][b], r["theirs"][b]), TOL)
              for b in range(len(r["ours"]))]  # fmt: skip
    assert max(errors) < TOL, errors


def test_crystal_exit_waves_match_abtem(crystal_full_window, measured):
    name = next(iter(CRYSTALS))
    r = crystal_full_window[name]
    errors = [measured(f"{name} exit wave", f"position {b}", rel_l2(r["ours_wave"][b], r["theirs_wave"][b]), TOL)
              for b in range(len(r["ours_wave"]))]  # fmt: skip
    assert max(errors) < TOL, errors


def test_crystal_comparison_sees_a_twentieth_of_a_pixel(crystal_full_window, measured):
    name = next(iter(CRYSTALS))
    r = crystal_full_window[name]
    for b in range(len(r["ours"])):
        off = rel_l2(r["ours"][b], r["theirs_off"][b])
        measured(f"{name} pattern", f"position {b} vs 0.05 px off (must differ)", off, 5 * TOL, ">")
        assert off > 5 * TOL


# A probe window smaller than the object: a 4x4-cell SrTiO3 object on 128 pixels (32 pixels per cell), a
# 64-pixel window (2x2 cells). The object inside any window is then itself periodic on the window, so abTEM
# can run the same problem on the window-sized crop of its own potential, with the probe at the position
# relative to the window origin.
WINDOW = dict(repetitions=(4, 4, 4), gpts=128, window=64, energy=200e3, semiangle=25.0, defocus=10.0,
              aberrations={"C30": 1e4}, positions=[[40.3, 70.7], [90.5, 33.45], [60.6, 60.2]])  # fmt: skip


@pytest.fixture(scope="session")
def crystal_small_window():
    p = WINDOW
    w = p["window"]
    assert w % (p["gpts"] // p["repetitions"][0]) == 0  # the window spans whole unit cells
    case = dict(structure=(strontium_titanate, p["repetitions"]), slices_per_cell=2, projection="infinite",
                gpts=p["gpts"])  # fmt: skip
    positions = np.array(p["positions"])
    ours, theirs = [], []
    with abtem.config.set(ABTEM_SETTINGS):
        potential, dz = _crystal_potential(case)
        built = potential.build(lazy=False)
        sx, sy = built.sampling
        transmission = np.asarray(built.transmission_function(p["energy"]).array)
        slices = xy_to_yx(bandlimit(transmission, (sx, sy))).astype(np.complex64)
        probe = mspt.make_probe(p["energy"], p["semiangle"], w, (sy, sx), defocus_A=p["defocus"],
                                aberrations=p["aberrations"])  # fmt: skip
        ours = mspt.ops.multislice_forward(slices, probe, positions, dz)
        ref = _abtem_probe(p)
        potential_array = np.asarray(built.array)  # (S, x, y)
        for y, x in positions:
            y0, x0 = int(np.floor(y + 0.5)) - w // 2, int(np.floor(x + 0.5)) - w // 2  # the window's origin
            crop = abtem.PotentialArray(
                potential_array[:, x0 : x0 + w, y0 : y0 + w], slice_thickness=built.slice_thickness,
                sampling=(sx, sy),
            )  # fmt: skip
            pattern = ref.multislice(crop, scan=abtem_scan([[y - y0, x - x0]], (sy, sx)),
                                     detectors=abtem.PixelatedDetector(max_angle="full"), lazy=False)  # fmt: skip
            theirs.append(xy_to_yx(np.asarray(pattern.array).reshape(w, w)))
    return ours, np.stack(theirs)


def test_crystal_patterns_small_window_match_abtem(crystal_small_window, measured):
    ours, theirs = crystal_small_window
    assert ours.shape == theirs.shape
    errors = [measured("SrTiO3-4x4x4 64px window pattern", f"position {b}", rel_l2(ours[b], theirs[b]), TOL)
              for b in range(len(ours))]  # fmt: skip
    assert max(errors) < TOL, errors
