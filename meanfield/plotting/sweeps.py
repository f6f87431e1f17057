"""Figures of sweeps over the network width M or the number of particles N (risk per epoch, fitted
orders, strong errors, excess risks, spread of the neurons), and of the ensemble variance (OT-CBO's
W-over-W variance, finite CBO's variance factor)."""

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, NullLocator

from meanfield.convergence import INDEXED_METHODS, THEORY, excess_risk, neuron_spread, rate_rows, strong_errors
from meanfield.plotting._figure import (
    Figure,
    axis_label,
    band,
    epoch_axis,
    method_params,
    of_method,
    over_seeds,
    runs,
    sequential,
    styled,
)
from meanfield.rates import fit_rate
from meanfield.results import decay_factor, recorded_labels, sweep_finals, variance_factors
from meanfield.schema import METHOD_DIM

__all__ = ["plot_sweep", "plot_rate", "plot_strong_error", "plot_excess_risk", "plot_neuron_spread",
           "plot_variance_decay", "plot_variance_factor"]

_DIM_NAMES = {"M": "network width M", "N": "number of particles N"}


def _size_axes(ax, dim, x):
    """Log-log axes over the swept values ``x`` of ``dim``, ticked at those values only: minor ticks'
    labels would collide with them."""
    ax.set(xscale="log", yscale="log", xlabel=_DIM_NAMES.get(dim, dim))
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.xaxis.set_minor_locator(NullLocator())


def _quartiles(ds):
    return "median and quartiles" if ds.sizes["seed"] > 1 else "one seed"


def _median_with_order(ax, x, values, color, label, gid, name="order"):
    """Median and quartiles over seeds of ``values`` (seed, swept dim) vs ``x``, the legend ``label``
    followed by the fitted order of the median (called ``name``) and its bootstrap interval. Returns
    the medians."""
    q1, med, q3 = (values.quantile(q, dim="seed").values for q in (0.25, 0.5, 0.75))
    fit = fit_rate(x, values.transpose("seed", ...).values, aggregate="median")
    ax.errorbar(x, med, yerr=[med - q1, q3 - med], fmt="o-", color=color, gid=gid, label=f"{label}: {fit.label(name)}")
    return med


@styled
def plot_sweep(ds, dim, var="train_risk", axes=None):
    """Paper Fig. 8: ``var`` vs epoch for every value of the swept ``dim`` (viridis, in order), median
    over seeds with quartile band, log scale; one panel per method that records ``var``.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` with a [sweep] over ``dim``.
    dim : {"M", "N"}
        The swept dimension.
    var : str
        The variable drawn, e.g. ``"train_risk"`` or ``"w_variance"``.
    axes : sequence of matplotlib Axes, optional
        One per method that records ``var``; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    recorded = recorded_labels(ds, var)
    f = Figure.panels(ds, axes, len(recorded), sharey=True, legend=1.2)
    values = ds[dim].values
    for ax, label in zip(f.axes, [lb for lb in f.palette.order if lb in recorded]):
        for color, v in zip(sequential(len(values)), values):
            band(ax, of_method(ds, var, label).sel({dim: v}), color, f"{dim} = {int(v)}", None)
        ax.set(yscale="log", title=f.palette.names[label])
        epoch_axis(ax)
    f.ax.set_ylabel(axis_label(ds, var))
    return f.finish(f"{axis_label(ds, var)} vs {dim}, {over_seeds(ds)}", legend_title=_DIM_NAMES.get(dim, dim))


@styled
def plot_rate(ds, dim, ax=None):
    """Final training risk vs the swept ``dim`` on log-log axes, median and quartiles over seeds, with the
    fitted slope of log(median) on log(``dim``) and its 95% bootstrap interval over seeds
    (:func:`meanfield.rates.fit_rate`); for M the reference slope -1 (risk ~ 1/M, Barron, eq. 9).

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` with a [sweep] over ``dim``.
    dim : {"M", "N"}
        The swept dimension.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    f = Figure.single(ds, ax)
    x = ds[dim].values.astype(float)
    first = None
    for label in f.palette.order:
        med = _median_with_order(f.ax, x, sweep_finals(ds, label, dim), name="fitted slope", **f.palette.style(label))
        first = med[0] if first is None else first
    if dim == "M" and np.isfinite(first):  # through the first method's narrowest point
        f.ax.plot(x, first * x[0] / x, "k--", lw=0.8, label="reference slope -1 (Barron)")
    _size_axes(f.ax, dim, x)
    f.ax.set_ylabel(f"final {axis_label(ds, 'train_risk')} ({_quartiles(ds)})")
    return f.finish(f"final risk vs {dim}")


@styled
def plot_strong_error(ds, dim, axes=None):
    """Strong error of the reported network vs the swept ``dim`` (coupled runs, against the largest one),
    log-log, mean over seeds at the last epoch, with each method's fitted order and 95% bootstrap
    interval (:func:`meanfield.convergence.rate_rows`) and the reference order -1/2.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` with a [sweep] over ``dim`` that recorded the reported network per
        epoch (``record_params = true``).
    dim : {"M", "N"}
        The swept dimension.
    axes : sequence of matplotlib Axes, optional
        One per observable with a known order for ``dim``: the parameters (methods that keep neuron
        indices) and the output on a grid of inputs (every method); a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    names = [n for n in ("params", "output") if (dim, n) in THEORY]
    f = Figure.panels(ds, axes, len(names), size=(5.4, 4.6))
    params = method_params(ds)
    last = int(ds.epoch[-1])
    for ax, name in zip(f.axes, names):
        labels = [lb for lb in f.palette.order if name == "output" or params[lb].get("method") in INDEXED_METHODS]
        err = strong_errors(ds, dim, name, [last]).sel(epoch=last)
        fits = {row["method"]: row["fit"] for row in rate_rows(ds.sel(method_label=labels), dim, [name], epochs=[last])}
        x = err[dim].values.astype(float)
        for label in labels:
            mean = err.sel(method_label=label).mean("seed").values
            fit = fits.get(label)
            text = f.palette.names[label] + ("" if fit is None else f": {fit.label('order')}")
            ax.plot(x, mean, "o-", **f.palette.style(label, text))
        if len(x):
            y0 = np.nanmax(err.mean("seed").isel({dim: 0}).values)
            ax.plot(x, y0 * (x / x[0]) ** THEORY[(dim, name)], "k--", lw=0.8, label="reference order -1/2")
        what = "parameters" if name == "params" else "output on a grid"
        _size_axes(ax, dim, x)
        ax.set_title(f"reported {what}, epoch {last}")
        ax.yaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels collide
    f.ax.set_ylabel(f"mean RMS difference to {dim} = {int(ds[dim][-1])}")
    return f.finish(f"strong error vs {dim} (coupled runs), {over_seeds(ds, 'mean')}", "below", offset=0.16,
                    legend_title=None, fontsize="small")


