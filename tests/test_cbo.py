"""Finite CBO: consensus, exact contraction identities and the one-step variance factor."""

import math
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import softmax

from meanfield import CBO, TwoLayerNetwork, consensus_point, gibbs_weights, sine, train
from meanfield.method import consensus_update
from meanfield.noise import AnisotropicNoise, IsotropicNoise


def test_gibbs_weights_match_loop_and_sum_to_one():
    rng = np.random.default_rng(0)
    risks = rng.uniform(0.5, 1.5, size=20)
    for alpha in (0.0, 0.3, 5.0):
        w = gibbs_weights(risks, alpha)
        loop = np.array([np.exp(-alpha * r) for r in risks])
        assert_allclose(w, loop / loop.sum(), rtol=1e-13)
        assert_allclose(w.sum(), 1.0, rtol=1e-15)


def test_consensus_at_huge_alpha_is_the_best_particle():
    rng = np.random.default_rng(1)
    theta = rng.normal(size=(50, 4, 3))
    risks = 1.0 + 0.01 * rng.uniform(size=50)  # risks around 1, gaps ~1e-4 >> 1/alpha
    w = gibbs_weights(risks, 1e7)
    assert np.all(np.isfinite(w)) and w.sum() == pytest.approx(1.0)
    assert_allclose(consensus_point(theta, w), theta[np.argmin(risks)], rtol=1e-12)


def test_consensus_at_zero_alpha_is_the_mean_and_inf_risk_gets_no_weight():
    theta = np.random.default_rng(2).normal(size=(6, 5))
    assert_allclose(consensus_point(theta, gibbs_weights(np.arange(6.0), 0.0)), theta.mean(0), rtol=1e-13)
    w = gibbs_weights(np.array([1.0, np.inf, 2.0]), 0.0)
    assert_allclose(w, [0.5, 0.0, 0.5])
    with pytest.raises(FloatingPointError, match="NaN"):
        gibbs_weights(np.array([1.0, np.nan]), 1.0)


def test_zero_noise_contracts_offsets_by_exactly_one_minus_lambda_dt():
    """sigma = 0 and frozen weights (fixed V): theta_n - V shrinks by (1 - lambda dt) per step."""
    rng = np.random.default_rng(3)
    theta = rng.normal(size=(7, 5, 3))
    v = consensus_point(theta, gibbs_weights(rng.uniform(size=7), 2.0))
    dt, drift_rate = 0.3, 1.5
    first = theta
    for _ in range(5):
        new = consensus_update(theta, v, dt, drift_rate, 0.0, AnisotropicNoise(), rng.normal(size=theta.shape))
        assert_allclose(new - v, (1 - drift_rate * dt) * (theta - v), rtol=1e-13)
        theta = new
    assert_allclose(theta - v, (1 - drift_rate * dt) ** 5 * (first - v), rtol=1e-12)


def test_variance_contracts_by_exactly_factor_squared_at_alpha_zero():
    net = TwoLayerNetwork(1, 1, 4)
    cbo = CBO(n_particles=9, dt=0.2, drift_rate=1.0, sigma_squared=0.0, alpha=0.0, batch_size=5)
    rng = np.random.default_rng(4)
    state = cbo.init(net, rng)
    x, y = rng.uniform(size=(5, 1)), rng.normal(size=5)

    def var(t):
        return ((t - t.mean(0)) ** 2).sum() / t.shape[0]

    for _ in range(4):
        new = cbo.step(state, net, x, y, epoch=0, rng=rng)
        assert_allclose(var(new.theta), (1 - 0.2) ** 2 * var(state.theta), rtol=1e-12)
        state = new


