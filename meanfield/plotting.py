"""Figures from saved datasets (compute and plot are separate): one style for the project."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from meanfield.network import TwoLayerNetwork  # noqa: E402
from meanfield.problems import make_problem  # noqa: E402
from meanfield.results import (SWEEP_DIMS, fit_slope, instability, last_recorded, summary_table,  # noqa: E402
                               sweep_finals)

__all__ = ["plot_risk", "plot_fits", "plot_task_risk", "plot_task_fits", "plot_instability", "plot_accuracy",
           "plot_dataset"]

STYLE = {"figure.dpi": 150, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
         "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False}
COLORS = {"cbo": "C0", "adam": "C3"}


def _color(label, i):
    return COLORS.get(label, f"C{i + 1}")


def plot_risk(ds, path):
    """Paper Fig. 2: median over seeds of the train (and test) risk vs epoch, quartile band, log scale."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
        for ax, var, title in zip(axes, ("train_risk", "test_risk"), ("training set", "held-out test set")):
            for i, label in enumerate(ds.method.values):
                values = ds[var].sel({"method": label})
                _band(ax, values, ds.epoch, _color(str(label), i), f"{label} (median of {ds.sizes['seed']})")
            ax.set_title(title)
        loss = "cross-entropy" if "test_accuracy" in ds else "mean squared error"
        _finish_log_panels(fig, axes, path, rf"risk $R(\theta)$ ({loss})",
                           f"{ds.attrs['study']}: reported network's risk, quartile band over seeds")


def _finish_log_panels(fig, axes, path, ylabel, title):
    """Log risk axes over epochs, one legend to the right of the panels, saved to ``path``."""
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
    axes[0].set_ylabel(ylabel)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.savefig(path)
    plt.close(fig)


def _network_of(ds):
    config = json.loads(ds.attrs["config_json"])
    problem = make_problem(**config["problem"])
    network = TwoLayerNetwork(problem.n_inputs, problem.n_outputs, ds.sizes["neuron"],
                              activation=config["network"].get("activation", "relu"), loss=problem.loss)
    return problem, network


