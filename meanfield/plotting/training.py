"""Figures of training runs: risk against epochs and against cost, the fitted functions, the
instability, the accuracy, and their multi-task versions."""

import json

import numpy as np

from meanfield.network import TwoLayerNetwork
from meanfield.plotting._figure import (
    Figure,
    axis_label,
    band,
    epoch_axis,
    of_method,
    over_seeds,
    runs,
    sequential,
    styled,
)
from meanfield.problems import make_problem
from meanfield.results import instability, last_recorded, plural
from meanfield.schema import METHOD_DIM

__all__ = ["plot_risk", "plot_risk_vs_cost", "plot_fits", "plot_task_risk", "plot_task_fits", "plot_instability",
           "plot_accuracy"]


def _risk_label(ds):
    loss = "cross-entropy" if "test_accuracy" in ds else "mean squared error"
    return rf"risk $R(\theta)$, {loss}"


@styled
def plot_risk(ds, axes=None):
    r"""Paper Fig. 2: training and test risk :math:`R(\theta)` of the reported network vs epoch, median
    over seeds with quartile band, log scale.

    A run whose network blew up would squeeze every other curve into the bottom decade: the risk axis
    then stops at 1e3 times the initial risk, and the panels say so.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` without tasks.
    axes : sequence of two matplotlib Axes, optional
        Where to draw the training and the test risk; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    f = Figure.panels(ds, axes, 2, sharey=True, legend=1.5)
    for ax, var in zip(f.axes, ("train_risk", "test_risk")):
        for label in f.palette.order:
            band(ax, of_method(ds, var, label), **f.palette.style(label))
        ax.set(yscale="log", title=axis_label(ds, var))
        epoch_axis(ax)
    f.ax.set_ylabel(_risk_label(ds))
    start = float(np.nanmax(runs(ds.train_risk.isel(epoch=0)).median("seed").values))
    top = 1e3 * start
    if np.isfinite(top) and top > 0 and f.ax.get_ylim()[1] > top:
        f.ax.set_ylim(top=top)
        for ax in f.axes:
            ax.text(0.98, 0.97, "clipped at 1e3 x the initial risk", transform=ax.transAxes, ha="right",
                    va="top", fontsize="small", color="0.4")
    return f.finish(f"reported network's risk, {over_seeds(ds)}")


@styled
def plot_risk_vs_cost(ds, axes=None):
    """Training and test risk of the reported network against the cost of training, median over seeds
    with quartile band: the cumulative neuron-sample evaluations (gradients counted as three passes)
    and the wall time, so that methods are compared at equal cost rather than at equal epochs.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` that recorded ``evaluations`` (meanfield >= 0.4).
    axes : sequence of three matplotlib Axes, optional
        Where to draw training and test risk against evaluations, and training risk against wall time;
        a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    f = Figure.panels(ds, axes, 3, legend=1.5)
    costs = [("evaluations", "train_risk"), ("evaluations", "test_risk"), ("wall_time", "train_risk")]
    for ax, (cost, var) in zip(f.axes, costs):
        for label in f.palette.order:  # from epoch 1: nothing is spent before the first step (log axis)
            spent = runs(of_method(ds, cost, label)).median("seed").isel(epoch=slice(1, None))
            band(ax, of_method(ds, var, label).isel(epoch=slice(1, None)), x=spent.values, **f.palette.style(label))
        ax.set(xscale="log", yscale="log", xlabel=axis_label(ds, cost), title=axis_label(ds, var))
    f.ax.set_ylabel(_risk_label(ds))
    return f.finish(f"risk against cost, {over_seeds(ds)}")


def _network_of(ds):
    config = json.loads(ds.attrs["config_json"])
    problem = make_problem(**config["problem"])
    network = TwoLayerNetwork(problem.n_inputs, problem.n_outputs, ds.sizes["neuron"],
                              activation=config["network"].get("activation", "relu"), loss=problem.loss)
    return problem, network


def _median_seed(ds, label, task=None):
    """(seed index, final training risk) of the median seed by final training risk."""
    risk = of_method(ds, "train_risk", label)
    final = last_recorded(risk if task is None else risk.sel(task=task)).values
    seed = int(np.argsort(final)[len(final) // 2])
    return seed, final[seed]


@styled
def plot_fits(ds, ax=None):
    r"""Paper Fig. 3: each method's reported network :math:`x \mapsto g(x)` of the median seed (by final
    training risk) over the training data.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` of a problem with one input and one output, with the attribute
        ``config_json`` to rebuild the data.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    f = Figure.single(ds, ax)
    problem, network = _network_of(ds)
    grid = np.linspace(0.0, 1.0, 400)[:, None]
    sub = np.random.default_rng(0).choice(problem.n_train, size=min(400, problem.n_train), replace=False)
    f.ax.scatter(problem.x_train[sub, 0], problem.y_train[sub], s=3, color="0.6", label="training data")
    which = "median seed, " if ds.sizes["seed"] > 1 else ""
    for label in f.palette.order:
        seed, risk = _median_seed(ds, label)
        theta = of_method(ds, "final_params", label).isel(seed=seed).values[None]
        f.ax.plot(grid[:, 0], network.forward(theta, grid)[0, :, 0],
                  **f.palette.style(label, f"{f.palette.names[label]} ({which}risk {risk:.2e})"))
    f.ax.set(xlabel="x", ylabel="g(x)")
    return f.finish(f"fits after {int(ds.epoch[-1])} epochs")


