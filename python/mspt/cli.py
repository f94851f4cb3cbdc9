"""The ``mspt`` command line."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _info(args: argparse.Namespace) -> int:
    from .info import collect, format_info

    print(format_info(collect()))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import pathlib

    from . import simulate

    if pathlib.Path(args.output).exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} already exists; pass --overwrite to replace it")
    structure = args.structure
    if pathlib.Path(structure).is_file():  # a unit-cell file; otherwise "SrTiO3" or a chemical symbol
        from ase.io import read

        structure = read(structure)
    atoms = simulate.nanocube(structure, cells=args.cells)
    summary = simulate.tiltseries(
        atoms, args.tilts, args.output, energy_eV=args.energy_eV, semiangle_mrad=args.semiangle_mrad,
        scan_shape=args.scan, scan_step_A=args.step_A, gpts=args.gpts, sampling_A=args.sampling_A,
        defocus_A=args.defocus_A, slice_thickness_A=args.slice_thickness_A, dose_e_per_A2=args.dose,
        seed=args.seed, overwrite=args.overwrite, progress=not args.quiet,
    )  # fmt: skip
    print(f"wrote {args.output}: {len(args.tilts)} tilts of {args.scan[0]}x{args.scan[1]} positions, "
          f"{args.gpts}x{args.gpts} patterns, {len(atoms)} atoms, object grid {summary['object_gpts']} px, "
          f"{summary['n_slices']} slices")  # fmt: skip
    return 0


def _run(args: argparse.Namespace) -> int:
    from .pipeline import run

    result = run(args.config, out=args.out, resume=args.resume, overwrite=True if args.overwrite else None,
                 scheduler=args.scheduler, device=args.device, progress=not args.quiet)  # fmt: skip
    _print_outputs(result)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .pipeline.demo import run_demo

    result = run_demo(args.out, overwrite=args.overwrite, resume=args.resume, progress=not args.quiet, joint=args.joint)
    _print_outputs(result)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .config import load_config
    from .io import load_tiltseries
    from .ptycho import plan

    config = load_config(args.config)
    device = args.device or config.run.device
    with load_tiltseries(config.input.tiltseries) as series:
        print(f"{series.n_tilts} tilts; the plan of one tilt's ptychography (every tilt has the same shape):")
        print(plan(series.scan(0), config.ptycho, device=device))
    return 0


def _print_outputs(result) -> None:
    print(f"results: {result.results_path}")
    for name, path in result.reports.items():
        print(f"  report {name:12s} {path}")
    for name, path in result.exports.items():
        print(f"  export {name:12s} {path}")
    if result.resolution_A is not None:
        z, y, x = result.resolution_A
        print(f"resolution (z, y, x): {z:.2f}, {y:.2f}, {x:.2f} A")
    if result.atoms_found_fraction is not None:
        print(f"atom sites found: {100 * result.atoms_found_fraction:.1f} %")
    if result.joint is not None:
        z, y, x = result.joint["resolution_A"]
        print(f"joint refinement: resolution (z, y, x): {z:.2f}, {y:.2f}, {x:.2f} A" + (
            f"; atom sites found: {100 * result.joint['found_fraction']:.1f} %" if "found_fraction" in result.joint else ""))
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.timings.items()))


def _tilt_list(text: str) -> list[float]:
    """"-60:60:10" (start:stop:step, stop included) or "-30,0,30"."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            return list(np.round(np.arange(start, stop + step / 2, step), 6))
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP:STEP or a comma list of angles in degrees, got {text!r}") from None


def _scan_shape(text: str) -> tuple[int, int]:
    try:
        items = [int(x) for x in text.lower().split("x")]
        if len(items) == 1:
            items *= 2
        if len(items) != 2 or min(items) < 1:
            raise ValueError
        return items[0], items[1]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or NYxNX positions, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mspt", description="Multi-slice ptychographic electron tomography.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="print the version, compiled backends, FFT library, threads and GPUs")
    p.set_defaults(func=_info)

    p = sub.add_parser("simulate", help="simulate a 4D-STEM tilt series of a nanocube (needs abtem and ase)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("output", help="the mspt.tiltseries HDF5 file to write")
    p.add_argument("--structure", default="SrTiO3", help="SrTiO3, a chemical symbol (cubic bulk) or a unit-cell file ASE reads")
    p.add_argument("--cells", type=int, default=3, help="unit cells per cube edge")
    p.add_argument("--tilts", type=_tilt_list, default=_tilt_list("-60:60:10"), help="tilt angles in degrees")
    p.add_argument("--energy-eV", dest="energy_eV", type=float, default=200e3)
    p.add_argument("--semiangle-mrad", dest="semiangle_mrad", type=float, default=25.0)
    p.add_argument("--defocus-A", dest="defocus_A", type=float, default=0.0, help="defocus at the rotation-centre plane")
    p.add_argument("--scan", type=_scan_shape, default=(20, 20), help="scan positions, N or NYxNX")
    p.add_argument("--step-A", dest="step_A", type=float, default=0.8, help="scan step")
    p.add_argument("--gpts", type=int, default=64, help="probe window and pattern size (pixels)")
    p.add_argument("--sampling-A", dest="sampling_A", type=float, default=0.2, help="object pixel size")
    p.add_argument("--slice-thickness-A", dest="slice_thickness_A", type=float, default=2.0)
    p.add_argument("--dose", type=float, default=None, help="dose in e/A^2 (Poisson noise); default: noiseless")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("run", help="run the pipeline of a TOML configuration: ptychography, tomography, analysis")
    p.add_argument("config", help="the run's TOML file")
    p.add_argument("--out", default=None, help="output folder (overrides [output] dir)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in the same output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run's outputs")
    p.add_argument("--scheduler", default=None, help="address of a Dask scheduler to fan the tilts out on")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="overrides [run] device")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)

    p = sub.add_parser("demo", help="simulate a small nanocube tilt series and reconstruct it end to end")
    p.add_argument("--out", default="mspt-demo", help="output folder (default: ./mspt-demo)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's outputs")
    p.add_argument("--joint", action="store_true",
                   help="add the joint refinement (with --resume on a finished demo, only it runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)

    p = sub.add_parser("plan", help="print the memory plan of a TOML configuration's ptychography")
    p.add_argument("config", help="the run's TOML file")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="overrides [run] device")
    p.set_defaults(func=_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError, ImportError, MemoryError) as err:
        print(f"mspt {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
