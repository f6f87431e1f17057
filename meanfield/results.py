"""Reading results: final values of trajectories, instability events, the per-study summary table."""

import numpy as np
import xarray as xr

from meanfield.convergence import has_target
from meanfield.rates import fit_rate
from meanfield.schema import METHOD_DIM, VARIABLES

__all__ = ["last_recorded", "sweep_finals", "instability", "summary_table", "cells_of", "decay_violations",
           "compare_datasets",
           "recorded_labels", "plural", "variance_factors", "variance_factor_table", "decay_factor", "method_param"]


def last_recorded(da):
    """Value at the last finite epoch of each trajectory (a diverged run keeps its last good value)."""
    values = np.moveaxis(da.values, da.get_axis_num("epoch"), -1)
    finite = np.isfinite(values)
    last = values.shape[-1] - 1 - np.argmax(finite[..., ::-1], axis=-1)
    out = np.take_along_axis(values, last[..., None], axis=-1)[..., 0]
    return xr.DataArray(np.where(finite.any(-1), out, np.nan), dims=[d for d in da.dims if d != "epoch"],
                        coords={d: da[d].values for d in da.dims if d != "epoch"})


def sweep_finals(ds, label, dim):
    """Final train risk of method ``label``, dims (``dim``, seed): median over any other sweep dimension."""
    final = last_recorded(ds.train_risk.sel({METHOD_DIM: label}))
    other = [d for d in final.dims if d not in ("seed", dim)]
    return (final.median(other) if other else final).transpose(dim, "seed")


def instability(risk, factor=10.0):
    """True from the first epoch where the risk exceeded ``factor`` x its running minimum (NaN: diverged)."""
    values = risk.values
    running_min = np.fmin.accumulate(np.where(np.isnan(values), np.inf, values), axis=-1)
    event = (values > factor * running_min) | np.isnan(values)
    return np.logical_or.accumulate(event, axis=-1)


SWEEP_DIMS = ("M", "N")


def decay_violations(variance, factor, rtol=1e-9):
    """How often and by how much Var^{k+1} <= factor Var^k fails, over steps k >= 1 and seeds.

    ``variance`` has epochs on its last axis; ``factor`` is (1 - lambda dt)^2 per recorded epoch.
    Returns (fraction of steps with Var^{k+1} > factor Var^k (1 + rtol), largest Var^{k+1} /
    (factor Var^k) - 1 over all steps).
    """
    v = np.moveaxis(np.asarray(variance), -1, 0)[1:]  # epoch 0 has uniform weights: skip it
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = v[1:] / (factor * v[:-1]) - 1
    ok = np.isfinite(excess)
    if not ok.any():
        return np.nan, np.nan
    return float((excess[ok] > rtol).mean()), float(excess[ok].max())


def cells_of(ds):
    """(label, selection) for every method and sweep point of a dataset, in order."""
    points = [{METHOD_DIM: m} for m in ds[METHOD_DIM].values]
    for dim in SWEEP_DIMS:
        if dim in ds.dims:
            points = [{**p, dim: v} for p in points for v in ds[dim].values]
    return [(" ".join([str(p[METHOD_DIM])] + [f"{d}={int(p[d])}" for d in SWEEP_DIMS if d in p]), p) for p in points]


def recorded_labels(ds, var):
    """Labels of the methods with at least one recorded value of ``var`` (float: not NaN; counter: not -1).

    A study mixing CBO and OT-CBO methods holds the OT-CBO variables for all of them, missing for CBO.
    """
    if var not in ds:
        return []
    da = ds[var]
    ok = da >= 0 if da.dtype.kind in "iu" else da.notnull()
    ok = ok.any([d for d in da.dims if d != METHOD_DIM])
    return [str(m) for m, keep in zip(ds[METHOD_DIM].values, ok.values) if keep]