@styled
def plot_excess_risk(ds, dim, ax=None):
    """Excess risk of the final reported network (against the noise-free target,
    :func:`meanfield.convergence.excess_risk`) vs the swept ``dim``, median and quartiles over seeds,
    with the fitted order of the median and its 95% bootstrap interval; for M the Barron order -1.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` with a [sweep] over ``dim``, of a one-input regression problem
        with a known target (sine, square).
    dim : {"M", "N"}
        The swept dimension.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    f = Figure.single(ds, ax)
    ex = excess_risk(ds)
    other = [d for d in ex.dims if d not in (METHOD_DIM, dim, "seed")]
    ex = ex.median(other) if other else ex
    x = ds[dim].values.astype(float)
    for label in f.palette.order:
        _median_with_order(f.ax, x, ex.sel({METHOD_DIM: label}), **f.palette.style(label))
    if dim == "M":
        first = float(np.nanmax(ex.isel({dim: 0}).median("seed")))
        f.ax.plot(x, first * x[0] / x, "k--", lw=0.8, label="order -1 (Barron bound)")
    _size_axes(f.ax, dim, x)
    f.ax.set_ylabel(f"excess risk ({_quartiles(ds)})")
    return f.finish(f"\nexcess risk vs {dim}", legend_title=None, fontsize="small")


@styled
def plot_neuron_spread(ds, dim, ax=None):
    """Spread of the reported network's neurons (variance over neurons, mean over components) at the
    first and last epoch vs the swept ``dim``, median over seeds: the classical consensus averages
    neuron j across particles and collapses toward the mean neuron as N grows; a barycenter keeps
    the spread of the neurons' law.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` with a [sweep] over ``dim`` that recorded the reported network per
        epoch (``record_params = true``).
    dim : {"M", "N"}
        The swept dimension.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    f = Figure.single(ds, ax)
    x = ds[dim].values.astype(float)
    last = int(ds.epoch[-1])
    for label in f.palette.order:
        for epoch, style in ((0, "o--"), (last, "o-")):
            spread = neuron_spread(ds.sel(method_label=label), epoch).median("seed").values
            f.ax.plot(x, spread, style, **f.palette.style(label, f"{f.palette.names[label]}, epoch {epoch}"))
    _size_axes(f.ax, dim, x)
    f.ax.set_ylabel("variance over neurons")
    return f.finish(f"\nspread of the reported network's neurons vs {dim}", legend_title=None, fontsize="small")


