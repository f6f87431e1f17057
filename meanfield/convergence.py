r"""Convergence in N and M: strong errors of the reported network against a reference run, and their rates.

A coupled sweep (``[network] draws = "coupled"``, ``record_params = true``) runs every size with the
same draws particle by particle, so the difference between the reported network of a run with N
particles and that of the largest run with the same seed is the error of the interaction alone. For
an observable :math:`X` of the reported network at a fixed time,

.. math:: e_N = \big(\tfrac{1}{K}\sum_k |X^N_k - X^{ref}_k|^2\big)^{1/2}

over its K components, and the strong error is :math:`E[e_N]` over seeds. Two observables:

- ``"params"``: the reported parameters themselves, neuron by neuron (meaningful where neurons keep
  their index: finite CBO, the hybrid, multi-task CBO, Adam);
- ``"output"``: the reported network's output on a grid of inputs (any method, OT-CBO's barycenter
  included, whose atoms have no order).

Propagation of chaos predicts :math:`E[e_N] \sim N^{-1/2}`; the fitted order uses sizes up to a
fifth of the reference, or successive sizes (``reference="successive"``, no reference needed).
Coupled runs are nested: the N particles of the smaller run are the first N of the larger one, so
their fluctuations are shared, as for the means of nested samples, and
:math:`E|X^N - X^{N'}|^2 \propto N^{2p} - N'^{2p}` for an error of order p. Over the fitted sizes
that curve has a slightly steeper log-log slope than p (-0.54 for p = -1/2 on N = 10 ... 200
against 1000); the tables give it as the "expected" order, the one the interval is checked against.
"""

import numpy as np
import xarray as xr

from meanfield.rates import fit_rate, log_slope

__all__ = ["INDEXED_METHODS", "THEORY", "WEAK_VARIABLES", "analysis_epochs", "excess_risk", "weak_rows", "weak_table",
           "network_outputs", "neuron_spread", "observable", "rate_rows", "rate_table",
           "strong_errors"]

# methods whose reported network keeps neuron indices across runs (its parameters compare neuron by neuron)
INDEXED_METHODS = ("cbo", "hybrid", "multitask", "adam")
# the order theory predicts for each (swept dimension, observable)
THEORY = {("N", "params"): -0.5, ("N", "output"): -0.5, ("M", "output"): -0.5}