def _bytes(n):
    """Memory size with a decimal prefix: 12848000 -> "12.8 MB"."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g} {unit}"
        n /= 1000


@styled
def plot_task_risk(ds, axes=None):
    """Paper Fig. 5: median and minimum over tasks of the training risk vs epoch, median over seeds with
    quartile band, log scale; the legend says each method's state memory.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` of a multi-task problem (dimension ``task``).
    axes : sequence of two matplotlib Axes, optional
        Where to draw the median and the minimum over tasks; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    f = Figure.panels(ds, axes, 2, sharey=True, legend=2.0)
    for ax, reduce, title in zip(f.axes, ("median", "min"), ("median over tasks", "minimum over tasks")):
        for label in f.palette.order:
            state = int(of_method(ds, "state_bytes", label).max())
            name = f.palette.names[label] + (f" ({_bytes(state)} of state)" if state >= 0 else "")
            band(ax, getattr(of_method(ds, "train_risk", label), reduce)("task"), **f.palette.style(label, name))
        ax.set(yscale="log", title=f"{axis_label(ds, 'train_risk')}, {title}")
        epoch_axis(ax)
    f.ax.set_ylabel(r"training risk $R_p(\theta)$, mean squared error")
    return f.finish(f"{ds.sizes['task']} tasks, {over_seeds(ds)}")


@styled
def plot_task_fits(ds, axes=None):
    """Paper Fig. 6: five tasks' reported networks (median seed by the task's final training risk) over
    their data, one panel per method; tasks in order on viridis.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` of a multi-task problem with one input and one output.
    axes : sequence of matplotlib Axes, optional
        One per method; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    problem, network = _network_of(ds)
    f = Figure.panels(ds, axes, ds.sizes[METHOD_DIM], size=(4.2, 3.4), sharey=True)
    tasks = np.unique(np.linspace(1, ds.sizes["task"], 5).round().astype(int))
    colors = sequential(len(tasks))
    grid = np.linspace(0.0, 1.0, 300)[:, None]
    sub = np.random.default_rng(0).choice(problem.n_train, size=min(200, problem.n_train), replace=False)
    for ax, label in zip(f.axes, f.palette.order):
        for color, task in zip(colors, tasks):
            seed, risk = _median_seed(ds, label, task)
            theta = of_method(ds, "final_params", label).sel(task=task).isel(seed=seed).values[None]
            ax.scatter(problem.x_train[sub, 0], problem.y_train[sub, task - 1], s=2, color="0.75")
            ax.plot(grid[:, 0], network.forward(theta, grid)[0, :, 0], color=color, lw=1.3,
                    label=f"task {task} (risk {risk:.1e})")
        ax.set(xlabel="x", ylabel="g(x)", title=f.palette.names[label])
    return f.finish(f"fits of {plural(len(tasks), 'task')} after {int(ds.epoch[-1])} epochs", "below",
                    legend_title=None, ncols=2, fontsize=6)


@styled
def plot_instability(ds, ax=None, factor=10.0):
    """Fraction of runs (seeds) whose training risk has risen above ``factor`` times its running
    minimum, vs epoch; a diverged (NaN) risk counts as risen.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` without tasks.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    factor : float
        How far above its running minimum a risk counts as risen.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    f = Figure.single(ds, ax, size=(5.0, 3.2))
    for label in f.palette.order:
        risk = of_method(ds, "train_risk", label).transpose("seed", "epoch")
        f.ax.plot(ds.epoch, instability(risk, factor).mean(axis=0), **f.palette.style(label))
    f.ax.set(ylabel=f"fraction of runs ({plural(ds.sizes['seed'], 'seed')})", ylim=(-0.03, 1.03))
    epoch_axis(f.ax)
    return f.finish(f"training risk > {factor:g}x its running minimum")


@styled
def plot_accuracy(ds, ax=None):
    """Test accuracy of the reported network vs epoch, median over seeds with quartile band.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` of a classification problem (variable ``test_accuracy``).
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    f = Figure.single(ds, ax, size=(5.0, 3.2))
    for label in f.palette.order:
        band(f.ax, 100 * of_method(ds, "test_accuracy", label), **f.palette.style(label))
    f.ax.set_ylabel(axis_label(ds, "test_accuracy", units="%"))
    epoch_axis(f.ax)
    return f.finish(f"held-out accuracy, {over_seeds(ds)}")
