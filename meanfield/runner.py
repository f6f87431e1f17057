"""Running a study: its cells, the cell cache, local or dask.distributed execution, and the combined
dataset.

Nothing is written until the study's checks pass (:mod:`meanfield.study`). Every (method, sweep
point, seed) cell is written to ``<output>.cells/`` as soon as it finishes, under the fingerprint
of its settings and of the package's source, so an interrupted study resumes without recomputing
finished cells and never reuses a stale one. A cell still training is checkpointed there too
(``<cell>.<fingerprint>.partial``, :mod:`meanfield.checkpoint`), so an interrupted long cell
continues where its last checkpoint left it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from meanfield import __version__
from meanfield._array import MALLOC_SETTINGS
from meanfield.schema import (
    METHOD_DIM,
    VARIABLES,
    ResultFileError,
    apply_schema,
    global_attrs,
    open_dataset,
    processor,
    write_dataset,
)
from meanfield.study import Study, StudyError, source_fingerprint
from meanfield.train import train

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["StudyInterrupted", "check_output", "dry_run", "run_study"]


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says which finished cells are kept."""


def check_output(output):
    """Refuse an output path that cannot be written, or whose writing would replace something other
    than a regular file (a directory, a FIFO, a device such as /dev/null), before any computation."""
    output = Path(output)
    if output.suffix != ".nc":
        raise StudyError(f"--out must be a path ending in .nc, got {str(output)!r}")
    cells_dir = Path(f"{output}.cells")
    if output.is_symlink() or (output.exists() and not output.is_file()):
        kind = "a link" if output.is_symlink() else "a directory" if output.is_dir() else "not a regular file"
        raise StudyError(f"--out {output} exists and is {kind}; only a regular file is ever replaced: "
                         "choose another --out")
    if cells_dir.is_symlink() or (cells_dir.exists() and not cells_dir.is_dir()):
        raise StudyError(f"--out {output}: its cell folder {cells_dir} exists and is not a directory")
    parent = output.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise StudyError(f"--out {output}: {ancestor} is not a directory")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise StudyError(f"--out {output}: {ancestor} is not writable")
            break
    return output


@contextlib.contextmanager
def _output_lock(cells_dir, output):
    """An exclusive lock on the output for the whole run: a second run refuses at once."""
    import fcntl

    fh = open(cells_dir / ".lock", "a")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyError(f"another `meanfield run` is writing {output} (it holds {cells_dir / '.lock'}); "
                             "wait for it to finish or choose another --out") from None
        yield
    finally:
        fh.close()


def _read_cell(path, fingerprint):
    """(status, dataset): "cached" with the cell, "stale", "damaged" with the reason, or "missing"."""
    if not path.exists():
        return "missing", None
    try:
        ds = open_dataset(path)
    except ResultFileError as err:
        return "damaged", str(err)
    if ds.attrs.get("fingerprint") != fingerprint:
        return "stale", None
    # without its on-disk encoding: a short label's string width must not carry over to the combined dataset
    return "cached", ds.drop_encoding()


def _set_aside(path):
    """Move a damaged cell file out of the way (kept for inspection, never read again)."""
    target = path.with_name(path.name + ".damaged")
    n = 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.damaged{n}"), n + 1
    os.replace(path, target)
    return target


def _train_cell(study, problem, label, point, index, seed, fingerprint, checkpoint=None, checkpoint_every=600.0,
                progress=None):
    """Train one (method, sweep point, seed) cell: its dataset, with the cell's coordinates."""
    method, network = study.method(label, point), study.network(problem, point)
    ds = train(method, network, problem, study.epochs, seed=seed, progress=progress, record_params=study.record_params,
               checkpoint=checkpoint, checkpoint_every=checkpoint_every)
    cell_dims = {METHOD_DIM: [label], **{dim: [value] for dim, value in point.items()}, "seed": [index]}
    ds = ds.expand_dims(cell_dims)
    ds.attrs["fingerprint"] = fingerprint
    ds.attrs["processor"] = json.dumps(processor(), sort_keys=True)  # of the worker that trained it
    return ds


def _dask_client(workers, scheduler):
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        return Client(scheduler)
    import dask

    # One single-threaded process per worker (dask's nannies also pin BLAS to one thread each). The
    # nannies set MALLOC_TRIM_THRESHOLD_ themselves; the workers get the settings of
    # keep_freed_memory instead, so large numpy temporaries reuse freed memory rather than being
    # page-faulted anew. The scheduler starts an HTTP server even without a dashboard, on port 8787
    # unless told otherwise: a free local port avoids the "port in use" warning when another
    # cluster runs.
    environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in MALLOC_SETTINGS.items()}
    with dask.config.set(environ):
        return Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}))


