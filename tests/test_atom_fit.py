"""Lattice registration and atom fitting (mspt.analysis.fit_lattice) on a synthetic Co3O4 nanocrystal.

The reference is the ground truth the volume is rendered from: a spinel Co3O4 nanocrystal (ASE-built,
Fd-3m, a = 8.08 A, Co at 8a and 16d, O at 32e with u = 0.2631; a cube of 3 x 3 x 3 cells with whole
terminating layers, 1863 sites) whose lattice constant is 2 % larger than the structure handed to the fit
(a voxel-size calibration error the registration must find), turned to an arbitrary orientation and moved
off the centre, every atom displaced by a known random vector of length 0.1-0.5 A, 12 interior sites left
vacant and one cobalt interstitial added, rendered as Gaussian atoms (sigma 0.4 A, peak height = atomic
number) on a 128^3 grid of 0.4 A voxels with white noise of sigma 0.5 (1/16 of an oxygen peak, 1/54 of a
cobalt peak).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mspt.analysis import AnalysisConfig, AtomFit, LatticeMismatchError, fit_lattice

ase = pytest.importorskip("ase")
from ase.spacegroup import crystal  # noqa: E402

A_CO3O4 = 8.08
VOXEL_A = 0.4
SHAPE = (128, 128, 128)
ATOM_SIGMA_A = 0.4
NOISE = 0.5
TRUE_SCALE = 1.02
N_VACANCIES = 12
DISPLACEMENT_RANGE_A = (0.1, 0.5)


def co3o4_cell(a_A: float = A_CO3O4, u: float = 0.2631):
    """The spinel unit cell (56 atoms), origin choice 2."""
    basis = [(1 / 8, 1 / 8, 1 / 8), (1 / 2, 1 / 2, 1 / 2), (u, u, u)]
    return crystal(["Co", "Co", "O"], basis=basis, spacegroup=227, setting=2, cellpar=[a_A] * 3 + [90] * 3)


def co3o4_nanocube(a_A: float, cells: int = 3):
    """A cube of ``cells`` unit cells a side with whole terminating layers on all six faces (the spinel's
    oxygen layers are puckered by 0.013 a about the cube's faces), corner at the origin."""
    atoms = co3o4_cell(a_A).repeat((cells + 2,) * 3)
    atoms.positions -= a_A
    frac = atoms.positions / a_A
    keep = np.all((frac > -0.02) & (frac < cells + 0.02), axis=1)
    return atoms[keep]


def render(positions_A, numbers, shape=SHAPE, voxel_A=VOXEL_A, sigma_A=ATOM_SIGMA_A):
    """Gaussian atoms of peak height Z at (x, y, z) positions (A) on the DESIGN.md voxel grid, float64."""
    centre = np.array([n // 2 for n in shape])
    kji = positions_A[:, ::-1] / voxel_A + centre
    reach = int(np.ceil(4 * sigma_A / voxel_A))
    offsets = np.stack(np.meshgrid(*(np.arange(-reach, reach + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)
    voxels = np.round(kji).astype(int)[:, None, :] + offsets[None]
    r2 = np.sum((voxels - kji[:, None, :]) ** 2, axis=2) * voxel_A**2
    values = numbers[:, None] * np.exp(-r2 / (2 * sigma_A**2))
    inside = np.all((voxels >= 0) & (voxels < np.array(shape)), axis=2)
    flat = np.ravel_multi_index(tuple(voxels[inside].T), shape)
    return np.bincount(flat, weights=values[inside], minlength=int(np.prod(shape))).reshape(shape)


@pytest.fixture(scope="module")
def nanocrystal():
    """The synthetic volume and its ground truth (ideal sites, displacements, vacancies, elements)."""
    rng = np.random.default_rng(7)
    atoms = co3o4_nanocube(A_CO3O4 * TRUE_SCALE)
    rotation = Rotation.from_euler("zyz", [37.0, 61.0, -23.0], degrees=True).as_matrix()
    origin = np.array([0.9, -1.3, 0.6])
    ideal = (atoms.positions - 1.5 * A_CO3O4 * TRUE_SCALE) @ rotation.T + origin
    direction = rng.normal(size=ideal.shape)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    displacement = direction * rng.uniform(*DISPLACEMENT_RANGE_A, len(ideal))[:, None]
    interior = np.flatnonzero(np.all(np.abs(atoms.positions / (A_CO3O4 * TRUE_SCALE) - 1.5) < 1.2, axis=1))
    vacant = np.zeros(len(atoms), bool)
    vacant[rng.choice(interior, N_VACANCIES, replace=False)] = True
    present = ~vacant
    # One cobalt interstitial on an empty octahedral (16c) site inside: a peak that fits no site.
    interstitial = (np.full(3, A_CO3O4 * TRUE_SCALE) - 1.5 * A_CO3O4 * TRUE_SCALE) @ rotation.T + origin
    positions = np.vstack([ideal[present] + displacement[present], interstitial])
    numbers = np.append(atoms.numbers[present], 27).astype(float)
    volume = render(positions, numbers)
    volume += rng.normal(0, NOISE, SHAPE)
    return {
        "volume": volume.astype(np.float32), "ideal": ideal, "displacement": displacement, "vacant": vacant,
        "elements": np.array(atoms.get_chemical_symbols()), "rotation": rotation, "origin": origin,
        "interstitial": interstitial,
    }  # fmt: skip


@pytest.fixture(scope="module")
def fitted(nanocrystal):
    return fit_lattice(nanocrystal["volume"], VOXEL_A, co3o4_cell())


def match_to_truth(fit: AtomFit, truth):
    """Index of the fitted site at each true site (-1 when none within 0.3 A) and the count of fitted
    sites that correspond to no true site."""
    from scipy.spatial import cKDTree

    distance, index = cKDTree(fit.sites_A).query(truth["ideal"], distance_upper_bound=0.3)
    index = np.where(np.isfinite(distance), index, -1)
    extra = len(fit.sites_A) - len(np.unique(index[index >= 0]))
    return index, extra


def classification_and_errors(fit: AtomFit, truth):
    """(share of sites classified correctly, counting every fitted site with no true counterpart as wrong;
    displacement errors (K, 3) of the atoms present and found; their elements)."""
    index, extra = match_to_truth(fit, truth)
    present = ~truth["vacant"]
    matched = index >= 0
    correct = np.sum(fit.site_found[index[matched]] == present[matched])
    share = correct / (len(index) + extra)
    both = matched & present
    both[both] = fit.site_found[index[both]]
    errors = fit.displacement_A[index[both]] - truth["displacement"][both]
    return share, errors, truth["elements"][both]


def test_sites_classified_and_displacements_recovered(nanocrystal, fitted, measured):
    share, errors, elements = classification_and_errors(fitted, nanocrystal)
    rms = np.sqrt(np.mean(np.sum(errors**2, axis=1)))
    measured("atom_fit", "sites classified correctly (share)", share, 0.99, ">")
    measured("atom_fit", "displacement error rms, all (A)", rms, 0.05)
    for species in ("Co", "O"):
        chosen = elements == species
        measured("atom_fit", f"displacement error rms, {species} (A)", np.sqrt(np.mean(np.sum(errors[chosen] ** 2, axis=1))), 0.05)
    assert share >= 0.99
    assert rms <= 0.05
    # The true lattice is 2 % larger than the structure given: the registration finds the scale.
    scale_error = abs(fitted.registration.scale - TRUE_SCALE)
    measured("atom_fit", "scale error", scale_error, 0.002)
    assert scale_error < 0.002


def test_registered_sites_lie_on_the_true_lattice(nanocrystal, fitted, measured):
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(fitted.sites_A).query(nanocrystal["ideal"])
    # The least-squares lattice absorbs the (random) mean of the true displacements, ~0.01 A.
    measured("atom_fit", "registered site error, max (A)", distance.max(), 0.05)
    assert distance.max() < 0.05
    assert len(fitted.sites_A) == len(nanocrystal["ideal"])
    index, _ = match_to_truth(fitted, nanocrystal)
    assert np.all(fitted.elements[index] == nanocrystal["elements"])


def test_summary_counts_match_the_truth(nanocrystal, fitted, measured):
    summary = fitted.summary()
    present = ~nanocrystal["vacant"]
    for species in ("Co", "O"):
        chosen = nanocrystal["elements"] == species
        assert summary[species]["sites"] == chosen.sum()
        assert summary[species]["found"] == np.sum(chosen & present)
        true_rms = np.sqrt(np.mean(np.sum(nanocrystal["displacement"][chosen & present] ** 2, axis=1)))
        difference = abs(summary[species]["displacement_rms_A"] - true_rms)
        measured("atom_fit", f"displacement rms vs truth, {species} (A)", difference, 0.01)
        assert difference < 0.01
    assert summary["all"]["found"] == present.sum()
    measured("atom_fit", "registration match fraction", summary["registration"]["match_fraction"], 0.95, ">")
    assert summary["registration"]["match_fraction"] > 0.95


def test_interstitial_is_the_one_unmatched_peak(nanocrystal, fitted, measured):
    from scipy.spatial import cKDTree

    assert cKDTree(nanocrystal["ideal"]).query(nanocrystal["interstitial"])[0] > 1.7  # truly off the lattice
    assert len(fitted.unmatched_peaks_A) == 1  # noise stays far below the O threshold: no other peak
    error = np.linalg.norm(fitted.unmatched_peaks_A[0] - nanocrystal["interstitial"])
    measured("atom_fit", "interstitial position error (A)", error, 0.1)
    assert error < 0.1


def test_finite_model_registers_like_the_unit_cell(nanocrystal, measured):
    """The ideal nanocrystal itself (not periodic) as the structure: its atoms are the sites."""
    model = co3o4_nanocube(A_CO3O4)
    model.pbc = False
    fit = fit_lattice(nanocrystal["volume"], VOXEL_A, model)
    assert len(fit.sites_A) == len(model)
    share, errors, _ = classification_and_errors(fit, nanocrystal)
    rms = np.sqrt(np.mean(np.sum(errors**2, axis=1)))
    measured("atom_fit", "finite model: sites classified correctly", share, 0.99, ">")
    measured("atom_fit", "finite model: displacement error rms (A)", rms, 0.05)
    assert share >= 0.99
    assert rms <= 0.05


def test_exports_round_trip_through_ase(fitted, tmp_path):
    import ase.io

    atoms = fitted.to_ase()
    assert len(atoms) == fitted.site_found.sum()
    np.testing.assert_allclose(atoms.positions, fitted.positions_A[fitted.site_found], atol=1e-12)

    xyz = ase.io.read(fitted.save_xyz(tmp_path / "atoms.xyz"))
    assert xyz.get_chemical_symbols() == fitted.elements[fitted.site_found].tolist()
    np.testing.assert_allclose(xyz.positions, fitted.positions_A[fitted.site_found], atol=1e-6)
    np.testing.assert_allclose(xyz.arrays["displacement_A"], fitted.displacement_A[fitted.site_found], atol=1e-6)

    everything = ase.io.read(fitted.save_xyz(tmp_path / "sites.xyz", include_missing=True))
    assert len(everything) == len(fitted.elements)
    np.testing.assert_array_equal(everything.arrays["site_found"], fitted.site_found)

    # The CIF is P1, so its unsymmetrised structure is the whole file (ASE's symmetrising reader checks
    # every pair of atoms for duplicates, which takes tens of seconds for ~2000 atoms).
    from ase.io.cif import parse_cif

    (block,) = list(parse_cif(str(fitted.save_cif(tmp_path / "atoms.cif"))))
    assert block.get_spacegroup(True).no == 1
    cif = block.get_unsymmetrized_structure()
    assert cif.get_chemical_symbols() == fitted.elements[fitted.site_found].tolist()
    np.testing.assert_allclose(cif.positions + fitted.box_lo_A, fitted.positions_A[fitted.site_found], atol=1e-4)


def test_site_threshold_is_midway_between_background_and_occupied():
    from mspt.analysis import site_thresholds

    heights = np.concatenate([np.full(95, 10.0), np.full(5, 0.5), np.full(40, 4.0)])
    elements = np.array(["Co"] * 100 + ["O"] * 40)
    thresholds = site_thresholds(heights, elements)
    assert thresholds["Co"] == pytest.approx(5.0)  # midway between 0 and the occupied mean 10
    assert thresholds["O"] == pytest.approx(2.0)  # all occupied: none is cut off


def test_report_draws_the_sites(nanocrystal, fitted, tmp_path):
    import matplotlib.image

    from mspt.analysis import save_atom_report

    path = save_atom_report(fitted, nanocrystal["volume"], VOXEL_A, tmp_path / "atoms.png")
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (800, 1200)
    assert image[..., :3].std() > 0.05  # drawn, not blank


def test_structure_that_does_not_fit_fails_clearly(nanocrystal, measured):
    from ase.build import bulk

    wurtzite = bulk("ZnO", "wurtzite", a=3.25, c=5.21)
    with pytest.raises(LatticeMismatchError, match="min_match_fraction") as failure:
        fit_lattice(nanocrystal["volume"], VOXEL_A, wurtzite)
    best = failure.value.registration
    measured("atom_fit", "match fraction of a wrong structure", best.match_fraction, 0.5)
    assert best.match_fraction < AnalysisConfig().min_match_fraction


def test_bad_inputs_raise_named_errors(nanocrystal, tmp_path):
    volume, cell = nanocrystal["volume"], co3o4_cell()
    with pytest.raises(ValueError, match="volume"):
        fit_lattice(volume[0], VOXEL_A, cell)
    with pytest.raises(ValueError, match="volume"):
        fit_lattice(np.full((16, 16, 16), np.nan), VOXEL_A, cell)
    with pytest.raises(TypeError, match="volume"):
        fit_lattice(volume.astype(complex), VOXEL_A, cell)
    with pytest.raises(ValueError, match="voxel_size_A"):
        fit_lattice(volume, -0.4, cell)
    with pytest.raises(TypeError, match="structure"):
        fit_lattice(volume, VOXEL_A, 227)
    with pytest.raises(ValueError, match="structure"):
        fit_lattice(volume, VOXEL_A, tmp_path / "missing.cif")
    with pytest.raises(TypeError, match="config"):
        fit_lattice(volume, VOXEL_A, cell, config={"search_radius_A": 0.7})
    with pytest.raises(ValueError, match="search_radius_A"):
        AnalysisConfig(search_radius_A=1.5)
    with pytest.raises(ValueError, match="site_threshold"):
        AnalysisConfig(site_threshold="otsu")
    with pytest.raises(ValueError, match="scale_tolerance"):
        AnalysisConfig(scale_tolerance=-0.1)
    with pytest.raises(LatticeMismatchError, match="peaks"):
        fit_lattice(np.zeros((32, 32, 32)), VOXEL_A, cell)