@pytest.mark.parametrize("noise", ["anisotropic", "isotropic"])
def test_one_step_variance_factor_at_alpha_zero(noise):
    """E[Var'/Var] = (1 - lambda dt)^2 + sigma^2 dt (1 - 1/N) k, with k = 1 (anisotropic) or the
    number of components of a particle (isotropic); mean over independent replicas within 4 SE."""
    n_particles, dt, drift_rate, sigma_squared = 6, 0.1, 1.0, 1.6
    net = TwoLayerNetwork(1, 1, 2)
    cbo = CBO(n_particles=n_particles, dt=dt, drift_rate=drift_rate, sigma_squared=sigma_squared, alpha=0.0,
              noise=noise, batch_size=3)
    state = cbo.init(net, np.random.default_rng(5))
    x, y = np.linspace(0, 1, 3)[:, None], np.zeros(3)
    var0 = ((state.theta - state.theta.mean(0)) ** 2).sum() / n_particles
    replicas = np.random.SeedSequence(6).spawn(4000)
    ratios = np.array([
        (lambda t: ((t - t.mean(0)) ** 2).sum() / n_particles)(
            cbo.step(state, net, x, y, 0, np.random.default_rng(r)).theta) / var0
        for r in replicas
    ])
    k = 1 if noise == "anisotropic" else net.n_neurons * net.dim
    expected = (1 - drift_rate * dt) ** 2 + sigma_squared * dt * (1 - 1 / n_particles) * k
    se = ratios.std(ddof=1) / np.sqrt(len(ratios))
    assert abs(ratios.mean() - expected) < 4 * se, (ratios.mean(), expected, se)


def test_isotropic_noise_uses_the_particle_norm():
    diff = np.array([[[3.0, 0.0]], [[0.0, 1.0]]])
    xi = np.ones_like(diff)
    assert_allclose(IsotropicNoise()(diff, xi), [[[3.0, 3.0]], [[1.0, 1.0]]])


def test_quick_cbo_run_on_sine_lowers_the_risk():
    problem = sine(n_train=800, n_test=200)
    net = TwoLayerNetwork(1, 1, 20)
    cbo = CBO(n_particles=50, dt=0.1, drift_rate=1.0, sigma_squared=1.6, alpha=1e5, batch_size=100)
    ds = train(cbo, net, problem, epochs=8, seed=0)
    assert ds.train_risk[-1] < 0.5 * ds.train_risk[0], ds.train_risk.values
    assert int(ds.diverged_epoch) == -1


def test_runs_are_reproducible_and_seeds_independent():
    problem = sine(n_train=200, n_test=50)
    net = TwoLayerNetwork(1, 1, 5)
    cbo = CBO(n_particles=10, dt=0.1, sigma_squared=1.0, alpha=10.0, batch_size=50)
    a, b, c = (train(cbo, net, problem, 2, seed=s) for s in (7, 7, 8))
    assert_allclose(a.final_params, b.final_params, rtol=0, atol=0)
    assert not np.allclose(a.final_params, c.final_params)


def test_invalid_hyper_parameters_name_the_parameter():
    with pytest.raises(ValueError, match=r"n_particles must be >= 1, got -3"):
        CBO(n_particles=-3)
    with pytest.raises(ValueError, match=r"dt must be in \(0, inf\], got 0"):
        CBO(dt=0.0)
    with pytest.raises(ValueError, match="noise must be one of"):
        CBO(noise="pink")
    cbo = CBO(drift_rate=1.0, sigma_squared=2.0, require_decay=True)
    with pytest.raises(ValueError, match=r"sigma_squared must be < 2 with anisotropic noise .*require_decay"):
        cbo.init(TwoLayerNetwork(1, 1, 3), np.random.default_rng())
    CBO(drift_rate=1.0, sigma_squared=1.9, require_decay=True).init(TwoLayerNetwork(1, 1, 3), np.random.default_rng())


def _gibbs_loop(risks, alpha):
    """Gibbs weights of one column from Python floats: exponents of the shifted finite risks."""
    risks = [float(r) for r in risks]
    low = min(r for r in risks if math.isfinite(r))
    e = [math.exp(-alpha * (r - low)) if math.isfinite(r) else 0.0 for r in risks]
    return [v / math.fsum(e) for v in e]


def test_gibbs_weights_stay_finite_at_huge_alpha_times_risk():
    assert_array_equal(gibbs_weights(np.array([1e10, 2e10]), 1e300), [1.0, 0.0])
    assert_array_equal(gibbs_weights(np.array([3e10, 2e10, np.inf, 2e10]), 1e300), [0.0, 0.5, 0.0, 0.5])


