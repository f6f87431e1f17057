"""Hybrid CBO-Adam: its limits gamma = 1 (independent Adam runs) and gamma = 0 (CBO), bit for bit."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from meanfield import CBO, Adam, TwoLayerNetwork, sine, train
from meanfield.hybrid import HybridCBOAdam

COMMON = dict(n_particles=7, batch_size=50, init_scale=1.0)
PROBLEM = sine(n_train=200, n_test=50)
NET = TwoLayerNetwork(1, 1, 6)


def test_gamma_one_is_independent_adam_runs():
    hybrid = HybridCBOAdam(gamma=1.0, dt=0.05, sigma_squared=1.2, alpha=1e3, **COMMON)
    adam = Adam(lr=0.05, **COMMON)
    a, b = train(hybrid, NET, PROBLEM, 3, seed=4), train(adam, NET, PROBLEM, 3, seed=4)
    # every particle moved exactly as its own Adam run: compare the whole ensembles
    state_h, state_a = hybrid.init(NET, np.random.default_rng(0)), adam.init(NET, np.random.default_rng(0))
    x, y = PROBLEM.x_train[:50], PROBLEM.y_train[:50]
    for _ in range(3):
        state_h = hybrid.step(state_h, NET, x, y, 0, np.random.default_rng(1))
        state_a = adam.step(state_a, NET, x, y, 0, np.random.default_rng(1))
    assert_array_equal(state_h.theta, state_a.theta)
    assert_array_equal(a.best_particle_risk, b.best_particle_risk)


def test_gamma_zero_is_cbo():
    kwargs = dict(dt=0.1, drift_rate=1.0, sigma_squared=1.6, alpha=1e4, **COMMON)
    a = train(HybridCBOAdam(gamma=0.0, **kwargs), NET, PROBLEM, 3, seed=5)
    b = train(CBO(**kwargs), NET, PROBLEM, 3, seed=5)
    for var in ("train_risk", "best_particle_risk", "variance"):
        assert_array_equal(a[var], b[var])
    assert_array_equal(a.final_params, b.final_params)


def test_intermediate_gamma_mixes_both_steps():
    rng = np.random.default_rng(2)
    h = HybridCBOAdam(gamma=0.3, dt=0.1, sigma_squared=0.0, alpha=0.0, **COMMON)
    state = h.init(NET, rng)
    x, y = PROBLEM.x_train[:50], PROBLEM.y_train[:50]
    new = h.step(state, NET, x, y, 0, rng)
    _, grad = NET.risk_and_grad(state.theta, x, y)
    mean = state.theta.mean(0)
    expected = state.theta - 0.3 * 0.1 * grad / (np.abs(grad) + 1e-8) - 0.7 * 0.1 * (state.theta - mean)
    np.testing.assert_allclose(new.theta, expected, rtol=1e-12, atol=1e-14)


def test_gamma_out_of_range():
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\], got 1.5"):
        HybridCBOAdam(gamma=1.5)


@pytest.mark.parametrize("value", ["no", 1, None])
def test_require_decay_must_be_a_bool(value):
    with pytest.raises(ValueError, match=f"require_decay must be true or false, got {value!r}"):
        HybridCBOAdam(require_decay=value)


@pytest.mark.parametrize("param, value", [("gamma", True), ("gamma", float("nan")), ("beta1", "0.9"),
                                          ("eps", float("inf"))])
def test_numbers_refuse_bools_strings_and_non_finite(param, value):
    with pytest.raises(ValueError, match=param):
        HybridCBOAdam(**{param: value})
