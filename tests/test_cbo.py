"""Finite CBO: consensus, exact contraction identities and the one-step variance factor."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from meanfield import CBO, TwoLayerNetwork, gibbs_weights, consensus_point, sine, train
from meanfield.cbo import cbo_update
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
    dt, drift = 0.3, 1.5
    first = theta
    for _ in range(5):
        new = cbo_update(theta, v, dt, drift, 0.0, AnisotropicNoise(), rng.normal(size=theta.shape))
        assert_allclose(new - v, (1 - drift * dt) * (theta - v), rtol=1e-13)
        theta = new
    assert_allclose(theta - v, (1 - drift * dt) ** 5 * (first - v), rtol=1e-12)


def test_variance_contracts_by_exactly_factor_squared_at_alpha_zero():
    net = TwoLayerNetwork(1, 1, 4)
    cbo = CBO(n_particles=9, dt=0.2, drift=1.0, sigma_squared=0.0, alpha=0.0, batch_size=5)
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
    n_particles, dt, drift, sigma_squared = 6, 0.1, 1.0, 1.6
    net = TwoLayerNetwork(1, 1, 2)
    cbo = CBO(n_particles=n_particles, dt=dt, drift=drift, sigma_squared=sigma_squared, alpha=0.0,
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
    expected = (1 - drift * dt) ** 2 + sigma_squared * dt * (1 - 1 / n_particles) * k
    se = ratios.std(ddof=1) / np.sqrt(len(ratios))
    assert abs(ratios.mean() - expected) < 4 * se, (ratios.mean(), expected, se)


def test_isotropic_noise_uses_the_particle_norm():
    diff = np.array([[[3.0, 0.0]], [[0.0, 1.0]]])
    xi = np.ones_like(diff)
    assert_allclose(IsotropicNoise()(diff, xi), [[[3.0, 3.0]], [[1.0, 1.0]]])


def test_quick_cbo_run_on_sine_lowers_the_risk():
    problem = sine(n_train=800, n_test=200)
    net = TwoLayerNetwork(1, 1, 20)
    cbo = CBO(n_particles=50, dt=0.1, drift=1.0, sigma_squared=1.6, alpha=1e5, batch_size=100)
    ds = train(cbo, net, problem, epochs=8, seed=0)
    assert ds.train_risk[-1] < 0.5 * ds.train_risk[0], ds.train_risk.values
    assert ds.attrs["diverged_epoch"] == -1


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
    cbo = CBO(drift=1.0, sigma_squared=2.0, require_decay=True)
    with pytest.raises(ValueError, match=r"sigma_squared must be < 2 with anisotropic noise .*require_decay"):
        cbo.init(TwoLayerNetwork(1, 1, 3), np.random.default_rng())
    CBO(drift=1.0, sigma_squared=1.9, require_decay=True).init(TwoLayerNetwork(1, 1, 3), np.random.default_rng())
