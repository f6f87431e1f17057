"""Fitted orders: the slope is least squares in log-log, the interval resamples whole seeds and covers."""

import numpy as np
import pytest

from meanfield.rates import fit_rate, log_slope

SIZES = np.array([10.0, 20.0, 50.0, 100.0, 200.0])


def test_log_slope_recovers_a_power_law_and_equals_polyfit():
    assert np.isclose(log_slope(SIZES, 3.0 * SIZES**-0.7)[0], -0.7, rtol=1e-12)
    values = np.random.default_rng(0).lognormal(size=SIZES.size)
    assert np.isclose(log_slope(SIZES, values)[0], np.polyfit(np.log(SIZES), np.log(values), 1)[0], rtol=1e-12)


@pytest.mark.parametrize("aggregate", ["mean", "rms", "median"])
def test_the_interval_resamples_seeds_as_pairs(aggregate):
    # seed j scales every size by one factor (coupled runs): every resample's aggregate is a constant
    # times SIZES^-0.5, so the slope is -0.5 in every resample; resampling sizes independently would spread it
    factors = np.random.default_rng(1).lognormal(sigma=1.0, size=(7, 1))
    fit = fit_rate(SIZES, SIZES**-0.5 * factors, aggregate=aggregate)
    assert np.isclose(fit.low, -0.5, rtol=1e-9) and np.isclose(fit.high, -0.5, rtol=1e-9)


def test_the_95_percent_interval_covers_the_true_order_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    trials, hits = 200, 0
    for t in range(trials):
        errors = SIZES**-0.5 * rng.lognormal(0.0, 0.3, size=(10, SIZES.size))
        hits += fit_rate(SIZES, errors, n_resamples=999, random_state=t).contains(-0.5)
    # percentile intervals from 10 seeds run somewhat narrow; 3 binomial standard errors below 95% at most
    assert 0.95 - 3 * np.sqrt(0.95 * 0.05 / trials) - 0.05 <= hits / trials <= 1.0


def test_a_diverged_seed_is_left_out_and_counted():
    errors = SIZES**-1.0 * np.random.default_rng(3).lognormal(0.0, 0.1, size=(6, SIZES.size))
    errors[2, 3] = np.nan
    fit = fit_rate(SIZES, errors)
    assert fit.n_seeds == 5 and fit.n_dropped == 1 and "1 diverged seed left out" in fit.label()
    assert fit.slope == fit_rate(SIZES, np.delete(errors, 2, axis=0)).slope


def test_one_seed_gives_a_slope_without_interval():
    fit = fit_rate(SIZES, SIZES[None] ** -1.0)
    assert np.isclose(fit.slope, -1.0) and np.isnan(fit.low) and fit.label() == "slope -1.00"


@pytest.mark.parametrize("sizes, errors, match", [
    ([10.0], np.ones((2, 1)), "at least two distinct positive sizes"),
    ([10.0, -1.0], np.ones((2, 2)), "at least two distinct positive sizes"),
    (SIZES, np.ones((2, 3)), r"errors must have shape \(n_seeds, 5\)"),
    (SIZES, np.zeros((2, 5)), "the mean error is 0"),
    (SIZES, np.full((2, 5), np.nan), "at least one seed"),
])
def test_bad_input_is_refused(sizes, errors, match):
    with pytest.raises(ValueError, match=match):
        fit_rate(sizes, errors)


def test_a_bias_is_fitted_from_signed_differences():
    # X^N - X^ref = -2/N + noise: the mean over seeds is the bias, its size falls like 1/N
    noise = np.random.default_rng(4).normal(scale=1e-4, size=(10, SIZES.size))
    fit = fit_rate(SIZES, -2.0 / SIZES + noise, aggregate="abs_mean")
    assert fit.contains(-1.0) and abs(fit.slope + 1.0) < 0.05
    with pytest.raises(ValueError, match="unless aggregate='abs_mean'"):
        fit_rate(SIZES, -2.0 / SIZES[None] * np.ones((3, 1)))
