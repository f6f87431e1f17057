"""Figures from saved datasets, in the package's one style (``meanfield.mplstyle``).

Every ``plot_*`` function draws on the axes it is given (``ax``, or ``axes`` for a figure of several
panels), makes a figure of its own otherwise, and returns the figure it drew on; only
:func:`plot_dataset` writes files. A method keeps its colour in every figure of a dataset
(:func:`method_colors`), and each line it draws carries its label as ``gid``.
"""

import functools
import itertools
import json
import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter, NullLocator

from meanfield.convergence import has_target
from meanfield.network import TwoLayerNetwork
from meanfield.problems import make_problem
from meanfield.rates import fit_rate
from meanfield.results import (
    SWEEP_DIMS,
    _decay_factor,
    instability,
    last_recorded,
    plural,
    recorded_labels,
    summary_table,
    sweep_finals,
    variance_factors,
)
from meanfield.schema import FIGURES, METHOD_DIM, VARIABLES

__all__ = ["STYLE", "KIND_COLORS", "method_colors", "plot_risk", "plot_fits", "plot_task_risk", "plot_task_fits",
           "plot_instability", "plot_accuracy", "plot_sweep", "plot_rate", "plot_variance_decay", "plot_dataset"]

STYLE = str(Path(__file__).with_name("meanfield.mplstyle"))

# One colour per method kind (the `methods.<label>.method` attribute): the hybrid of CBO (blue) and
# Adam (red) is purple, the OT variants are warm, the multi-task ones green and brown.
KIND_COLORS = {"cbo": "#1f77b4", "adam": "#d62728", "hybrid": "#9467bd", "multitask": "#2ca02c",
               "otcbo": "#ff7f0e", "multitask_otcbo": "#8c564b"}
# Colours for further labels of a kind already shown: the rest of tab10, then tab20's light shades,
# without grey, which marks the data and the references
_SPARE = [c for c in map(to_hex, plt.cm.tab10.colors + plt.cm.tab20.colors[1::2])
          if c not in ("#7f7f7f", "#c7c7c7")]


def _styled(func):
    """Run ``func`` in the package style, so that axes given by the caller get it too."""
    @functools.wraps(func)
    def styled(*args, **kwargs):
        with plt.style.context(STYLE):
            return func(*args, **kwargs)
    return styled


# ---------------------------------------------------------------------------------------- colours

@dataclass(frozen=True)
class _Palette:
    order: list        # labels in legend order
    colors: dict       # label -> hex colour
    names: dict        # label -> legend text
    title: str | None  # legend title: the kind and the ordering parameter


def _method_params(ds):
    """{label: {param: value}}: the effective settings of ``parameters_json``, or for files written
    before it existed the attributes ``methods.<label>.<param>``."""
    if "parameters_json" in ds.attrs:
        methods = json.loads(ds.attrs["parameters_json"])["methods"]
        return {str(label): methods.get(str(label), {}) for label in ds[METHOD_DIM].values}
    labels = sorted(map(str, ds[METHOD_DIM].values), key=len, reverse=True)  # "a.b" before "a": labels may hold dots
    params = {label: {} for label in labels}
    for key, value in ds.attrs.items():
        label = next((lb for lb in labels if key.startswith(f"methods.{lb}.")), None)
        if label is not None:
            value = value.tolist() if hasattr(value, "tolist") else value  # numpy scalars from netCDF
            params[label][key[len(f"methods.{label}."):]] = value
    return params


def _ordered_parameter(params):
    """(name, {label: value}) when the methods are one kind differing in one numeric parameter only."""
    kinds = {p.get("method") for p in params.values()}
    if len(params) < 2 or len(kinds) != 1 or None in kinds:
        return None
    keys = set().union(*params.values())
    differing = [k for k in keys if len({repr(p.get(k)) for p in params.values()}) > 1]
    if len(differing) != 1:
        return None
    values = {label: p.get(differing[0]) for label, p in params.items()}
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) for v in values.values())
    if not numeric or len(set(values.values())) < len(values):
        return None
    return differing[0], values


def _sequential(n):
    """``n`` colours in order on viridis (its light yellow end left out: it vanishes on white)."""
    return [to_hex(c) for c in plt.cm.viridis(np.linspace(0.0, 0.85, n))]


