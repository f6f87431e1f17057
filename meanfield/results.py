"""Reading results: final values of trajectories, instability events, the per-study summary table."""

import numpy as np
import xarray as xr

__all__ = ["last_recorded", "instability", "summary_table"]


def last_recorded(da):
    """Value at the last finite epoch of each trajectory (a diverged run keeps its last good value)."""
    values = np.moveaxis(da.values, da.get_axis_num("epoch"), -1)
    finite = np.isfinite(values)
    last = values.shape[-1] - 1 - np.argmax(finite[..., ::-1], axis=-1)
    out = np.take_along_axis(values, last[..., None], axis=-1)[..., 0]
    return xr.DataArray(np.where(finite.any(-1), out, np.nan), dims=[d for d in da.dims if d != "epoch"],
                        coords={d: da[d].values for d in da.dims if d != "epoch"})


def instability(risk, factor=10.0):
    """True from the first epoch where the risk exceeded ``factor`` x its running minimum (NaN: diverged)."""
    values = risk.values
    running_min = np.fmin.accumulate(np.where(np.isnan(values), np.inf, values), axis=-1)
    event = (values > factor * running_min) | np.isnan(values)
    return np.logical_or.accumulate(event, axis=-1)


def summary_table(ds):
    """Markdown table: per method, state memory and final risks (median [quartiles] over seeds)."""
    multi = "task" in ds.dims
    head = ["method", "state (bytes)", "train risk", "test risk"]
    if multi:
        head[2:] = ["train risk, median over tasks", "train risk, min over tasks", "test risk, median over tasks"]
    if "test_accuracy" in ds:
        head.append("test accuracy (%)")
    head += ["diverged runs", "train time (s)"]

    def fmt(values, scale=1.0, spec=".3g"):
        q1, med, q3 = np.nanquantile(scale * np.asarray(values), [0.25, 0.5, 0.75])
        return f"{med:{spec}} [{q1:{spec}}, {q3:{spec}}]"

    rows = []
    for label in ds.method.values:
        sub = ds.sel({"method": label})
        final = {var: last_recorded(sub[var]) for var in ("train_risk", "test_risk", "test_accuracy", "wall_time")
                 if var in sub}
        row = [str(label), str(int(sub.state_bytes.max()))]
        if multi:
            row += [fmt(final["train_risk"].median("task")), fmt(final["train_risk"].min("task")),
                    fmt(final["test_risk"].median("task"))]
        else:
            row += [fmt(final["train_risk"]), fmt(final["test_risk"])]
        if "test_accuracy" in final:
            row.append(fmt(final["test_accuracy"], 100, ".1f"))
        row += [f"{int((sub.diverged_epoch >= 0).sum())} of {sub.sizes['seed']}", fmt(final["wall_time"], spec=".0f")]
        rows.append(row)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    return (f"{ds.attrs['study']}: after {int(ds.epoch[-1])} epochs, median [quartiles] over "
            f"{ds.sizes['seed']} seeds\n\n" + "\n".join(lines) + "\n")
