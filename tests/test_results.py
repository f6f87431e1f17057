"""Rates over a sweep: the fitted log-log slope and its bootstrap interval over seeds."""

import numpy as np
import xarray as xr

from meanfield.results import fit_slope, slope_interval, summary_table

WIDTHS = np.array([10.0, 50.0, 100.0, 200.0])


def test_fit_slope_recovers_a_power_law():
    assert np.isclose(fit_slope(WIDTHS, 3.0 * WIDTHS**-0.7), -0.7, rtol=1e-12)


def test_slope_interval_resamples_seeds_as_pairs():
    # seed j scales every width by the same factor (common random numbers): any resample's median is
    # median(factor) x M^-0.5, so the slope is -0.5 in every resample. Resampling the widths'
    # seeds independently would spread it.
    factors = np.random.default_rng(1).lognormal(sigma=1.0, size=7)
    lo, hi = slope_interval(WIDTHS, WIDTHS[:, None] ** -0.5 * factors)
    assert np.isclose(lo, -0.5, rtol=1e-12) and np.isclose(hi, -0.5, rtol=1e-12)


def test_slope_interval_equals_a_loop_over_resamples():
    finals = np.random.default_rng(2).lognormal(size=(4, 6)) * WIDTHS[:, None] ** -0.3
    idx = np.random.default_rng(5).integers(0, 6, size=(300, 6))  # the draws slope_interval(seed=5) makes
    slopes = [fit_slope(WIDTHS, np.median(finals[:, i], axis=1)) for i in idx]
    expected = np.quantile(slopes, [0.05, 0.95])
    assert np.allclose(slope_interval(WIDTHS, finals, level=0.9, n_resamples=300, seed=5), expected, rtol=1e-12)


def test_slope_interval_is_nan_for_a_diverged_seed():
    finals = np.ones((4, 3))
    finals[2, 1] = np.nan
    assert np.all(np.isnan(slope_interval(WIDTHS, finals)))


def test_summary_reports_slope_interval_and_paired_wins():
    finals = WIDTHS[:, None] ** -0.5 * np.array([1.0, 2.0, 3.0])
    finals[-1, 2] = 10.0  # seed 2: the widest network ends above the narrowest
    risk = np.repeat(finals[None, :, :, None], 2, axis=-1)  # (method, M, seed, epoch)
    ds = xr.Dataset({name: (("method", "M", "seed", "epoch"), risk) for name in ("train_risk", "test_risk")},
                    coords={"method": ["cbo"], "M": WIDTHS.astype(int), "seed": [0, 1, 2], "epoch": [0, 1]},
                    attrs={"study": "toy"})
    ds["state_bytes"] = (("method", "M", "seed"), np.zeros((1, 4, 3), int))
    ds["diverged_epoch"] = (("method", "M", "seed"), -np.ones((1, 4, 3), int))
    ds["wall_time"] = ds.train_risk
    lo, hi = slope_interval(WIDTHS, finals)
    line = summary_table(ds).splitlines()[-1]
    assert line == (f"final train risk of cbo vs M: fitted slope {fit_slope(WIDTHS, np.median(finals, axis=1)):.2f}"
                    f" (log-log), 95% bootstrap interval over seeds [{lo:.2f}, {hi:.2f}]; M = 200 lower than"
                    " M = 10 in 2 of 3 seeds")
