"""Run PtyRAD's multislice ptychography on a dataset written by mspt's side; runs INSIDE the PtyRAD venv.

    python run_ptyrad_msp.py INPUT.npz OUTPUT.npz [--config CONFIG.json]

INPUT.npz is ``PtychoDataset.save_npz`` (tests/ptycho_data.py): ``data`` (scan_y, scan_x, ky, kx) counts with
zero frequency at (ky // 2, kx // 2), ``nominal_positions_A`` / ``positions_A`` (N, 2) as (y, x) in A, and a
JSON string ``meta`` with the calibrations and probe parameters. Nothing here imports mspt. CONFIG.json holds
the reconstruction settings (``DEFAULTS`` below lists them all; ``params_override`` reaches any PtyRAD key).

How the dataset maps onto PtyRAD 1.0's params (``init_params`` / ``model_params`` / ``loss_params`` /
``constraint_params`` / ``recon_params``, validated by ``PtyRADParams``, run by ``PtyRADSolver``):

* Axes. PtyRAD indexes patterns (N, ky, kx) and its object (omode, Nz, Ny, Nx) with rows first, as we do, and
  its far field is ``fftshift(fft2(exit wave))``, zero frequency at (ky // 2, kx // 2): the patterns go in
  unchanged (``meas_flipT`` None).
* Calibration. ``meas_calibration = {'mode': 'dk', 'value': reciprocal sampling}``, so PtyRAD's pixel is
  1 / (gpts_k dk), the truth grid's pixel.
* Probe. Simulated by PtyRAD from ``probe_kv``, ``probe_conv_angle`` and ``probe_aberrations`` with
  ``C10 = -defocus_A`` (abTEM's sign, which PtyRAD shares); our Krivanek angles phi_nm (rad) go in as
  degrees, PtyRAD's unit. PtyRAD meets the probe with its first slice, where the dataset's defocus is
  referred (the entrance surface).
* Positions. PtyRAD holds a window's top-left corner ``pos`` (object pixels, float) and centres its probe at
  window pixel (N // 2, N // 2), so a window centre c goes in as ``c - N // 2``. The given positions are
  centred on a canvas made by PtyRAD's own rule for a simulated raster (side 1.2 * ceil(scan range + N)),
  passed explicitly as ``obj_params`` so the frame is known here: ``positions_px_initial`` are the window
  centres given, before PtyRAD's optional random displacement (``pos_scan_rand_std``).
* Beam tilt. PtyRAD tilts its propagator by exp(+i dz (Ky tan ty + Kx tan tx)) with angular Ky = 2 pi ky;
  abTEM and mspt by exp(-2 pi i dz (ky tan ty + kx tan tx)). The dataset's (ty, tx) therefore goes in as
  ``init_tilts = [[-ty, -tx]]`` (mrad); test_ptyrad_peer.py checks it on a tilted scan (the other sign
  loses r and shifts the phase).

OUTPUT.npz: ``phase`` (Ny, Nx) summed phase of the final object (sum over slices of PtyRAD's phase ``objp``,
which is not wrapped), ``phase_iterations`` (n_snap, Ny, Nx) float32 and ``snapshot_iters``,
``positions_px`` (N, 2) final window centres in PtyRAD's object pixels (y, x), ``positions_px_initial`` the
centres given, ``object`` (S, Ny, Nx) complex64 (first object mode), ``probe`` (pmode, N, N) complex64,
``loss_iterations``, ``iteration_times_s`` (PtyRAD's own per-iteration wall time, less the snapshot copies
made here), and a JSON string ``meta``: versions, the full settings, sampling, set-up and reconstruct wall
times, threads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

# This folder also holds mspt's driver module ptyrad.py, which would shadow the PtyRAD package: the
# script's folder leaves the import path before PtyRAD is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

DEFAULTS = {
    "n_iter": 32,
    "num_slices": 4,  # reconstruction slices; None: the dataset's (abTEM's) slice count
    "slice_thickness_A": None,  # None: dataset thickness / num_slices
    "batch_size": 32,  # recon_params BATCH_SIZE.size (PtyRAD's default)
    "group_mode": "random",  # recon_params GROUP_MODE: random | sparse | compact | hilbert | fps
    "optimizer": "Adam",  # any torch.optim name PtyRAD accepts
    "optimizer_configs": {},
    "lr_obja": 5e-4,  # learning rates of PtyRAD's templates; 0 fixes that variable
    "lr_objp": 5e-4,
    "lr_probe": 1e-4,
    "lr_positions": 0.0,  # sub-pixel position refinement (PtyRAD's template: 5e-4)
    "probe_modes": 1,  # init_params probe_pmode_max
    "loss": "single",  # "single" (amplitude NRMSE, dp_pow 0.5) or "poissn" (Poisson likelihood)
    "obj_zblur_std": 1.0,  # constraint obj_zblur std in slices (PtyRAD applies it to multislice by default); None: off
    "obj_rblur_std": None,  # lateral blur std in pixels; None: off (PtyRAD's templates leave it off)
    "obja_thresh": [0.96, 1.04],  # object amplitude clamp of PtyRAD's templates; None: off
    "kz_filter_beta": None,  # arctan kz filter strength (PtychoShelves' regularize_layers); None: off
    "objp_positive": False,  # phase positivity constraint
    "pos_scan_rand_std": 0.0,  # random displacement (px) of the initial positions (PtyRAD's default 0.15)
    "positions": "nominal",  # "nominal" (what an experiment knows) or "true"
    "use_known_tilt": True,  # give the dataset's tilt as init_tilts (not refined)
    "compile": False,  # recon_params compiler_configs.enable (torch.compile)
    "seed": 0,
    "snapshot_every": 1,  # keep the summed phase every k iterations (0: never)
    "device": "cpu",
    "params_override": {},  # {section: {key: value}} merged over the params built here, before validation
}


def _summed_phase(model) -> np.ndarray:
    """Occupancy-weighted sum over object modes of the phase summed over slices, (Ny, Nx) float32."""
    objp = model.opt_objp.detach().cpu().numpy()  # (omode, Nz, Ny, Nx)
    occu = model.omode_occu.detach().cpu().numpy()
    return np.tensordot(occu, objp.sum(1), axes=1).astype(np.float32)


def _aberrations_for_ptyrad(meta: dict) -> dict:
    """The dataset's probe as PtyRAD's ``probe_aberrations``: C10 = -defocus, Krivanek angles in degrees."""
    out = {"C10": -float(meta["defocus_A"])}
    for key, value in meta["aberrations"].items():
        out[key] = math.degrees(float(value)) if key.startswith("phi") else float(value)
    return out


def _canvas(centres_px: np.ndarray, window: int) -> np.ndarray:
    """Window centres moved to the middle of the canvas PtyRAD makes for them: side 1.2 ceil(range + N)."""
    span = centres_px.max(0) - centres_px.min(0)
    side = (1.2 * np.ceil(span + window)).astype(int)
    return centres_px - (centres_px.max(0) + centres_px.min(0)) / 2 + side // 2


def _merge(base: dict, override: dict) -> dict:
    for section, values in override.items():
        if isinstance(values, dict) and isinstance(base.get(section), dict):
            _merge(base[section], values)
        else:
            base[section] = values
    return base


def build_params(settings: dict, meta: dict, data: np.ndarray, centres_px: np.ndarray, output_dir: str):
    """PtyRAD's params dict (not yet validated) and the window centres it is given (its object pixels)."""
    scan_y, scan_x, ky, kx = data.shape
    window = ky
    num_slices = int(settings["num_slices"] or meta["num_slices"])
    dz = float(settings["slice_thickness_A"] or float(meta["thickness_A"]) / num_slices)
    canvas_centres = _canvas(centres_px, window)
    tilt = meta["tilt_mrad"] if settings["use_known_tilt"] else (0.0, 0.0)

    def update(lr):
        return {"start_iter": 1 if lr else None, "lr": float(lr)}

    def constraint(on, **extra):
        return {"start_iter": 1 if on else None, "step": 1, "end_iter": None, **extra}

    loss_single = settings["loss"] == "single"
    if settings["loss"] not in ("single", "poissn"):
        raise SystemExit(f"loss: expected 'single' or 'poissn', got {settings['loss']!r}")
    params = {
        "init_params": {
            "random_seed": int(settings["seed"]),
            "probe_kv": float(meta["energy_eV"]) / 1e3,
            "probe_conv_angle": float(meta["semiangle_mrad"]),
            "probe_aberrations": _aberrations_for_ptyrad(meta),
            "meas_Npix": window,
            "pos_N_scan_slow": scan_y,
            "pos_N_scan_fast": scan_x,
            "pos_scan_step_size": float(meta["scan_step_A"]),
            "meas_calibration": {"mode": "dk", "value": float(meta["reciprocal_sampling_invA"])},
            "probe_pmode_max": int(settings["probe_modes"]),
            "obj_Nlayer": num_slices,
            "obj_slice_thickness": dz,
            "meas_source": "custom",
            "meas_params": data.reshape(scan_y * scan_x, ky, kx).astype(np.float32),
            "pos_source": "custom",
            "pos_params": canvas_centres - window // 2,
            "pos_scan_rand_std": float(settings["pos_scan_rand_std"]) or None,
            "obj_source": "simu",
            "obj_params": None,  # PtyRAD sizes its canvas from the positions by the rule _canvas follows
            "tilt_source": "simu",
            "tilt_params": {"tilt_type": "all", "init_tilts": [[-float(tilt[0]), -float(tilt[1])]]},
        },
        "model_params": {
            "optimizer_params": {"name": settings["optimizer"], "configs": dict(settings["optimizer_configs"])},
            "update_params": {
                "obja": update(settings["lr_obja"]),
                "objp": update(settings["lr_objp"]),
                "obj_tilts": update(0.0),
                "slice_thickness": update(0.0),
                "probe": update(settings["lr_probe"]),
                "probe_pos_shifts": update(settings["lr_positions"]),
            },
        },
        "loss_params": {
            "loss_single": {"state": loss_single, "weight": 1.0, "dp_pow": 0.5},
            "loss_poissn": {"state": not loss_single, "weight": 1.0, "dp_pow": 1.0, "eps": 1e-6},
        },
        "constraint_params": {
            "ortho_pmode": constraint(True),
            "fix_probe_int": constraint(True),
            "obj_rblur": constraint(settings["obj_rblur_std"] is not None, obj_type="both", kernel_size=5,
                                    std=float(settings["obj_rblur_std"] or 0.4)),  # fmt: skip
            "obj_zblur": constraint(settings["obj_zblur_std"] is not None and num_slices > 1, obj_type="both",
                                    kernel_size=5, std=float(settings["obj_zblur_std"] or 1.0)),  # fmt: skip
            "obja_thresh": constraint(settings["obja_thresh"] is not None, relax=0.0,
                                      thresh=list(settings["obja_thresh"] or [0.96, 1.04])),  # fmt: skip
            "kz_filter": constraint(settings["kz_filter_beta"] is not None, obj_type="both",
                                    beta=float(settings["kz_filter_beta"] or 1.0), alpha=1.0),  # fmt: skip
            "objp_postiv": constraint(bool(settings["objp_positive"]), relax=0.0),
        },
        "recon_params": {
            "NITER": int(settings["n_iter"]),
            "BATCH_SIZE": {"size": int(settings["batch_size"]), "grad_accumulation": 1},
            "GROUP_MODE": settings["group_mode"],
            "SAVE_ITERS": None,  # no output folder, no figures: nothing but the reconstruction is timed
            "output_dir": output_dir,
            "copy_params": False,
            "compiler_configs": {"enable": bool(settings["compile"])},
        },
    }
    _merge(params, settings["params_override"])
    return params, canvas_centres, num_slices, dz


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

    import torch

    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    import ptyrad
    import torchvision  # PtyRAD's dependency; a stand-in where no CPU build installs (setup_ptyrad_venv.sh)
    from ptyrad.params.ptyrad_params import PtyRADParams
    from ptyrad.solver import PtyRADSolver

    with np.load(args.input, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        data = np.asarray(f["data"], dtype=np.float32)
        which = {"nominal": "nominal_positions_A", "true": "positions_A"}[settings["positions"]]
        positions_A = np.asarray(f[which], dtype=float)
    if data.shape[-1] != data.shape[-2]:
        raise SystemExit(f"square patterns expected, got {data.shape[-2]}x{data.shape[-1]}")
    pixel = 1.0 / (data.shape[-1] * float(meta["reciprocal_sampling_invA"]))
    centres_px = positions_A / pixel

    with tempfile.TemporaryDirectory() as scratch:
        params, canvas_centres, num_slices, dz = build_params(settings, meta, data, centres_px, scratch)
        t0 = time.perf_counter()
        params = PtyRADParams(**params).model_dump()  # PtyRAD's own validation and default filling
        solver = PtyRADSolver(params, device=settings["device"], seed=int(settings["seed"]))
        t_setup = time.perf_counter() - t0
        init_vars = solver.init.init_variables

        # Snapshots of the summed phase: PtyRAD calls its constraint function once at the end of every
        # iteration, inside the iteration's timed span; the copy's own time is subtracted below.
        constraints = solver.constraint_fn
        snapshots, snap_iters, snapshot_s = [], [], {}
        every = int(settings["snapshot_every"])

        def constraints_then_snapshot(model, niter):
            constraints(model, niter)
            if every and (niter % every == 0 or niter == settings["n_iter"]):
                s0 = time.perf_counter()
                with torch.no_grad():
                    snapshots.append(_summed_phase(model))
                snap_iters.append(niter)
                snapshot_s[niter] = time.perf_counter() - s0

        solver.constraint_fn = constraints_then_snapshot
        t0 = time.perf_counter()
        solver.reconstruct()
        t_rec = time.perf_counter() - t0

    model = solver.reconstruct_results
    iteration_times = np.array([t - snapshot_s.get(i + 1, 0.0) for i, t in enumerate(model.iter_times)])
    with torch.no_grad():
        obj = torch.polar(model.opt_obja[0], model.opt_objp[0]).cpu().numpy()
        probe = model.get_complex_probe_view().cpu().numpy()
        positions = (model.crop_pos + model.opt_probe_pos_shifts).cpu().numpy().astype(np.float64) + data.shape[-1] // 2
        phase = _summed_phase(model)
    result_meta = {
        "ptyrad_version": ptyrad.__version__,
        "torch_version": torch.__version__,
        "torchvision_version": getattr(torchvision, "__version__", "unknown"),
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "settings": {k: v for k, v in settings.items()},
        "num_slices": num_slices,
        "slice_thickness_A": dz,
        "probe_aberrations": params["init_params"]["probe_aberrations"],
        "init_tilts_mrad": params["init_params"]["tilt_params"]["init_tilts"],
        "sampling_A": [float(init_vars["dx"])] * 2,
        "object_shape": list(obj.shape),
        "setup_s": t_setup,
        "reconstruct_s": t_rec - float(sum(snapshot_s.values())),
        "iterations_s": float(iteration_times.sum()),
        "time_per_iteration_s": float(np.median(iteration_times)) if len(iteration_times) else None,
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    np.savez(
        args.output,
        meta=np.array(json.dumps(result_meta)),
        phase=phase,
        phase_iterations=np.asarray(snapshots, np.float32).reshape(-1, *phase.shape),
        snapshot_iters=np.asarray(snap_iters, np.int64),
        positions_px=positions,
        positions_px_initial=canvas_centres,
        object=obj.astype(np.complex64),
        probe=probe.astype(np.complex64),
        loss_iterations=np.array([loss for _, loss in model.loss_iters], np.float64),
        iteration_times_s=iteration_times,
    )  # fmt: skip
    print(json.dumps({k: result_meta[k] for k in ("ptyrad_version", "reconstruct_s", "time_per_iteration_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
