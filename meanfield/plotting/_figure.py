"""What every figure shares: the style, the methods' colours, and :class:`Figure`, which makes the
panels and gives them the titles and legends.

The names here are the subpackage's own; :mod:`meanfield.plotting` re-exports the public ones.
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
from matplotlib.ticker import MaxNLocator

from meanfield.schema import METHOD_DIM, VARIABLES

STYLE = str(Path(__file__).parents[1] / "meanfield.mplstyle")

# One colour per method kind (the `methods.<label>.method` attribute): the hybrid of CBO (blue) and
# Adam (red) is purple, the OT variants are warm, the multi-task ones green and brown.
KIND_COLORS = {"cbo": "#1f77b4", "adam": "#d62728", "hybrid": "#9467bd", "multitask": "#2ca02c",
               "otcbo": "#ff7f0e", "multitask_otcbo": "#8c564b"}
# Colours for further labels of a kind already shown: the rest of tab10, then tab20's light shades,
# without grey, which marks the data and the references
_SPARE = [c for c in map(to_hex, plt.cm.tab10.colors + plt.cm.tab20.colors[1::2])
          if c not in ("#7f7f7f", "#c7c7c7")]


def styled(func):
    """Run ``func`` in the package style, so that axes given by the caller get it too."""
    @functools.wraps(func)
    def styled(*args, **kwargs):
        with plt.style.context(STYLE):
            return func(*args, **kwargs)
    return styled


def save(fig, path):
    """Write ``fig`` in the package style, then close it."""
    try:
        with plt.style.context(STYLE):
            fig.savefig(path)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------- colours

@dataclass(frozen=True)
class Palette:
    """Colours, legend names and legend order of a dataset's methods (see :func:`method_colors`)."""

    order: list        # labels in legend order
    colors: dict       # label -> hex colour
    names: dict        # label -> legend text
    title: str | None  # legend title: the kind and the ordering parameter

    def style(self, label, text=None):
        """Keywords of a method's line: its colour, its legend ``text`` (default its name), its label as gid."""
        return {"color": self.colors[label], "label": self.names[label] if text is None else text, "gid": label}


def method_params(ds):
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


def sequential(n):
    """``n`` colours in order on viridis (its light yellow end left out: it vanishes on white)."""
    return [to_hex(c) for c in plt.cm.viridis(np.linspace(0.0, 0.85, n))]