def _median_seed(ds, label, task=None):
    risk = ds.train_risk.sel({"method": label})
    final = last_recorded(risk if task is None else risk.sel(task=task)).values
    seed = int(np.argsort(final)[len(final) // 2])
    return seed, final[seed]


def plot_fits(ds, path):
    """Paper Fig. 3: the network of the median seed (by final train risk) of each method over the data."""
    problem, network = _network_of(ds)
    grid = np.linspace(0.0, 1.0, 400)[:, None]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        sub = np.random.default_rng(0).choice(problem.n_train, size=min(400, problem.n_train), replace=False)
        ax.scatter(problem.x_train[sub, 0], problem.y_train[sub], s=3, color="0.6", label="training data")
        for i, label in enumerate(ds.method.values):
            seed, risk = _median_seed(ds, label)
            theta = ds.final_params.sel({"method": label}).isel(seed=seed).values[None]
            ax.plot(grid[:, 0], network.forward(theta, grid)[0, :, 0], color=_color(str(label), i), lw=1.5,
                    label=f"{label} (median seed, risk {risk:.2e})")
        ax.set_xlabel("x")
        ax.set_ylabel("g(x)")
        ax.legend(loc="lower left", fontsize=7)
        ax.set_title(f"{ds.attrs['study']}: fits after {int(ds.epoch[-1])} epochs")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def _band(ax, values, epoch, color, label):
    q1, med, q3 = (values.quantile(q, dim="seed", skipna=True) for q in (0.25, 0.5, 0.75))
    ax.plot(epoch, med, color=color, label=label)
    ax.fill_between(epoch, q1, q3, color=color, alpha=0.25, lw=0)


def plot_task_risk(ds, path):
    """Paper Fig. 5: median and minimum over tasks of the train risk (median over seeds, quartile band)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
        for ax, reduce, title in zip(axes, ("median", "min"), ("median over tasks", "minimum over tasks")):
            for i, label in enumerate(ds.method.values):
                values = getattr(ds.train_risk.sel({"method": label}), reduce)("task")
                _band(ax, values, ds.epoch, _color(str(label), i), f"{label} ({int(ds.state_bytes.sel({'method': label}).max())} B of state)")
            ax.set_title(title)
        _finish_log_panels(fig, axes, path, r"train risk $R_p$ (mean squared error)",
                           f"{ds.attrs['study']}: {ds.sizes['task']} tasks, quartile band over {ds.sizes['seed']} seeds")


def plot_task_fits(ds, path):
    """Paper Fig. 6: each task's consensus network (median seed) over its data, five tasks."""
    problem, network = _network_of(ds)
    tasks = np.unique(np.linspace(1, ds.sizes["task"], 5).round().astype(int))
    grid = np.linspace(0.0, 1.0, 300)[:, None]
    sub = np.random.default_rng(0).choice(problem.n_train, size=min(200, problem.n_train), replace=False)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, ds.sizes["method"], figsize=(4.2 * ds.sizes["method"], 3.4), squeeze=False)
        for ax, label in zip(axes[0], ds.method.values):
            for j, task in enumerate(tasks):
                seed, risk = _median_seed(ds, label, task)
                theta = ds.final_params.sel({"method": label, "task": task}).isel(seed=seed).values[None]
                ax.scatter(problem.x_train[sub, 0], problem.y_train[sub, task - 1], s=2, color="0.7")
                ax.plot(grid[:, 0], network.forward(theta, grid)[0, :, 0], color=f"C{j}", lw=1.3,
                        label=f"task {task} (risk {risk:.1e})")
            ax.set_xlabel("x")
            ax.set_ylabel("g(x)")
            ax.set_title(f"{label}")
            ax.legend(fontsize=6, loc="lower left")
        fig.suptitle(f"{ds.attrs['study']}: fits of five tasks after {int(ds.epoch[-1])} epochs")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def plot_instability(ds, path, factor=10.0):
    """Fraction of runs whose train risk has risen by more than ``factor`` above its running minimum."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for i, label in enumerate(ds.method.values):
            risk = ds.train_risk.sel({"method": label}).transpose("seed", "epoch")
            ax.plot(ds.epoch, instability(risk, factor).mean(axis=0), color=_color(str(label), i), label=str(label))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"fraction of runs (of {ds.sizes['seed']})")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{ds.attrs['study']}: risk > {factor:g}x its running minimum", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def plot_accuracy(ds, path):
    """Test accuracy of the reported network, median over seeds with quartile band."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for i, label in enumerate(ds.method.values):
            _band(ax, 100 * ds.test_accuracy.sel({"method": label}), ds.epoch, _color(str(label), i), str(label))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{ds.attrs['study']}: held-out accuracy ({ds.sizes['seed']} seeds)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def plot_sweep(ds, dim, path, var="train_risk"):
    """Paper Fig. 8: ``var`` vs epoch for every value of the swept ``dim``, one panel per method."""
    methods = ds.method.values
    values = ds[dim].values
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(values)))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.3), squeeze=False, sharey=True)
        for ax, m in zip(axes[0], methods):
            for color, v in zip(colors, values):
                sub = ds[var].sel({"method": m, dim: v})
                other = [d for d in sub.dims if d not in ("seed", "epoch")]
                _band(ax, sub.median(other) if other else sub, ds.epoch, color, f"{dim} = {int(v)}")
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_title(str(m))
        axes[0][0].set_ylabel(var.replace("_", " "))
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{ds.attrs['study']}: median over {ds.sizes['seed']} seeds, quartile band")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def plot_rate(ds, dim, path):
    """Final train risk vs the swept ``dim`` on log-log axes with the fitted slope; for M the Barron
    reference slope -1 (risk ~ 1/M, eq. 9)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        x = ds[dim].values.astype(float)
        for i, m in enumerate(ds.method.values):
            final = sweep_finals(ds, m, dim)
            q1, med, q3 = (final.quantile(q, dim="seed").values for q in (0.25, 0.5, 0.75))
            ax.errorbar(x, med, yerr=[med - q1, q3 - med], fmt="o-", color=_color(str(m), i), capsize=3,
                        label=f"{m}: fitted slope {fit_slope(x, med):.2f}")
            if dim == "M" and i == 0 and np.isfinite(med[0]):
                ax.plot(x, med[0] * x[0] / x, "k--", lw=0.8, label="reference slope -1 (Barron)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel({"M": "network width M", "N": "number of particles N"}[dim])
        ax.set_ylabel("final train risk (median, quartiles)")
        ax.set_title(f"{ds.attrs['study']}: final risk vs {dim}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def plot_variance_decay(ds, path):
    """W-over-W variance (unweighted, solid; beta-weighted, dashed) vs epoch per method, median over
    seeds, with the Proposition 3 reference Var^1 (1 - lambda dt)^(2 k) from epoch 1."""
    from meanfield.results import _decay_factor

    methods = ds.method.values
    with plt.rc_context(STYLE):
        ncols = min(4, len(methods))
        nrows = -(-len(methods) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows), squeeze=False)
        for ax in axes.flat[len(methods):]:
            ax.set_visible(False)
        for ax, m in zip(axes.flat, methods):
            sub = ds.sel({"method": m})
            for var, style, name in (("w_variance", "-", "unweighted"), ("w_variance_weighted", "--", r"$\beta$-weighted")):
                med = sub[var].median("seed")
                ax.plot(ds.epoch[1:], med[1:], style, color="C0" if style == "-" else "C1", label=name)
            start = float(sub.w_variance.median("seed")[1])
            k = ds.epoch.values[1:] - 1
            ax.plot(ds.epoch[1:], start * _decay_factor(ds, str(m)) ** k, ":", color="k", lw=1,
                    label=r"$(1-\lambda dt)^{2k}$")
            ax.set_yscale("log")
            ax.set_xlabel("step k")
            ax.set_title(str(m), fontsize=8)
        for row in axes:
            row[0].set_ylabel(r"$\frac{1}{2}\sum_n w_n W_2^2(\mu_n, \bar\mu)$")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{ds.attrs['study']}: W-over-W variance, median over {ds.sizes['seed']} seeds "
                     r"($w_n = 1/N$ or $\beta_n$)")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def plot_dataset(ds, out_dir, name=None):
    """All figures a study's dataset supports, and its summary table, named ``<name>_<figure>``
    (default: the study's name); returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or ds.attrs["study"]
    regression_1d = ds.attrs.get("problem.name") in ("sine", "square", "shifted_sines")
    swept = [dim for dim in SWEEP_DIMS if dim in ds.dims]
    jobs = []
    if swept:
        for dim in swept:
            jobs.append((f"risk_vs_{dim}", lambda d, p, dim=dim: plot_sweep(d, dim, p)))
            if "w_variance" in ds:
                jobs.append((f"variance_vs_{dim}", lambda d, p, dim=dim: plot_sweep(d, dim, p, "w_variance")))
            if ds.sizes[dim] > 1:
                jobs.append((f"rate_{dim}", lambda d, p, dim=dim: plot_rate(d, dim, p)))
    elif "task" in ds.dims:
        jobs += [("risk", plot_task_risk), ("fits", plot_task_fits)]
    else:
        jobs += [("risk", plot_risk), ("instability", plot_instability)]
        if regression_1d:
            jobs.append(("fits", plot_fits))
        if "w_variance" in ds:
            jobs.append(("variance", plot_variance_decay))
    if "test_accuracy" in ds and not swept:
        jobs.append(("accuracy", plot_accuracy))
    paths = []
    for suffix, plot in jobs:
        paths.append(out_dir / f"{name}_{suffix}.png")
        plot(ds, paths[-1])
    paths.append(out_dir / f"{name}_summary.md")
    paths[-1].write_text(summary_table(ds))
    return paths
