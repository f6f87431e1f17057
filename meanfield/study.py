"""Declarative studies: a TOML file names the problem, the network, the methods, the seeds and the
epochs; running it writes one netCDF file holding an ``xarray.Dataset`` over
(method_label, [M, N,] seed, epoch).

Everything a study can get wrong is checked before any computation, and nothing is written until the
checks pass. Every (method, sweep point, seed) cell is written to ``<output>.cells/`` as soon as it
finishes, keyed by a fingerprint of its effective settings and of the package's source, so an
interrupted study resumes without recomputing finished cells and never reuses a stale one. Seed
index i of every method uses the same ``SeedSequence(root_seed).spawn(seeds)[i]`` (common random numbers).
"""

import contextlib
import copy
import functools
import hashlib
import inspect
import json
import math
import os
import re
import time
import tomllib
from pathlib import Path

import numpy as np

from meanfield import __version__
from meanfield._array import MALLOC_SETTINGS
from meanfield._validate import check_int
from meanfield.adam import Adam
from meanfield.cbo import CBO
from meanfield.hybrid import HybridCBOAdam
from meanfield.multitask import MultiTaskCBO, task_assignment
from meanfield.network import TwoLayerNetwork
from meanfield.otcbo import OTCBO, MultiTaskOTCBO
from meanfield.problems import _PROBLEMS, make_problem
from meanfield.schema import (
    FIGURES,
    METHOD_DIM,
    VARIABLES,
    ResultFileError,
    apply_schema,
    global_attrs,
    open_dataset,
    write_dataset,
)
from meanfield.train import check_schedule_range, train

__all__ = ["Study", "StudyError", "StudyInterrupted", "load_study", "run_study", "dry_run", "check_output",
           "source_fingerprint"]

METHODS = {cls.name: cls for cls in (CBO, Adam, HybridCBOAdam, MultiTaskCBO, OTCBO, MultiTaskOTCBO)}
MULTITASK_METHODS = {"multitask", "multitask_otcbo"}
_TOP = {"name": True, "description": False, "epochs": True, "seeds": True, "root_seed": True,
        "problem": True, "network": True, "methods": True, "method_defaults": False, "sweep": False,
        "figures": False, "quick": False, "record_params": False}
# [sweep] keys and the dataset dimension each becomes (the paper's letters)
SWEEPS = {"n_neurons": "M", "n_particles": "N"}
_NETWORK_SKIP = ("n_inputs", "n_outputs", "loss")  # taken from the problem
# modules that only read datasets: editing them cannot change a cell, so they stay out of its key
_READ_ONLY_MODULES = {"cli", "convergence", "plotting", "rates", "results"}  # modules or packages


