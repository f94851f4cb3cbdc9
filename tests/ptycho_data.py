"""Simulated thick-crystal 4D-STEM scans with a known ground truth, for the multislice ptychography engine's
tests and for the peer benchmarks (abTEM is the simulator: mspt's own model is never the only reference).

Import: the tests import it as ``import ptycho_data`` (pytest puts ``tests/`` on ``sys.path``, the folder has
no ``__init__.py``); benchmarks put ``tests/`` on ``sys.path`` first (``benchmarks/peers/py4dstem.py`` does).

    ds = ptycho_data.dataset()                              # the default scan, cached on disk
    ds = ptycho_data.dataset(tilt_mrad=(5, -3), position_rms_A=0.5, source_size_A=0.3)
    ds = ptycho_data.dataset(ptycho_data.THICK_CRYSTAL)      # a preset: 70 A of SrTiO3
    reg = ptycho_data.register_phase(summed_phase, ds, offset_px=...)   # reg.r, reg.phase, reg.truth

How the scan is simulated (everything in mspt's conventions: arrays (y, x), A, eV, mrad)
-------------------------------------------------------------------------------------------
* Object. A crystal slab built with ASE (SrTiO3 [001] by default, or Co3O4 spinel [001]), ``lateral_cells``
  unit cells on a side (chosen automatically so the scan, its window and the position errors fit) and
  ``thickness_cells`` cells thick. abTEM builds its potential (Lobato parametrisation, static atoms, no
  thermal diffuse scattering) with ``slices_per_cell`` slices per cell on a grid of ``pixels_per_cell`` pixels
  per cell: the potential's pixel is the reconstruction's pixel by construction,
  ``pixel_size_A = a / pixels_per_cell = 1 / (gpts_k * dk)``, and the detector sampling follows from it,
  ``dk = 1 / (gpts_k * pixel_size_A)``. The object grid ("truth grid") is the potential's grid, (Y, X) pixels.
* Frame. Positions are (y, x) in A from the centre of truth-grid pixel (0, 0), which is the corner of
  abTEM's potential box (abTEM's position (0, 0)); ``positions_px = positions_A / pixel_size_A`` are mspt's
  window centres on the truth grid. The nominal raster (``scan_shape``, ``scan_step_A``) is centred on the
  grid's centre pixel (Y // 2, X // 2); the true positions add independent Gaussian offsets of rms
  ``position_rms_A`` per axis (the same seed gives the same offsets).
* Patterns. abTEM computes the transmission functions exp(i sigma V) of the whole slab and band-limits them
  with its own antialias aperture on the whole grid: that is the object. Every pattern is abTEM's multislice
  (its probe, its transmit-then-propagate step, its far field) through the crop of those transmission
  functions to the ``gpts_k`` x ``gpts_k`` window that mspt's model uses for that position (rows
  ``floor(y + 0.5) - gpts_k // 2`` onwards, likewise columns), with the probe at its position relative to the
  window; the window is periodic for the propagation, as in every ptychography code. The data therefore hold
  no model error from the window (an infinite specimen would add weak probe-tail scattering from outside it),
  and all windows look at one object. abTEM settings: hard antialias aperture at 2/3 Nyquist
  (``antialias.taper = 0``), float64, hard probe aperture (``soft=False``). Patterns are (y, x) with zero
  frequency at (gpts_k // 2, gpts_k // 2), detector = the full window spectrum (nothing cropped; outside the
  2/3-Nyquist disk they are zero). See :func:`abtem_window_patterns` for why the slice loop is spelled out.
* Probe. ``energy_eV``, ``semiangle_mrad``, ``defocus_A`` and ``aberrations`` (Krivanek C_nm/phi_nm in A/rad)
  are abTEM's: defocus = -C10, positive = crossover downstream, referred to the ENTRANCE surface of the
  potential box (the first slice), which is where mspt's ``multislice_forward`` meets the first slice too.
  ``defocus_centre_A = defocus_A - thickness_A / 2`` is the same probe referred to the slab's mid-plane (the
  tilt-series convention of mspt's files).
* Beam tilt. ``tilt_mrad = (ty, tx)`` in mspt's order; abTEM gets ``tilt=(tx, ty)``. Both codes tilt only the
  Fresnel propagator, by exp(-2 pi i dz (kx tan tx + ky tan ty)) (abTEM 1.0's
  ``_apply_tilt_to_fresnel_propagator_array``; mspt: exp(-2 pi i dz (ky tan ty + kx tan tx))), so the same
  (ty, tx) goes to mspt's ``tilt_mrad`` unchanged: a positive tx walks the wave towards +x as it goes down the
  slab. The incident probe is not tilted (no shift of the bright-field disk). ``tests/test_ptycho_data.py``
  checks this against abTEM on this data (and that the opposite sign is far off).
* Partial spatial coherence. With ``source_size_A > 0`` each pattern is the mean of ``source_samples``
  coherent patterns whose probe is shifted by fixed offsets drawn once from a Gaussian of rms
  ``source_size_A`` per axis (mean subtracted, so the centroid is the true position): an incoherent source of
  that size. The same offsets serve every scan position, so the data are exactly a mixed state of
  ``source_samples`` shifted probes (``source_offsets_A``); a mixed-state model with that many modes can fit it.
* Dose. Noise-free expected counts ``intensities = dose_e_per_A2 * scan_step_A**2 * I`` with abTEM's pattern
  ``I`` (summing to 1 less what scatters beyond the 2/3-Nyquist band limit, ~1-2 %); ``data`` is a Poisson
  draw of it (float32 counts).

Ground truth
------------
``potential_slices`` (S, Y, X) is abTEM's projected potential per slice (V A) on the truth grid, and
``transmission_slices`` its transmission functions exp(i sigma V) band-limited (hard) to 2/3 of Nyquist: what
abTEM's multislice multiplied the wave by, so ``mspt.ops.multislice_forward(transmission_slices, probe,
positions_px, slice_thickness_A, tilt_mrad=tilt_mrad)`` reproduces ``intensities``. The ground-truth summed
phase is ``phase_truth = sigma * sum_s V_s`` band-limited (hard cut in Fourier space) to ``phase_cutoff_invA``
= min(2 alpha / lambda, 2/3 Nyquist): what the data can resolve. By default that is the multislice band limit
(2/3 Nyquist, 1.71 1/A at 0.195 A pixels), which is below the probe's 2 alpha transfer limit (1.99 1/A at
25 mrad) for the default grid. Reconstructions are compared with it over the scanned field of view
(:func:`scan_fov`, :func:`register_phase`) with :func:`pearson_r`, which ignores the summed phase's
arbitrary offset and scale. :func:`phase_truth_slabs` gives the same truth per reconstruction slab (abTEM's
slices summed in groups): a perfect crystal along [001] has identical slabs, so depth sectioning needs
``vacancy_fraction > 0``.

Caching: a dataset is simulated once per parameter set and kept as an .npz file in ``$MSPT_TEST_DATA_CACHE``
or, by default, ``.cache/ptycho_data/`` at the repository root (git-ignored). The key hashes the parameters,
this module's ``FORMAT_VERSION`` and abTEM's version; delete the folder to force a new simulation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
CACHE_ENV = "MSPT_TEST_DATA_CACHE"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "ptycho_data"

# abTEM settings of every simulation here: hard antialias cut (the one mspt uses), float64, eager arrays,
# plain NumPy FFTs, no progress bars.
ABTEM_SETTINGS = {
    "antialias.taper": 0.0,
    "precision": "float64",
    "dask.lazy": False,
    "fft": "numpy",
    "diagnostics.progress_bar": False,
}


# --------------------------------------------------------------------------------------------------------
# Crystals
# --------------------------------------------------------------------------------------------------------


def _strontium_titanate():
    from ase.spacegroup import crystal

    a = 3.905
    return crystal(["Sr", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)], spacegroup=221,
                   cellpar=[a, a, a, 90, 90, 90]), a  # fmt: skip


def _cobalt_oxide_spinel():
    from ase.spacegroup import crystal

    # Co3O4, Fd-3m (227), origin choice 2: Co(II) 8a, Co(III) 16d, O 32e (x, x, x), x = 0.263.
    a = 8.084
    return crystal(["Co", "Co", "O"], basis=[(0.125, 0.125, 0.125), (0.5, 0.5, 0.5), (0.263, 0.263, 0.263)],
                   spacegroup=227, setting=2, cellpar=[a, a, a, 90, 90, 90]), a  # fmt: skip


# name -> (builder, default pixels per cell, default slices per cell); viewed along [001].
CRYSTALS = {
    "SrTiO3": (_strontium_titanate, 20, 2),  # 0.195 A pixels, 1.95 A slices
    "Co3O4": (_cobalt_oxide_spinel, 40, 4),  # 0.202 A pixels, 2.02 A slices
}


# --------------------------------------------------------------------------------------------------------
# Parameters and dataset
# --------------------------------------------------------------------------------------------------------


KEY_OPTIONAL_DEFAULTS = {"drift_A": (0.0, 0.0), "second_slab_twist_deg": None, "slab_gap_A": 0.0}


@dataclasses.dataclass(frozen=True)
class SimParams:
    """What to simulate; every field enters the cache key (the newer ones only when set). Lengths in A, angles in mrad, (y, x) pairs.

    crystal : "SrTiO3" ([001]) or "Co3O4" (spinel, [001]).
    thickness_cells : slab thickness in unit cells along the beam.
    lateral_cells : cells on a side of the (square) object; None: the fewest that hold the scan, its
        window and 4 rms of position and source offsets.
    pixels_per_cell / slices_per_cell : grid and slicing of abTEM's potential (None: the crystal's default).
    projection : abTEM's "infinite" (projected atomic potentials) or "finite" (integrated within slabs).
    scan_shape : raster (scan_y, scan_x). scan_step_A : raster step (same on both axes).
    gpts_k : detector pixels per side = probe window pixels per side.
    energy_eV, semiangle_mrad, defocus_A : the probe (defocus referred to the entrance surface).
    aberrations : ((name, value), ...) Krivanek coefficients besides defocus, e.g. (("C30", 1e4),).
    tilt_mrad : beam tilt (ty, tx), mspt's order and sign.
    position_rms_A : rms per axis of the random offsets of the true positions from the nominal raster.
    drift_A : (dy, dx) a scan drift linear in acquisition time (raster order, row-major): the true positions
        move by this much (A) from the first pattern to the last, centred on the scan's middle pattern.
    source_size_A, source_samples : incoherent source (rms per axis) and how many shifted probes sample it.
    dose_e_per_A2 : electron dose; counts per pattern = dose * scan_step_A**2 (times the pattern's sum).
    vacancy_fraction : fraction of the atoms removed at random (seeded): a perfect crystal along [001] has
        identical slices, so only a crystal with defects tests depth sectioning (``phase_truth_slabs``).
    second_slab_twist_deg : None (one slab), or a second slab of the same crystal and thickness below the
        first (downstream), turned in plane by this angle (degrees, counter-clockwise in (x, y)) about the
        object's centre: two crystals one above the other, for depth-resolved tests.
    slab_gap_A : vacuum between the two slabs (A), rounded to whole potential slices.
    seed : random seed of the position offsets, source offsets and Poisson noise.
    """

    crystal: str = "SrTiO3"
    thickness_cells: int = 8
    lateral_cells: int | None = None
    pixels_per_cell: int | None = None
    slices_per_cell: int | None = None
    projection: str = "infinite"
    scan_shape: tuple[int, int] = (16, 16)
    scan_step_A: float = 0.6
    gpts_k: int = 64
    energy_eV: float = 200e3
    semiangle_mrad: float = 25.0
    defocus_A: float = 100.0
    aberrations: tuple[tuple[str, float], ...] = ()
    tilt_mrad: tuple[float, float] = (0.0, 0.0)
    position_rms_A: float = 0.0
    drift_A: tuple[float, float] = (0.0, 0.0)
    source_size_A: float = 0.0
    source_samples: int = 1
    dose_e_per_A2: float = 1e5
    vacancy_fraction: float = 0.0
    second_slab_twist_deg: float | None = None
    slab_gap_A: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.crystal not in CRYSTALS:
            raise ValueError(f"crystal: expected one of {tuple(CRYSTALS)}, got {self.crystal!r}")
        if self.projection not in ("infinite", "finite"):
            raise ValueError(f"projection: expected 'infinite' or 'finite', got {self.projection!r}")
        # Normalise to hashable plain types (tuples of floats/ints).
        object.__setattr__(self, "scan_shape", tuple(int(n) for n in self.scan_shape))
        object.__setattr__(self, "tilt_mrad", tuple(float(t) for t in self.tilt_mrad))
        object.__setattr__(self, "drift_A", tuple(float(d) for d in self.drift_A))
        items = self.aberrations.items() if isinstance(self.aberrations, dict) else self.aberrations
        object.__setattr__(self, "aberrations", tuple(sorted((str(k), float(v)) for k, v in items)))
        if any(k in ("defocus", "C10") for k, _ in self.aberrations):
            raise ValueError("aberrations: give the defocus as defocus_A")
        if self.source_size_A > 0 and self.source_samples < 2:
            raise ValueError("source_samples: a finite source_size_A needs at least 2 source samples")
        if self.source_size_A == 0 and self.source_samples != 1:
            raise ValueError("source_samples: must be 1 for a point source (source_size_A = 0)")
        if self.slab_gap_A < 0 or (self.slab_gap_A > 0 and self.second_slab_twist_deg is None):
            raise ValueError(
                f"slab_gap_A: expected >= 0 A and a second slab (second_slab_twist_deg), got {self.slab_gap_A!r}"
            )
        if not 0.0 <= self.vacancy_fraction < 1.0:
            raise ValueError(f"vacancy_fraction: expected a fraction in [0, 1), got {self.vacancy_fraction!r}")

    def key(self) -> str:
        import abtem

        fields = dataclasses.asdict(self)
        # Fields added after the first cached datasets enter the key only away from their default, so the
        # datasets already cached keep their keys.
        for name, default in KEY_OPTIONAL_DEFAULTS.items():
            if fields[name] == default:
                del fields[name]
        text = json.dumps([FORMAT_VERSION, abtem.__version__, fields], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# Presets (parameter sets more than one test or benchmark uses).
# A thick crystal for the peer benchmarks (benchmarks/test_bench_ptycho_thick.py): SrTiO3 [001] 18 cells
# (70.3 A, 36 abTEM slices) thick, otherwise the default scan; a few seconds of simulation.
THICK_CRYSTAL = SimParams(thickness_cells=18)


@dataclasses.dataclass(frozen=True)
class PtychoDataset:
    """A simulated 4D-STEM scan and its ground truth (see the module docstring for every convention).

    data : (scan_y, scan_x, ky, kx) float32 Poisson counts, zero frequency at (ky // 2, kx // 2).
    intensities : same shape, float32 noise-free expected counts (data's mean).
    positions_A / nominal_positions_A : (N, 2) true / nominal window centres (y, x) in A from the centre
        of truth-grid pixel (0, 0), raster order (row-major over scan_y, scan_x).
    source_offsets_A : (K, 2) probe shifts (y, x) of the incoherent source samples (zeros (1, 2) if coherent).
    potential_slices : (S, Y, X) float32 abTEM projected potential per slice, V A, on the truth grid.
    transmission_slices : (S, Y, X) complex64, exp(i sigma V) band-limited to 2/3 Nyquist (abTEM's own).
    potential_sum : (Y, X) float32 sum over slices.
    phase_truth : (Y, X) float32 sigma * potential_sum band-limited to ``phase_cutoff_invA``.
    """

    params: SimParams
    data: np.ndarray
    intensities: np.ndarray
    positions_A: np.ndarray
    nominal_positions_A: np.ndarray
    source_offsets_A: np.ndarray
    pixel_size_A: float
    reciprocal_sampling_invA: float
    detector_sampling_mrad: float
    wavelength_A: float
    sigma: float
    num_slices: int
    slice_thickness_A: float
    thickness_A: float
    potential_slices: np.ndarray
    transmission_slices: np.ndarray
    potential_sum: np.ndarray
    phase_truth: np.ndarray
    phase_cutoff_invA: float
    simulation_time_s: float
    abtem_version: str

    # -- convenience views ----------------------------------------------------------------------------
    @property
    def energy_eV(self) -> float:
        return self.params.energy_eV

    @property
    def semiangle_mrad(self) -> float:
        return self.params.semiangle_mrad

    @property
    def defocus_A(self) -> float:
        """Defocus referred to the entrance surface (abTEM's reference, and multislice_forward's)."""
        return self.params.defocus_A

    @property
    def defocus_centre_A(self) -> float:
        """The same defocus referred to the slab's mid-plane (the plane through the rotation centre)."""
        return self.params.defocus_A - self.thickness_A / 2

    @property
    def aberrations(self) -> dict[str, float]:
        return dict(self.params.aberrations)

    @property
    def tilt_mrad(self) -> tuple[float, float]:
        return self.params.tilt_mrad

    @property
    def scan_step_A(self) -> float:
        return self.params.scan_step_A

    @property
    def dose_e_per_A2(self) -> float:
        return self.params.dose_e_per_A2

    @property
    def electrons_per_pattern(self) -> float:
        """dose * step area: the probe's intensity before any loss beyond the band limit."""
        return self.params.dose_e_per_A2 * self.params.scan_step_A**2

    @property
    def gpts_k(self) -> int:
        return self.data.shape[-1]

    @property
    def object_shape(self) -> tuple[int, int]:
        return self.phase_truth.shape

    @property
    def positions_px(self) -> np.ndarray:
        return self.positions_A / self.pixel_size_A

    @property
    def nominal_positions_px(self) -> np.ndarray:
        return self.nominal_positions_A / self.pixel_size_A

    @property
    def source_weights(self) -> np.ndarray:
        return np.full(len(self.source_offsets_A), 1.0 / len(self.source_offsets_A))

    @property
    def patterns(self) -> np.ndarray:
        """data as (N, ky, kx)."""
        return self.data.reshape(-1, *self.data.shape[-2:])

    def scan(self, positions: str = "nominal", defocus_reference: str = "entrance", tilt_guess_mrad=(0.0, 0.0)):
        """The data as an ``mspt.ptycho.PtychoScan`` with ``positions`` "nominal" or "true" (in A, this
        module's frame), the defocus referred to the entrance surface or the centre, and an initial tilt
        guess (an experiment does not know its mistilt; pass ``ds.tilt_mrad`` to give the true one)."""
        from mspt.ptycho.scan import PtychoScan

        pos = {"nominal": self.nominal_positions_A, "true": self.positions_A}[positions]
        defocus = {"entrance": self.defocus_A, "centre": self.defocus_centre_A}[defocus_reference]
        return PtychoScan(
            data=self.data, energy_eV=self.energy_eV, semiangle_mrad=self.semiangle_mrad,
            scan_step_A=(self.scan_step_A,) * 2, reciprocal_sampling_invA=(self.reciprocal_sampling_invA,) * 2,
            defocus_A=defocus, defocus_reference=defocus_reference, aberrations=self.aberrations,
            positions_A=pos, tilt_mrad=tuple(tilt_guess_mrad),
        )  # fmt: skip

    def save_npz(self, path, include_truth: bool = True) -> Path:
        """Everything as one .npz (arrays, plus a JSON string ``meta`` with the scalars and parameters);
        what the peer harness reads. ``include_truth=False`` leaves out the ground truth."""
        path = Path(path)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        arrays = {k: v for k, v in values.items() if isinstance(v, np.ndarray)}
        if not include_truth:
            for name in ("potential_slices", "transmission_slices", "potential_sum", "phase_truth", "intensities"):
                arrays.pop(name)
        meta = {k: v for k, v in values.items() if not isinstance(v, np.ndarray) and k != "params"}
        meta.update(
            params=dataclasses.asdict(self.params), energy_eV=self.energy_eV, semiangle_mrad=self.semiangle_mrad,
            defocus_A=self.defocus_A, defocus_centre_A=self.defocus_centre_A, aberrations=self.aberrations,
            tilt_mrad=list(self.tilt_mrad), scan_step_A=self.scan_step_A, scan_shape=list(self.data.shape[:2]),
            dose_e_per_A2=self.dose_e_per_A2, electrons_per_pattern=self.electrons_per_pattern,
            object_shape=list(self.object_shape),
            positions_frame="(y, x) in A from the centre of truth-grid pixel (0, 0)",
            defocus_reference="entrance surface of the slab (first slice)",
        )  # fmt: skip
        np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load_npz(cls, path) -> "PtychoDataset":
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in f.files if k != "meta"}
        p = meta["params"]
        p["scan_shape"] = tuple(p["scan_shape"])
        p["tilt_mrad"] = tuple(p["tilt_mrad"])
        p["drift_A"] = tuple(p.get("drift_A", (0.0, 0.0)))
        p["aberrations"] = tuple(tuple(kv) for kv in p["aberrations"])
        names = {f.name for f in dataclasses.fields(cls)}
        scalars = {k: v for k, v in meta.items() if k in names and k not in arrays and k != "params"}
        return cls(params=SimParams(**p), **arrays, **scalars)


# --------------------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------------------


def _xy_to_yx(array) -> np.ndarray:
    """abTEM's (..., x, y) array as mspt's (..., y, x)."""
    return np.swapaxes(np.asarray(array), -1, -2)


def bandlimit(array: np.ndarray, sampling_A: float, cutoff_invA: float) -> np.ndarray:
    """Hard low-pass on the last two axes: Fourier components with |k| >= cutoff_invA set to 0 (a complex
    result for complex input, real for real input)."""
    ky = np.fft.fftfreq(array.shape[-2], sampling_A)[:, None]
    kx = np.fft.fftfreq(array.shape[-1], sampling_A)[None, :]
    inside = ky**2 + kx**2 < cutoff_invA**2
    out = np.fft.ifft2(np.fft.fft2(array, axes=(-2, -1)) * inside, axes=(-2, -1))
    return out if np.iscomplexobj(array) else out.real


def antialias_cutoff_invA(pixel_size_A: float) -> float:
    """2/3 of the Nyquist frequency: abTEM's and mspt's multislice band limit."""
    return 2.0 / 3.0 / (2.0 * pixel_size_A)


def _geometry(p: SimParams):
    """Pixel size, lateral cells, nominal and true positions (px), source offsets (px)."""
    builder, ppc, spc = CRYSTALS[p.crystal]
    _, a = builder()
    ppc = p.pixels_per_cell or ppc
    spc = p.slices_per_cell or spc
    dx = a / ppc
    rng = np.random.default_rng(p.seed)
    ny, nx = p.scan_shape
    step_px = p.scan_step_A / dx
    # Half the extent the positions may need: raster, window, 4 rms of position and source offsets, 1 px, drift.
    half_px = max(ny - 1, nx - 1) * step_px / 2 + p.gpts_k / 2 + 4 * (p.position_rms_A + p.source_size_A) / dx + 1
    half_px += max(abs(d) for d in p.drift_A) / 2 / dx
    cells = p.lateral_cells or max(1, math.ceil(2 * half_px / ppc))
    n = cells * ppc
    centre = n // 2
    iy, ix = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij")
    nominal = np.column_stack([centre + iy.ravel() * step_px, centre + ix.ravel() * step_px])
    offsets = rng.normal(scale=p.position_rms_A / dx, size=nominal.shape) if p.position_rms_A > 0 else 0.0
    # Acquisition time in raster order, from -1/2 (first pattern) to +1/2 (last).
    time = np.arange(ny * nx) / max(ny * nx - 1, 1) - 0.5
    true = nominal + offsets + time[:, None] * np.asarray(p.drift_A) / dx
    if p.source_size_A > 0:
        source = rng.normal(scale=p.source_size_A / dx, size=(p.source_samples, 2))
        source -= source.mean(0)
    else:
        source = np.zeros((1, 2))
    return dx, a, ppc, spc, cells, n, nominal, true, source, rng


def _two_slabs(unit, cells: int, thickness_cells: int, a: float, dz: float, twist_deg: float, gap_A: float):
    """A slab of ``unit`` (cells x cells x thickness_cells) over a copy turned in plane by ``twist_deg`` about
    the cell's centre (cut from a larger block to fill the same square cell), ``gap_A`` (rounded to whole
    slices of ``dz``) of vacuum between them; returns (atoms, gap in slices)."""
    upper = unit * (cells, cells, thickness_cells)
    side = cells * a
    block = unit * (2 * cells + 2, 2 * cells + 2, thickness_cells)
    block.translate((-(cells + 1) * a, -(cells + 1) * a, 0.0))
    block.rotate(twist_deg, "z")
    block.translate((side / 2, side / 2, 0.0))
    xy = block.positions[:, :2]
    lower = block[np.all((xy >= 0) & (xy < side), axis=1)]
    gap_slices = int(round(gap_A / dz))
    lower.translate((0.0, 0.0, thickness_cells * a + gap_slices * dz))
    atoms = upper + lower
    atoms.set_cell([side, side, 2 * thickness_cells * a + gap_slices * dz])
    return atoms, gap_slices


def _check_windows(positions_px: np.ndarray, source_px: np.ndarray, window: int, n: int):
    every = (positions_px[:, None, :] + source_px[None]).reshape(-1, 2)
    lo = np.floor(every + 0.5) - window // 2
    if lo.min() < 0 or lo.max() + window > n:
        raise ValueError(
            f"a probe window leaves the {n}x{n} object (window {window} px); raise lateral_cells or leave it None"
        )


def abtem_window_patterns(probe, slices_xy: np.ndarray, dz: float, positions_xy_A: np.ndarray) -> np.ndarray:
    """abTEM's multislice of ``probe`` (an ``abtem.Probe`` on the window's grid) through transmission
    functions ``slices_xy`` (S, x, y) on that window, at positions (K, 2) = (x, y) in A on the window;
    returns abTEM's far-field patterns (K, x, y), full grid, zero frequency at the centre, summing to 1 less
    the band-limit loss. Call it inside ``abtem.config.set(ABTEM_SETTINGS)``.

    The slices are given to abTEM as ``TransmissionFunction`` objects, which its multislice step uses as given;
    a ``PotentialArray`` crop would be band-limited again on the window (its cut edges would ring, and the
    windows would no longer look at one object). abTEM 1.0's high-level ``Probe.multislice`` does not take
    transmission functions, so the slice loop here calls its ``conventional_multislice_step`` (transmit, then
    propagate, after every slice: what ``Probe.multislice`` runs; ``test_ptycho_data.py`` checks the two agree
    on potential slices).
    """
    import abtem
    from abtem.antialias import AntialiasAperture
    from abtem.multislice import FresnelPropagator, conventional_multislice_step
    from abtem.potentials.iam import PotentialArray, TransmissionFunction

    energy = probe.energy
    sampling = probe.sampling
    waves = probe.build(scan=abtem.CustomScan(np.asarray(positions_xy_A, dtype=float)), lazy=False)
    propagator, antialias = FresnelPropagator(), AntialiasAperture()
    complex_slices = np.iscomplexobj(slices_xy)
    for s in range(len(slices_xy)):
        if complex_slices:
            piece = TransmissionFunction(slices_xy[s : s + 1], slice_thickness=dz, sampling=sampling, energy=energy)
        else:  # a potential (V A): abTEM makes and band-limits its transmission function on the window
            piece = PotentialArray(slices_xy[s : s + 1], slice_thickness=dz, sampling=sampling)
        waves = conventional_multislice_step(waves, piece, propagator, antialias)
    patterns = waves.diffraction_patterns(max_angle="full")
    return np.asarray(patterns.array).reshape(-1, *slices_xy.shape[-2:])


def simulate(params: SimParams | None = None) -> PtychoDataset:
    """Simulate a dataset with abTEM (no cache; see :func:`dataset`)."""
    import abtem
    from abtem.antialias import AntialiasAperture
    from abtem.core.energy import energy2sigma, energy2wavelength

    p = params or SimParams()
    t0 = time.perf_counter()
    dx, a, ppc, spc, cells, n, nominal_px, true_px, source_px, rng = _geometry(p)
    w = p.gpts_k
    _check_windows(true_px, source_px, w, n)
    builder = CRYSTALS[p.crystal][0]
    unit, _ = builder()
    atoms = unit * (cells, cells, p.thickness_cells)
    gap_slices = 0
    if p.second_slab_twist_deg is not None:
        atoms, gap_slices = _two_slabs(
            unit, cells, p.thickness_cells, a, a / spc, p.second_slab_twist_deg, p.slab_gap_A
        )
    if p.vacancy_fraction > 0:
        keep = np.random.default_rng([p.seed, 1]).random(len(atoms)) >= p.vacancy_fraction
        atoms = atoms[keep]
    with abtem.config.set(ABTEM_SETTINGS):
        potential = abtem.Potential(atoms, gpts=n, slice_thickness=a / spc, projection=p.projection,
                                    parametrization="lobato")  # fmt: skip
        built = potential.build(lazy=False)
        sx, sy = built.sampling
        assert np.allclose((sx, sy), dx) and built.array.shape[1:] == (n, n)
        num_slices = built.array.shape[0]
        dz = float(np.asarray(built.slice_thickness)[0])
        slabs = 1 if p.second_slab_twist_deg is None else 2
        assert num_slices == slabs * p.thickness_cells * spc + gap_slices and np.allclose(built.slice_thickness, dz)
        potential_xy = np.asarray(built.array)  # (S, x, y), V A
        # abTEM's transmission functions exp(i sigma V) of the whole slab, band-limited by abTEM's own
        # antialias aperture on the whole grid: the object. Each window sees a crop of it.
        transmission = AntialiasAperture().bandlimit(built.transmission_function(p.energy_eV), in_place=False)
        transmission_xy = np.asarray(transmission.array)
        probe = abtem.Probe(
            semiangle_cutoff=p.semiangle_mrad, energy=p.energy_eV, soft=False, defocus=p.defocus_A,
            tilt=(p.tilt_mrad[1], p.tilt_mrad[0]), gpts=w, sampling=dx, **dict(p.aberrations),
        )  # fmt: skip
        patterns = np.empty((len(true_px), w, w))
        for b, (y, x) in enumerate(true_px):
            y0, x0 = int(np.floor(y + 0.5)) - w // 2, int(np.floor(x + 0.5)) - w // 2  # the window's origin
            crop = transmission_xy[:, x0 : x0 + w, y0 : y0 + w]
            # Probe positions relative to the window, abTEM's (x, y) in A; one per source sample.
            local = (np.array([y - y0, x - x0]) + source_px) * dx
            patterns[b] = _xy_to_yx(abtem_window_patterns(probe, crop, dz, local[:, ::-1])).mean(0)
        wavelength = float(energy2wavelength(p.energy_eV))
        sigma = float(energy2sigma(p.energy_eV))

    ny, nx = p.scan_shape
    expected = patterns * (p.dose_e_per_A2 * p.scan_step_A**2)
    data = rng.poisson(expected).astype(np.float32)
    potential_yx = _xy_to_yx(potential_xy)
    cutoff_aa = antialias_cutoff_invA(dx)
    transmission = _xy_to_yx(transmission_xy)
    assert np.allclose(bandlimit(transmission, dx, cutoff_aa), transmission, atol=1e-6)  # abTEM's cut is ours
    potential_sum = potential_yx.sum(0)
    phase_cutoff = min(2 * p.semiangle_mrad * 1e-3 / wavelength, cutoff_aa)
    phase_truth = bandlimit(sigma * potential_sum, dx, phase_cutoff)
    dk = 1.0 / (w * dx)
    return PtychoDataset(
        params=p,
        data=data.reshape(ny, nx, w, w),
        intensities=expected.astype(np.float32).reshape(ny, nx, w, w),
        positions_A=true_px * dx,
        nominal_positions_A=nominal_px * dx,
        source_offsets_A=source_px * dx,
        pixel_size_A=float(dx),
        reciprocal_sampling_invA=float(dk),
        detector_sampling_mrad=float(dk * wavelength * 1e3),
        wavelength_A=wavelength,
        sigma=sigma,
        num_slices=int(num_slices),
        slice_thickness_A=dz,
        thickness_A=float(num_slices * dz),
        potential_slices=potential_yx.astype(np.float32),
        transmission_slices=transmission.astype(np.complex64),
        potential_sum=potential_sum.astype(np.float32),
        phase_truth=phase_truth.astype(np.float32),
        phase_cutoff_invA=float(phase_cutoff),
        simulation_time_s=time.perf_counter() - t0,
        abtem_version=abtem.__version__,
    )


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def dataset(params: SimParams | None = None, *, cache: bool = True, **overrides) -> PtychoDataset:
    """The dataset for ``params`` (or ``SimParams(**overrides)``), from the on-disk cache when it is there,
    else simulated and cached (written atomically, so concurrent sessions cannot read half a file)."""
    if params is None:
        params = SimParams(**overrides)
    elif overrides:
        params = dataclasses.replace(params, **overrides)
    if not cache:
        return simulate(params)
    folder = cache_dir()
    path = folder / f"ptycho-{params.crystal}-{params.key()}.npz"
    if path.exists():
        try:
            ds = PtychoDataset.load_npz(path)
            if ds.params == params:
                return ds
        except Exception:  # a stale or broken file: simulate again
            pass
    ds = simulate(params)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        ds.save_npz(tmp_path)
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return ds


# --------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------


def pearson_r(a, b, mask=None) -> float:
    """Pearson correlation coefficient of two equally shaped arrays (over ``mask`` where given)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"pearson_r: shapes differ, {a.shape} vs {b.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        a, b = a[mask], b[mask]
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denom) if denom > 0 else 0.0


def scan_fov(ds: PtychoDataset, margin_A: float = 0.0) -> tuple[slice, slice]:
    """The scanned field of view on the truth grid: the bounding box of the true window centres (pixels
    whose centres lie inside it), grown by ``margin_A`` (negative: shrunk). Returns (rows, cols) slices."""
    pos = ds.positions_px
    m = margin_A / ds.pixel_size_A
    lo = np.ceil(pos.min(0) - m).astype(int)
    hi = np.floor(pos.max(0) + m).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, ds.object_shape)
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


def phase_truth_slabs(ds: PtychoDataset, num_slabs: int) -> np.ndarray:
    """Depth-resolved truth for a reconstruction with ``num_slabs`` equal slices: abTEM's slices summed in
    ``num_slabs`` consecutive groups (entrance first), times sigma, band-limited like ``phase_truth``;
    (num_slabs, Y, X) float32, summing to ``phase_truth``. ``num_slabs`` must divide ``num_slices``."""
    if num_slabs < 1 or ds.num_slices % num_slabs:
        raise ValueError(f"num_slabs: expected a divisor of the dataset's {ds.num_slices} slices, got {num_slabs}")
    groups = ds.potential_slices.astype(np.float64).reshape(num_slabs, -1, *ds.object_shape).sum(1)
    return bandlimit(ds.sigma * groups, ds.pixel_size_A, ds.phase_cutoff_invA).astype(np.float32)


def phase_truth_range(ds: PtychoDataset, start: int, stop: int) -> np.ndarray:
    """The truth of a part of the sample: sigma times abTEM's slices ``start:stop`` (entrance first) summed,
    band-limited like ``phase_truth``; (Y, X) float32 (e.g. one slab of a two-slab sample)."""
    if not 0 <= start < stop <= ds.num_slices:
        raise ValueError(f"start, stop: expected 0 <= start < stop <= {ds.num_slices}, got {start}, {stop}")
    part = ds.sigma * ds.potential_slices[start:stop].astype(np.float64).sum(0)
    return bandlimit(part, ds.pixel_size_A, ds.phase_cutoff_invA).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Registration:
    """A reconstruction resampled onto the truth grid's field of view.

    phase : the reconstruction's summed phase on the field of view (truth pixels).
    truth : ``phase_truth`` on the same field of view.
    r : Pearson r of the two. shift_px : (y, x) where truth pixel (0, 0) fell on the reconstruction's grid.
    refined_px : the part of ``shift_px`` found by the search (beyond the given offset).
    fov : (rows, cols) slices of the truth grid.
    """

    phase: np.ndarray
    truth: np.ndarray
    r: float
    shift_px: tuple[float, float]
    refined_px: tuple[float, float]
    fov: tuple[slice, slice]


def register_phase(
    phase,
    ds: PtychoDataset,
    *,
    offset_px=(0.0, 0.0),
    pixel_size_A: float | None = None,
    search_px: float = 2.0,
    margin_A: float = 0.0,
    lowpass: bool = True,
) -> Registration:
    """Register a reconstructed summed phase (Y', X') onto the ground truth and score it.

    The reconstruction must have the truth's pixel size (``pixel_size_A``, checked when given). ``offset_px``
    (y, x) is where truth pixel (0, 0) lies on the reconstruction's grid, from the codes' bookkeeping, e.g.
    ``mean(recon_positions_px - ds.positions_px)`` for the positions it was given (0 when the reconstruction
    uses the truth grid's frame). The shift is then refined within +-``search_px`` pixels per axis (a coarse
    grid, then a local quarter-, then twentieth-pixel grid) to the maximum Pearson r over the scanned field of
    view (:func:`scan_fov` with ``margin_A``); the reconstruction is sampled there by cubic-spline
    interpolation. The search is much smaller than a unit cell (20 px for SrTiO3), so it cannot jump a lattice
    period; it absorbs the sub-pixel frame differences between codes, which are not what r is meant to score.
    With ``lowpass`` (default) the reconstruction is first band-limited to the truth's ``phase_cutoff_invA``
    (the same hard cut, so calling :func:`bandlimit` first changes nothing): r then compares the frequencies
    the data resolve, and every code is scored on the same ones.
    """
    from scipy import ndimage

    phase = np.asarray(phase, dtype=np.float64)
    if phase.ndim != 2:
        raise ValueError(f"phase: expected a 2D summed phase, got shape {phase.shape}")
    if pixel_size_A is not None and not math.isclose(pixel_size_A, ds.pixel_size_A, rel_tol=1e-6):
        raise ValueError(
            f"pixel_size_A: the reconstruction's {pixel_size_A} A differs from the truth's {ds.pixel_size_A} A"
        )
    if lowpass:
        phase = bandlimit(phase, ds.pixel_size_A, ds.phase_cutoff_invA)
    fov = scan_fov(ds, margin_A)
    truth = ds.phase_truth[fov].astype(np.float64)
    rows = np.arange(fov[0].start, fov[0].stop, dtype=float)
    cols = np.arange(fov[1].start, fov[1].stop, dtype=float)
    gy, gx = np.meshgrid(rows, cols, indexing="ij")
    coeffs = ndimage.spline_filter(phase, order=3, mode="nearest")
    offset = np.asarray(offset_px, dtype=float).reshape(2)

    def sample(shift):
        coords = np.stack([gy + offset[0] + shift[0], gx + offset[1] + shift[1]])
        return ndimage.map_coordinates(coeffs, coords, order=3, mode="nearest", prefilter=False)

    def score(shift):
        return pearson_r(sample(shift), truth)

    best = np.zeros(2)
    if search_px > 0:
        for step, half in ((1.0, search_px), (0.25, 1.0), (0.05, 0.25)):
            grid = np.arange(-half, half + 1e-9, step)
            cands = [best + (dy, dx) for dy in grid for dx in grid
                     if abs(best[0] + dy) <= search_px + 1e-9 and abs(best[1] + dx) <= search_px + 1e-9]  # fmt: skip
            best = max(cands, key=score)
    moved = sample(best)
    return Registration(
        phase=moved.astype(np.float32), truth=truth.astype(np.float32), r=pearson_r(moved, truth),
        shift_px=(float(offset[0] + best[0]), float(offset[1] + best[1])),
        refined_px=(float(best[0]), float(best[1])), fov=fov,
    )  # fmt: skip
