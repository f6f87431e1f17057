"""Command line: ``meanfield run STUDY.toml [--quick]`` and ``meanfield plot RESULT.nc``."""

import argparse
import sys
from pathlib import Path

import xarray as xr

from meanfield.results import summary_table
from meanfield.study import NETCDF_ENGINE, StudyError, load_study, run_study


def main(argv=None):
    parser = argparse.ArgumentParser(prog="meanfield", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study file, writing one netCDF dataset")
    run.add_argument("study", help="study TOML file, e.g. studies/sine.toml")
    run.add_argument("--quick", action="store_true", help="apply the study's [quick] overrides")
    run.add_argument("--out", help="output .nc path (default results/<name>[-quick].nc)")
    run.add_argument("--data-dir", help="directory of the data files (MNIST IDX)")
    run.add_argument("--methods", help="comma-separated method labels to run (default: all)")
    run.add_argument("--seeds", type=int, help="number of seeds, replacing the study's")
    run.add_argument("--workers", type=int, default=1,
                     help="run cells in this many local processes (dask.distributed; default 1: in this process)")
    run.add_argument("--scheduler", help="address of a dask.distributed scheduler to run the cells on")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    plot = sub.add_parser("plot", help="make the figures of a saved dataset")
    plot.add_argument("result", help="netCDF file written by `meanfield run`; figures are named after it")
    plot.add_argument("--out-dir", default="figures", help="where to write the PNG files (default figures/)")
    args = parser.parse_args(argv)

    try:
        if args.command == "run":
            study = load_study(args.study, quick=args.quick, data_dir=args.data_dir, seeds=args.seeds,
                               only_methods=args.methods.split(",") if args.methods else None)
            out = Path(args.out or f"results/{study.name}.nc")
            out.parent.mkdir(parents=True, exist_ok=True)
            ds = run_study(study, out, progress=not args.no_progress, workers=args.workers, scheduler=args.scheduler)
            print(f"wrote {out}\n")
            print(summary_table(ds))
        else:
            with xr.open_dataset(args.result, engine=NETCDF_ENGINE) as ds:
                from meanfield.plotting import plot_dataset

                for path in plot_dataset(ds.load(), args.out_dir, name=Path(args.result).stem):
                    print(f"wrote {path}")
    except (StudyError, FileNotFoundError) as err:
        print(f"meanfield: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