def _palette(ds):
    """Colours, legend names and legend order of the methods of ``ds`` (see :func:`method_colors`)."""
    labels = [str(m) for m in ds[METHOD_DIM].values]
    params = _method_params(ds)
    ordered = _ordered_parameter(params)
    if ordered is not None:  # e.g. the hybrid over gamma: a sequential map in the parameter's order
        key, values = ordered
        order = sorted(labels, key=values.get)
        return _Palette(order, dict(zip(order, _sequential(len(order)))),
                        {lb: f"{key} = {values[lb]:g}" for lb in labels}, f"{params[labels[0]]['method']}, by {key}")
    kinds = {lb: params[lb].get("method") for lb in labels}
    taken = {KIND_COLORS[k] for k in kinds.values() if k in KIND_COLORS}
    # the first label of a kind gets the kind's colour, further ones colours that no kind present uses
    spare = itertools.chain((c for c in _SPARE if c not in taken),
                            (to_hex(plt.cm.turbo((0.1 + 0.618034 * i) % 1.0)) for i in itertools.count()))
    colors = {}
    for label in labels:
        color, tries = KIND_COLORS.get(kinds[label]), 0
        while color is None or (color in colors.values() and tries < 1000):  # past turbo's 256: repeat
            color, tries = next(spare), tries + 1
        colors[label] = color
    return _Palette(labels, colors, {lb: lb for lb in labels}, None)


def method_colors(ds):
    """{label: colour} of the methods of ``ds``, the same in every figure of the dataset.

    One kind differing in a single numeric parameter (the hybrid over gamma): viridis in that
    parameter's order. Otherwise each kind has a fixed colour (:data:`KIND_COLORS`), and further labels
    of a kind take colours that no kind in the dataset uses, so every label's colour is its own.
    """
    return dict(_palette(ds).colors)


# ---------------------------------------------------------------------------------------- helpers

def _subplots(axes, n, ncols=None, panel=(4.2, 3.2), sharey=False, legend=0.0):
    """(figure, list of ``n`` axes): the given ones (an Axes or a sequence), or a new figure of ``n`` panels
    and ``legend`` inches to their right for a figure legend."""
    if axes is not None:
        axes = list(np.ravel(axes))
        if len(axes) != n:
            raise ValueError(f"axes must hold {n} axes, got {len(axes)}")
        return axes[0].figure, axes
    ncols = ncols or n
    nrows = -(-n // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols + legend, panel[1] * nrows), squeeze=False,
                             sharey=sharey)
    for ax in grid.flat[n:]:
        ax.set_visible(False)
    return fig, list(grid.flat[:n])


def _label(ds, var, units=None):
    """Axis label from the variable's ``long_name`` and ``units`` (the schema's when the file has none)."""
    spec = VARIABLES.get(var)
    attrs = ds[var].attrs if var in ds else {}
    name = attrs.get("long_name", spec.long_name if spec else var.replace("_", " "))
    units = units or attrs.get("units", spec.units if spec else "1")
    return name if units == "1" else f"{name} [{units}]"


def _risk_label(ds):
    loss = "cross-entropy" if "test_accuracy" in ds else "mean squared error"
    return rf"risk $R(\theta)$, {loss}"


def _over_seeds(ds, what="median and quartiles"):
    """What a line (and band) shows: "median and quartiles over n seeds", or "one seed"."""
    n = ds.sizes["seed"]
    return "one seed" if n == 1 else f"{what} over {n} seeds"


def _title(ds, text):
    return f"{ds.attrs.get('study', '')}: {text}"


def _legend(ax, title=None, below=False, **kw):
    """Legend outside the axes, so that it covers no data: to the right, or below."""
    if below:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), title=title, **kw)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, title=title, **kw)


def _figure_legend(fig, handles, labels, title=None):
    """One legend for all panels, to the right of them (constrained layout makes room) and clear of the title."""
    fig.legend(handles, labels, loc="outside right center", title=title)


def _epoch_axis(ax, label="epoch"):
    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _reduce(da):
    """Median over every dimension but seed and epoch (tasks, other swept values)."""
    other = [d for d in da.dims if d not in ("seed", "epoch")]
    return da.median(other) if other else da


