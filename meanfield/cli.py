"""Command line: run a study file, make the figures of a result, describe a result.

    meanfield run STUDY.toml [--quick] [--set section.key=value ...] [--dry-run]
    meanfield plot RESULT.nc
    meanfield info RESULT.nc

Exit status 2 for a study, option or file that cannot be used (nothing is written then), 130 after
Ctrl-C (finished cells are kept and a rerun resumes).
"""

import argparse
import sys
from pathlib import Path

# only argparse at import time: `meanfield --help` must answer at once, the numerics load on use


def _parser():
    from meanfield import __version__

    parser = argparse.ArgumentParser(prog="meanfield", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"meanfield {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study file, writing one netCDF dataset")
    run.add_argument("study", help="study TOML file, e.g. studies/sine.toml")
    run.add_argument("--quick", action="store_true", help="apply the study's [quick] overrides")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                     help="override one setting (TOML value), e.g. --set methods.cbo.dt=0.05; repeatable")
    run.add_argument("--out", help="output .nc path (default results/<name>[-quick].nc)")
    run.add_argument("--data-dir", help="directory of the data files (MNIST IDX)")
    run.add_argument("--methods", help="comma-separated method labels to run (default: all)")
    run.add_argument("--seeds", type=int, help="number of seeds, replacing the study's")
    run.add_argument("--workers", type=int, default=1,
                     help="run cells in this many local processes (dask.distributed; default 1: in this process)")
    run.add_argument("--scheduler", help="address of a dask.distributed scheduler to run the cells on")
    run.add_argument("--checkpoint-every", type=float, default=600.0, metavar="SECONDS",
                     help="save each cell in training this often (default 600; 0: after every epoch), so that "
                     "an interrupted cell continues from there")
    run.add_argument("--dry-run", action="store_true",
                     help="list the cells, which are already computed, and a compute estimate; write nothing")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    plot = sub.add_parser("plot", help="make the figures of a saved dataset")
    plot.add_argument("result", help="netCDF file written by `meanfield run`; figures are named after it")
    plot.add_argument("--out-dir", default="figures", help="where to write the figures (default figures/)")
    plot.add_argument("--figures", help="comma-separated figure names to make instead of those the study "
                      "declares, e.g. excess_risk,rate")
    info = sub.add_parser("info", help="describe a saved dataset: dimensions, methods, settings, summary")
    info.add_argument("result", help="netCDF file written by `meanfield run`")
    compare = sub.add_parser("compare", help="compare two datasets bit for bit (all but the timings); exit "
                             "status 1 if a number moved")
    compare.add_argument("before", help="a dataset, or a directory of them")
    compare.add_argument("after", help="the same study recomputed (a directory: the files of the same names)")
    return parser


def _run(args):
    from meanfield._array import keep_freed_memory
    from meanfield.results import summary_table
    from meanfield.runner import dry_run, run_study
    from meanfield.study import load_study

    methods = [m for m in args.methods.split(",") if m] if args.methods is not None else None
    study = load_study(args.study, quick=args.quick, data_dir=args.data_dir, seeds=args.seeds,
                       only_methods=methods, overrides=args.overrides)
    out = Path(args.out or f"results/{study.name}.nc")
    if args.dry_run:
        print(dry_run(study, out))
        return 0
    command = "meanfield run " + " ".join(sys.argv[2:] if args.argv is None else args.argv[1:])
    keep_freed_memory()  # cells run in this process when workers = 1
    ds = run_study(study, out, progress=not args.no_progress, workers=args.workers, scheduler=args.scheduler,
                   log=lambda text: print(text, file=sys.stderr), command=command,
                   checkpoint_every=args.checkpoint_every)
    print(f"wrote {out}\n")
    print(summary_table(ds))
    return 0


