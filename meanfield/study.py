"""Declarative studies: a TOML file names the problem, the network, the methods, the seeds and
the epochs; running it writes one netCDF file holding an ``xarray.Dataset`` over
(method, seed, epoch).

Every (method, seed) cell is written to ``<output>.cells/`` as soon as it finishes, so an interrupted
study resumes without recomputing finished cells. Seed index i of every method uses the same child
``SeedSequence(root_seed).spawn(seeds)[i]`` (common random numbers across methods).
"""

import copy
import hashlib
import inspect
import json
import math
import os
import tomllib
from pathlib import Path

import numpy as np
import xarray as xr

from meanfield import __version__
from meanfield._validate import check_int
from meanfield.adam import Adam
from meanfield.cbo import CBO
from meanfield.hybrid import HybridCBOAdam
from meanfield.multitask import MultiTaskCBO
from meanfield.network import TwoLayerNetwork
from meanfield.otcbo import OTCBO, MultiTaskOTCBO
from meanfield.problems import _PROBLEMS, make_problem
from meanfield.train import train

__all__ = ["Study", "load_study", "run_study", "NETCDF_ENGINE"]

# scipy's netCDF3 writer needs no extra dependency (NOTES.md: always name the engine)
NETCDF_ENGINE = "scipy"
METHODS = {cls.name: cls for cls in (CBO, Adam, HybridCBOAdam, MultiTaskCBO, OTCBO, MultiTaskOTCBO)}
_TOP = {"name": True, "description": False, "epochs": True, "seeds": True, "root_seed": True,
        "problem": True, "network": True, "methods": True, "method_defaults": False, "sweep": False,
        "quick": False}
# [sweep] keys and the dataset dimension each becomes (the paper's letters)
SWEEPS = {"n_neurons": "M", "n_particles": "N"}
_NETWORK = {"n_neurons": True, "activation": False, "block_elements": False}


class StudyError(ValueError):
    """A study file that cannot be run as written."""


def _check_keys(table, spec, where):
    unknown = sorted(set(table) - set(spec))
    if unknown:
        raise StudyError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(spec)}")
    missing = sorted(k for k, required in spec.items() if required and k not in table)
    if missing:
        raise StudyError(f"missing required key(s) {missing} in {where}")


def _signature_spec(func, skip=()):
    """Keyword arguments of ``func`` as {name: required}."""
    params = inspect.signature(func).parameters.values()
    return {p.name: p.default is inspect.Parameter.empty for p in params if p.name not in skip}