class StudyError(ValueError):
    """A study, or a command-line option, that cannot be run as written."""


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says which finished cells are kept."""


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


def _effective(func, table, skip=()):
    """``table`` with every omitted argument of ``func`` filled in with its default."""
    params = inspect.signature(func).parameters.values()
    return {p.name: table.get(p.name, p.default) for p in params if p.name not in skip}


def _merge(base, override):
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_override(text):
    """``"section.key=value"`` -> (["section", "key"], value); the value is read as TOML when it can be
    (``1e-3``, ``true``, ``[10, 20]``, ``{kind = "step", ...}``), otherwise as a plain string.

    >>> parse_override("methods.cbo.dt=0.2")
    (['methods', 'cbo', 'dt'], 0.2)
    >>> parse_override("network.activation=tanh")
    (['network', 'activation'], 'tanh')
    """
    key, sep, raw = str(text).partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise StudyError(f"--set needs section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def _apply_overrides(config, overrides):
    for text in overrides:
        path, value = parse_override(text)
        if path[0] == "quick":
            raise StudyError(f"--set {text!r}: [quick] cannot be set; use --quick and --set for the values")
        if path[0] == "methods" and len(path) > 1 and path[1] not in config.get("methods", {}):
            raise StudyError(f"--set {text!r}: the study has no [methods.{path[1]}]; its methods are "
                             f"{sorted(config.get('methods', {}))}")
        table = config
        for i, key in enumerate(path[:-1]):
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise StudyError(f"--set {text!r}: {'.'.join(path[:i + 1])} is not a table")
        table[path[-1]] = value
    return config


class Study:
    """A validated study: ``config`` is the effective table (quick overrides and ``--set`` applied).

    Parameters
    ----------
    config : dict
        The study file's table.
    quick : bool
        Apply the ``[quick]`` overrides (the result is named ``<name>-quick``).
    source : str
        Where the table came from, for messages.
    data_dir : str or Path, optional
        Replaces the problem's data directory.
    only_methods : list of str, optional
        Keep only these method labels.
    seeds : int, optional
        Replaces the number of seeds.
    overrides : list of str, optional
        ``section.key=value`` settings applied after the quick overrides, validated like the file.
    """

    def __init__(self, config, quick=False, source="study", data_dir=None, only_methods=None, seeds=None,
                 overrides=()):
        config = copy.deepcopy(dict(config))
        if not isinstance(config.get("quick", {}), dict):
            raise StudyError(f"quick in {source} must be a table of overrides")
        quick_table = config.pop("quick", {})
        if quick:
            if not quick_table:
                raise StudyError(f"--quick asked for, but {source} has no [quick] table")
        if quick_table:
            _check_keys(quick_table, {k: False for k in _TOP if k != "quick"}, f"[quick] of {source}")
            quick_config = _merge(config, quick_table)
            if quick:
                config = quick_config
            else:  # a typo inside [quick] must not wait for the first --quick run
                try:
                    Study(quick_config, source=f"{source} with its [quick] overrides")
                except StudyError as err:
                    raise StudyError(f"[quick]: {err}") from None
        config = _apply_overrides(config, overrides)
        _check_keys(config, _TOP, source)
        if seeds is not None:  # the command line's --seeds replaces the file's
            config["seeds"] = seeds
        if not isinstance(config["methods"], dict) or not config["methods"]:
            raise StudyError("[methods] must hold at least one [methods.<label>] table")
        if only_methods is not None:  # --methods runs a subset of the study's methods
            unknown = sorted(set(only_methods) - set(config["methods"]))
            if unknown:
                raise StudyError(f"--methods: unknown label(s) {unknown}; the study has {sorted(config['methods'])}")
            config["methods"] = {k: v for k, v in config["methods"].items() if k in only_methods}
        self.quick, self.source = quick, source
        if not isinstance(config["name"], str) or not config["name"] or "/" in config["name"]:
            raise StudyError(f"name must be a non-empty string without '/', got {config['name']!r}")
        self.name = config["name"] + ("-quick" if quick else "")
        try:
            self.epochs = check_int("epochs", config["epochs"], low=1)
            self.seeds = check_int("seeds", config["seeds"], low=1)
            self.root_seed = check_int("root_seed", config["root_seed"], low=0)
        except ValueError as err:
            raise StudyError(f"{source}: {err}") from None
        for table in ("problem", "network"):
            if not isinstance(config[table], dict):
                raise StudyError(f"{table} must be a table ([{table}])")
        if data_dir is not None:  # the command line's data directory replaces the file's, everywhere
            if "data_dir" not in _signature_spec(_PROBLEMS.get(config["problem"].get("name"), lambda: None)):
                raise StudyError(f"--data-dir given, but problem {config['problem'].get('name')!r} reads no files")
            config["problem"] = {**config["problem"], "data_dir": str(data_dir)}
        self._validate_problem(config["problem"])
        _check_keys(config["network"], _signature_spec(TwoLayerNetwork, skip=_NETWORK_SKIP), "[network]")
        # [method_defaults] fills every method table; a key some method does not take is an error there
        defaults = config.pop("method_defaults", {})
        if not isinstance(defaults, dict):
            raise StudyError("method_defaults must be a table")
        config["methods"] = {label: {**defaults, **table} if isinstance(table, dict) else table
                             for label, table in config["methods"].items()}
        for label in config["methods"]:  # labels name the cell files
            if not re.fullmatch(r"[A-Za-z0-9_.=+-]+", label) or label.startswith("."):
                raise StudyError(f"method label {label!r} must use only letters, digits and _ . = + - "
                                 "(and not start with '.')")
        self.config = config
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
        self.methods = {label: self._build_method(label, table) for label, table in config["methods"].items()}
        for label, method in self.methods.items():
            try:
                check_schedule_range(method, self.epochs)
            except ValueError as err:
                raise StudyError(f"[methods.{label}]: {err}") from None
        self._check_tasks()
        self.record_params = config.get("record_params", False)
        if not isinstance(self.record_params, bool):
            raise StudyError(f"record_params must be true or false, got {self.record_params!r}")
        self.figures = config.get("figures")
        if self.figures is not None and (not isinstance(self.figures, list) or not self.figures
                                         or not all(f in FIGURES for f in self.figures)):
            raise StudyError(f"figures must be a non-empty list of names from {sorted(FIGURES)}, got {self.figures!r}")
        for point in self.grid():  # every swept method and network must be buildable
            for label in self.methods:
                self.method(label, point)
            self._network_table(point)

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
        except (ValueError, TypeError) as err:
            raise StudyError(f"{where}: {err}") from None

    def _check_tasks(self):
        """Single-task methods on a single-task problem, multi-task ones with at least one particle per
        task; the number of tasks is known from the settings, without loading data."""
        problem = self.config["problem"]["name"]
        n_tasks = _effective(_PROBLEMS[problem], self.config["problem"]).get("n_tasks")
        multi = n_tasks is not None
        for label, method in self.methods.items():
            if (method.name in MULTITASK_METHODS) != multi:
                raise StudyError(f"[methods.{label}]: method {method.name!r} cannot train the "
                                 f"{'multi' if multi else 'single'}-task problem {problem!r}; use one of "
                                 f"{sorted(MULTITASK_METHODS) if multi else sorted(set(METHODS) - MULTITASK_METHODS)}")
            if multi and isinstance(n_tasks, int):
                for n in self.sweep.get("N", [method.n_particles]):
                    try:
                        task_assignment(n, n_tasks, method.assignment)
                    except ValueError as err:
                        raise StudyError(f"[methods.{label}]: {err} (problem.n_tasks = {n_tasks})") from None

    def _kwargs(self, label):
        return {k: v for k, v in self.config["methods"][label].items() if k != "method"}

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
        except (ValueError, TypeError, OSError) as err:  # OSError: missing or unreadable data files
            raise StudyError(f"[problem]: {err}") from None

    def _network_table(self, point):
        table = dict(self.config["network"])
        if point and "M" in point:
            table["n_neurons"] = point["M"]
        try:  # validated with the problem's dimensions filled in later; 1 x 1 checks the rest now
            TwoLayerNetwork(n_inputs=1, n_outputs=2, **table)
        except (ValueError, TypeError) as err:
            raise StudyError(f"[network]: {err}") from None
        return table

    def network(self, problem, point=None):
        return TwoLayerNetwork(n_inputs=problem.n_inputs, n_outputs=problem.n_outputs, loss=problem.loss,
                               **self._network_table(point or {}))

    def check_problem(self, problem):
        """Checks that need the data: every batch fits the training set."""
        for label, method in self.methods.items():
            if method.batch_size > problem.n_train:
                raise StudyError(f"[methods.{label}]: batch_size must be <= the training set size "
                                 f"{problem.n_train}, got {method.batch_size}")
            try:
                check_schedule_range(method, self.epochs, problem.n_train // method.batch_size)
            except ValueError as err:
                raise StudyError(f"[methods.{label}]: {err}") from None

    def _effective_network(self):
        """The [network] settings with defaults resolved as the network resolves them (dtype, device)."""
        network = TwoLayerNetwork(n_inputs=1, n_outputs=2, **self.config["network"])
        return {name: getattr(network, name) for name in _effective(TwoLayerNetwork, {}, skip=_NETWORK_SKIP)}

    def parameters(self):
        """Every effective setting: the file's values with each omitted constructor argument's default."""
        problem = dict(self.config["problem"])
        name = problem.pop("name")
        methods = {}
        for label, table in self.config["methods"].items():
            methods[label] = {"method": table["method"],
                              **_effective(METHODS[table["method"]], self._kwargs(label))}
        return {"problem": {"name": name, **_effective(_PROBLEMS[name], problem)},
                "network": self._effective_network(),
                "methods": methods}

    def attrs(self):
        """Dataset attributes (scalars and strings): the effective settings flattened as
        ``section.key`` (a swept value says so), the study as JSON, and the provenance."""
        flat = {"study": self.name, "meanfield_version": __version__, "source_fingerprint": source_fingerprint(),
                "root_seed": self.root_seed, "epochs": self.epochs, "seeds": self.seeds, "quick": int(self.quick),
                "record_params": int(self.record_params),
                "config_json": json.dumps(self.config, sort_keys=True)}
        params = self.parameters()
        flat["parameters_json"] = json.dumps(params, sort_keys=True)
        if self.figures is not None:
            flat["figures"] = json.dumps(self.figures)
        tables = [("problem.", params["problem"], None), ("network.", params["network"], "n_neurons")]
        tables += [(f"methods.{label}.", table, "n_particles") for label, table in params["methods"].items()]
        for prefix, table, swept_key in tables:  # one level: a schedule's table is one JSON attribute
            for key, value in table.items():
                dim = SWEEPS.get(key) if key == swept_key else None
                if dim in self.sweep:
                    flat[prefix + key] = f"swept (dimension {dim})"
                elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
                    flat[prefix + key] = value
                else:
                    flat[prefix + key] = json.dumps(value)
        for dim, values in self.sweep.items():
            flat[f"sweep.{dim}"] = json.dumps(values)
        return flat

    def cell_fingerprint(self, label, point):
        """Hash of everything a (method, sweep point, seed) cell depends on, the package's source
        included: a changed setting or a code change invalidates it."""
        params = self.parameters()
        parts = {"problem": params["problem"], "network": params["network"], "method": params["methods"][label],
                 "epochs": self.epochs, "root_seed": self.root_seed, "point": point, "version": __version__,
                 "record_params": self.record_params,
                 "source": source_fingerprint()}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def cells(self):
        """(label, point, seed index, file stem) of every cell, in study order."""
        out = []
        for label in self.methods:
            for point in self.grid():
                where = "".join(f"-{dim}{value}" for dim, value in point.items())
                out += [(label, point, i, f"{label}{where}-seed{i}") for i in range(self.seeds)]
        return out


@functools.lru_cache(maxsize=1)
def source_fingerprint():
    """Hash of the package's source files that can change a cell (all but the dataset readers)."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root)
        if name.parts[0].removesuffix(".py") not in _READ_ONLY_MODULES:
            digest.update(name.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def load_study(path, quick=False, data_dir=None, only_methods=None, seeds=None, overrides=()):
    """Read and validate a study file; see :class:`Study` for the options."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            config = tomllib.load(fh)
    except FileNotFoundError:
        raise StudyError(f"study file {path} not found") from None
    except IsADirectoryError:
        raise StudyError(f"study file {path} is a directory") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise StudyError(f"{path} is not valid TOML: {err}") from None
    return Study(config, quick=quick, source=str(path), data_dir=data_dir, only_methods=only_methods, seeds=seeds,
                 overrides=overrides)


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


def _train_cell(study, problem, label, point, index, seed, fingerprint, progress=None):
    """Train one (method, sweep point, seed) cell: its dataset, with the cell's coordinates."""
    method, network = study.method(label, point), study.network(problem, point)
    ds = train(method, network, problem, study.epochs, seed=seed, progress=progress, record_params=study.record_params)
    if "M" in point:  # narrower networks are NaN-padded to the widest, so cells stack
        ds = ds.pad(neuron=(0, max(study.sweep["M"]) - ds.sizes["neuron"]))
    cell_dims = {METHOD_DIM: [label], **{dim: [value] for dim, value in point.items()}, "seed": [index]}
    ds = ds.expand_dims(cell_dims)
    ds.attrs["fingerprint"] = fingerprint
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
    record is NaN there, an integer counter -1), then the schema's attributes and dtypes."""
    import xarray as xr

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