@pytest.mark.parametrize("alpha", [0.0, 0.7, 30.0, 1e5, 1e7, 1e300])
@pytest.mark.parametrize("offset", [0.0, 1e9])
def test_gibbs_weights_match_an_independent_computation(alpha, offset):
    rng = np.random.default_rng(5)
    risks = offset + rng.uniform(0.5, 1.5, size=12) * 10.0 ** rng.uniform(-3, 10, size=12)
    assert_allclose(gibbs_weights(risks, alpha), _gibbs_loop(risks, alpha), rtol=1e-12, atol=1e-300)
    if alpha * float(np.ptp(risks)) < 700:  # where scipy's softmax does not overflow
        assert_allclose(gibbs_weights(risks, alpha), softmax(-alpha * risks), rtol=1e-12)
    # (N, P): one softmax per task over axis 0, +inf where a task may not use a particle
    matrix = offset + rng.uniform(0.0, 2.0, size=(9, 4)) * 10.0 ** rng.uniform(-2, 8, size=(9, 4))
    matrix[rng.uniform(size=matrix.shape) < 0.3] = np.inf
    matrix[0] = offset + rng.uniform(size=4)  # every task keeps a finite risk
    w = gibbs_weights(matrix, alpha, axis=0)
    expected = np.array([_gibbs_loop(matrix[:, p], alpha) for p in range(4)]).T
    assert_allclose(w, expected, rtol=1e-12, atol=1e-300)
    assert np.all(w[np.isinf(matrix)] == 0.0)
    assert_allclose(w.sum(axis=0), 1.0, rtol=1e-15)
    assert_allclose(gibbs_weights(matrix.T, alpha, axis=1), w.T, rtol=0, atol=0)


@pytest.mark.parametrize("alpha", [np.inf, np.nan, -1.0, True, "1.0", None])
def test_gibbs_weights_refuse_alpha_outside_the_finite_non_negative_numbers(alpha):
    shown = alpha if isinstance(alpha, float) else repr(alpha)
    with pytest.raises(ValueError, match=re.escape(f"alpha must be a finite number >= 0, got {shown}")):
        gibbs_weights(np.array([1.0, 2.0]), alpha)


def test_gibbs_weights_with_every_risk_infinite_in_a_task_raise():
    with pytest.raises(FloatingPointError, match="every particle risk is infinite"):
        gibbs_weights(np.array([[1.0, np.inf], [2.0, np.inf]]), 1.0, axis=0)


@pytest.mark.parametrize("value", ["no", "false", 0, 1, None, 1.0])
def test_require_decay_must_be_a_bool(value):
    with pytest.raises(ValueError, match=re.escape(f"require_decay must be true or false, got {value!r}")):
        CBO(require_decay=value)


def test_numpy_bools_are_bools():
    assert CBO(require_decay=np.True_).require_decay is True
    assert CBO(require_decay=False).require_decay is False


@pytest.mark.parametrize("noise", ["anisotropic", "isotropic", "additive"])
def test_the_in_place_update_is_the_plain_expression_bit_for_bit(noise):
    from meanfield.noise import make_noise

    rng = np.random.default_rng(8)
    theta, v, xi = rng.normal(size=(6, 5, 3)), rng.normal(size=(5, 3)), rng.normal(size=(6, 5, 3))
    strategy = make_noise(noise)
    diff = theta - v
    expected = theta - (0.7 * 0.1) * diff + (1.3 * math.sqrt(0.1)) * strategy(diff, xi.copy())
    before = theta.copy()
    assert_array_equal(consensus_update(theta, v, 0.1, 0.7, 1.3, strategy, xi), expected)
    assert_array_equal(theta, before)  # only xi is scratch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_anisotropic_update_is_the_plain_expression_bit_for_bit(dtype):
    """The compiled pass (numpy arrays of one dtype) against the expression, evaluated in that dtype,
    at random scales, with one consensus point or one target per particle."""
    rng = np.random.default_rng(10)
    for trial in range(20):
        shape = (int(rng.integers(1, 30)), int(rng.integers(1, 20)), 3)
        scale = 10.0 ** rng.uniform(-10, 10)
        theta, xi = ((rng.standard_normal(shape) * scale).astype(dtype) for _ in range(2))
        targets = (rng.standard_normal(shape if trial % 2 else shape[1:]) * scale).astype(dtype)
        dt, drift_rate, sigma = rng.uniform(0.01, 1), rng.uniform(0.1, 2), rng.uniform(0, 3)
        diff = theta - targets
        expected = theta - (drift_rate * dt) * diff + (sigma * math.sqrt(dt)) * (diff * xi)
        got = consensus_update(theta, targets, dt, drift_rate, sigma, AnisotropicNoise(), xi)
        assert got.dtype == expected.dtype == dtype
        assert_array_equal(got, expected)