def analysis_epochs(ds):
    """The fixed times of the rate tables: a third of the run and its end (t = 1 and t = 3 for 30 steps of dt = 0.1)."""
    last = int(ds.epoch[-1])
    return sorted({max(1, last // 3), last})


def network_outputs(params, grid, activation="relu"):
    """Outputs on the inputs ``grid`` of one-input, one-output networks given by their parameters.

    ``params``: DataArray (..., neuron, component) with components w_1, b, c_1; neurons that are NaN
    (the padding of narrower networks) are left out, the mean runs over the others. Returns
    (..., x).
    """
    from meanfield.network import ACTIVATIONS

    w, b, c = (params.sel(component=k) for k in ("w_1", "b", "c_1"))
    x = xr.DataArray(np.asarray(grid, dtype=float), dims="x")
    valid = w.notnull()
    z = (w * x + b).transpose(..., "x")
    h = xr.apply_ufunc(lambda a: ACTIVATIONS[activation][0](np.array(a)), z)
    return (c * h).where(valid).sum("neuron") / valid.sum("neuron")


def observable(ds, name, epochs=None, grid=None):
    """The observable ``name`` ("params" or "output") of the reported network at ``epochs``."""
    if "reported_params" not in ds:
        raise ValueError("the dataset has no reported_params: run the study with record_params = true")
    params = ds.reported_params.sel(epoch=epochs if epochs is not None else analysis_epochs(ds))
    if name == "params":
        return params
    if name == "output":
        grid = np.linspace(0.0, 1.0, 101) if grid is None else grid
        return network_outputs(params, grid, ds.attrs.get("network.activation", "relu"))
    raise ValueError(f"observable must be 'params' or 'output', got {name!r}")


def strong_errors(ds, dim, name, epochs=None, reference="largest", grid=None):
    """e (method_label, dim, seed, epoch): RMS difference of the observable to the reference run of the
    same seed, the largest ``dim`` (``reference="largest"``, every smaller size) or the next larger
    one (``"successive"``, every size but the largest)."""
    x = observable(ds, name, epochs, grid)
    components = [d for d in x.dims if d in ("neuron", "component", "x", "task")]
    smaller = x.isel({dim: slice(0, -1)})
    if reference == "largest":
        other = x.isel({dim: -1}, drop=True)
    elif reference == "successive":
        other = x.isel({dim: slice(1, None)}).assign_coords({dim: smaller[dim]})
    else:
        raise ValueError(f"reference must be 'largest' or 'successive', got {reference!r}")
    return np.sqrt(((smaller - other) ** 2).mean(components))


def _fitted(sizes, largest, max_fraction):
    """Indices of the ``sizes`` (those below the reference ``largest``) up to ``max_fraction`` of it,
    at least the first two: farther from the reference, its own error matters less."""
    keep = np.flatnonzero(np.asarray(sizes) <= max_fraction * largest)
    return keep if keep.size >= 2 else np.arange(min(2, len(sizes)))


def rate_rows(ds, dim, observables=None, reference="largest", epochs=None, grid=None, max_fraction=0.2):
    """One row per (method, observable, epoch): the fitted order of the strong error in ``dim`` with its
    bootstrap interval, the theory's order and the effective sample size at the largest size.

    Sizes up to ``max_fraction`` of the reference enter the fit when ``reference="largest"`` (at least
    two); every size with ``"successive"``. ``observables``: by default those the theory has an
    order for in ``dim`` (:data:`THEORY`).
    """
    rows = []
    epochs = analysis_epochs(ds) if epochs is None else epochs
    if observables is None:  # those with a prediction: across widths, neuron j is no common observable
        observables = [name for name in ("params", "output") if (dim, name) in THEORY]
    largest = float(ds[dim][-1])
    for name in observables:
        err = strong_errors(ds, dim, name, epochs, reference, grid)
        if name == "params":  # the atoms of a barycenter have no order: only indexed neurons compare
            err = err.sel(method_label=[lb for lb in err.method_label.values
                                        if ds.attrs.get(f"methods.{lb}.method") in INDEXED_METHODS])
        if reference == "largest":
            err = err.isel({dim: _fitted(err[dim].values, largest, max_fraction)})
        n = err[dim].values.astype(float)
        theory, expected = THEORY.get((dim, name)), None
        if theory is not None:  # the order of (n^2p - n'^2p)^(1/2) over the fitted sizes: nested runs
            other = np.full_like(n, largest) if reference == "largest" else ds[dim].values[1:].astype(float)
            expected = float(log_slope(n, np.sqrt(n ** (2 * theory) - other ** (2 * theory)))[0])
        for label in err.method_label.values:
            for epoch in epochs:
                e = err.sel(method_label=label, epoch=epoch).transpose("seed", dim).values
                if not np.all(np.isfinite(e)).any() or np.nanmax(e) <= 0:
                    continue
                fit = fit_rate(n, e, aggregate="mean")
                ess = np.nan
                if "effective_sample_size" in ds:
                    ess = float(ds.effective_sample_size.sel(method_label=label, epoch=epoch)
                                .isel({dim: -1}).median())
                rows.append({"method": str(label), "observable": name, "epoch": int(epoch), "fit": fit,
                             "theory": theory, "expected": expected, "ess_largest": ess})
    return rows


# averaged observables whose bias in N theory puts at order -1: the consensus risk, the ensemble variance
WEAK_VARIABLES = ("train_risk", "variance")


def weak_rows(ds, dim, variables=WEAK_VARIABLES, epochs=None, max_fraction=0.2):
    """One row per (method, variable, epoch): the order of the bias ``|E[X^N - X^ref]|`` of an averaged
    observable against the largest ``dim`` (sizes up to ``max_fraction`` of it), with its bootstrap
    interval and whether the bias is resolved: the mean difference exceeds two standard errors over
    seeds at every fitted size (else the fit measures noise and the row says so)."""
    epochs = analysis_epochs(ds) if epochs is None else epochs
    sizes = ds[dim].values
    keep = _fitted(sizes[:-1], float(sizes[-1]), max_fraction)
    rows = []
    for var in variables:
        if var not in ds:
            continue
        for label in ds.method_label.values:
            for epoch in epochs:
                x = ds[var].sel(method_label=label, epoch=epoch)
                other = [d for d in x.dims if d not in (dim, "seed")]
                x = x.mean(other) if other else x
                diff = (x.isel({dim: keep}) - x.isel({dim: -1})).transpose("seed", dim).values
                diff = diff[np.all(np.isfinite(diff), axis=1)]
                if diff.shape[0] < 2 or not np.any(diff):
                    continue
                mean, se = diff.mean(axis=0), diff.std(axis=0, ddof=1) / np.sqrt(diff.shape[0])
                fit = fit_rate(sizes[keep], diff, aggregate="abs_mean")
                rows.append({"method": str(label), "variable": var, "epoch": int(epoch), "fit": fit,
                             "resolved": bool(np.all(np.abs(mean) > 2 * se)), "bias_smallest": float(mean[0])})
    return rows


def weak_table(ds, dim):
    """Markdown table of :func:`weak_rows` (theory's order: -1)."""
    head = ["method", "variable", "epoch", f"bias at {dim} = {int(ds[dim][0])}", "fitted order [95% interval]",
            "resolved (> 2 standard errors at every size)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in weak_rows(ds, dim):
        fit = row["fit"]
        lines.append(f"| {row['method']} | {row['variable']} | {row['epoch']} | {row['bias_smallest']:.3g} | "
                     f"{fit.slope:.2f} [{fit.low:.2f}, {fit.high:.2f}] | {'yes' if row['resolved'] else 'no: noise'} |")
    return "\n".join(lines) + "\n"


def neuron_spread(ds, epoch=0):
    """Variance over neurons of the reported network's parameters (mean over components), per cell.

    The classical consensus of finite CBO averages neuron j of every particle, whatever those neurons
    represent: at alpha = 0 its neurons tend to the mean neuron as N grows (spread -> 0), while a
    barycenter keeps the spread of the neurons' law.
    """
    params = ds.reported_params.sel(epoch=epoch)
    return params.var("neuron").mean("component")


def has_target(ds):
    """Whether the dataset's problem has a known noise-free target (a one-input regression: sine, square)."""
    return ds.attrs.get("problem.name") in ("sine", "square") and "parameters_json" in ds.attrs


def excess_risk(ds, n_samples=20_000, seed=12345):
    r"""Excess risk :math:`E_x |g(x) - f(x)|^2` of the final reported network of every cell against the
    noise-free target f of the study's one-input regression problem (sine, square).

    The training risk of a problem with noisy targets has the noise variance as its floor
    (1e-4 for ``noise_std = 0.01``), which hides how the approximation error falls with M; this is
    the error without it, a Monte Carlo mean over ``n_samples`` fresh inputs drawn from the
    problem's input law. Returns (method_label, [M, N,] seed).
    """
    import json

    from meanfield.problems import make_problem

    problem = {k: v for k, v in json.loads(ds.attrs["parameters_json"])["problem"].items()}
    name = problem.pop("name")
    if name not in ("sine", "square"):
        raise ValueError(f"excess_risk needs a one-input regression problem (sine, square), got {name!r}")
    shape = {k: v for k, v in problem.items() if k not in ("n_train", "n_test", "noise_std", "seed")}  # frequency
    clean = make_problem(name, n_train=1, n_test=n_samples, noise_std=0.0, seed=seed, **shape)
    params = ds.final_params
    cells = params.stack(cell=[d for d in params.dims if d not in ("neuron", "component")])
    activation = ds.attrs.get("network.activation", "relu")
    out = np.empty(cells.sizes["cell"])
    for k in range(out.size):  # one cell at a time: (neurons x samples) stays small
        g = network_outputs(cells.isel(cell=k), clean.x_test[:, 0], activation).values
        out[k] = np.mean((g - clean.y_test) ** 2)
    return xr.DataArray(out, dims="cell", coords={"cell": cells.cell}).unstack("cell")


def rate_table(ds, dim, reference="largest"):
    """Markdown table of :func:`rate_rows`, with a verdict per row."""
    rows = rate_rows(ds, dim, reference=reference)
    head = ["method", "observable", "epoch", "fitted order [95% interval]", "theory", "expected (nested runs)",
            "verdict", f"N_eff at the largest {dim}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        fit, theory, expected = row["fit"], row["theory"], row["expected"]
        if expected is None or not np.isfinite(fit.low):
            verdict = "-"
        elif fit.contains(expected):
            verdict = "consistent"
        else:
            verdict = "faster" if fit.high < expected else "slower"
        ess = row["ess_largest"]
        cells = [row["method"], row["observable"], str(row["epoch"]),
                 f"{fit.slope:.2f} [{fit.low:.2f}, {fit.high:.2f}]",
                 "-" if theory is None else f"{theory:g}", "-" if expected is None else f"{expected:.2f}", verdict,
                 "-" if not np.isfinite(ess) else f"{ess:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