def plural(n, noun):
    """``n`` and ``noun``, in the plural unless ``n`` is 1.

    >>> plural(1, "seed"), plural(3, "seed")
    ('1 seed', '3 seeds')
    """
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# parameters renamed since datasets were first written: new name -> old name
_LEGACY_NAMES = {"drift_rate": "drift", "relative_reg": "reg"}


def method_param(ds, label, name):
    """Setting ``name`` of method ``label`` from the dataset's attributes ``methods.<label>.<name>``,
    under its former name in datasets written before the rename (``drift`` for ``drift_rate``, ``reg``
    for ``relative_reg``)."""
    key = f"methods.{label}.{name}"
    if key not in ds.attrs and name in _LEGACY_NAMES:
        key = f"methods.{label}.{_LEGACY_NAMES[name]}"
    return ds.attrs[key]


def decay_factor(ds, label):
    """(1 - lambda dt)^(2 k) per recorded epoch, k = iterations per epoch, from the method's effective
    parameters ``methods.<label>.dt`` and ``methods.<label>.drift_rate``."""
    dt, drift_rate = (float(method_param(ds, label, key)) for key in ("dt", "drift_rate"))
    return (1 - drift_rate * dt) ** (2 * int(ds.attrs["iterations_per_epoch"]))


def variance_factors(ds, fit_epochs=10, floor=1e-20, confidence=0.95):
    r"""Per-iteration factor of finite CBO's ensemble variance, predicted and measured, and whether the
    ensemble collapsed, per method.

    The prediction is the noise's ``step_variance_factor`` :math:`\rho`, e.g. :math:`(1 - \lambda dt)^2
    + \sigma^2 dt` for anisotropic noise: the mean factor of :math:`|\theta_n - V|^2` in one step about
    a fixed consensus. It decides the discrete-time condition :math:`\rho < 1`; the continuous-time one
    is the noise's ``decay_bound`` (:math:`\sigma^2 < 2\lambda`). Both concern the mean square, the
    limit of many particles. The measurement is, per seed, :math:`\exp` of the least-squares slope of
    :math:`\log \mathrm{Var}` against the iteration over the first ``fit_epochs`` epochs (fewer if the
    variance leaves :math:`[\text{floor}\,\mathrm{Var}_0, \mathrm{Var}_0 / \text{floor}]` or stops
    being finite before), where a fixed consensus is closest to the truth; the median over seeds with a
    bootstrap interval (percentile, seeds resampled). A seed has collapsed when its variance falls
    below ``floor`` times its initial value: the epoch where it first does is reported.

    Returns
    -------
    list of dict, one per method of kind "cbo" with multiplicative noise: label, noise, sigma_squared,
    predicted, continuous and discrete ("holds", "fails" or "borderline": equality up to rounding),
    measured, low, high (the fitted factor), collapsed (seeds), collapse_epoch (median over the
    collapsed seeds), seeds, final_variance (median over seeds of the last recorded value).
    """
    from scipy.stats import bootstrap

    from meanfield.noise import make_noise

    per_epoch = int(ds.attrs["iterations_per_epoch"])
    rows = []
    for label in map(str, ds[METHOD_DIM].values):
        noise = ds.attrs.get(f"methods.{label}.noise")
        if ds.attrs.get(f"methods.{label}.method") != "cbo" or noise not in ("anisotropic", "isotropic"):
            continue
        strategy = make_noise(noise)
        dt, drift_rate, sigma_squared = (float(method_param(ds, label, key))
                                         for key in ("dt", "drift_rate", "sigma_squared"))
        dim = ds.sizes["neuron"] * ds.sizes["component"]
        predicted = strategy.step_variance_factor(dt, drift_rate, sigma_squared, dim)
        variance = ds.variance.sel({METHOD_DIM: label}).transpose("seed", "epoch").values
        factors, collapse = [], []
        for v in variance:
            inside = np.isfinite(v) & (v > floor * v[0]) & (v < v[0] / floor)
            n = min(fit_epochs + 1, len(v) if inside.all() else int(np.argmin(inside)))
            if n >= 3:
                factors.append(np.exp(np.polyfit(np.arange(n) * per_epoch, np.log(v[:n]), 1)[0]))
            below = np.flatnonzero(v < floor * v[0])
            if below.size:
                collapse.append(int(below[0]))
        factors = np.array(factors)
        low = high = np.nan
        if len(factors) >= 2 and np.ptp(factors) > 0:
            ci = bootstrap((factors,), np.median, confidence_level=confidence, method="percentile",
                           n_resamples=2000, random_state=0).confidence_interval
            low, high = ci.low, ci.high
        rows.append({"label": label, "noise": noise, "sigma_squared": sigma_squared, "predicted": predicted,
                     "continuous": _condition(strategy.decay_bound(drift_rate, dim) - sigma_squared),
                     "discrete": _condition(1.0 - predicted),
                     "measured": float(np.median(factors)) if len(factors) else np.nan, "low": low, "high": high,
                     "collapsed": len(collapse), "seeds": len(variance),
                     "collapse_epoch": float(np.median(collapse)) if collapse else np.nan,
                     "final_variance": float(np.nanmedian(last_recorded(ds.variance.sel({METHOD_DIM: label}))))})
    return rows