def test_a_user_noise_of_two_arguments_still_works():
    rng = np.random.default_rng(9)
    theta, v, xi = rng.normal(size=(4, 2)), rng.normal(size=2), rng.normal(size=(4, 2))
    out = consensus_update(theta, v, 0.1, 1.0, 0.5, lambda diff, z: 2 * z, xi)
    assert_array_equal(out, theta - 0.1 * (theta - v) + (0.5 * math.sqrt(0.1)) * (2 * xi))


def test_normal_draws_are_the_generators_stream_whatever_the_dtype():
    from meanfield.noise import NormalDraws

    draw = NormalDraws()
    like = np.zeros((3, 4, 2))
    first = draw(np.random.default_rng(1), like).copy()
    assert_array_equal(first, np.random.default_rng(1).standard_normal((3, 4, 2)))
    assert_array_equal(draw(np.random.default_rng(1), like.astype(np.float32)), first.astype(np.float32))


@pytest.mark.parametrize("method", ["cbo", "hybrid", "adam", "multitask"])
def test_float32_runs_follow_float64_runs_to_float32_rounding(method):
    """Same seed, same draws (float32 ones are the float64 ones rounded): a few epochs agree to
    float32 precision before the chaotic dynamics could amplify rounding."""
    from meanfield.adam import Adam
    from meanfield.hybrid import HybridCBOAdam
    from meanfield.multitask import MultiTaskCBO
    from meanfield.problems import shifted_sines, sine
    from meanfield.train import train

    methods = {"cbo": CBO(n_particles=20, batch_size=100, sigma_squared=0.5, alpha=10.0),
               "hybrid": HybridCBOAdam(n_particles=20, batch_size=100, alpha=10.0),
               "adam": Adam(lr=0.01, batch_size=100),
               "multitask": MultiTaskCBO(n_particles=20, batch_size=100, sigma_squared=0.5, alpha=10.0)}
    problem = (shifted_sines(n_tasks=4, n_train=400, n_test=100) if method == "multitask"
               else sine(n_train=400, n_test=100))
    runs = [train(methods[method], TwoLayerNetwork(1, 1, 20, dtype=dtype), problem, 3, seed=1)
            for dtype in ("float64", "float32")]
    assert runs[1].final_params.dtype == np.float64  # stored as float64 whatever the run's dtype
    assert_allclose(runs[1].train_risk, runs[0].train_risk, rtol=1e-5)
    assert_allclose(runs[1].final_params, runs[0].final_params, rtol=0, atol=1e-5)


@pytest.mark.parametrize("noise", ["anisotropic", "isotropic"])
def test_step_variance_factor_is_the_mean_growth_about_a_fixed_consensus(noise):
    """One update of many particles about a fixed consensus multiplies |theta - V|^2 by the noise's
    step_variance_factor on average (within 5 standard errors of 20,000 particles)."""
    from meanfield.method import consensus_update
    from meanfield.noise import make_noise

    strategy, dim, dt, drift_rate, sigma_squared = make_noise(noise), 6, 0.1, 1.0, 1.6
    rng = np.random.default_rng(11)
    theta = rng.standard_normal((20_000, dim))
    theta /= np.linalg.norm(theta, axis=1, keepdims=True)  # |theta_n - V| = 1 for every particle
    new = consensus_update(theta, np.zeros(dim), dt, drift_rate, np.sqrt(sigma_squared), strategy,
                     rng.standard_normal(theta.shape))
    growth = np.sum(new ** 2, axis=1)
    expected = strategy.step_variance_factor(dt, drift_rate, sigma_squared, dim)
    assert abs(growth.mean() - expected) < 5 * growth.std(ddof=1) / np.sqrt(len(growth)), (growth.mean(), expected)
