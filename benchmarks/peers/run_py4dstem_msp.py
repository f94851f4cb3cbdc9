"""Run py4DSTEM's multislice ptychography on a dataset written by mspt's side; runs INSIDE the py4DSTEM venv.

    python run_py4dstem_msp.py INPUT.npz OUTPUT.npz [--config CONFIG.json]

INPUT.npz is ``PtychoDataset.save_npz`` (tests/ptycho_data.py): ``data`` (scan_y, scan_x, ky, kx) counts with
zero frequency at (ky // 2, kx // 2), ``nominal_positions_A`` / ``positions_A`` (N, 2) as (y, x) in A, and a
JSON string ``meta`` with the calibrations and probe parameters. Nothing here imports mspt (numpy < 2 lives
here). CONFIG.json holds the reconstruction settings (``DEFAULTS`` below lists them all).

Axis mapping. py4DSTEM names its axes (x, y) but indexes arrays (Rx, Ry, Qx, Qy) / (Px, Py): its first axis is
our first axis (y, rows). The data go in as they are, positions (y, x) go in as py4DSTEM's (x, y), the
CoM rotation is forced to 0 without transpose (scan and detector axes agree by construction), and a beam tilt
(ty, tx) in mrad goes in as ``theta_x = ty``, ``theta_y = tx``: py4DSTEM's propagator carries
exp(-2 pi i dz k_first tan(theta_x)), the same sign as abTEM's and mspt's. Defocus: ``C10 = -defocus_A``,
referred to the first slice (``middle_focus=False``), which is where the dataset's defocus is referred.
The known pattern centre goes in as ``force_com_shifts`` (an integer shift to the corner, exact).

OUTPUT.npz: ``phase`` (Px, Py) summed phase of the final object (sum over slices of its angle; of the
potential for object_type="potential"), ``phase_iterations`` (n_snap, Px, Py) float32 and ``snapshot_iters``,
``positions_px`` (N, 2) the positions py4DSTEM used, in its object pixels, (y, x) in our order,
``positions_px_initial`` the same before any refinement, ``object`` (S, Px, Py) complex64 (or float32),
``probe`` (Sx, Sy) complex64 centred, ``error_iterations``, ``iteration_times_s`` (wall time of each
iteration: from the end of one iteration's constraints to the next's, so snapshot copies are excluded),
and a JSON string ``meta``: py4DSTEM/numpy versions, the full settings, sampling, preprocess and
reconstruct wall times, threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

DEFAULTS = {
    "n_iter": 32,
    "num_slices": 4,  # reconstruction slices; None: the dataset's (abTEM's) slice count
    "slice_thickness_A": None,  # None: dataset thickness / num_slices
    "reconstruction_method": "gradient-descent",
    "step_size": 0.5,
    "max_batch_size": None,  # None: all positions in one batch per iteration
    "object_type": "potential",  # "potential" (real phase per slice) or "complex"
    "object_positivity": True,  # potential objects only
    "fix_probe": False,
    "fix_probe_com": True,
    "fix_positions": True,
    "positions": "nominal",  # "nominal" (what an experiment knows) or "true"
    "use_known_tilt": True,  # give the dataset's tilt as theta_x/theta_y (py4DSTEM does not refine it)
    "object_padding_px": None,  # None: py4DSTEM's default (half the probe window)
    "kz_regularization_gamma": None,
    "tv_denoise_weights": None,
    "q_lowpass": None,
    "num_probes": 1,  # > 1: MixedstateMultislicePtychography
    "seed": 0,
    "snapshot_every": 1,  # keep the summed phase every k iterations (0: never)
    "device": "cpu",
    "reconstruct_kwargs": {},  # any further keyword of py4DSTEM's reconstruct(), passed as given
}


def _summed_phase(obj, object_type) -> np.ndarray:
    obj = np.asarray(obj)
    if object_type == "potential":
        return obj.real.sum(0).astype(np.float32)
    return np.angle(obj).sum(0).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--config", default=None, help="JSON file of settings (see DEFAULTS)")
    args = parser.parse_args(argv)

    settings = dict(DEFAULTS)
    if args.config:
        with open(args.config) as f:
            given = json.load(f)
        unknown = set(given) - set(DEFAULTS)
        if unknown:
            raise SystemExit(f"unknown settings: {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        settings.update(given)

    import py4DSTEM
    from py4DSTEM.process.phase import MixedstateMultislicePtychography, MultislicePtychography

    with np.load(args.input, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        data = np.asarray(f["data"], dtype=np.float32)
        which = {"nominal": "nominal_positions_A", "true": "positions_A"}[settings["positions"]]
        positions_A = np.asarray(f[which], dtype=float)

    scan_y, scan_x, ky, kx = data.shape
    if ky != kx:
        raise SystemExit(f"square patterns expected, got {ky}x{kx}")
    dk = float(meta["reciprocal_sampling_invA"])
    thickness = float(meta["thickness_A"])
    num_slices = int(settings["num_slices"] or meta["num_slices"])
    dz = float(settings["slice_thickness_A"] or thickness / num_slices)
    polar = {"C10": -float(meta["defocus_A"])}
    polar.update({k: float(v) for k, v in meta["aberrations"].items()})
    tilt = meta["tilt_mrad"] if settings["use_known_tilt"] else (0.0, 0.0)

    datacube = py4DSTEM.DataCube(data=data)
    datacube.calibration.set_R_pixel_size(float(meta["scan_step_A"]))
    datacube.calibration.set_R_pixel_units("A")
    datacube.calibration.set_Q_pixel_size(dk)
    datacube.calibration.set_Q_pixel_units("A^-1")

    common = dict(
        energy=float(meta["energy_eV"]), num_slices=num_slices, slice_thicknesses=dz, datacube=datacube,
        semiangle_cutoff=float(meta["semiangle_mrad"]), polar_parameters=polar,
        object_padding_px=settings["object_padding_px"], initial_scan_positions=positions_A.copy(),
        theta_x=float(tilt[0]) or None, theta_y=float(tilt[1]) or None, middle_focus=False,
        object_type=settings["object_type"], verbose=False, device=settings["device"],
    )  # fmt: skip
    if settings["num_probes"] > 1:
        ptycho = MixedstateMultislicePtychography(num_probes=int(settings["num_probes"]), **common)
    else:
        ptycho = MultislicePtychography(**common)

    centre = (np.full((scan_y, scan_x), ky // 2, np.float32), np.full((scan_y, scan_x), kx // 2, np.float32))
    t0 = time.perf_counter()
    ptycho.preprocess(
        plot_center_of_mass=False, plot_rotation=False, plot_probe_overlaps=False, force_com_rotation=0.0,
        force_com_transpose=False, force_com_shifts=centre, force_reciprocal_sampling=dk,
        force_scan_sampling=float(meta["scan_step_A"]),
    )  # fmt: skip
    t_pre = time.perf_counter() - t0
    positions_px_initial = np.asarray(ptycho._positions_px_initial, dtype=np.float64).copy()
    sampling = [float(s) for s in ptycho.sampling]

    # Per-iteration timing and snapshots: py4DSTEM calls _constraints once at the end of every iteration.
    marks, snapshots, snap_iters = [], [], []
    constraints = ptycho._constraints
    every = int(settings["snapshot_every"])

    def timed_constraints(*a, **k):
        out = constraints(*a, **k)
        marks.append(time.perf_counter())
        it = len(marks)
        if every and (it % every == 0 or it == settings["n_iter"]):
            s0 = time.perf_counter()
            snapshots.append(_summed_phase(ptycho._asnumpy(out[0]), ptycho._object_type))
            snap_iters.append(it)
            offsets.append(time.perf_counter() - s0)
        else:
            offsets.append(0.0)
        return out

    offsets: list[float] = []
    ptycho._constraints = timed_constraints
    np.random.seed(int(settings["seed"]))
    t0 = time.perf_counter()
    ptycho.reconstruct(
        num_iter=int(settings["n_iter"]), reconstruction_method=settings["reconstruction_method"],
        step_size=float(settings["step_size"]), max_batch_size=settings["max_batch_size"],
        seed_random=int(settings["seed"]), fix_probe=bool(settings["fix_probe"]),
        fix_probe_com=bool(settings["fix_probe_com"]), fix_positions=bool(settings["fix_positions"]),
        object_positivity=bool(settings["object_positivity"]),
        kz_regularization_gamma=settings["kz_regularization_gamma"], tv_denoise_weights=settings["tv_denoise_weights"],
        q_lowpass=settings["q_lowpass"], store_iterations=False, progress_bar=False, reset=True,
        **settings["reconstruct_kwargs"],
    )  # fmt: skip
    t_rec = time.perf_counter() - t0
    # Iteration i runs from the end of iteration i - 1's snapshot (or the call's start) to its constraints' end.
    starts = [t0] + [m + o for m, o in zip(marks[:-1], offsets[:-1])]
    iteration_times = np.array([m - s for m, s in zip(marks, starts)])
    snapshot_time = float(sum(offsets))

    obj = np.asarray(ptycho.object)
    probe = np.asarray(ptycho.probe)
    result_meta = {
        "py4dstem_version": py4DSTEM.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "settings": settings,
        "class": type(ptycho).__name__,
        "num_slices": num_slices,
        "slice_thickness_A": dz,
        "polar_parameters": polar,
        "theta_mrad": [common["theta_x"], common["theta_y"]],
        "sampling_A": sampling,
        "object_shape": list(obj.shape),
        "preprocess_s": t_pre,
        "reconstruct_s": t_rec,
        "reconstruct_minus_snapshots_s": t_rec - snapshot_time,
        "time_per_iteration_s": float(np.median(iteration_times)) if len(iteration_times) else None,
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        "cpu_count": os.cpu_count(),
    }
    np.savez(
        args.output,
        meta=np.array(json.dumps(result_meta)),
        phase=_summed_phase(obj, ptycho._object_type),
        phase_iterations=np.asarray(snapshots, np.float32).reshape(-1, *obj.shape[-2:]),
        snapshot_iters=np.asarray(snap_iters, np.int64),
        positions_px=np.asarray(ptycho._positions_px, np.float64),
        positions_px_initial=positions_px_initial,
        object=obj.astype(np.complex64 if np.iscomplexobj(obj) else np.float32),
        probe=probe.astype(np.complex64),
        error_iterations=np.asarray(ptycho.error_iterations, np.float64),
        iteration_times_s=iteration_times,
    )  # fmt: skip
    print(json.dumps({k: result_meta[k] for k in ("py4dstem_version", "reconstruct_s", "time_per_iteration_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