def _condition(margin, rtol=1e-12):
    """ "holds" for a margin > 0, "fails" below 0, "borderline" within rounding of 0."""
    return "borderline" if abs(margin) <= rtol else ("holds" if margin > 0 else "fails")


def variance_factor_table(ds):
    """Markdown table of :func:`variance_factors`."""
    rows = variance_factors(ds)
    head = ["method", "noise", "sigma^2", "predicted factor rho", "continuous condition sigma^2 < 2 lambda "
            "(isotropic: / D)", "discrete condition rho < 1",
            "measured factor per iteration, first 10 epochs, median [95% CI]",
            "seeds collapsed (Var < 1e-20 Var_0)", "epoch of collapse (median)", "final variance (median)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ci = f" [{r['low']:.4g}, {r['high']:.4g}]" if np.isfinite(r["low"]) else ""
        when = f"{r['collapse_epoch']:.0f}" if r["collapsed"] else "-"
        lines.append(f"| {r['label']} | {r['noise']} | {r['sigma_squared']:g} | {r['predicted']:.4g} | "
                     f"{r['continuous']} | {r['discrete']} | {r['measured']:.4g}{ci} | "
                     f"{r['collapsed']} of {r['seeds']} | {when} | {r['final_variance']:.3g} |")
    return "\n".join(lines) + "\n"


def _heading(var, scale_units=None):
    """Column heading from the schema: long name, and units unless dimensionless."""
    spec = VARIABLES[var]
    units = scale_units or spec.units
    return spec.long_name if units == "1" else f"{spec.long_name} [{units}]"


def summary_table(ds):
    """Markdown table: per method (and sweep point), state memory and final values, median [quartiles]
    over seeds (the value alone for one seed). W-over-W columns are filled for the methods that record
    them (OT-CBO) and "-" for the others."""
    multi = "task" in ds.dims
    n_seeds = ds.sizes["seed"]
    head = ["method", _heading("state_bytes"), _heading("train_risk"), _heading("test_risk")]
    if multi:
        head[2:] = ["training risk, median over tasks", "training risk, min over tasks", "test risk, median over tasks"]
    if "test_accuracy" in ds:
        head.append(_heading("test_accuracy", "%"))
    w_columns = bool(recorded_labels(ds, "w_variance"))
    if w_columns:
        head += [_heading("w_variance"),
                 "steps with Var ratio > (1-lambda dt)^2 (max relative excess): unweighted / weighted"]
    head += ["diverged runs", _heading("wall_time")]

    def fmt(values, scale=1.0, spec=".3g"):
        values = scale * np.asarray(values, float)
        if not np.isfinite(values).any():
            return "-"
        if values.size == 1:
            return f"{values.item():{spec}}"
        q1, med, q3 = np.nanquantile(values, [0.25, 0.5, 0.75])
        return f"{med:{spec}} [{q1:{spec}}, {q3:{spec}}]"

    rows = []
    for label, point in cells_of(ds):
        sub = ds.sel(point)
        final = {var: last_recorded(sub[var]) for var in
                 ("train_risk", "test_risk", "test_accuracy", "w_variance", "wall_time") if var in sub}
        state = int(sub.state_bytes.max())
        row = [label, str(state) if state >= 0 else "-"]
        if multi:
            row += [fmt(final["train_risk"].median("task")), fmt(final["train_risk"].min("task")),
                    fmt(final["test_risk"].median("task"))]
        else:
            row += [fmt(final["train_risk"]), fmt(final["test_risk"])]
        if "test_accuracy" in final:
            row.append(fmt(final["test_accuracy"], 100, ".1f"))
        if w_columns and bool(sub.w_variance.notnull().any()):
            factor = decay_factor(ds, str(point[METHOD_DIM]))
            row += [fmt(final["w_variance"]), " / ".join(
                "{:.1%} (max {:+.2g})".format(*decay_violations(sub[v].transpose(..., "epoch"), factor))
                for v in ("w_variance", "w_variance_weighted"))]
        elif w_columns:
            row += ["-", "-"]
        row += [f"{int((sub.diverged_epoch >= 0).sum())} of {sub.sizes['seed']}", fmt(final["wall_time"], spec=".0f")]
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    over = "one seed" if n_seeds == 1 else f"median [quartiles] over {n_seeds} seeds"
    text = f"{ds.attrs['study']}: after {int(ds.epoch[-1])} epochs, {over}\n\n" + "\n".join(lines) + "\n"
    swept = any(dim in ds.dims and ds.sizes[dim] > 1 for dim in SWEEP_DIMS)
    if not swept and has_target(ds) and "final_params" in ds:
        from meanfield.convergence import excess_risk

        ex = excess_risk(ds)
        text += "\nexcess risk of the final reported network (against the noise-free target), " + over + ":\n"
        for m in ds[METHOD_DIM].values:
            q1, med, q3 = np.nanquantile(ex.sel({METHOD_DIM: m}).values, [0.25, 0.5, 0.75])
            text += f"- {m}: {med:.3g}" + (f" [{q1:.3g}, {q3:.3g}]\n" if n_seeds > 1 else "\n")
    if "variance_factor" in ds.attrs.get("figures", "") and variance_factors(ds):
        text += ("\nensemble variance: its factor per iteration over the first 10 epochs (least-squares fit of "
                 "log Var) against the per-step factor rho of the noise, and its collapse\n\n"
                 + variance_factor_table(ds))
    for dim in SWEEP_DIMS:
        if dim in ds.dims and ds.sizes[dim] > 1:
            for m in ds[METHOD_DIM].values:
                final = sweep_finals(ds, m, dim)
                wins = int((final[-1] < final[0]).sum())
                fit = fit_rate(ds[dim].values, final.transpose("seed", dim).values, aggregate="median")
                text += f"\nfinal train risk of {m} vs {dim}: fitted slope {fit.slope:.2f} (log-log, median over seeds)"
                if np.isfinite(fit.low):  # one seed allows a single resample: no interval
                    text += f", 95% bootstrap interval over seeds [{fit.low:.2f}, {fit.high:.2f}]"
                if fit.n_dropped:
                    text += f" ({plural(fit.n_dropped, 'diverged seed')} left out)"
                text += (f"; {dim} = {int(ds[dim][-1])} lower than {dim} = {int(ds[dim][0])} in {wins} of "
                         f"{plural(n_seeds, 'seed')}\n")
            if has_target(ds):
                from meanfield.convergence import excess_risk

                ex = excess_risk(ds)
                for m in ds[METHOD_DIM].values:
                    values = ex.sel({METHOD_DIM: m})
                    other = [d for d in values.dims if d not in (dim, "seed")]
                    values = (values.median(other) if other else values).transpose("seed", dim)
                    fit = fit_rate(ds[dim].values, values.values, aggregate="median")
                    med = ", ".join(f"{v:.3g}" for v in values.median("seed").values)
                    text += (f"\nexcess risk (against the noise-free target) of {m} vs {dim}: medians {med}; "
                             f"{fit.label('fitted order')} (median over seeds, 95% bootstrap interval)\n")
            if "reported_params" in ds and ds.sizes[dim] >= 3 and n_seeds > 1:
                from meanfield.convergence import rate_table

                for reference, what in (("largest", f"the largest {dim} (sizes up to a fifth of it fitted)"),
                                        ("successive", f"the next larger {dim}")):
                    text += (f"\nstrong error of the reported network vs {dim}, against {what}: fitted order of "
                             f"the mean over seeds, 95% bootstrap interval\n\n" + rate_table(ds, dim, reference))
            if dim == "N" and "reported_params" in ds and ds.sizes[dim] >= 3 and n_seeds > 1:
                from meanfield.convergence import weak_table

                text += (f"\nbias of averaged observables vs {dim}: |mean over seeds of X^{dim} - X^largest|, "
                         f"sizes up to a fifth of the largest, fitted order (theory: -1), 95% bootstrap interval\n\n"
                         + weak_table(ds, dim))
    return text


def compare_datasets(before, after):
    r"""Compare two result datasets bit for bit: what a change of the code moved.

    Every data variable is compared with ``numpy.array_equal`` (NaN equal to NaN), but for the
    timings (the variables whose units are seconds, e.g. ``wall_time``), which no two runs share;
    coordinates too. Attributes are listed where they differ (the source fingerprint and the history
    always do), not judged.

    Parameters
    ----------
    before, after : xarray.Dataset
        Two results of the same study, e.g. computed before and after a refactor.

    Returns
    -------
    dict
        ``compared`` (the variables compared), ``moved`` (those that differ, with the largest
        relative difference, or ``"shape"`` / ``"missing"``), ``coords`` (coordinates that differ)
        and ``attrs`` (attribute names whose values differ). The datasets agree when ``moved`` and
        ``coords`` are empty.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> a = xr.Dataset({"train_risk": ("epoch", [1.0, 0.5]), "wall_time": ("epoch", [0.0, 2.0])})
    >>> b = a.copy(deep=True)
    >>> b["wall_time"][1] = 3.0
    >>> compare_datasets(a, b)["moved"]
    {}
    >>> b["train_risk"][1] = 0.25
    >>> compare_datasets(a, b)["moved"]
    {'train_risk': 0.5}
    """
    from meanfield.schema import VARIABLES

    timings = {name for name, var in VARIABLES.items() if var.units == "s"}
    names = sorted((set(before.data_vars) | set(after.data_vars)) - timings)
    moved = {}
    for name in names:
        if name not in before.data_vars or name not in after.data_vars:
            moved[name] = "missing"
            continue
        x, y = before[name].values, after[name].values
        if x.shape != y.shape:
            moved[name] = "shape"
        elif not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.maximum(np.abs(x), np.abs(y)).astype(float)
                relative = np.abs(x.astype(float) - y.astype(float)) / np.where(scale > 0, scale, 1.0)
            moved[name] = float(np.nanmax(relative)) if np.any(np.isfinite(relative)) else float("nan")
    coords = sorted(c for c in set(before.coords) | set(after.coords)
                    if c not in before.coords or c not in after.coords
                    or not np.array_equal(before[c].values, after[c].values))
    attrs = sorted(k for k in set(before.attrs) | set(after.attrs)
                   if str(before.attrs.get(k)) != str(after.attrs.get(k)))
    return {"compared": names, "moved": moved, "coords": coords, "attrs": attrs}

