"""Tilt-series I/O (mspt.tiltseries HDF5 and EMD 1.0), the results file's helpers and the exports: round
trips against the arrays written, lazy reading, atomic writes, and a catalogue of bad inputs whose errors
must name the field at fault."""

from __future__ import annotations

import pathlib

import h5py
import numpy as np
import pytest

import mspt.io as mio
from mspt.ops import tilt_series_rotations

CALIBRATION = dict(energy_eV=300e3, semiangle_mrad=21.4, scan_step_A=(0.5, 0.6), defocus_A=-35.0,
                   aberrations={"C30": 1.2e4, "C12": 15.0, "phi12": 0.3}, detector_sampling_mrad=(0.9, 0.8),
                   scan_rotation_deg=12.5, detector_transpose=True)  # fmt: skip
TILTS_DEG = [-40.0, -5.5, 0.0, 33.0]


def _scans(rng, n=len(TILTS_DEG), shape=(5, 6, 16, 12)):
    return [rng.poisson(3.0, shape).astype(np.float32) for _ in range(n)]


@pytest.fixture
def written(tmp_path):
    rng = np.random.default_rng(1)
    scans = _scans(rng)
    path = tmp_path / "series.h5"
    mio.save_tiltseries(path, scans, TILTS_DEG, doses_e_per_A2=[1e4, 2e4, 3e4, 4e4], **CALIBRATION)
    return path, scans


# -- round trips -----------------------------------------------------------------------------------------
def test_round_trip_arrays_calibrations_and_poses(written):
    path, scans = written
    with mio.load_tiltseries(path) as series:
        assert series.n_tilts == len(scans)
        for i, scan in enumerate(scans):
            np.testing.assert_array_equal(series.data[i][()], scan)
        cal = series.calibration
        assert cal == mio.ScanCalibration(**CALIBRATION)
        assert cal.aberrations == CALIBRATION["aberrations"] and cal.detector_transpose is True
        np.testing.assert_allclose(series.tilts_deg, TILTS_DEG, atol=1e-12)
        np.testing.assert_allclose(series.rotations, tilt_series_rotations(TILTS_DEG), atol=1e-15)
        assert series.doses_e_per_A2 == [1e4, 2e4, 3e4, 4e4]
        # Chunked by scan rows, the unit PtychoScan reads.
        assert series.data[0].chunks == (1, 6, 16, 12)


def test_scan_is_a_ptycho_scan_with_the_files_calibrations(written):
    path, scans = written
    with mio.load_tiltseries(path) as series:
        scan = series.scan(2)
        assert scan.energy_eV == 300e3 and scan.defocus_reference == "centre" and scan.scan_rotation_deg == 12.5
        # The detector is transposed: PtychoScan swaps the pattern axes when reading.
        assert scan.pattern_shape == (12, 16)
        flat = [7, 0, 29, 8]
        np.testing.assert_array_equal(scan.read(flat), np.swapaxes(scans[2].reshape(-1, 16, 12)[flat], -1, -2))
        assert series.scan(2, defocus_A=10.0).defocus_A == 10.0  # overrides
        with pytest.raises(IndexError, match="index"):
            series.scan(4)