def _plot(args):
    from meanfield.schema import METHOD_DIM, ResultFileError, open_dataset

    ds = open_dataset(args.result)
    if METHOD_DIM not in ds.dims:  # e.g. the CBXpy cross-check's dataset, drawn by its own script
        written_by = ds.attrs.get("command", "another program")
        raise ResultFileError(f"{args.result} is not a study result of `meanfield run` (it has no {METHOD_DIM} "
                              f"dimension); it was written by {written_by}")
    from meanfield.plotting import plot_dataset

    try:
        figures = None if args.figures is None else [f.strip() for f in args.figures.split(",") if f.strip()]
        paths = plot_dataset(ds, args.out_dir, name=Path(args.result).stem, figures=figures)
    except ValueError as err:  # a declared figure the dataset cannot support
        raise ResultFileError(f"{args.result}: {err}") from None
    for path in paths:
        print(f"wrote {path}")
    return 0


def describe(ds):
    """Text for ``meanfield info``: dimensions, methods, seeds, settings, provenance, summary table."""
    import json

    from meanfield.results import summary_table
    from meanfield.schema import METHOD_DIM

    attrs = ds.attrs
    lines = [f"study {attrs.get('study', '?')}",
             "dimensions: " + ", ".join(f"{d} = {n}" for d, n in ds.sizes.items()),
             f"methods: {', '.join(map(str, ds[METHOD_DIM].values))}",
             f"seeds: {ds.sizes.get('seed', 0)} (root_seed {attrs.get('root_seed', '?')}), "
             f"epochs: {int(ds.epoch[-1]) if 'epoch' in ds.dims else '?'}"]
    for dim in ("M", "N"):
        if dim in ds.dims:
            lines.append(f"{dim}: {', '.join(str(int(v)) for v in ds[dim].values)}")
    keys = ("meanfield_version", "source_fingerprint", "history", "python_version", "numpy_version",
            "scipy_version", "xarray_version", "numba_version", "pot_version", "torch_version", "blas",
            "cpu", "numpy_simd", "blas_core", "numba_cpu", "cell_processors", "cuda_device")
    lines += [f"{key}: {attrs[key]}" for key in keys if key in attrs]
    if "parameters_json" in attrs:
        params = json.loads(attrs["parameters_json"])
        lines.append("effective settings:")
        for section in ("problem", "network"):
            lines.append(f"  [{section}] " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in params[section].items()))
        for label, table in params["methods"].items():
            lines.append(f"  [methods.{label}] " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()))
    else:
        lines.append("effective settings: not recorded (written by meanfield < 0.2)")
    return "\n".join(lines) + "\n\n" + summary_table(ds)


def _info(args):
    from meanfield.schema import open_dataset

    print(describe(open_dataset(args.result)))
    return 0


def _compare(args):
    from meanfield.results import compare_datasets
    from meanfield.schema import ResultFileError, open_dataset

    before, after = Path(args.before), Path(args.after)
    pairs = ([(path, after / path.name) for path in sorted(before.glob("*.nc"))] if before.is_dir()
             else [(before, after)])
    if not pairs:
        raise ResultFileError(f"{before} holds no .nc files")
    identical = True
    for old, new in pairs:
        if not new.exists():
            print(f"{old.name}: no {new}")
            identical = False
            continue
        result = compare_datasets(open_dataset(old), open_dataset(new))
        moved = ", ".join(f"{name} ({change if isinstance(change, str) else f'{change:.2g} relative'})"
                          for name, change in result["moved"].items())
        verdict = ("bit-identical" if not result["moved"] and not result["coords"]
                   else "MOVED: " + "; ".join(filter(None, [moved, ", ".join(result["coords"])])))
        print(f"{old.name}: {len(result['compared'])} variables {verdict}; attributes that differ: "
              f"{', '.join(result['attrs']) or 'none'}")
        identical &= not result["moved"] and not result["coords"]
    return 0 if identical else 1


def main(argv=None):
    args = _parser().parse_args(argv)
    args.argv = argv
    from meanfield.runner import StudyInterrupted
    from meanfield.schema import ResultFileError
    from meanfield.study import StudyError

    try:
        return {"run": _run, "plot": _plot, "info": _info, "compare": _compare}[args.command](args)
    except (StudyError, ResultFileError) as err:
        print(f"meanfield: error: {err}", file=sys.stderr)
        return 2
    except StudyInterrupted as err:
        print(f"\nmeanfield: {err}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