def palette(ds):
    """The :class:`Palette` of the methods of ``ds`` (see :func:`method_colors`)."""
    labels = [str(m) for m in ds[METHOD_DIM].values]
    params = method_params(ds)
    ordered = _ordered_parameter(params)
    if ordered is not None:  # e.g. the hybrid over gamma: a sequential map in the parameter's order
        key, values = ordered
        order = sorted(labels, key=values.get)
        return Palette(order, dict(zip(order, sequential(len(order)))),
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
    return Palette(labels, colors, {lb: lb for lb in labels}, None)


def method_colors(ds):
    """Colour of each method of a dataset, the same in every figure of the dataset.

    One kind differing in a single numeric parameter (the hybrid over gamma): viridis in that
    parameter's order. Otherwise each kind has a fixed colour (:data:`KIND_COLORS`), and further labels
    of a kind take colours that no kind in the dataset uses, so every label's colour is its own.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset of ``meanfield run`` (methods along ``method_label``, their settings in the attributes).

    Returns
    -------
    dict
        {method label: hex colour}.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset(coords={"method_label": ["cbo", "cbo_slow", "adam"]},
    ...                 attrs={"methods.cbo.method": "cbo", "methods.cbo_slow.method": "cbo",
    ...                        "methods.adam.method": "adam"})
    >>> method_colors(ds)
    {'cbo': '#1f77b4', 'cbo_slow': '#ff7f0e', 'adam': '#d62728'}
    """
    return dict(palette(ds).colors)


# ---------------------------------------------------------------------------------------- the figure

_PALETTE_TITLE = object()  # Figure.finish's default legend title: the palette's


def _axes(axes, n, ncols, size, sharey, legend):
    """A list of ``n`` axes: the given ones (an Axes or a sequence), or those of a new figure (see
    :meth:`Figure.panels`)."""
    if axes is not None:
        axes = list(np.ravel(axes))
        if len(axes) != n:
            raise ValueError(f"axes must hold {n} axes, got {len(axes)}")
        return axes
    ncols = ncols or n
    nrows = -(-n // ncols)
    _, grid = plt.subplots(nrows, ncols, figsize=(size[0] * ncols + legend, size[1] * nrows), squeeze=False,
                           sharey=sharey)
    for ax in grid.flat[n:]:
        ax.set_visible(False)
    return list(grid.flat[:n])


class Figure:
    """The figure a plot function draws for a dataset: its axes, the methods' :class:`Palette`, and
    :meth:`finish`, which titles it and gives it its legend.

    Made by :meth:`panels` (a title above all panels, one legend to their right) or :meth:`single`
    (the axes' own title and legend, so that the caller's axes can be a panel of a larger figure).
    """

    def __init__(self, ds, axes, shared):
        self.ds, self.axes, self.shared = ds, axes, shared
        self.fig = axes[0].figure
        self.palette = palette(ds)

    @classmethod
    def panels(cls, ds, axes, n, *, ncols=None, size=(4.2, 3.2), sharey=False, legend=0.0):
        """``n`` panels: the ``axes`` given (an Axes or a sequence), or a new figure of panels of ``size``
        inches, ``ncols`` to a row, and ``legend`` inches to their right for the legend."""
        return cls(ds, _axes(axes, n, ncols, size, sharey, legend), shared=True)

    @classmethod
    def single(cls, ds, ax, size=(5.0, 3.4)):
        """One axes: ``ax``, or those of a new figure of ``size`` inches."""
        return cls(ds, _axes(ax, 1, None, size, False, 0.0), shared=False)

    @property
    def ax(self):
        """The first (or only) axes."""
        return self.axes[0]

    def finish(self, title, legend="side", *, legend_title=_PALETTE_TITLE, handles=None, labels=None, offset=0.2,
               **kw):
        """Title the figure ``<study>: <title>`` and draw its legend, outside the axes so that it covers
        no data; returns the matplotlib figure.

        ``legend``: "side", right of the panels, one for all (``handles`` and ``labels``, default
        those of the first axes) or the single axes' own; "below", each panel's own, ``offset``
        (axes fractions) under it. ``legend_title`` defaults to the palette's; ``kw`` go to
        matplotlib's ``legend``.
        """
        text = f"{self.ds.attrs.get('study', '')}: {title}"
        if self.shared:
            self.fig.suptitle(text)
        else:
            self.ax.set_title(text)
        if legend_title is _PALETTE_TITLE:
            legend_title = self.palette.title
        if legend == "below":
            for ax in self.axes:
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -offset), title=legend_title, **kw)
        elif self.shared:  # constrained layout makes room, clear of the title
            if handles is None:
                handles, labels = self.ax.get_legend_handles_labels()
            self.fig.legend(handles, labels, loc="outside right center", title=legend_title, **kw)
        else:
            self.ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, title=legend_title, **kw)
        return self.fig


# ---------------------------------------------------------------------------------------- drawing

def axis_label(ds, var, units=None):
    """Axis label from the variable's ``long_name`` and ``units`` (the schema's when the file has none)."""
    spec = VARIABLES.get(var)
    attrs = ds[var].attrs if var in ds else {}
    name = attrs.get("long_name", spec.long_name if spec else var.replace("_", " "))
    units = units or attrs.get("units", spec.units if spec else "1")
    return name if units == "1" else f"{name} [{units}]"


def over_seeds(ds, what="median and quartiles"):
    """What a line (and band) shows: "median and quartiles over n seeds", or "one seed"."""
    n = ds.sizes["seed"]
    return "one seed" if n == 1 else f"{what} over {n} seeds"


def epoch_axis(ax, label="epoch"):
    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def of_method(ds, var, label):
    return ds[var].sel({METHOD_DIM: label})


def runs(da):
    """Median over every dimension but seed and epoch (tasks, other swept values)."""
    other = [d for d in da.dims if d not in ("seed", "epoch")]
    return da.median(other) if other else da


def band(ax, values, color, label, gid, x=None):
    """Median over seeds vs epoch (or vs ``x``, one value per epoch), with the quartile band when there
    are several seeds."""
    values = runs(values).transpose("seed", "epoch")
    with warnings.catch_warnings():  # epochs where every seed had diverged are NaN, and stay so
        warnings.simplefilter("ignore", RuntimeWarning)
        q1, med, q3 = np.nanquantile(values.values, [0.25, 0.5, 0.75], axis=0)
    x = values.epoch if x is None else x
    ax.plot(x, med, color=color, label=label, gid=gid)
    if values.sizes["seed"] > 1:
        ax.fill_between(x, q1, q3, color=color, alpha=0.25, lw=0)