def _merge(base, override):
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class Study:
    """A validated study: ``config`` is the effective table (quick overrides applied)."""

    def __init__(self, config, quick=False, source="study", data_dir=None, only_methods=None, seeds=None):
        config = dict(config)
        if not isinstance(config.get("quick", {}), dict):
            raise StudyError(f"quick in {source} must be a table of overrides")
        overrides = config.pop("quick", {})
        if quick:
            if not overrides:
                raise StudyError(f"--quick asked for, but {source} has no [quick] table")
            _check_keys(overrides, {k: False for k in _TOP if k != "quick"}, f"[quick] of {source}")
            config = _merge(config, overrides)
        _check_keys(config, _TOP, source)
        if seeds is not None:  # the command line's --seeds replaces the file's
            config["seeds"] = seeds
        if only_methods is not None:  # --methods runs a subset of the study's methods
            unknown = sorted(set(only_methods) - set(config.get("methods", {})))
            if unknown:
                raise StudyError(f"--methods: unknown label(s) {unknown}; the study has {sorted(config['methods'])}")
            config["methods"] = {k: v for k, v in config["methods"].items() if k in only_methods}
        self.config, self.quick, self.source = config, quick, source
        self.name = str(config["name"]) + ("-quick" if quick else "")
        try:
            self.epochs = check_int("epochs", config["epochs"], low=1)
            self.seeds = check_int("seeds", config["seeds"], low=1)
            self.root_seed = check_int("root_seed", config["root_seed"], low=0)
        except ValueError as err:
            raise StudyError(f"{source}: {err}") from None
        if data_dir is not None:  # the command line's data directory replaces the file's, everywhere
            if "data_dir" not in _signature_spec(_PROBLEMS.get(config["problem"].get("name"), lambda: None)):
                raise StudyError(f"--data-dir given, but problem {config['problem'].get('name')!r} reads no files")
            config["problem"] = {**config["problem"], "data_dir": str(data_dir)}
        self._validate_problem(config["problem"])
        _check_keys(config["network"], _NETWORK, "[network]")
        methods = config["methods"]
        if not isinstance(methods, dict) or not methods:
            raise StudyError("[methods] must hold at least one [methods.<label>] table")
        # [method_defaults] fills every method table; a key some method does not take is an error there
        defaults = config.get("method_defaults", {})
        if not isinstance(defaults, dict):
            raise StudyError("method_defaults must be a table")
        config["methods"] = {label: {**defaults, **table} if isinstance(table, dict) else table
                             for label, table in methods.items()}
        config.pop("method_defaults", None)
        self.methods = {label: self._build_method(label, table) for label, table in config["methods"].items()}
        sweep = config.get("sweep", {})
        if not isinstance(sweep, dict):
            raise StudyError("sweep must be a table")
        _check_keys(sweep, {key: False for key in SWEEPS}, "[sweep]")
        for key, values in sweep.items():
            if not isinstance(values, list) or not values or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
                raise StudyError(f"sweep.{key} must be a non-empty list of integers >= 1, got {values!r}")
            if len(set(values)) != len(values):
                raise StudyError(f"sweep.{key} has repeated values: {values}")
        self.sweep = {SWEEPS[key]: list(values) for key, values in sweep.items()}
        for point in self.grid():  # every swept method must be buildable
            for label in self.methods:
                self.method(label, point)

    @staticmethod
    def _validate_problem(table):
        if table.get("name") not in _PROBLEMS:
            raise StudyError(f"problem.name must be one of {sorted(_PROBLEMS)}, got {table.get('name')!r}")
        spec = {"name": True, **_signature_spec(_PROBLEMS[table["name"]])}
        _check_keys(table, spec, f"[problem] (name = {table['name']!r})")

    @staticmethod
    def _build_method(label, table):
        where = f"[methods.{label}]"
        if not isinstance(table, dict):
            raise StudyError(f"{where} must be a table")
        kind = table.get("method")
        if kind not in METHODS:
            raise StudyError(f"{where}: method must be one of {sorted(METHODS)}, got {kind!r}")
        kwargs = {k: v for k, v in table.items() if k != "method"}
        _check_keys(kwargs, _signature_spec(METHODS[kind]), where)
        try:
            return METHODS[kind](**kwargs)
        except ValueError as err:
            raise StudyError(f"{where}: {err}") from None

    def grid(self):
        """Every combination of the swept values, as {dim: value} (one empty point without a sweep)."""
        points = [{}]
        for dim, values in self.sweep.items():
            points = [{**p, dim: v} for p in points for v in values]
        return points

    def method(self, label, point):
        """The method ``label`` at a sweep point (its own n_particles unless N is swept)."""
        if "N" not in point:
            return self.methods[label]
        return self._build_method(label, {**self.config["methods"][label], "n_particles": point["N"]})

    def problem(self):
        table = dict(self.config["problem"])
        try:
            return make_problem(table.pop("name"), **table)
        except ValueError as err:
            raise StudyError(f"[problem]: {err}") from None

    def network(self, problem, point=None):
        table = dict(self.config["network"])
        if point and "M" in point:
            table["n_neurons"] = point["M"]
        try:
            return TwoLayerNetwork(n_inputs=problem.n_inputs, n_outputs=problem.n_outputs,
                                   loss=problem.loss, **table)
        except ValueError as err:
            raise StudyError(f"[network]: {err}") from None

    def attrs(self):
        """Scalar/string attributes for netCDF: every setting flattened as section.key."""
        flat = {"study": self.name, "meanfield_version": __version__, "root_seed": self.root_seed,
                "epochs": self.epochs, "seeds": self.seeds, "quick": int(self.quick),
                "config_json": json.dumps(self.config, sort_keys=True)}

        def walk(prefix, table):
            for key, value in table.items():
                if isinstance(value, dict):
                    walk(f"{prefix}{key}.", value)
                elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
                    flat[prefix + key] = value
                else:
                    flat[prefix + key] = json.dumps(value)

        walk("", {k: self.config[k] for k in ("problem", "network", "methods", "sweep") if k in self.config})
        return flat

    def cell_fingerprint(self, label, point):
        """Hash of everything a (method, sweep point, seed) cell depends on: a changed setting invalidates it."""
        parts = {k: self.config[k] for k in ("problem", "network", "epochs", "root_seed")}
        parts["method"] = self.config["methods"][label]
        parts["point"] = point
        parts["version"] = __version__
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def load_study(path, quick=False, data_dir=None, only_methods=None, seeds=None):
    """Read and validate a study file; ``quick`` applies its ``[quick]`` overrides, ``data_dir``
    replaces the problem's data directory, ``only_methods`` keeps those method labels and ``seeds``
    replaces the number of seeds (finished cells of the other seeds and methods stay on disk)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            config = tomllib.load(fh)
    except FileNotFoundError:
        raise StudyError(f"study file {path} not found") from None
    except tomllib.TOMLDecodeError as err:
        raise StudyError(f"{path} is not valid TOML: {err}") from None
    return Study(config, quick=quick, source=str(path), data_dir=data_dir, only_methods=only_methods, seeds=seeds)


def _write(ds, path):
    tmp = Path(f"{path}.tmp")
    ds.to_netcdf(tmp, engine=NETCDF_ENGINE)
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cell behind


def _train_cell(study, problem, label, point, index, seed, fingerprint, progress=None):
    """Train one (method, sweep point, seed) cell: its dataset, with the cell's coordinates."""
    method, network = study.method(label, point), study.network(problem, point)
    ds = train(method, network, problem, study.epochs, seed=seed, progress=progress)
    if "M" in point:  # narrower networks are NaN-padded to the widest, so cells stack
        ds = ds.pad(neuron=(0, max(study.sweep["M"]) - ds.sizes["neuron"]))
    cell_dims = {"method": [label], **{dim: [value] for dim, value in point.items()}, "seed": [index]}
    ds = ds.expand_dims(cell_dims)
    for name in ("diverged_epoch", "state_bytes"):  # per-cell scalars become variables
        ds[name] = (tuple(cell_dims), np.full((1,) * len(cell_dims), ds.attrs.pop(name), np.int32))
    ds.attrs["fingerprint"] = fingerprint
    return ds


