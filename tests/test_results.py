"""Summaries of results: the fitted slope over a sweep with its interval, and mixed studies."""

import numpy as np
import xarray as xr

from meanfield.rates import fit_rate
from meanfield.results import recorded_labels, summary_table
from meanfield.schema import METHOD_DIM

WIDTHS = np.array([10.0, 50.0, 100.0, 200.0])


def test_summary_reports_slope_interval_and_paired_wins():
    finals = WIDTHS[:, None] ** -0.5 * np.array([1.0, 2.0, 3.0])
    finals[-1, 2] = 10.0  # seed 2: the widest network ends above the narrowest
    risk = np.repeat(finals[None, :, :, None], 2, axis=-1)  # (method, M, seed, epoch)
    ds = xr.Dataset({name: ((METHOD_DIM, "M", "seed", "epoch"), risk) for name in ("train_risk", "test_risk")},
                    coords={METHOD_DIM: ["cbo"], "M": WIDTHS.astype(int), "seed": [0, 1, 2], "epoch": [0, 1]},
                    attrs={"study": "toy"})
    ds["state_bytes"] = ((METHOD_DIM, "M", "seed"), np.zeros((1, 4, 3), int))
    ds["diverged_epoch"] = ((METHOD_DIM, "M", "seed"), -np.ones((1, 4, 3), int))
    ds["wall_time"] = ds.train_risk
    fit = fit_rate(WIDTHS, finals.T, aggregate="median")
    line = summary_table(ds).splitlines()[-1]
    assert line == (f"final train risk of cbo vs M: fitted slope {fit.slope:.2f} (log-log, median over seeds)"
                    f", 95% bootstrap interval over seeds [{fit.low:.2f}, {fit.high:.2f}]; M = 200 lower than"
                    " M = 10 in 2 of 3 seeds")
    # one seed: one possible resample, so no interval, and "seed" in the singular
    assert summary_table(ds.isel(seed=[0])).splitlines()[-1] == (
        "final train risk of cbo vs M: fitted slope -0.50 (log-log, median over seeds); M = 200 lower than M = 10"
        " in 1 of 1 seed")


def mixed(seeds):
    """CBO and OT-CBO in one study: the OT-CBO variables are NaN (counters -1) for CBO."""
    shape = (2, seeds, 4)
    risk = np.geomspace(1.0, 0.1, 4) * np.ones(shape)
    ds = xr.Dataset({name: ((METHOD_DIM, "seed", "epoch"), risk) for name in ("train_risk", "test_risk", "wall_time")},
                    coords={METHOD_DIM: ["cbo", "exact"], "seed": np.arange(seeds), "epoch": np.arange(4)},
                    attrs={"study": "toy", "iterations_per_epoch": 1, "methods.exact.dt": 0.1,
                           "methods.exact.drift": 1.0, "methods.exact.method": "otcbo", "methods.cbo.method": "cbo"})
    ot = np.array([False, True])[:, None, None]
    for name in ("w_variance", "w_variance_weighted"):
        ds[name] = ((METHOD_DIM, "seed", "epoch"), np.where(ot, 0.5 ** np.arange(4) * np.ones(shape), np.nan))
    ds["barycenter_iterations"] = ((METHOD_DIM, "seed", "epoch"), np.where(ot, 5, -1) * np.ones(shape, np.int64))
    ds["state_bytes"] = ((METHOD_DIM, "seed"), np.array([[-1] * seeds, [800] * seeds]))
    ds["diverged_epoch"] = ((METHOD_DIM, "seed"), -np.ones((2, seeds), np.int64))
    return ds


def test_only_methods_recording_a_variable_count_as_recorded():
    ds = mixed(seeds=2)
    assert recorded_labels(ds, "w_variance") == ["exact"]
    assert recorded_labels(ds, "barycenter_iterations") == ["exact"]
    assert recorded_labels(ds, "train_risk") == ["cbo", "exact"]
    assert recorded_labels(ds, "test_accuracy") == []


def test_summary_fills_ot_columns_for_ot_methods_only():
    rows = {line.split(" | ")[0]: line.split(" | ") for line in summary_table(mixed(seeds=3)).splitlines()
            if line.startswith("| cbo") or line.startswith("| exact")}
    assert rows["| cbo"][1] == "-" and rows["| cbo"][4:6] == ["-", "-"]  # state not recorded; no W columns
    # Var^{k+1} / Var^k = 0.5 against (1 - lambda dt)^2 = 0.81: never above, by at most 0.5 / 0.81 - 1
    assert rows["| exact"][4:6] == ["0.125 [0.125, 0.125]", "0.0% (max -0.38) / 0.0% (max -0.38)"]


def test_summary_of_one_seed_says_so_and_shows_single_values():
    text = summary_table(mixed(seeds=1))
    assert text.splitlines()[0] == "toy: after 3 epochs, one seed"
    assert "| exact | 800 | 0.1 | 0.1 | 0.125 |" in text
    assert "1 seeds" not in text and "median of 1" not in text