def _band(ax, values, color, label, gid, x=None):
    """Median over seeds vs epoch (or vs ``x``, one value per epoch), with the quartile band when there
    are several seeds."""
    values = _reduce(values).transpose("seed", "epoch")
    with warnings.catch_warnings():  # epochs where every seed had diverged are NaN, and stay so
        warnings.simplefilter("ignore", RuntimeWarning)
        q1, med, q3 = np.nanquantile(values.values, [0.25, 0.5, 0.75], axis=0)
    x = values.epoch if x is None else x
    ax.plot(x, med, color=color, label=label, gid=gid)
    if values.sizes["seed"] > 1:
        ax.fill_between(x, q1, q3, color=color, alpha=0.25, lw=0)


def _median_with_order(ax, x, values, color, text, gid, name="order"):
    """Median and quartiles over seeds of ``values`` (seed, swept dim) vs ``x`` on log-log axes, the
    legend ``text`` followed by the fitted order of the median (called ``name``) and its bootstrap
    interval. Returns the medians."""
    q1, med, q3 = (values.quantile(q, dim="seed").values for q in (0.25, 0.5, 0.75))
    fit = fit_rate(x, values.transpose("seed", ...).values, aggregate="median")
    ax.errorbar(x, med, yerr=[med - q1, q3 - med], fmt="o-", color=color, gid=gid, label=f"{text}: {fit.label(name)}")
    return med


def _sel(ds, var, label):
    return ds[var].sel({METHOD_DIM: label})


# ---------------------------------------------------------------------------------------- figures

@_styled
def plot_risk(ds, axes=None):
    r"""Paper Fig. 2: training and test risk :math:`R(\theta)` of the reported network vs epoch, median
    over seeds with quartile band, log scale. ``axes``: two axes (training, test)."""
    fig, axes = _subplots(axes, 2, sharey=True, legend=1.5)
    pal = _palette(ds)
    for ax, var in zip(axes, ("train_risk", "test_risk")):
        for label in pal.order:
            _band(ax, _sel(ds, var, label), pal.colors[label], pal.names[label], label)
        ax.set(yscale="log", title=_label(ds, var))
        _epoch_axis(ax)
    axes[0].set_ylabel(_risk_label(ds))
    # a run whose network blew up would squeeze every other curve into the bottom decade
    start = float(np.nanmax(_reduce(ds.train_risk.isel(epoch=0)).median("seed").values))
    top = 1e3 * start
    if np.isfinite(top) and top > 0 and axes[0].get_ylim()[1] > top:
        axes[0].set_ylim(top=top)
        for ax in axes:
            ax.text(0.98, 0.97, "clipped at 1e3 x the initial risk", transform=ax.transAxes, ha="right",
                    va="top", fontsize="small", color="0.4")
    _figure_legend(fig, *axes[0].get_legend_handles_labels(), title=pal.title)
    fig.suptitle(_title(ds, f"reported network's risk, {_over_seeds(ds)}"))
    return fig


@_styled
def plot_risk_vs_cost(ds, axes=None):
    """Training and test risk of the reported network against the cost of training, median over seeds
    with quartile band: the cumulative neuron-sample evaluations (gradients counted as three passes)
    and the wall time, so that methods are compared at equal cost rather than at equal epochs."""
    fig, axes = _subplots(axes, 3, legend=1.5)
    pal = _palette(ds)
    costs = [("evaluations", "train_risk"), ("evaluations", "test_risk"), ("wall_time", "train_risk")]
    for ax, (cost, var) in zip(axes, costs):
        for label in pal.order:  # from epoch 1: nothing is spent before the first step (log axis)
            spent = _reduce(_sel(ds, cost, label)).median("seed").isel(epoch=slice(1, None))
            _band(ax, _sel(ds, var, label).isel(epoch=slice(1, None)), pal.colors[label], pal.names[label], label,
                  x=spent.values)
        ax.set(xscale="log", yscale="log", xlabel=_label(ds, cost), title=_label(ds, var))
    axes[0].set_ylabel(_risk_label(ds))
    _figure_legend(fig, *axes[0].get_legend_handles_labels(), title=pal.title)
    fig.suptitle(_title(ds, f"risk against cost, {_over_seeds(ds)}"))
    return fig


def _network_of(ds):
    config = json.loads(ds.attrs["config_json"])
    problem = make_problem(**config["problem"])
    network = TwoLayerNetwork(problem.n_inputs, problem.n_outputs, ds.sizes["neuron"],
                              activation=config["network"].get("activation", "relu"), loss=problem.loss)
    return problem, network