@styled
def plot_variance_decay(ds, axes=None):
    r"""Proposition 3: W-over-W variance :math:`\frac12 \sum_n w_n W_2^2(\mu_n, \bar\mu)` vs epoch,
    :math:`w_n = 1/N` (solid) and :math:`w_n = \beta_n` (dashed), median over seeds, with the reference
    :math:`\mathrm{Var}^1 (1 - \lambda\,dt)^{2(k-1)}`.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` with an OT-CBO method (recorded ``w_variance``).
    axes : sequence of matplotlib Axes, optional
        One per method that records the variance (OT-CBO); a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    recorded = recorded_labels(ds, "w_variance")
    n = len(recorded)
    f = Figure.panels(ds, axes, n, ncols=min(4, n), size=(3.4, 2.9), legend=1.8)
    epoch = ds.epoch.values
    for ax, label in zip(f.axes, [lb for lb in f.palette.order if lb in recorded]):
        color = f.palette.colors[label]
        for var, style in (("w_variance", "-"), ("w_variance_weighted", "--")):
            med = runs(of_method(ds, var, label)).median("seed").values
            ax.plot(epoch[1:], med[1:], style, color=color, gid=label)
        start = float(runs(of_method(ds, "w_variance", label)).median("seed")[1])
        ax.plot(epoch[1:], start * decay_factor(ds, label) ** (epoch[1:] - 1), ":", color="k", lw=1)
        ax.set(yscale="log", title=f.palette.names[label])
        epoch_axis(ax, "step k" if ds.attrs.get("iterations_per_epoch") == 1 else "epoch")
    f.ax.set_ylabel(axis_label(ds, "w_variance"))
    keys = [Line2D([], [], color="0.3", ls="-"), Line2D([], [], color="0.3", ls="--"),
            Line2D([], [], color="k", ls=":", lw=1)]
    return f.finish(f"{axis_label(ds, 'w_variance')}, {over_seeds(ds, 'median')}", handles=keys,
                    labels=[r"$w_n = 1/N$", r"$w_n = \beta_n$ (Gibbs)", r"$\mathrm{Var}^1 (1-\lambda dt)^{2(k-1)}$"],
                    legend_title=r"$\frac{1}{2}\sum_n w_n W_2^2(\mu_n, \bar\mu)$")


@styled
def plot_variance_factor(ds, axes=None):
    r"""Finite CBO's ensemble variance: (a) median over seeds vs iteration for every CBO method with
    multiplicative noise, with the prediction :math:`\mathrm{Var}_0\, \rho^k` dashed; (b) the measured
    factor per iteration (median over seeds, 95% bootstrap interval) against the predicted :math:`\rho`
    (see :func:`meanfield.results.variance_factors`).

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` with finite-CBO methods, without a sweep or tasks.
    axes : sequence of two matplotlib Axes, optional
        Where to draw (a) and (b); a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    f = Figure.panels(ds, axes, 2, ncols=2, size=(4.4, 3.6), legend=2.2)
    ax, bx = f.axes
    colors = f.palette.colors
    rows = {r["label"]: r for r in variance_factors(ds)}
    labels = [lb for lb in f.palette.order if lb in rows]
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
        ax.plot(k, medians[label], **f.palette.style(label))
        with np.errstate(divide="ignore"):
            log_prediction = np.log(medians[label][0]) + k * np.log(r["predicted"])
        inside = (log_prediction >= np.log(low)) & (log_prediction <= np.log(high))
        ax.plot(k, np.where(inside, np.exp(np.where(inside, log_prediction, 0.0)), np.nan), "--",
                color=colors[label], lw=0.8)
        err = [[r["measured"] - r["low"]], [r["high"] - r["measured"]]] if np.isfinite(r["low"]) else None
        bx.errorbar([r["predicted"]], [r["measured"]], yerr=err, fmt="o", color=colors[label], gid=label)
    ax.set(yscale="log", xlabel="iteration k", ylabel=axis_label(ds, "variance"), ylim=(low, high))
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
    handles = [Line2D([], [], color=colors[lb]) for lb in labels] + [Line2D([], [], color="0.3", ls="--", lw=0.8)]
    return f.finish(f"ensemble variance, {over_seeds(ds, 'median')}", handles=handles,
                    labels=[f.palette.names[lb] for lb in labels] + [r"$\mathrm{Var}_0\,\rho^k$"], legend_title=None)
