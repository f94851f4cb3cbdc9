"""mspt.simulate against independent witnesses: abTEM's own multislice of the same zero-tilt specimen (its
potential, probe, propagation and detector), the tilt convention (an atom on +z moves to +x for a positive
tilt) seen in the simulated patterns themselves, Poisson statistics of the dose, and the file it writes.

Why the abTEM comparison holds to ~1e-3 and not to 1e-6: the simulator band-limits each transmission
function over the whole object before the probe windows are cut out of it; abTEM, handed a window-sized crop
of the same potential, band-limits the crop. The two differ by the crop's edge (the potential's tails are
cut there). With a window that leaves ~5 A of vacuum around the specimen the difference measured is 7e-4 to
1e-3; with the band limit applied to the crop on both sides the codes agree to ~1e-6 (checked while writing
this test; tests/test_physics_abtem.py holds mspt's multislice to abTEM at 1e-3 on its own).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

abtem = pytest.importorskip("abtem")
ase = pytest.importorskip("ase")

import mspt.io as mio  # noqa: E402
import mspt.simulate as sim  # noqa: E402
from mspt.cli import main  # noqa: E402
from mspt.simulate.nanocube import SRTIO3_A  # noqa: E402

ABTEM_SETTINGS = {"antialias.taper": 0.0, "precision": "float64", "dask.lazy": False, "fft": "numpy",
                  "diagnostics.progress_bar": False}  # fmt: skip
WITNESS = dict(energy_eV=200e3, semiangle_mrad=25.0, defocus_A=20.0, aberrations={"C30": 1e4}, gpts=96,
               sampling_A=0.2, scan_shape=(3, 3), scan_step_A=0.65, slice_thickness_A=2.0)  # fmt: skip
WITNESS_TOL = 2e-3


def rel_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, float) - b) / np.linalg.norm(b))


def test_nanocube_composition_and_centre(measured):
    cube = sim.nanocube("SrTiO3", cells=3)
    n = 3
    counts = {s: cube.get_chemical_symbols().count(s) for s in ("Sr", "Ti", "O")}
    # Closed perovskite cube: (n+1)^3 corner sites (Sr), n^3 body centres (Ti), 3 n^2 (n+1) face centres (O).
    assert counts == {"Sr": (n + 1) ** 3, "Ti": n**3, "O": 3 * n**2 * (n + 1)}
    positions = cube.get_positions()
    np.testing.assert_allclose(positions.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(positions.max(0), n * SRTIO3_A / 2, atol=1e-12)
    gold = sim.nanocube("Au", cells=2)  # fcc: (n+1)^3 corners + 3 n^2 (n+1) face centres
    assert len(gold) == 27 + 36
    with pytest.raises(ValueError, match="cells: expected a positive finite integer"):
        sim.nanocube(cells=0)
    with pytest.raises(ValueError, match="structure: ASE cannot build"):
        sim.nanocube("Qq")


@pytest.fixture(scope="module")
def witness(tmp_path_factory):
    """The simulator's zero-tilt patterns and abTEM's patterns of the same specimen, position by position."""
    path = tmp_path_factory.mktemp("witness") / "series.h5"
    atoms = sim.nanocube("SrTiO3", cells=2)
    info = sim.tiltseries(atoms, [0.0], path, **WITNESS)
    w = WITNESS["gpts"]
    with h5py.File(path, "r") as f:
        ours = f["tilts/000/data"][()].reshape(-1, w, w)
        truth = f["truth"]
        s, dz, S = truth.attrs["pixel_size_A"], truth.attrs["slice_thickness_A"], int(truth.attrs["n_slices"])
        projected = truth["projected_potential_VA"][0]
    N = info["object_gpts"]
    # abTEM's own box: the rotation centre at pixel N // 2 and mid-depth (DESIGN.md's frame).
    placed = ase.Atoms(numbers=atoms.numbers, positions=atoms.get_positions() + [N // 2 * s, N // 2 * s, S * dz / 2],
                       cell=(N * s, N * s, S * dz), pbc=True)  # fmt: skip
    theirs, entrance_referenced = [], []
    with abtem.config.set(ABTEM_SETTINGS):
        potential = abtem.Potential(placed, gpts=N, slice_thickness=dz, projection="infinite").build(lazy=False)
        array = np.asarray(potential.array)  # (S, x, y)
        for defocus, out in ((WITNESS["defocus_A"] + S * dz / 2, theirs), (WITNESS["defocus_A"], entrance_referenced)):
            probe = abtem.Probe(semiangle_cutoff=WITNESS["semiangle_mrad"], energy=WITNESS["energy_eV"], soft=False,
                                defocus=defocus, **WITNESS["aberrations"])  # fmt: skip
            for y, x in info["positions_px"]:
                y0, x0 = int(np.floor(y + 0.5)) - w // 2, int(np.floor(x + 0.5)) - w // 2
                crop = abtem.PotentialArray(array[:, x0 : x0 + w, y0 : y0 + w], slice_thickness=dz, sampling=(s, s))
                pattern = probe.multislice(crop, scan=abtem.CustomScan([[(x - x0) * s, (y - y0) * s]]),
                                           detectors=abtem.PixelatedDetector(max_angle="full"), lazy=False)  # fmt: skip
                out.append(np.asarray(pattern.array).reshape(w, w).T)  # abTEM's (x, y) as (y, x)
    return dict(ours=ours, theirs=np.stack(theirs), entrance=np.stack(entrance_referenced),
                projected=projected, abtem_projected=array.sum(0).T, positions_px=info["positions_px"])  # fmt: skip


def test_patterns_match_abtem(witness, measured):
    errors = [measured("simulate vs abTEM pattern", f"position {b}", rel_l2(witness["ours"][b], witness["theirs"][b]), WITNESS_TOL)
              for b in range(len(witness["ours"]))]  # fmt: skip
    assert max(errors) < WITNESS_TOL, errors
    # Sub-pixel positions took part (the Fourier-shift path), not only whole pixels.
    assert np.any(np.abs(witness["positions_px"] - np.round(witness["positions_px"])) > 0.1)


def test_defocus_is_referenced_to_the_rotation_centre(witness, measured):
    # The comparison's power: abTEM with the same defocus referenced to the box's entrance (half the box
    # thickness off) lands far outside the tolerance.
    errors = [rel_l2(witness["ours"][b], witness["entrance"][b]) for b in range(len(witness["ours"]))]
    low = measured("simulate vs abTEM pattern", "defocus at the entrance (must differ)", min(errors), 10 * WITNESS_TOL, ">")
    assert low > 10 * WITNESS_TOL


def test_truth_projected_potential_is_abtems(witness, measured):
    err = measured("simulate truth", "projected potential vs abTEM", rel_l2(witness["projected"], witness["abtem_projected"]), 1e-5)
    assert err < 1e-5


@pytest.fixture(scope="module")
def single_atom(tmp_path_factory):
    """One gold atom on +z (4 A above the rotation centre), tilted by -30, 0 and +30 degrees."""
    path = tmp_path_factory.mktemp("atom") / "atom.h5"
    atom = ase.Atoms("Au", positions=[(0.0, 0.0, 4.0)])
    sim.tiltseries(atom, [-30.0, 0.0, 30.0], path, scan_shape=(17, 17), scan_step_A=0.4, gpts=48, sampling_A=0.2,
                   slice_thickness_A=2.0)  # fmt: skip
    return path


def _peak_xy(image: np.ndarray, pixel_A: float) -> tuple[float, float]:
    """(x, y) in A from the image centre of the intensity-weighted centroid around the maximum."""
    j, i = np.unravel_index(np.argmax(image), image.shape)
    patch = image[j - 2 : j + 3, i - 2 : i + 3] - np.median(image)
    yy, xx = np.mgrid[j - 2 : j + 3, i - 2 : i + 3]
    weights = np.clip(patch, 0, None)
    cy, cx = (weights * yy).sum() / weights.sum(), (weights * xx).sum() / weights.sum()
    return (cx - image.shape[1] // 2) * pixel_A, (cy - image.shape[0] // 2) * pixel_A


def test_positive_tilt_moves_plus_z_towards_plus_x(single_atom, measured):
    with mio.load_tiltseries(single_atom) as series, h5py.File(single_atom, "r") as f:
        pixel = f["truth"].attrs["pixel_size_A"]
        projected = f["truth/projected_potential_VA"][()]
        scan = series.scan(0)
        k = np.hypot(*np.meshgrid(*(np.arange(n) - n // 2 for n in scan.pattern_shape), indexing="ij"))
        k_invA = k * scan.dk_invA[0]
        aperture_invA = 25e-3 / scan.wavelength_A
        dark_field = (k_invA > 1.2 * aperture_invA) & (k_invA < 1.6)  # inside the 2/3-Nyquist band limit
        for index, tilt in enumerate(series.tilts_deg):
            expected_x = 4.0 * np.sin(np.radians(tilt))  # R_y(tilt) (0, 0, 4) = (4 sin t, 0, 4 cos t)
            x, y = _peak_xy(projected[index], pixel)
            err = measured("simulate tilt", f"{tilt:+.0f} deg truth peak x error (A)", abs(x - expected_x), 0.05)
            assert err < 0.05 and abs(y) < 0.05
            # The patterns themselves: the annular dark-field image of the scan peaks on the atom.
            data = series.data[index][()]
            adf = (data * dark_field).sum(axis=(-2, -1))
            x, y = _peak_xy(adf, scan.scan_step_A[0])
            err = measured("simulate tilt", f"{tilt:+.0f} deg dark-field peak x error (A)", abs(x - expected_x), 0.15)
            assert err < 0.15 and abs(y) < 0.15


def test_dose_gives_poisson_counts(tmp_path, measured):
    atoms = sim.nanocube("SrTiO3", cells=1)
    common = dict(scan_shape=(6, 6), scan_step_A=0.5, gpts=32, sampling_A=0.25)
    sim.tiltseries(atoms, [10.0], tmp_path / "clean.h5", **common)
    info = sim.tiltseries(atoms, [10.0], tmp_path / "noisy.h5", dose_e_per_A2=4e3, seed=7, **common)
    electrons = info["electrons_per_pattern"]
    assert electrons == pytest.approx(4e3 * 0.25)
    with h5py.File(tmp_path / "clean.h5", "r") as f, h5py.File(tmp_path / "noisy.h5", "r") as g:
        expected = f["tilts/000/data"][()].astype(float) * electrons
        counts = g["tilts/000/data"][()].astype(float)
        assert g["tilts/000"].attrs["dose_e_per_A2"] == 4e3
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    # Pearson residuals of Poisson counts have unit variance; the totals match the expected electrons.
    mask = expected > 5
    variance = measured("simulate dose", "Pearson residual variance - 1", abs(np.var((counts - expected)[mask] / np.sqrt(expected[mask])) - 1), 0.05)
    assert variance < 0.05
    bound = 4 / np.sqrt(expected.sum())  # four standard deviations of a Poisson total
    total = measured("simulate dose", "total counts relative error", abs(counts.sum() / expected.sum() - 1), bound)
    assert total < bound


def test_file_loads_with_the_simulated_calibrations(single_atom):
    with mio.load_tiltseries(single_atom) as series:
        scan = series.scan(2)
        assert scan.sampling_A == pytest.approx((0.2, 0.2))  # the detector pixel is 1 / (gpts * sampling)
        assert series.calibration.defocus_A == 0.0 and series.calibration.scan_step_A == (0.4, 0.4)
        np.testing.assert_allclose(series.tilts_deg, [-30.0, 0.0, 30.0])
        # Raster positions as PtychoScan assumes them: centred on the rotation centre.
        np.testing.assert_allclose(scan.positions(), sim.raster_positions_A((17, 17), (0.4, 0.4)))
        series.check()  # finite, non-negative, centred patterns


def test_bad_simulation_arguments(tmp_path):
    atoms = ase.Atoms("Au", positions=[(0.0, 0.0, 0.0)])
    cases = {
        "gpts": dict(gpts=63), "sampling_A": dict(sampling_A=-0.1), "dose_e_per_A2": dict(dose_e_per_A2=0.0),
        "scan_shape": dict(scan_shape=(0, 4)), "scan_step_A": dict(scan_step_A=(0.5, -0.5)),
        "slice_thickness_A": dict(slice_thickness_A=0.0), "tilts_deg": dict(tilts_deg=[np.nan]),
    }  # fmt: skip
    for field, change in cases.items():
        kwargs = {"tilts_deg": [0.0], **change}
        with pytest.raises(ValueError, match=field):
            sim.tiltseries(atoms, kwargs.pop("tilts_deg"), tmp_path / "x.h5", **kwargs)
    path = tmp_path / "exists.h5"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        sim.tiltseries(atoms, [0.0], path)
    assert path.read_bytes() == b"keep me"


def test_cli_simulate_never_overwrites_without_the_flag(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    args = ["simulate", str(out), "--cells", "1", "--tilts=-20,20", "--scan", "4x5", "--gpts", "32", "--quiet"]
    assert main(args) == 0
    with mio.load_tiltseries(out) as series:
        assert series.n_tilts == 2 and series.data[0].shape == (4, 5, 32, 32)
        np.testing.assert_allclose(series.tilts_deg, [-20.0, 20.0])
    before = out.read_bytes()
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert main([*args, "--overwrite", "--seed", "3"]) == 0
    assert main([*args, "--overwrite", "--gpts", "33"]) == 1  # a bad value: the message names the option
    assert "gpts: expected an even window" in capsys.readouterr().err


# A 12-iteration run on a 16x16 raster keeps some of the raster printed in the object (the engine warns);
# this test is about where the phase lands, not about the reconstruction's quality.
@pytest.mark.filterwarnings("ignore:raster_grid_artefact")
def test_a_tilt_reconstructs_onto_the_truth_frame(tmp_path, measured):
    # The whole chain of conventions at once: raster centred on the rotation centre, defocus at the centre
    # plane, the detector calibration and the truth's pixel frame. mspt.ptycho, given only the file,
    # recovers the summed phase of a 30-degree tilt where the truth says it is.
    from scipy.ndimage import shift

    from mspt.ptycho import PtychoConfig, reconstruct

    path = tmp_path / "series.h5"
    info = sim.tiltseries(sim.nanocube("SrTiO3", cells=2), [30.0], path, scan_shape=(16, 16), scan_step_A=0.6, defocus_A=40.0,
                          gpts=64, sampling_A=0.2, slice_thickness_A=2.0)  # fmt: skip
    config = PtychoConfig(n_slices=info["n_slices"], slice_thickness_A=2.0, iterations=12, stop="fixed",
                          refine_positions_from=-1, progress=False)  # fmt: skip
    with mio.load_tiltseries(path) as series, h5py.File(path, "r") as f:
        result = reconstruct(series.scan(0), config)
        truth = f["truth/projected_potential_VA"][0] * f["truth"].attrs["interaction_rad_per_VA"]
    n = truth.shape[0]
    # Reconstruction pixel j sits at origin + j * pixel; truth pixel J at (J - n // 2) * pixel.
    offset = -float(result.object_origin_A[0]) / 0.2 - n // 2
    whole = int(np.floor(offset))
    phase = shift(result.summed_phase, (whole - offset, whole - offset), order=3)[whole : whole + n, whole : whole + n]
    centre = slice(n // 2 - 20, n // 2 + 20)  # the scanned field of view

    def correlation(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    ours = phase[centre, centre]
    found = measured("simulate -> ptycho", "30 deg summed phase vs truth correlation",
                     correlation(ours, truth[centre, centre]), 0.9, ">")  # fmt: skip
    off = measured("simulate -> ptycho", "same, truth 3 px off (must be lower)",
                   correlation(ours, np.roll(truth, 3, axis=1)[centre, centre]), 0.8)  # fmt: skip
    assert found > 0.9 and off < 0.8


def test_potential_volume_integrates_to_abtems_projected_potential(measured):
    """The 3D potential (abTEM's finite slab integrals, one voxel thick) summed along z against abTEM's
    infinite projection of the same atoms over the whole depth: the same image (Pearson r) and, but for the
    tails the finite integrals cut off, the same total (measured 4 % less); its atoms sit on DESIGN.md's
    voxel grid."""
    from mspt.simulate.potential import SliceGrid, potential_slices

    atoms = sim.nanocube("SrTiO3", 1)
    d, n = 0.25, 48
    volume = sim.potential_volume(atoms, (n, n, n), d)
    projected = potential_slices(atoms, SliceGrid(gpts=n, sampling_A=d, n_slices=1, slice_thickness_A=n * d))[0]
    summed = volume.sum(0) * d
    r = measured("potential volume", "r of sum_z V d with the projected potential", np.corrcoef(summed.ravel(), projected.ravel())[0, 1], 0.99, ">")
    total = measured("potential volume", "total of sum_z V d / projected", float(summed.sum() / projected.sum()), 0.94, ">")
    assert r > 0.99 and 0.94 < total <= 1.0
    # The Sr atom at (x, y, z) = (-1.95, -1.95, -1.95) A: its voxel holds a local maximum of the potential.
    site = np.round(np.array([-SRTIO3_A / 2] * 3)[::-1] / d).astype(int) + n // 2
    k, j, i = site
    assert volume[k, j, i] == volume[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2].max()
    with pytest.raises(ValueError, match="atoms"):
        sim.potential_volume(atoms, (8, 8, 8), d)
