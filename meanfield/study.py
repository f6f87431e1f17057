"""Declarative studies: a TOML file names the problem, the network, the methods, the seeds and the
epochs. This module reads and validates it into a :class:`Study` (its grid of cells, their
settings and fingerprints); :mod:`meanfield.runner` runs it into one netCDF file holding an
``xarray.Dataset`` over (method_label, [M, N,] seed, epoch).

Everything a study can get wrong is checked here, before any computation. Every (method, sweep
point, seed) cell is keyed by a fingerprint of its effective settings and of the package's source,
so an interrupted study resumes without recomputing finished cells and never reuses a stale one.
Seed index i of every method uses the same ``SeedSequence(root_seed).spawn(seeds)[i]`` (common
random numbers).
"""

import copy
import functools
import hashlib
import inspect
import json
import os
import re
import tomllib
from pathlib import Path

from meanfield import __version__
from meanfield._validate import check_int
from meanfield.adam import Adam
from meanfield.cbo import CBO
from meanfield.hybrid import HybridCBOAdam
from meanfield.multitask import MultiTaskCBO, task_assignment
from meanfield.network import TwoLayerNetwork
from meanfield.otcbo import OTCBO, MultiTaskOTCBO
from meanfield.problems import PROBLEMS, make_problem
from meanfield.schema import (
    FIGURES,
)
from meanfield.train import check_schedule_range

__all__ = ["Study", "StudyError", "load_study", "parse_override", "source_fingerprint"]

METHODS = {cls.name: cls for cls in (CBO, Adam, HybridCBOAdam, MultiTaskCBO, OTCBO, MultiTaskOTCBO)}
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
            if "data_dir" not in _signature_spec(PROBLEMS.get(config["problem"].get("name"), lambda: None)):
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
        if table.get("name") not in PROBLEMS:
            raise StudyError(f"problem.name must be one of {sorted(PROBLEMS)}, got {table.get('name')!r}")
        spec = {"name": True, **_signature_spec(PROBLEMS[table["name"]])}
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
        n_tasks = _effective(PROBLEMS[problem], self.config["problem"]).get("n_tasks")
        multi = n_tasks is not None
        for label, method in self.methods.items():
            if method.multitask != multi:
                fitting = sorted(name for name, cls in METHODS.items() if cls.multitask == multi)
                raise StudyError(f"[methods.{label}]: method {method.name!r} cannot train the "
                                 f"{'multi' if multi else 'single'}-task problem {problem!r}; use one of {fitting}")
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
        return {"problem": {"name": name, **_effective(PROBLEMS[name], problem)},
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


def load_study(path: str | os.PathLike, quick: bool = False, data_dir: str | os.PathLike | None = None,
               only_methods: list[str] | None = None, seeds: int | None = None,
               overrides: tuple[str, ...] = ()) -> Study:
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