def _combine(cells, int_dims):
    """One dataset from the cells: the union of their variables (a float variable a method does not
    record is NaN there, an integer counter -1), then the schema's attributes and dtypes.

    Narrower networks are NaN-padded here to the widest among the cells, so that they stack; padding
    a cell when it is trained would make it depend on the sweep it ran under, which its fingerprint
    does not hold, and cells of a narrower sweep could then not join those of a wider one.
    """
    import xarray as xr

    widest = max((ds.sizes["neuron"] for ds in cells if "neuron" in ds.dims), default=0)
    cells = [ds.pad(neuron=(0, widest - ds.sizes["neuron"])) if ds.sizes.get("neuron", widest) < widest else ds
             for ds in cells]
    union = {}
    for ds in cells:
        for name, var in ds.data_vars.items():
            union.setdefault(name, var)
    filled = []
    for ds in cells:
        missing = {}
        for name, var in union.items():
            if name not in ds:
                shape = tuple(ds.sizes[d] if d in ds.dims else var.sizes[d] for d in var.dims)
                fill = VARIABLES[name].fill if name in VARIABLES else np.nan
                missing[name] = (var.dims, np.full(shape, fill, dtype=np.int64 if fill == -1 else float))
        filled.append(ds.assign(missing) if missing else ds)
    combined = xr.combine_by_coords(filled, combine_attrs="drop", join="exact", data_vars="all",
                                    coords="different", compat="equals")
    combined = combined.assign_coords({d: combined[d].astype(np.int64) for d in int_dims if d in combined.coords})
    return apply_schema(combined)


