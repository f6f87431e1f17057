"""Figures from saved datasets (compute and plot are separate): one style for the project."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from meanfield.network import TwoLayerNetwork  # noqa: E402
from meanfield.problems import make_problem  # noqa: E402
from meanfield.study import last_recorded  # noqa: E402

__all__ = ["plot_risk", "plot_fits", "plot_dataset"]

STYLE = {"figure.dpi": 150, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
         "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False}
COLORS = {"cbo": "C0", "adam": "C3"}


def _color(label, i):
    return COLORS.get(label, f"C{i + 1}")


def plot_risk(ds, path):
    """Paper Fig. 2: median over seeds of the train (and test) risk vs epoch, quartile band, log scale."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
        for ax, var, title in zip(axes, ("train_risk", "test_risk"), ("training set", "held-out test set")):
            for i, label in enumerate(ds.method.values):
                values = ds[var].sel({"method": label})
                q1, med, q3 = (values.quantile(q, dim="seed", skipna=True) for q in (0.25, 0.5, 0.75))
                color = _color(str(label), i)
                ax.plot(ds.epoch, med, color=color, label=f"{label} (median of {ds.sizes['seed']})")
                ax.fill_between(ds.epoch, q1, q3, color=color, alpha=0.25, lw=0)
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_title(title)
        axes[0].set_ylabel(r"risk $R(\theta)$ (mean squared error)")
        axes[0].legend()
        fig.suptitle(f"{ds.attrs['study']}: consensus network risk, quartile band over seeds")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def plot_fits(ds, path):
    """Paper Fig. 3: the network of the median seed (by final train risk) of each method over the data."""
    config = json.loads(ds.attrs["config_json"])
    problem = make_problem(**config["problem"])
    network = TwoLayerNetwork(problem.n_inputs, problem.n_outputs, ds.sizes["neuron"],
                              activation=config["network"].get("activation", "relu"), loss=problem.loss)
    grid = np.linspace(0.0, 1.0, 400)[:, None]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        sub = np.random.default_rng(0).choice(problem.n_train, size=min(400, problem.n_train), replace=False)
        ax.scatter(problem.x_train[sub, 0], problem.y_train[sub], s=3, color="0.6", label="training data")
        for i, label in enumerate(ds.method.values):
            final = last_recorded(ds.train_risk.sel({"method": label})).values
            seed = int(np.argsort(final)[len(final) // 2])
            theta = ds.final_params.sel({"method": label}).isel(seed=seed).values[None]
            ax.plot(grid[:, 0], network.forward(theta, grid)[0, :, 0], color=_color(str(label), i), lw=1.5,
                    label=f"{label} (median seed, risk {final[seed]:.2e})")
        ax.set_xlabel("x")
        ax.set_ylabel("g(x)")
        ax.legend(loc="lower left", fontsize=7)
        ax.set_title(f"{ds.attrs['study']}: fits after {int(ds.epoch[-1])} epochs")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def plot_dataset(ds, out_dir):
    """All figures a study's dataset supports; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = ds.attrs["study"]
    paths = [out_dir / f"{name}_risk.png"]
    plot_risk(ds, paths[0])
    if ds.attrs.get("problem.name") in ("sine", "square"):
        paths.append(out_dir / f"{name}_fits.png")
        plot_fits(ds, paths[1])
    return paths