def _dask_client(workers, scheduler):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise StudyError("--workers > 1 and --scheduler need dask.distributed: "
                         "pip install 'meanfield[dask]'") from None
    if scheduler is not None:
        return Client(scheduler)
    import dask

    # One single-threaded process per worker (dask's nannies also pin BLAS to one thread each). The
    # nannies also set MALLOC_TRIM_THRESHOLD_, which turns off glibc's adaptive mmap threshold: every
    # large numpy temporary is then a fresh mmap and page-faulted anew, and an OT-CBO cell trained
    # 2x slower (21.7 s vs 10.4 s measured); None unsets it. The scheduler starts an HTTP server even
    # without a dashboard, on port 8787 unless told otherwise: a free local port avoids the "port in
    # use" warning when another cluster runs.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}))


def run_study(study, output, progress=True, log=print, workers=1, scheduler=None):
    """Run every (method, sweep point, seed) cell not already on disk; write and return the combined dataset.

    Seed i is the same child seed at every sweep point (common random numbers across resolutions), so a
    cell's result does not depend on where or in which order it runs. With ``workers`` > 1 the cells run
    in that many local processes, and with ``scheduler`` (a dask.distributed address) on that cluster;
    either way each finished cell is written here as soon as it comes back.
    """
    from tqdm.auto import tqdm

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise StudyError(f"--workers must be an integer >= 1, got {workers!r}")
    output = Path(output)
    cells_dir = Path(f"{output}.cells")
    cells_dir.mkdir(parents=True, exist_ok=True)
    problem = study.problem()
    for label, method in study.methods.items():
        if method.batch_size > problem.n_train:
            raise StudyError(f"[methods.{label}]: batch_size must be <= the training set size "
                             f"{problem.n_train}, got {method.batch_size}")
    seeds = np.random.SeedSequence(study.root_seed).spawn(study.seeds)
    grid = study.grid()
    bar = tqdm(total=len(study.methods) * len(grid) * study.seeds * study.epochs, disable=not progress,
               desc=study.name, unit="epoch")
    cells, pending = [], {}
    for label in study.methods:
        for point in grid:
            fingerprint = study.cell_fingerprint(label, point)
            where = "".join(f"-{dim}{value}" for dim, value in point.items())
            for i, seed in enumerate(seeds):
                path = cells_dir / f"{label}{where}-seed{i}.nc"
                if path.exists():
                    with xr.open_dataset(path, engine=NETCDF_ENGINE) as old:
                        if old.attrs.get("fingerprint") == fingerprint:
                            # without its on-disk encoding: the label's string width must not carry
                            # over to the combined dataset, whose labels may be longer
                            cells.append(old.load().drop_encoding())
                            bar.update(study.epochs)
                            continue
                    log(f"{path}: settings changed since it was written; recomputing")
                pending[path] = (label, point, i, seed, fingerprint)
    if workers == 1 and scheduler is None:
        for path, cell in pending.items():
            ds = _train_cell(study, problem, *cell, progress=lambda: bar.update(1))
            bar.update(study.epochs - int(ds.train_risk.notnull().sum()) + 1)  # epochs a divergence skipped
            _write(ds, path)
            cells.append(ds)
    elif pending:
        from dask.distributed import as_completed

        with _dask_client(workers, scheduler) as client:
            shared = client.scatter([study, problem], broadcast=True)
            # wider networks and larger ensembles first, so the longest cells do not run last (workers
            # take tasks about in the order they are submitted)
            order = sorted(pending, key=lambda path: -math.prod(pending[path][1].values()))
            futures = {client.submit(_train_cell, *shared, *pending[path], pure=False): path for path in order}
            for future in as_completed(futures):
                ds = future.result()
                _write(ds, futures[future])
                cells.append(ds)
                bar.update(study.epochs)
    bar.close()
    combine = dict(combine_attrs="drop", join="exact", data_vars="all", coords="different", compat="equals")
    combined = xr.combine_by_coords(cells, **combine)
    int_coords = {d: combined[d].astype(np.int32) for d in ("epoch", "seed", *study.sweep) if d in combined.coords}
    combined = combined.assign_coords(int_coords)
    combined.attrs = {**study.attrs(), "iterations_per_epoch": int(cells[0].attrs["iterations_per_epoch"])}
    combined["diverged_epoch"].attrs["description"] = "first epoch with a non-finite risk (-1: none)"
    combined["state_bytes"].attrs["description"] = "bytes of the method's state: particles, moments, consensus"
    _write(combined, output)
    return combined