def test_reading_is_lazy(written, monkeypatch):
    path, _ = written
    reads = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        if self.ndim == 4:
            reads.append(key)
        return original(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    with mio.load_tiltseries(path) as series:
        scan = series.scan(1)
        assert isinstance(scan.data, h5py.Dataset)
        assert reads == []  # opening the series and making a scan reads no pattern
        scan.read([13, 14])  # positions 13 and 14 lie on scan row 2 (6 per row): one row read
        assert reads == [2]


def test_general_rotations_and_euler_angles(tmp_path):
    from scipy.spatial.transform import Rotation  # an independent Euler-angle implementation

    rng = np.random.default_rng(2)
    euler = [(10.0, 35.0, -20.0), (-70.0, 5.0, 40.0)]
    reference = Rotation.from_euler("ZYZ", euler, degrees=True).as_matrix()  # uppercase: intrinsic
    path = tmp_path / "rot.h5"
    mio.save_tiltseries(path, _scans(rng, 2), rotations=reference, **CALIBRATION)
    with mio.load_tiltseries(path) as series:
        np.testing.assert_allclose(series.rotations, reference, atol=1e-12)
    # The same poses given as Euler angles in the file, intrinsic and extrinsic.
    for convention, seq in (("zyz intrinsic", "ZYZ"), ("zyz", "ZYZ"), ("xyz extrinsic", "xyz")):
        with h5py.File(path, "a") as f:
            f.attrs["euler_convention"] = convention
            for i, angles in enumerate(euler):
                g = f[f"tilts/{i:03d}"]
                g.attrs.pop("rotation", None)
                g.attrs["euler_deg"] = angles
        with mio.load_tiltseries(path) as series:
            np.testing.assert_allclose(series.rotations, Rotation.from_euler(seq, euler, degrees=True).as_matrix(), atol=1e-12)
    # A plain tilt about y seen through a general pose: +z moves towards +x.
    with mio.load_tiltseries(path) as series:
        assert series.rotations.shape == (2, 3, 3)
    assert np.allclose(tilt_series_rotations([30.0])[0] @ [0, 0, 1], [0.5, 0, np.sqrt(3) / 2])


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "series.h5"
    scans = _scans(rng, 2)
    bad = [scans[0], scans[1].copy()]
    bad[1][4, 5, 3, 3] = np.nan
    with pytest.raises(ValueError, match=r"tilts\[1\]: scan row 4 contains NaN"):
        mio.save_tiltseries(path, bad, [0.0, 10.0], **CALIBRATION)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind
    mio.save_tiltseries(path, scans, [0.0, 10.0], **CALIBRATION)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        mio.save_tiltseries(path, bad, [0.0, 10.0], overwrite=True, **CALIBRATION)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["series.h5"]
    with pytest.raises(FileExistsError, match="overwrite"):
        mio.save_tiltseries(path, scans, [0.0, 10.0], **CALIBRATION)


# -- bad inputs: every error names its field --------------------------------------------------------------
def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


BAD_FILES = {
    "missing energy": (lambda f: f.attrs.__delitem__("energy_eV"), "energy_eV: missing root attribute"),
    "missing scan step": (lambda f: f.attrs.__delitem__("scan_step_A"), "scan_step_A: missing root attribute"),
    "NaN energy": (lambda f: f.attrs.__setitem__("energy_eV", np.nan), "energy_eV: expected a positive finite"),
    "negative semiangle": (lambda f: f.attrs.__setitem__("semiangle_mrad", -20.0), "semiangle_mrad: expected a positive"),
    "negative scan step": (lambda f: f.attrs.__setitem__("scan_step_A", [0.5, -0.5]), "scan_step_A: expected positive"),
    "two detector calibrations": (lambda f: f.attrs.__setitem__("reciprocal_sampling_invA", 0.02),
                                  "detector_sampling_mrad / reciprocal_sampling_invA: expected exactly one"),
    "no detector calibration": (lambda f: f.attrs.__delitem__("detector_sampling_mrad"),
                                "detector_sampling_mrad / reciprocal_sampling_invA: expected exactly one"),
    "aberrations not JSON": (lambda f: f.attrs.__setitem__("aberrations", "Cs=1mm"), "aberrations: expected a JSON object"),
    "unknown aberration": (lambda f: f.attrs.__setitem__("aberrations", '{"C99": 1}'), "aberrations: unknown coefficient 'C99'"),
    "transpose not boolean": (lambda f: f.attrs.__setitem__("detector_transpose", 7), "detector_transpose: expected true or false"),
    "complex data": (lambda f: (f["tilts/001"].__delitem__("data"),
                                f["tilts/001"].create_dataset("data", data=np.ones((5, 6, 16, 12), np.complex64))),
                     r"tilts/001/data: expected real counts \(integer or float dtype\), got dtype complex64"),
    "3D data": (lambda f: (f["tilts/000"].__delitem__("data"), f["tilts/000"].create_dataset("data", data=np.ones((30, 16, 12)))),
                r"tilts/000/data: expected shape \(scan_y, scan_x, k_y, k_x\)"),
    "pattern size differs": (lambda f: (f["tilts/002"].__delitem__("data"),
                                        f["tilts/002"].create_dataset("data", data=np.ones((5, 6, 16, 16)))),
                             r"tilts/002/data: expected patterns of \(16, 12\) pixels like the first tilt"),
    "tilt without data": (lambda f: f["tilts/001"].__delitem__("data"), "tilts/001/data: missing"),
    "gap in the tilt list": (lambda f: f.move("tilts/002", "tilts/007"), "tilts: expected groups 000..003"),
    "tilt without angle": (lambda f: f["tilts/003"].attrs.__delitem__("tilt_deg"), "tilts/003: expected exactly one of"),
    "tilt with two angles": (lambda f: f["tilts/003"].attrs.__setitem__("rotation", np.eye(3)), "tilts/003: expected exactly one of"),
    "NaN tilt": (lambda f: f["tilts/000"].attrs.__setitem__("tilt_deg", np.nan), "tilts/000: tilt_deg: expected one finite angle"),
    "not a rotation": (lambda f: (f["tilts/000"].attrs.__delitem__("tilt_deg"), f["tilts/000"].attrs.__setitem__("rotation", 2 * np.eye(3))),
                       "tilts/000: rotation: expected an orthonormal matrix"),
    "euler without convention": (lambda f: (f["tilts/000"].attrs.__delitem__("tilt_deg"), f["tilts/000"].attrs.__setitem__("euler_deg", [0, 10, 0])),
                                 "euler_convention: missing root attribute"),
    "negative dose": (lambda f: f["tilts/000"].attrs.__setitem__("dose_e_per_A2", -5.0), "tilts/000/data: dose_e_per_A2: expected a positive"),
    "no tilts group": (lambda f: f.__delitem__("tilts"), "holds neither a 'tilts' group"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_names_the_field(written, case):
    path, _ = written
    edit, message = BAD_FILES[case]
    _edit(path, edit)
    with pytest.raises(ValueError, match=message):
        mio.load_tiltseries(path)


def test_truncated_and_non_hdf5_files(written, tmp_path):
    path, _ = written
    data = path.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="tiltseries: .* is not a readable HDF5 file"):
        mio.load_tiltseries(truncated)
    text = tmp_path / "notes.h5"
    text.write_text("energy = 300 kV\n")
    with pytest.raises(ValueError, match="tiltseries: .* is not a readable HDF5 file"):
        mio.load_tiltseries(text)
    with pytest.raises(FileNotFoundError, match="tiltseries: no such file"):
        mio.load_tiltseries(tmp_path / "absent.h5")


def test_nan_counts_are_found_by_check_and_named(written):
    path, scans = written
    with mio.load_tiltseries(path) as series:
        series.check()  # the clean file passes
    _edit(path, lambda f: f["tilts/002/data"].__setitem__((1, 2, 0, 0), np.nan))
    with mio.load_tiltseries(path) as series, pytest.raises(ValueError, match=r"tilts/002/data: data: pattern 8 contains NaN"):
        series.check()


BAD_SAVES = {
    "tilt list shorter than data": (dict(tilts_deg=[0.0, 10.0, 20.0]), "tilts_deg: expected 4 angles"),
    "tilts and rotations": (dict(rotations=tilt_series_rotations(TILTS_DEG)), "tilts_deg / rotations: expected exactly one"),
    "NaN tilt": (dict(tilts_deg=[0.0, np.nan, 1.0, 2.0]), "tilts_deg: expected finite"),
    "negative step": (dict(scan_step_A=-0.5), "scan_step_A: expected positive"),
    "zero energy": (dict(energy_eV=0.0), "energy_eV: expected a positive"),
    "doses disagree": (dict(doses_e_per_A2=[1.0, 2.0]), "doses_e_per_A2: expected one dose or 4"),
    "bad compression": (dict(compression="zstd"), "compression: expected None"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_SAVES))
def test_bad_save_arguments_name_the_field(tmp_path, case):
    changes, message = BAD_SAVES[case]
    kwargs = {**CALIBRATION, "tilts_deg": TILTS_DEG, **changes}
    with pytest.raises(ValueError, match=message):
        mio.save_tiltseries(tmp_path / "x.h5", _scans(np.random.default_rng(0)), **kwargs)
    assert not (tmp_path / "x.h5").exists()


def test_bad_save_data(tmp_path):
    rng = np.random.default_rng(0)
    scans = _scans(rng, 2)
    with pytest.raises(ValueError, match=r"tilts\[1\]: expected real counts"):
        mio.save_tiltseries(tmp_path / "x.h5", [scans[0], scans[1].astype(np.complex64)], [0, 1], **CALIBRATION)
    with pytest.raises(ValueError, match=r"tilts\[0\]: expected shape"):
        mio.save_tiltseries(tmp_path / "x.h5", [scans[0][0], scans[1]], [0, 1], **CALIBRATION)
    negative = scans[1] - 10
    with pytest.raises(ValueError, match=r"tilts\[1\]: scan row 0 contains negative counts"):
        mio.save_tiltseries(tmp_path / "x.h5", [scans[0], negative], [0, 1], **CALIBRATION)
    with pytest.raises(ValueError, match="tilts: expected a list"):
        mio.save_tiltseries(tmp_path / "x.h5", scans[0], [0], **CALIBRATION)


def _root_can_write_anyway(directory: pathlib.Path) -> bool:
    probe = directory / "probe"
    try:
        probe.write_text("")
    except PermissionError:
        return False
    probe.unlink()
    return True


def test_no_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if _root_can_write_anyway(locked):
            pytest.skip("this user writes into read-only directories (root)")
        with pytest.raises(PermissionError, match="path: no write permission"):
            mio.save_tiltseries(locked / "x.h5", _scans(np.random.default_rng(0), 1), [0.0], **CALIBRATION)
    finally:
        locked.chmod(0o700)


# -- EMD 1.0 (py4DSTEM) ----------------------------------------------------------------------------------
def test_emd_datacube_written_by_emdfile(tmp_path):
    emdfile = pytest.importorskip("emdfile")  # the EMD 1.0 reference implementation writes the file
    rng = np.random.default_rng(4)
    data = rng.poisson(2.0, (4, 5, 16, 16)).astype(np.float32)
    cube = emdfile.Array(data=data, name="datacube", dim_names=["Ry", "Rx", "Qy", "Qx"])
    calibration = emdfile.Metadata(name="calibration")
    calibration["R_pixel_size"], calibration["R_pixel_units"] = 0.05, "nm"
    calibration["Q_pixel_size"], calibration["Q_pixel_units"] = 0.8, "mrad"
    calibration["QR_rotation_degrees"], calibration["QR_flip"] = 0.0, False
    cube.metadata = calibration
    path = tmp_path / "scan.emd"
    emdfile.save(str(path), cube, mode="o")

    with pytest.raises(ValueError, match=r"energy_eV: not in the EMD file.*energy_eV=\.\.\."):
        mio.load_tiltseries(path)
    with mio.load_tiltseries(path, energy_eV=200e3, semiangle_mrad=25.0) as series:
        assert series.n_tilts == 1 and series.tilts_deg.tolist() == [0.0]
        np.testing.assert_array_equal(series.data[0][()], data)
        assert series.calibration.scan_step_A == pytest.approx((0.5, 0.5))  # 0.05 nm
        assert series.calibration.detector_sampling_mrad == (0.8, 0.8)
        np.testing.assert_array_equal(series.scan(0).read([6]), data[1, 1][None])
    with pytest.raises(ValueError, match="tilts_deg: expected 1 angles"):
        mio.load_tiltseries(path, energy_eV=200e3, semiangle_mrad=25.0, tilts_deg=[0, 10])

    # A rotated / flipped scan must be restated in mspt's convention, never guessed.
    calibration["QR_rotation_degrees"] = 15.0
    emdfile.save(str(path), cube, mode="o")
    with pytest.raises(ValueError, match="scan_rotation_deg: not in the EMD file"):
        mio.load_tiltseries(path, energy_eV=200e3, semiangle_mrad=25.0)
    with mio.load_tiltseries(path, energy_eV=200e3, semiangle_mrad=25.0, scan_rotation_deg=-15.0) as series:
        assert series.calibration.scan_rotation_deg == -15.0


# -- results helpers -------------------------------------------------------------------------------------
def test_results_groups_are_added_without_losing_others(tmp_path):
    path = tmp_path / "results.h5"
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as f:  # a group another stage wrote earlier
        f.create_dataset("ptycho/000/object", data=rng.normal(size=(2, 8, 8)).astype(np.complex64))
    ptycho_before = h5py.File(path, "r")["ptycho/000/object"][()]
    phase = rng.normal(size=(3, 10, 12)).astype(np.float32)
    mio.save_projections(path, phase, phase * 0.5, pixel_size_A=0.31)
    atoms = rng.normal(size=(4, 3))
    found = np.array([True, False, True, True])
    displacement = np.where(found[:, None], rng.normal(size=(4, 3)) * 0.1, np.nan)
    mio.save_analysis(path, resolution_A=(2.0, 0.7, 0.72), atoms_A=atoms, elements=["Co", "O", "O", "Co"],
                      site_found=found, displacement_A=displacement)  # fmt: skip
    mio.write_run_attributes(path, config="[input]\ntiltseries = \"a.h5\"\n", started_utc="2026-01-01T00:00:00+00:00")

    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["ptycho/000/object"][()], ptycho_before)
    projections = mio.load_projections(path)
    np.testing.assert_array_equal(projections["phase"], phase)
    np.testing.assert_array_equal(projections["denoised"], phase * 0.5)
    assert projections["pixel_size_A"] == 0.31
    analysis = mio.load_analysis(path)
    np.testing.assert_array_equal(analysis["resolution_A"], [2.0, 0.7, 0.72])
    np.testing.assert_array_equal(analysis["atoms_A"], atoms)
    assert analysis["elements"].tolist() == ["Co", "O", "O", "Co"]
    np.testing.assert_array_equal(analysis["site_found"], found)
    np.testing.assert_array_equal(analysis["displacement_A"], displacement)
    attrs = mio.read_run_attributes(path)
    assert attrs["config_toml"].startswith("[input]") and attrs["started_utc"].startswith("2026")
    assert {"mspt_version", "created_utc", "modified_utc"} <= set(attrs)

    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="'projections' already exists"):
        mio.save_projections(path, phase, pixel_size_A=0.31)
    with pytest.raises(ValueError, match="denoised: expected the shape of phase"):
        mio.save_projections(path, phase, phase[:2], pixel_size_A=0.31, overwrite=True)
    with pytest.raises(ValueError, match="phase: expected finite values"):
        mio.save_projections(path, phase * np.nan, pixel_size_A=0.31, overwrite=True)
    with pytest.raises(ValueError, match="elements: expected all of"):
        mio.save_analysis(path, resolution_A=(1, 1, 1), atoms_A=atoms, overwrite=True)
    with pytest.raises(ValueError, match="resolution_A: expected three positive"):
        mio.save_analysis(path, resolution_A=(1, -1, 1), overwrite=True)
    assert path.read_bytes() == before  # refused writes changed nothing
    mio.save_projections(path, phase[:1], pixel_size_A=0.5, overwrite=True)
    assert mio.load_projections(path)["phase"].shape == (1, 10, 12) and "denoised" not in mio.load_projections(path)

    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(before[: len(before) // 3])
    with pytest.raises(ValueError, match="path: .* is not a readable HDF5 results file"):
        mio.save_projections(corrupt, phase, pixel_size_A=0.31)
    assert corrupt.read_bytes() == before[: len(before) // 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.h5", "results.h5"]  # no temporary left


# -- exports ---------------------------------------------------------------------------------------------
def test_volume_exports_read_back(tmp_path):
    mrcfile = pytest.importorskip("mrcfile")
    tifffile = pytest.importorskip("tifffile")
    volume = np.random.default_rng(6).normal(size=(6, 7, 8)).astype(np.float32)
    mio.export_volume(tmp_path / "v.mrc", volume, 0.35)
    with mrcfile.open(tmp_path / "v.mrc") as mrc:
        np.testing.assert_array_equal(mrc.data, volume)
        assert mrc.voxel_size.tolist() == pytest.approx((0.35, 0.35, 0.35))
        # Voxel (k, j, i) at ((i - X//2) d, (j - Y//2) d, (k - Z//2) d): the origin is voxel 0's position.
        assert (float(mrc.header.origin.x), float(mrc.header.origin.y), float(mrc.header.origin.z)) == pytest.approx(
            (-4 * 0.35, -3 * 0.35, -3 * 0.35))  # fmt: skip
    mio.export_volume(tmp_path / "v.tif", volume, 0.35)
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), volume)
        assert tif.imagej_metadata["spacing"] == pytest.approx(0.35)
        numerator, denominator = tif.pages[0].tags["XResolution"].value
        assert numerator / denominator == pytest.approx(1 / 0.35, rel=1e-6)
    with pytest.raises(FileExistsError, match="overwrite"):
        mio.export_mrc(tmp_path / "v.mrc", volume, 0.35)
    with pytest.raises(ValueError, match="voxel_size_A"):
        mio.export_mrc(tmp_path / "w.mrc", volume, -1.0)
    with pytest.raises(ValueError, match=r"volume: expected a real \(Z, Y, X\) array"):
        mio.export_tiff(tmp_path / "w.tif", volume[0], 1.0)


def test_atom_exports_read_back(tmp_path):
    ase_io = pytest.importorskip("ase.io")
    positions = np.array([[0.0, 0.0, 0.0], [1.9, -2.05, 0.5], [-3.0, 1.0, 2.25]])
    elements = ["Co", "O", "Co"]
    mio.export_atoms(tmp_path / "a.xyz", positions, elements)
    back = ase_io.read(tmp_path / "a.xyz")
    np.testing.assert_allclose(back.positions, positions, atol=1e-8)
    assert back.get_chemical_symbols() == elements
    offset = mio.export_cif(tmp_path / "a.cif", positions, elements, margin_A=1.5)
    back = ase_io.read(tmp_path / "a.cif")
    np.testing.assert_allclose(back.positions, positions + offset, atol=1e-4)
    np.testing.assert_allclose(back.cell.lengths(), np.ptp(positions, axis=0) + 3.0, atol=1e-4)
    with pytest.raises(ValueError, match="elements: expected 3 chemical symbols"):
        mio.export_xyz(tmp_path / "b.xyz", positions, ["Co"])
    with pytest.raises(ValueError, match="elements: expected chemical symbols"):
        mio.export_xyz(tmp_path / "b.xyz", positions, ["Co", "Xx", "O"])
    with pytest.raises(ValueError, match="path: expected a .xyz or .cif"):
        mio.export_atoms(tmp_path / "b.pdb", positions, elements)


# -- formats rosettasciio reads --------------------------------------------------------------------------
def _hspy_scan(path, data, energy_keV=300.0, semiangle=21.0):
    """A 4D scan written by rosettasciio's own HSPY writer (an independent writer of a format it reads)."""
    from rsciio.hspy import file_writer

    axes = [dict(name="y", size=data.shape[0], scale=0.05, offset=0.0, units="nm", navigate=True),
            dict(name="x", size=data.shape[1], scale=0.06, offset=0.0, units="nm", navigate=True),
            dict(name="ky", size=data.shape[2], scale=0.5, offset=-4.0, units="mrad", navigate=False),
            dict(name="kx", size=data.shape[3], scale=0.5, offset=-4.0, units="mrad", navigate=False)]  # fmt: skip
    metadata = {"General": {"title": "scan"}, "Signal": {"signal_type": "electron_diffraction"},
                "Acquisition_instrument": {"TEM": {"beam_energy": energy_keV, "convergence_angle": semiangle}}}  # fmt: skip
    file_writer(str(path), dict(data=data, axes=axes, metadata=metadata, original_metadata={}, tmp_parameters={},
                                attributes={"_lazy": False}, package_info={"name": "test", "version": "0"},
                                learning_results={}, models={}))  # fmt: skip


def test_rosettasciio_files_one_per_tilt(tmp_path):
    pytest.importorskip("rsciio")
    rng = np.random.default_rng(7)
    scans = _scans(rng, 2, shape=(3, 4, 16, 16))
    paths = [tmp_path / f"tilt{i}.hspy" for i in range(2)]
    for path, scan in zip(paths, scans):
        _hspy_scan(path, scan)
    series = mio.load_rosettasciio(paths, [-15.0, 15.0])
    np.testing.assert_allclose(series.tilts_deg, [-15.0, 15.0])
    for i, scan in enumerate(scans):
        np.testing.assert_array_equal(np.asarray(series.data[i]), scan)
    cal = series.calibration
    assert cal.energy_eV == 300e3 and cal.semiangle_mrad == 21.0  # keV -> eV
    assert cal.scan_step_A == pytest.approx((0.5, 0.6)) and cal.detector_sampling_mrad == (0.5, 0.5)  # nm -> A
    np.testing.assert_array_equal(series.scan(1).read([5]), scans[1][1, 1][None])
    # One file through load_tiltseries, with an override.
    single = mio.load_tiltseries(paths[0], tilts_deg=[7.0], defocus_A=12.0)
    assert single.tilts_deg.tolist() == pytest.approx([7.0]) and single.calibration.defocus_A == 12.0

    with pytest.raises(ValueError, match="tilts_deg: expected 2 angles"):
        mio.load_rosettasciio(paths, [0.0])
    _hspy_scan(paths[1], scans[1], energy_keV=200.0)
    with pytest.raises(ValueError, match=r"tilt1.hspy: energy_eV = 200000.0 differs"):
        mio.load_rosettasciio(paths, [-15.0, 15.0])
    with pytest.raises(ValueError, match=r"reader: expected one of"):
        mio.load_rosettasciio(paths, [-15.0, 15.0], reader="NoSuchFormat")


def test_rosettasciio_missing_gives_an_install_hint(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "rsciio", None)  # as if it were not installed
    path = tmp_path / "scan.mib"
    path.write_bytes(b"\0" * 64)
    with pytest.raises(ImportError, match="rosettasciio.*pip install rosettasciio"):
        mio.load_tiltseries(path)
