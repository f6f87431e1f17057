"""A dataset's figures: which ones it declares or supports, and :func:`plot_dataset`, which writes them."""

import functools
import json
from pathlib import Path

import numpy as np

from meanfield.convergence import has_target
from meanfield.plotting._figure import save
from meanfield.plotting.sweeps import (
    plot_excess_risk,
    plot_neuron_spread,
    plot_rate,
    plot_strong_error,
    plot_sweep,
    plot_variance_decay,
    plot_variance_factor,
)
from meanfield.plotting.training import (
    plot_accuracy,
    plot_fits,
    plot_instability,
    plot_risk,
    plot_risk_vs_cost,
    plot_task_fits,
    plot_task_risk,
)
from meanfield.results import SWEEP_DIMS, recorded_labels, summary_table, variance_factors
from meanfield.schema import FIGURES

__all__ = ["dataset_figures", "plot_dataset"]

_PLOTS = {"risk": plot_risk, "instability": plot_instability, "fits": plot_fits, "accuracy": plot_accuracy,
          "task_risk": plot_task_risk, "task_fits": plot_task_fits, "variance": plot_variance_decay,
          "sweep_risk": plot_sweep, "sweep_variance": functools.partial(plot_sweep, var="w_variance"),
          "rate": plot_rate, "strong_error": plot_strong_error, "neuron_spread": plot_neuron_spread,
          "excess_risk": plot_excess_risk, "risk_vs_cost": plot_risk_vs_cost,
          "variance_factor": plot_variance_factor}


def _swept(ds):
    return [dim for dim in SWEEP_DIMS if dim in ds.dims]


def _unsupported(ds, figure):
    """Why ``ds`` cannot give ``figure`` (None if it can)."""
    swept, multi = _swept(ds), "task" in ds.dims
    if figure == "variance_factor" and (swept or multi or not variance_factors(ds)):
        return "it needs finite-CBO methods with anisotropic or isotropic noise, without a sweep or tasks"
    if figure == "excess_risk" and not has_target(ds):
        return "it needs a one-input regression problem with a known target (sine, square)"
    if figure in ("sweep_risk", "sweep_variance", "rate", "strong_error", "neuron_spread", "excess_risk"):
        if not swept:
            return "it needs a [sweep] (dimension M or N)"
        if figure == "rate" and all(ds.sizes[d] < 2 for d in swept):
            return "it needs a swept dimension with two or more values"
        if figure in ("strong_error", "neuron_spread") and "reported_params" not in ds:
            return "it needs the reported network per epoch (record_params = true)"
        if figure == "strong_error" and all(ds.sizes[d] < 3 for d in swept):
            return "it needs a swept dimension with three or more values"
    elif swept:
        return f"the dataset is a sweep over {', '.join(swept)} (use sweep_risk, sweep_variance, rate)"
    if figure in ("task_risk", "task_fits") and not multi:
        return "it needs a multi-task problem (dimension task)"
    if figure == "risk_vs_cost" and "evaluations" not in ds:
        return "it needs the recorded cost (variable evaluations, meanfield >= 0.4)"
    if figure in ("risk", "instability", "fits", "accuracy") and multi:
        return "the dataset is multi-task (use task_risk, task_fits)"
    if figure in ("fits", "task_fits"):
        if ds.sizes.get("component") != 3:  # w_1, b, c_1: D = d + 1 + C = 3 only for d = C = 1
            return (f"it needs a regression problem with one input and one output, and "
                    f"{ds.attrs.get('problem.name', 'this problem')} has {ds.sizes.get('component')} "
                    "components per neuron")
        if "config_json" not in ds.attrs:
            return "it needs the attribute config_json to rebuild the data"
    if figure == "accuracy" and "test_accuracy" not in ds:
        return "it needs a classification problem (variable test_accuracy)"
    if figure in ("variance", "sweep_variance") and not recorded_labels(ds, "w_variance"):
        return "it needs an OT-CBO method (recorded w_variance)"
    return None


def _declared(ds):
    """The figures named by ``ds.attrs["figures"]`` (a JSON list), or None if it has none."""
    value = ds.attrs.get("figures")
    if value is None:
        return None
    try:
        names = json.loads(value) if isinstance(value, str) else list(np.atleast_1d(value))
    except json.JSONDecodeError:
        raise ValueError(f"attribute figures must be a JSON list of figure names, got {value!r}") from None
    if not isinstance(names, list):
        raise ValueError(f"attribute figures must be a JSON list of figure names, got {value!r}")
    return list(dict.fromkeys(map(str, names)))


def dataset_figures(ds, figures=None):
    """The figures to make of a dataset, each with the function that draws it, without drawing any.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run``.
    figures : sequence of str, optional
        Names of :data:`meanfield.schema.FIGURES`; they replace those declared in ``ds.attrs["figures"]``.
        Without either, every figure the dataset supports.

    Returns
    -------
    list of (str, callable)
        (file suffix, function of no arguments that draws the figure and returns it); a figure per
        swept dimension where the name has one (``rate_M``).

    Raises
    ------
    ValueError
        For a figure that is unknown, or that the dataset cannot support (``fits`` of MNIST, say).
    """
    where, how = ("in attribute figures", "declared") if figures is None else ("asked for", "asked for")
    figures = _declared(ds) if figures is None else list(figures)
    if figures is None:
        figures = [f for f in FIGURES if _unsupported(ds, f) is None]
    for figure in figures:
        if figure not in FIGURES:
            raise ValueError(f"unknown figure {figure!r} {where}; known: {sorted(FIGURES)}")
        why = _unsupported(ds, figure)
        if why is not None:
            raise ValueError(f"figure {figure!r} {how}, but {why}")
    jobs = []
    for figure in figures:
        if "{dim}" in FIGURES[figure]:  # one figure per swept dimension (rates: those with enough values)
            least = {"rate": 2, "strong_error": 3, "excess_risk": 2}.get(figure, 1)
            jobs += [(FIGURES[figure].format(dim=dim), functools.partial(_PLOTS[figure], ds, dim))
                     for dim in _swept(ds) if ds.sizes[dim] >= least]
        else:
            jobs.append((FIGURES[figure], functools.partial(_PLOTS[figure], ds)))
    return jobs


def plot_dataset(ds, out_dir, name=None, figures=None):
    """Write a dataset's figures as ``<name>_<file>.png`` and its summary table as ``<name>_summary.md``.

    The figures are ``figures`` when given, else those declared in ``ds.attrs["figures"]``, else every
    figure the dataset supports (:func:`dataset_figures`). Nothing is written when one of them is
    refused.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run``.
    out_dir : str or pathlib.Path
        Folder of the files, made if missing.
    name : str, optional
        Start of the file names; the study's by default. A dataset plotted under another name says its
        study in titles and summary (``<name> (study <study>)``).
    figures : sequence of str, optional
        Names of :data:`meanfield.schema.FIGURES`, e.g. ``["risk", "rate"]``.

    Returns
    -------
    list of pathlib.Path
        The files written, the summary last.

    Raises
    ------
    ValueError
        Before writing anything, for a requested figure that is unknown or that the dataset cannot
        support.
    """
    name = name or ds.attrs["study"]
    if name != ds.attrs["study"]:
        ds = ds.copy()
        ds.attrs["study"] = f"{name} (study {ds.attrs['study']})"
    jobs = dataset_figures(ds, figures)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, plot in jobs:
        paths.append(out_dir / f"{name}_{suffix}.png")
        save(plot(), paths[-1])
    paths.append(out_dir / f"{name}_summary.md")
    paths[-1].write_text(summary_table(ds))
    return paths