def _median_seed(ds, label, task=None):
    """(seed index, final training risk) of the median seed by final training risk."""
    risk = _sel(ds, "train_risk", label)
    final = last_recorded(risk if task is None else risk.sel(task=task)).values
    seed = int(np.argsort(final)[len(final) // 2])
    return seed, final[seed]


@_styled
def plot_fits(ds, ax=None):
    r"""Paper Fig. 3: each method's reported network :math:`x \mapsto g(x)` of the median seed (by final
    training risk) over the training data; one input, one output."""
    fig, (ax,) = _subplots(ax, 1, panel=(5.0, 3.4))
    problem, network = _network_of(ds)
    grid = np.linspace(0.0, 1.0, 400)[:, None]
    sub = np.random.default_rng(0).choice(problem.n_train, size=min(400, problem.n_train), replace=False)
    ax.scatter(problem.x_train[sub, 0], problem.y_train[sub], s=3, color="0.6", label="training data")
    pal = _palette(ds)
    which = "median seed, " if ds.sizes["seed"] > 1 else ""
    for label in pal.order:
        seed, risk = _median_seed(ds, label)
        theta = _sel(ds, "final_params", label).isel(seed=seed).values[None]
        ax.plot(grid[:, 0], network.forward(theta, grid)[0, :, 0], color=pal.colors[label], gid=label,
                label=f"{pal.names[label]} ({which}risk {risk:.2e})")
    ax.set(xlabel="x", ylabel="g(x)", title=_title(ds, f"fits after {int(ds.epoch[-1])} epochs"))
    _legend(ax, pal.title)
    return fig


@_styled
def plot_task_risk(ds, axes=None):
    """Paper Fig. 5: median and minimum over tasks of the training risk vs epoch, median over seeds with
    quartile band, log scale. ``axes``: two axes (median, minimum)."""
    fig, axes = _subplots(axes, 2, sharey=True, legend=2.0)
    pal = _palette(ds)
    for ax, reduce, title in zip(axes, ("median", "min"), ("median over tasks", "minimum over tasks")):
        for label in pal.order:
            state = int(_sel(ds, "state_bytes", label).max())
            name = pal.names[label] + (f" ({_bytes(state)} of state)" if state >= 0 else "")
            _band(ax, getattr(_sel(ds, "train_risk", label), reduce)("task"), pal.colors[label], name, label)
        ax.set(yscale="log", title=f"{_label(ds, 'train_risk')}, {title}")
        _epoch_axis(ax)
    axes[0].set_ylabel(r"training risk $R_p(\theta)$, mean squared error")
    _figure_legend(fig, *axes[0].get_legend_handles_labels(), title=pal.title)
    fig.suptitle(_title(ds, f"{ds.sizes['task']} tasks, {_over_seeds(ds)}"))
    return fig


def _bytes(n):
    """Memory size with a decimal prefix: 12848000 -> "12.8 MB"."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g} {unit}"
        n /= 1000


@_styled
def plot_task_fits(ds, axes=None):
    """Paper Fig. 6: five tasks' reported networks (median seed by the task's final training risk) over
    their data, one panel per method; tasks in order on viridis."""
    problem, network = _network_of(ds)
    pal = _palette(ds)
    fig, axes = _subplots(axes, len(pal.order), panel=(4.2, 3.4), sharey=True)
    tasks = np.unique(np.linspace(1, ds.sizes["task"], 5).round().astype(int))
    colors = _sequential(len(tasks))
    grid = np.linspace(0.0, 1.0, 300)[:, None]
    sub = np.random.default_rng(0).choice(problem.n_train, size=min(200, problem.n_train), replace=False)
    for ax, label in zip(axes, pal.order):
        for color, task in zip(colors, tasks):
            seed, risk = _median_seed(ds, label, task)
            theta = _sel(ds, "final_params", label).sel(task=task).isel(seed=seed).values[None]
            ax.scatter(problem.x_train[sub, 0], problem.y_train[sub, task - 1], s=2, color="0.75")
            ax.plot(grid[:, 0], network.forward(theta, grid)[0, :, 0], color=color, lw=1.3,
                    label=f"task {task} (risk {risk:.1e})")
        ax.set(xlabel="x", ylabel="g(x)", title=pal.names[label])
        _legend(ax, below=True, ncols=2, fontsize=6)
    fig.suptitle(_title(ds, f"fits of {plural(len(tasks), 'task')} after {int(ds.epoch[-1])} epochs"))
    return fig


@_styled
def plot_instability(ds, ax=None, factor=10.0):
    """Fraction of runs (seeds) whose training risk has risen above ``factor`` times its running
    minimum, vs epoch; a diverged (NaN) risk counts as risen."""
    fig, (ax,) = _subplots(ax, 1, panel=(5.0, 3.2))
    pal = _palette(ds)
    for label in pal.order:
        risk = _sel(ds, "train_risk", label).transpose("seed", "epoch")
        ax.plot(ds.epoch, instability(risk, factor).mean(axis=0), color=pal.colors[label], gid=label,
                label=pal.names[label])
    ax.set(ylabel=f"fraction of runs ({plural(ds.sizes['seed'], 'seed')})", ylim=(-0.03, 1.03),
           title=_title(ds, f"training risk > {factor:g}x its running minimum"))
    _epoch_axis(ax)
    _legend(ax, pal.title)
    return fig


@_styled
def plot_accuracy(ds, ax=None):
    """Test accuracy of the reported network vs epoch, median over seeds with quartile band."""
    fig, (ax,) = _subplots(ax, 1, panel=(5.0, 3.2))
    pal = _palette(ds)
    for label in pal.order:
        _band(ax, 100 * _sel(ds, "test_accuracy", label), pal.colors[label], pal.names[label], label)
    ax.set(ylabel=_label(ds, "test_accuracy", units="%"), title=_title(ds, f"held-out accuracy, {_over_seeds(ds)}"))
    _epoch_axis(ax)
    _legend(ax, pal.title)
    return fig


_DIM_NAMES = {"M": "network width M", "N": "number of particles N"}


@_styled
def plot_sweep(ds, dim, var="train_risk", axes=None):
    """Paper Fig. 8: ``var`` vs epoch for every value of the swept ``dim`` (viridis, in order), median
    over seeds with quartile band, log scale; one panel per method that records ``var``."""
    pal = _palette(ds)
    labels = [lb for lb in pal.order if lb in recorded_labels(ds, var)]
    fig, axes = _subplots(axes, len(labels), sharey=True, legend=1.2)
    values = ds[dim].values
    for ax, label in zip(axes, labels):
        for color, v in zip(_sequential(len(values)), values):
            _band(ax, _sel(ds, var, label).sel({dim: v}), color, f"{dim} = {int(v)}", None)
        ax.set(yscale="log", title=pal.names[label])
        _epoch_axis(ax)
    axes[0].set_ylabel(_label(ds, var))
    _figure_legend(fig, *axes[0].get_legend_handles_labels(), title=_DIM_NAMES.get(dim, dim))
    fig.suptitle(_title(ds, f"{_label(ds, var)} vs {dim}, {_over_seeds(ds)}"))
    return fig


def _size_ticks(ax, x):
    """Ticks at the swept values of a log axis, and no minor ticks whose labels would collide with them."""
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.xaxis.set_minor_locator(NullLocator())


@_styled
def plot_rate(ds, dim, ax=None):
    """Final training risk vs the swept ``dim`` on log-log axes, median and quartiles over seeds, with the
    fitted slope of log(median) on log(``dim``) and its 95% bootstrap interval over seeds
    (:func:`meanfield.rates.fit_rate`); for M the reference slope -1 (risk ~ 1/M, Barron, eq. 9)."""
    fig, (ax,) = _subplots(ax, 1, panel=(5.0, 3.4))
    pal = _palette(ds)
    x = ds[dim].values.astype(float)
    first = None
    for label in pal.order:
        med = _median_with_order(ax, x, sweep_finals(ds, label, dim), pal.colors[label], pal.names[label], label,
                                 "fitted slope")
        first = med[0] if first is None else first
    if dim == "M" and np.isfinite(first):  # through the first method's narrowest point
        ax.plot(x, first * x[0] / x, "k--", lw=0.8, label="reference slope -1 (Barron)")
    what = "median and quartiles" if ds.sizes["seed"] > 1 else "one seed"
    ax.set(xscale="log", yscale="log", xlabel=_DIM_NAMES.get(dim, dim),
           ylabel=f"final {_label(ds, 'train_risk')} ({what})", title=_title(ds, f"final risk vs {dim}"))
    _size_ticks(ax, x)
    _legend(ax, pal.title)
    return fig


@_styled
def plot_strong_error(ds, dim, axes=None):
    """Strong error of the reported network vs the swept ``dim`` (coupled runs, against the largest one),
    log-log, mean over seeds at the last epoch, with each method's fitted order and 95% bootstrap
    interval (:func:`meanfield.convergence.rate_rows`) and the reference order -1/2. Panels: the
    parameters (methods that keep neuron indices) and the output on a grid of inputs (every method)."""
    from meanfield.convergence import INDEXED_METHODS, THEORY, rate_rows, strong_errors

    pal = _palette(ds)
    params = _method_params(ds)
    last = int(ds.epoch[-1])
    names = [n for n in ("params", "output") if (dim, n) in THEORY]
    fig, axes = _subplots(axes, len(names), panel=(5.4, 4.6))
    for ax, name in zip(axes, names):
        labels = [lb for lb in pal.order if name == "output" or params[lb].get("method") in INDEXED_METHODS]
        err = strong_errors(ds, dim, name, [last]).sel(epoch=last)
        fits = {row["method"]: row["fit"] for row in rate_rows(ds.sel(method_label=labels), dim, [name], epochs=[last])}
        x = err[dim].values.astype(float)
        for label in labels:
            mean = err.sel(method_label=label).mean("seed").values
            fit = fits.get(label)
            text = pal.names[label] + ("" if fit is None else f": {fit.label('order')}")
            ax.plot(x, mean, "o-", color=pal.colors[label], label=text, gid=label)
        if len(x):
            y0 = np.nanmax(err.mean("seed").isel({dim: 0}).values)
            ax.plot(x, y0 * (x / x[0]) ** THEORY[(dim, name)], "k--", lw=0.8, label="reference order -1/2")
        what = "parameters" if name == "params" else "output on a grid"
        ax.set(xscale="log", yscale="log", xlabel=_DIM_NAMES.get(dim, dim),
               title=f"reported {what}, epoch {last}")
        _size_ticks(ax, x)
        ax.yaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels collide
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small")
    axes[0].set_ylabel(f"mean RMS difference to {dim} = {int(ds[dim][-1])}")
    fig.suptitle(_title(ds, f"strong error vs {dim} (coupled runs), {_over_seeds(ds, 'mean')}"))
    return fig


@_styled
def plot_excess_risk(ds, dim, ax=None):
    """Excess risk of the final reported network (against the noise-free target,
    :func:`meanfield.convergence.excess_risk`) vs the swept ``dim``, median and quartiles over seeds,
    with the fitted order of the median and its 95% bootstrap interval; for M the Barron order -1."""
    from meanfield.convergence import excess_risk

    fig, (ax,) = _subplots(ax, 1, panel=(5.0, 3.4))
    pal = _palette(ds)
    ex = excess_risk(ds)
    other = [d for d in ex.dims if d not in (METHOD_DIM, dim, "seed")]
    ex = ex.median(other) if other else ex
    x = ds[dim].values.astype(float)
    for label in pal.order:
        _median_with_order(ax, x, ex.sel({METHOD_DIM: label}), pal.colors[label], pal.names[label], label)
    if dim == "M":
        first = float(np.nanmax(ex.isel({dim: 0}).median("seed")))
        ax.plot(x, first * x[0] / x, "k--", lw=0.8, label="order -1 (Barron bound)")
    ax.set(xscale="log", yscale="log", xlabel=_DIM_NAMES.get(dim, dim),
           ylabel=f"excess risk ({'median and quartiles' if ds.sizes['seed'] > 1 else 'one seed'})",
           title=_title(ds, f"\nexcess risk vs {dim}"))
    _size_ticks(ax, x)
    _legend(ax, fontsize="small")
    return fig


@_styled
def plot_neuron_spread(ds, dim, ax=None):
    """Spread of the reported network's neurons (variance over neurons, mean over components) at the
    first and last epoch vs the swept ``dim``, median over seeds: the classical consensus averages
    neuron j across particles and collapses toward the mean neuron as N grows; a barycenter keeps
    the spread of the neurons' law."""
    from meanfield.convergence import neuron_spread

    fig, (ax,) = _subplots(ax, 1, panel=(5.0, 3.4))
    pal = _palette(ds)
    x = ds[dim].values.astype(float)
    last = int(ds.epoch[-1])
    for label in pal.order:
        for epoch, style in ((0, "o--"), (last, "o-")):
            spread = neuron_spread(ds.sel(method_label=label), epoch).median("seed").values
            ax.plot(x, spread, style, color=pal.colors[label], gid=label,
                    label=f"{pal.names[label]}, epoch {epoch}")
    ax.set(xscale="log", yscale="log", xlabel=_DIM_NAMES.get(dim, dim),
           ylabel="variance over neurons", title=_title(ds, f"\nspread of the reported network's neurons vs {dim}"))
    _size_ticks(ax, x)
    _legend(ax, fontsize="small")
    return fig


@_styled
def plot_variance_decay(ds, axes=None):
    r"""Proposition 3: W-over-W variance :math:`\frac12 \sum_n w_n W_2^2(\mu_n, \bar\mu)` vs epoch,
    :math:`w_n = 1/N` (solid) and :math:`w_n = \beta_n` (dashed), median over seeds, with the reference
    :math:`\mathrm{Var}^1 (1 - \lambda\,dt)^{2(k-1)}`; one panel per method that records it (OT-CBO)."""
    pal = _palette(ds)
    labels = [lb for lb in pal.order if lb in recorded_labels(ds, "w_variance")]
    fig, axes = _subplots(axes, len(labels), ncols=min(4, len(labels)), panel=(3.4, 2.9), legend=1.8)
    epoch = ds.epoch.values
    for ax, label in zip(axes, labels):
        for var, style in (("w_variance", "-"), ("w_variance_weighted", "--")):
            med = _reduce(_sel(ds, var, label)).median("seed").values
            ax.plot(epoch[1:], med[1:], style, color=pal.colors[label], gid=label)
        start = float(_reduce(_sel(ds, "w_variance", label)).median("seed")[1])
        ax.plot(epoch[1:], start * _decay_factor(ds, label) ** (epoch[1:] - 1), ":", color="k", lw=1)
        ax.set(yscale="log", title=pal.names[label])
        _epoch_axis(ax, "step k" if ds.attrs.get("iterations_per_epoch") == 1 else "epoch")
    axes[0].set_ylabel(_label(ds, "w_variance"))
    keys = [Line2D([], [], color="0.3", ls="-"), Line2D([], [], color="0.3", ls="--"),
            Line2D([], [], color="k", ls=":", lw=1)]
    _figure_legend(fig, keys, [r"$w_n = 1/N$", r"$w_n = \beta_n$ (Gibbs)", r"$\mathrm{Var}^1 (1-\lambda dt)^{2(k-1)}$"],
                   title=r"$\frac{1}{2}\sum_n w_n W_2^2(\mu_n, \bar\mu)$")
    fig.suptitle(_title(ds, f"{_label(ds, 'w_variance')}, {_over_seeds(ds, 'median')}"))
    return fig


@_styled
def plot_variance_factor(ds, axes=None):
    r"""Finite CBO's ensemble variance: (a) median over seeds vs iteration for every CBO method with
    multiplicative noise, with the prediction :math:`\mathrm{Var}_0\, \rho^k` dashed; (b) the measured
    factor per iteration (median over seeds, 95% bootstrap interval) against the predicted :math:`\rho`
    (see :func:`meanfield.results.variance_factors`)."""
    pal = _palette(ds)
    rows = {r["label"]: r for r in variance_factors(ds)}
    labels = [lb for lb in pal.order if lb in rows]
    fig, (ax, bx) = _subplots(axes, 2, ncols=2, panel=(4.4, 3.6), legend=2.2)
    per_epoch = int(ds.attrs["iterations_per_epoch"])
    k = ds.epoch.values * per_epoch
    medians = {lb: ds.variance.sel({METHOD_DIM: lb}).median("seed").values for lb in labels}
    medians = {lb: np.where(np.isfinite(m), m, np.nan) for lb, m in medians.items()}  # an overflowed run
    shown = np.concatenate(list(medians.values()))
    shown = shown[np.isfinite(shown) & (shown > 0)]
    # the y range is the measured one: a prediction rho^k leaves it (or the float range) in a few steps
    low, high = (shown.min() / 10, min(shown.max(), 1e99) * 10) if shown.size else (1e-30, 1e30)
    for label in labels:
        r = rows[label]
        ax.plot(k, medians[label], color=pal.colors[label], gid=label, label=pal.names[label])
        with np.errstate(divide="ignore"):
            log_prediction = np.log(medians[label][0]) + k * np.log(r["predicted"])
        inside = (log_prediction >= np.log(low)) & (log_prediction <= np.log(high))
        ax.plot(k, np.where(inside, np.exp(np.where(inside, log_prediction, 0.0)), np.nan), "--",
                color=pal.colors[label], lw=0.8)
        err = [[r["measured"] - r["low"]], [r["high"] - r["measured"]]] if np.isfinite(r["low"]) else None
        bx.errorbar([r["predicted"]], [r["measured"]], yerr=err, fmt="o", color=pal.colors[label], gid=label)
    ax.set(yscale="log", xlabel="iteration k", ylabel=_label(ds, "variance"), ylim=(low, high))
    values = [v for r in rows.values() if np.isfinite(r["measured"]) for v in (r["predicted"], r["measured"])]
    if values:
        lo, hi = min(values), max(values)
        if hi / lo > 10:  # an isotropic rho of D sigma^2 dt beside factors near 1
            bx.set(xscale="log", yscale="log")
            span = (lo / 1.2, hi * 1.2)
        else:
            pad = 0.05 * (hi - lo or 1.0)
            span = (lo - pad, hi + pad)
        bx.plot(span, span, ":", color="k", lw=1)
        bx.axvline(1.0, color="0.6", lw=0.8)
        bx.axhline(1.0, color="0.6", lw=0.8)
    bx.set(xlabel=r"predicted factor per iteration $\rho$ of the noise",
           ylabel="measured factor per iteration")
    handles = [Line2D([], [], color=pal.colors[lb]) for lb in labels] + [Line2D([], [], color="0.3", ls="--", lw=0.8)]
    _figure_legend(fig, handles, [pal.names[lb] for lb in labels] + [r"$\mathrm{Var}_0\,\rho^k$"])
    fig.suptitle(_title(ds, f"ensemble variance, {_over_seeds(ds, 'median')}"))
    return fig


# ---------------------------------------------------------------------------------------- a dataset

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


_PLOTS = {"risk": plot_risk, "instability": plot_instability, "fits": plot_fits, "accuracy": plot_accuracy,
          "task_risk": plot_task_risk, "task_fits": plot_task_fits, "variance": plot_variance_decay,
          "sweep_risk": plot_sweep, "sweep_variance": functools.partial(plot_sweep, var="w_variance"),
          "rate": plot_rate, "strong_error": plot_strong_error, "neuron_spread": plot_neuron_spread,
          "excess_risk": plot_excess_risk, "risk_vs_cost": plot_risk_vs_cost,
          "variance_factor": plot_variance_factor}


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


def _jobs(ds, figures=None):
    """(file suffix, function drawing the figure) of every figure to make; checks the declared figures
    (or ``figures``, when given, which replace the declared ones)."""
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
    """Write a dataset's figures as ``<name>_<file>.png`` (files from :data:`meanfield.schema.FIGURES`)
    and its summary table as ``<name>_summary.md``; ``name`` defaults to the study's. Returns the paths.

    The figures are ``figures`` (names of :data:`meanfield.schema.FIGURES`) when given, else those
    declared in ``ds.attrs["figures"]``, else every figure the dataset supports. Raises ValueError,
    before writing anything, for a requested figure that is unknown or that the dataset cannot
    support (``fits`` of MNIST, say).
    """
    name = name or ds.attrs["study"]
    if name != ds.attrs["study"]:  # a run written under another name (--out, --set) says so in its titles
        ds = ds.copy()
        ds.attrs["study"] = f"{name} (study {ds.attrs['study']})"
    jobs = _jobs(ds, figures)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, plot in jobs:
        fig = plot()
        try:
            with plt.style.context(STYLE):
                fig.savefig(out_dir / f"{name}_{suffix}.png")
        finally:
            plt.close(fig)
        paths.append(out_dir / f"{name}_{suffix}.png")
    paths.append(out_dir / f"{name}_summary.md")
    paths[-1].write_text(summary_table(ds))
    return paths