def run_study(study, output, progress=True, log=print, workers=1, scheduler=None, command="meanfield run"):
    """Run every (method, sweep point, seed) cell not already on disk; write and return the combined dataset.

    Seed i is the same child seed at every sweep point (common random numbers across resolutions), so a
    cell's result does not depend on where or in which order it runs. With ``workers`` > 1 the cells run
    in that many local processes, and with ``scheduler`` (a dask.distributed address) on that cluster;
    either way each finished cell is written here as soon as it comes back. Nothing is written before
    every check has passed; a second run on the same output refuses while this one runs.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise StudyError(f"--workers must be an integer >= 1, got {workers!r}")
    output = check_output(output)
    problem = study.problem()
    study.check_problem(problem)
    cells_dir = Path(f"{output}.cells")
    cells_dir.mkdir(parents=True, exist_ok=True)
    with _output_lock(cells_dir, output):
        return _run_locked(study, output, cells_dir, problem, progress, log, workers, scheduler, command)


def _run_locked(study, output, cells_dir, problem, progress, log, workers, scheduler, command):
    from tqdm.auto import tqdm

    seeds = np.random.SeedSequence(study.root_seed).spawn(study.seeds)
    fingerprints = {}
    cells, pending = [], {}
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
        pending[path] = (label, point, i, seeds[i], fingerprint)
    total = len(cells) + len(pending)
    log(f"{study.name}: {total} cells, {len(cells)} already computed in {cells_dir}, {len(pending)} to compute")
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
    write_dataset(combined, output)
    return combined


def dry_run(study, output, time_steps=True):
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

