"""Figures from saved datasets, in the package's one style (``meanfield.mplstyle``).

Every ``plot_*`` function draws on the axes it is given (``ax``, or ``axes`` for a figure of several
panels), makes a figure of its own otherwise, and returns the figure it drew on; only
:func:`plot_dataset` writes files. A method keeps its colour in every figure of a dataset
(:func:`method_colors`), and each line it draws carries its label as ``gid``.

The figures of training runs are drawn in ``meanfield.plotting.training``, those of sweeps and of the
ensemble variance in ``meanfield.plotting.sweeps``, and ``meanfield.plotting.dataset`` chooses a
dataset's figures; all of them are made by one figure helper, with one style and one palette.
"""

from meanfield.plotting._figure import KIND_COLORS, STYLE, method_colors
from meanfield.plotting.dataset import dataset_figures, plot_dataset
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

__all__ = ["STYLE", "KIND_COLORS", "method_colors", "plot_risk", "plot_risk_vs_cost", "plot_fits", "plot_task_risk",
           "plot_task_fits", "plot_instability", "plot_accuracy", "plot_sweep", "plot_rate", "plot_strong_error",
           "plot_excess_risk", "plot_neuron_spread", "plot_variance_decay", "plot_variance_factor",
           "dataset_figures", "plot_dataset"]