def run_study(study: Study, output: str | os.PathLike, progress: bool = True, log: Callable[[str], object] = print,
              workers: int = 1, scheduler: str | None = None, command: str = "meanfield run",
              checkpoint_every: float = 600.0) -> xr.Dataset:
    """Run every (method, sweep point, seed) cell not already on disk; write and return the combined dataset.

    Seed i is the same child seed at every sweep point (common random numbers across resolutions), so a
    cell's result does not depend on where or in which order it runs. With ``workers`` > 1 the cells run
    in that many local processes, and with ``scheduler`` (a dask.distributed address) on that cluster;
    either way each finished cell is written here as soon as it comes back. Nothing is written before
    every check has passed; a second run on the same output refuses while this one runs.

    A cell in training saves a checkpoint beside the cells every ``checkpoint_every`` seconds (0:
    after every epoch), and a later run continues it from there with the same result; a checkpoint of
    other settings or code is deleted. Cells sent to a ``scheduler`` are not checkpointed (their
    workers may not see this file system).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise StudyError(f"--workers must be an integer >= 1, got {workers!r}")
    if (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, float))
            or not checkpoint_every >= 0):
        raise StudyError(f"--checkpoint-every must be a number of seconds >= 0, got {checkpoint_every!r}")
    output = check_output(output)
    problem = study.problem()
    study.check_problem(problem)
    cells_dir = Path(f"{output}.cells")
    cells_dir.mkdir(parents=True, exist_ok=True)
    with _output_lock(cells_dir, output):
        return _run_locked(study, output, cells_dir, problem, progress, log, workers, scheduler, command,
                           checkpoint_every)


def _checkpoint(cells_dir, stem, fingerprint):
    """The checkpoint path of a pending cell; checkpoints of the same cell under another fingerprint
    (other settings or code) are deleted. Returns the path and whether a checkpoint is there."""
    path = cells_dir / f"{stem}.{fingerprint}.partial"
    for stale in cells_dir.glob(f"{stem}.*.partial*"):
        if stale.name[len(stem) + 1:].split(".")[0] != fingerprint:
            stale.unlink()
    return path, path.exists()


def _run_locked(study, output, cells_dir, problem, progress, log, workers, scheduler, command, checkpoint_every):
    from tqdm.auto import tqdm

    seeds = np.random.SeedSequence(study.root_seed).spawn(study.seeds)
    fingerprints = {}
    cells, pending, resumed = [], {}, 0
    for label, point, i, stem in study.cells():
        key = (label, tuple(point.items()))
        fingerprint = fingerprints.setdefault(key, study.cell_fingerprint(label, point))
        path = cells_dir / f"{stem}.nc"
        status, ds = _read_cell(path, fingerprint)
        if status == "cached":
            cells.append(ds)
            continue
        if status == "damaged":
            log(f"{path} is damaged ({ds}); set aside as {_set_aside(path).name}, recomputing it")
        elif status == "stale":
            log(f"{path} was computed with other settings or another version of the code; recomputing it")
        checkpoint, saved = _checkpoint(cells_dir, stem, fingerprint)
        if scheduler is not None:
            checkpoint = None
        resumed += saved and checkpoint is not None
        pending[path] = (label, point, i, seeds[i], fingerprint, checkpoint, checkpoint_every)
    total = len(cells) + len(pending)
    log(f"{study.name}: {total} cells, {len(cells)} already computed in {cells_dir}, {len(pending)} to compute"
        + (f" ({resumed} of them continue from a checkpoint)" if resumed else ""))
    bar = tqdm(total=len(pending) * study.epochs, disable=not progress, desc=study.name, unit="epoch",
               postfix={"cached": len(cells)})
    try:
        if workers == 1 and scheduler is None:
            from threadpoolctl import threadpool_limits

            for path, cell in pending.items():
                bar.set_description(f"{study.name} {path.stem}")
                before = bar.n
                # one BLAS thread, as in the workers: a threaded product sums in another order, so a
                # cell would otherwise differ in its last bits depending on where it ran (set per
                # cell, so that libraries loaded by an earlier cell are limited too)
                with threadpool_limits(limits=1, user_api="blas"):
                    ds = _train_cell(study, problem, *cell, progress=lambda: bar.update(1))
                bar.update(study.epochs - (bar.n - before))  # epochs a divergence skipped
                write_dataset(ds, path)
                cells.append(ds)
        elif pending:
            from dask.distributed import as_completed

            with _dask_client(workers, scheduler) as client:
                shared = client.scatter([study, problem], broadcast=True)
                # wider networks and larger ensembles first, so the longest cells do not run last
                # (workers take tasks about in the order they are submitted)
                order = sorted(pending, key=lambda path: -math.prod(pending[path][1].values()))
                futures = {client.submit(_train_cell, *shared, *pending[path], pure=False): path for path in order}
                bar.set_description(f"{study.name} on {workers if scheduler is None else 'the'} workers")
                for future in as_completed(futures):
                    ds = future.result()
                    write_dataset(ds, futures[future])
                    cells.append(ds)
                    bar.update(study.epochs)
    except KeyboardInterrupt:
        bar.close()
        raise StudyInterrupted(f"interrupted: {len(cells)} of {total} cells are kept in {cells_dir}; "
                               f"run the same command again to compute the other {total - len(cells)}") from None
    bar.close()
    combined = _combine(cells, ("epoch", "seed", *study.sweep))
    source = f"meanfield {__version__} (source fingerprint {source_fingerprint()})"
    combined.attrs = {**global_attrs(f"meanfield study {study.name}", command, source), **study.attrs(),
                      "iterations_per_epoch": int(cells[0].attrs["iterations_per_epoch"])}
    combined.attrs.update(_cell_processors(cells, log))
    write_dataset(combined, output)
    return combined


def _cell_processors(cells, log):
    """The processor attributes of a study's dataset: those of the workers that trained its cells. Cells
    trained on different kinds of processor (a cluster, a study resumed on another machine) round
    differently; that is recorded in ``cell_processors`` (each processor with its number of cells) and
    said, not refused: each cell is a valid run."""
    counts = {}
    for ds in cells:
        key = ds.attrs.get("processor", "null")
        counts[key] = counts.get(key, 0) + 1
    mixed = [{"processor": json.loads(key), "cells": n} for key, n in counts.items()]
    if len(mixed) == 1:
        return mixed[0]["processor"] or {}
    log(f"warning: the cells were trained on {len(mixed)} kinds of processor, which round differently "
        "(the attribute cell_processors): " + "; ".join(
            f"{entry['cells']} on " + ("an unrecorded one" if entry["processor"] is None
                                      else f"{entry['processor']['cpu']} ({entry['processor']['numpy_simd']})")
            for entry in mixed))
    return {**{key: "several; see cell_processors" for key in processor()}, "cell_processors": json.dumps(mixed)}


def dry_run(study: Study, output: str | os.PathLike, time_steps: bool = True) -> str:
    """What ``run_study`` would do, as text: every cell with its state on disk (computed, stale,
    damaged or to compute) and an estimate of the compute from one timed iteration of each pending
    (method, sweep point). Writes nothing."""
    output = check_output(output)
    cells_dir = Path(f"{output}.cells")
    problem = study.problem()
    study.check_problem(problem)
    lines, kinds, counts = [], {}, {}
    for label, point, i, stem in study.cells():
        status, _ = _read_cell(cells_dir / f"{stem}.nc", study.cell_fingerprint(label, point))
        status = {"cached": "computed", "missing": "to compute"}.get(status, status)
        counts[status] = counts.get(status, 0) + 1
        lines.append(f"  {stem}: {status}")
        if status != "computed":
            kinds.setdefault((label, tuple(point.items())), 0)
            kinds[(label, tuple(point.items()))] += 1
    head = [f"{study.name} -> {output}: {len(lines)} cells ("
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"]
    if time_steps and kinds:
        seconds = 0.0
        for (label, point), n in kinds.items():
            method, network = study.method(label, dict(point)), study.network(problem, dict(point))
            per_iteration = _time_iteration(method, network, problem)
            seconds += n * per_iteration * study.epochs * (problem.n_train // method.batch_size)
        head.append(f"estimated compute: {_duration(seconds)} of one core, from one timed iteration per method "
                    "and sweep point (evaluation and OT-CBO's changing barycenter costs are not included)")
    return "\n".join(head + lines)


def _time_iteration(method, network, problem):
    """Seconds of one training iteration (the second of two: the first may compile or warm caches)."""
    from meanfield.train import random_streams

    init_rng, batch_rng, noise_rng = random_streams(0)
    x, y = problem.x_train[: method.batch_size], problem.y_train[: method.batch_size]
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            state = method.init(network, init_rng)
            state = method.step(state, network, x, y, 0, noise_rng)
            start = time.perf_counter()
            method.step(state, network, x, y, 0, noise_rng)
        except FloatingPointError:
            return 0.0
    return time.perf_counter() - start


def _duration(seconds):
    if seconds < 1:
        return "under a second"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

