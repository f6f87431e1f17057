"""Adam against a hand-computed update, and divergence handling in the training loop."""

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from meanfield import Adam, TwoLayerNetwork, sine, train
from meanfield.adam import adam_direction


def test_two_steps_match_hand_computation():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    theta, s, r = np.array([0.5]), np.zeros(1), np.zeros(1)
    for k, g in enumerate((2.0, -1.0), start=1):
        s, r, direction = adam_direction(np.array([g]), s, r, k, b1, b2, eps)
        theta = theta - lr * direction
    # by hand: s1 = 0.2, r1 = 0.004, step 1 = 2 / (2 + eps);
    # s2 = 0.9 * 0.2 - 0.1 = 0.08, r2 = 0.999 * 0.004 + 0.001 = 0.004996
    step1 = (0.2 / 0.1) / (math.sqrt(0.004 / 0.001) + eps)
    step2 = (0.08 / (1 - 0.81)) / (math.sqrt(0.004996 / (1 - 0.999**2)) + eps)
    assert_allclose(s, [0.08], rtol=1e-14)
    assert_allclose(r, [0.004996], rtol=1e-14)
    assert_allclose(theta, [0.5 - lr * step1 - lr * step2], rtol=1e-14)


def test_adam_step_uses_the_network_gradient():
    rng = np.random.default_rng(0)
    net = TwoLayerNetwork(1, 1, 6)
    adam = Adam(lr=0.05, batch_size=4, n_particles=2)
    state = adam.init(net, rng)
    x, y = rng.uniform(size=(4, 1)), rng.normal(size=4)
    _, grad = net.risk_and_grad(state.theta, x, y)
    new = adam.step(state, net, x, y, 0, rng)
    assert_allclose(new.theta, state.theta - 0.05 * grad / (np.abs(grad) + 1e-8), rtol=1e-12)
    assert new.k == 1


def test_quick_adam_run_lowers_the_risk():
    ds = train(Adam(lr=0.05, batch_size=100), TwoLayerNetwork(1, 1, 20), sine(n_train=800, n_test=100), 5, seed=0)
    assert ds.train_risk[-1] < 0.5 * ds.train_risk[0]


def test_diverging_run_stops_and_keeps_what_it_recorded():
    with pytest.warns(RuntimeWarning, match=r"adam \(seed 0\) diverged in epoch \d+"):
        ds = train(Adam(lr=1e200, batch_size=50), TwoLayerNetwork(1, 1, 5, activation="tanh"),
                   sine(n_train=200, n_test=50), 6, seed=0)
    bad = int(ds.diverged_epoch)
    assert 1 <= bad <= 6
    assert np.all(np.isfinite(ds.train_risk[:bad]))
    assert np.all(np.isnan(ds.train_risk[bad + 1 :]))
    assert np.all(np.isfinite(ds.final_params))


def test_invalid_hyper_parameters_name_the_parameter():
    with pytest.raises(ValueError, match=r"lr must be in \(0, inf\]"):
        Adam(lr=-1.0)
    with pytest.raises(ValueError, match=r"beta2 must be in \[0, 1\)"):
        Adam(beta2=1.0)


def test_a_non_finite_initial_state_is_a_divergence_at_epoch_0():
    # a run whose initial risk already overflows is not trained, and says so with epoch 0
    with pytest.warns(RuntimeWarning, match=r"diverged at initialisation"):
        ds = train(Adam(lr=0.1, batch_size=50, init_scale=1e200), TwoLayerNetwork(1, 1, 5),
                   sine(n_train=100, n_test=20),
                   3, seed=0)
    assert int(ds.diverged_epoch) == 0
    assert np.isnan(ds.train_risk[1:]).all()


def test_a_negative_seed_names_the_parameter():
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        train(Adam(batch_size=50), TwoLayerNetwork(1, 1, 5), sine(n_train=100, n_test=20), 1, seed=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_moments_are_bit_for_bit_the_array_expression(dtype):
    """The compiled pass rounds every operation as numpy's expression does, at any scale and step."""
    from meanfield.kernels import adam_moments

    rng = np.random.default_rng(5)
    for _ in range(20):
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 20)), 3)
        scale = 10.0 ** rng.uniform(-20, 10)
        grad, s = ((rng.standard_normal(shape) * scale).astype(dtype) for _ in range(2))
        r = (rng.uniform(0, 1, shape) * scale**2).astype(dtype)
        k, b1, b2 = int(rng.integers(1, 2000)), rng.uniform(0.5, 0.99), rng.uniform(0.9, 0.9999)
        eps = 10.0 ** rng.uniform(-12, -4)
        s_ref = b1 * s + (1.0 - b1) * grad
        r_ref = b2 * r + (1.0 - b2) * grad * grad
        direction_ref = (s_ref / (1.0 - b1**k)) / (np.sqrt(r_ref / (1.0 - b2**k)) + eps)
        for got, want in zip(adam_moments(grad, s, r, k, b1, b2, eps), (s_ref, r_ref, direction_ref)):
            assert got.dtype == want.dtype == dtype
            np.testing.assert_array_equal(got, want)


def test_adam_direction_takes_the_expression_where_the_kernel_does_not_apply():
    """Strided or mixed-dtype arrays go through the array expression, with the same numbers."""
    rng = np.random.default_rng(6)
    grad, s, r = rng.standard_normal((3, 8, 6))
    r = np.abs(r)
    whole = adam_direction(grad, s, r, 3, 0.9, 0.999, 1e-8)
    strided = adam_direction(grad[:, ::2], s[:, ::2], r[:, ::2], 3, 0.9, 0.999, 1e-8)
    for a, b in zip(whole, strided):
        np.testing.assert_array_equal(a[:, ::2], b)
    mixed = adam_direction(grad.astype(np.float32), s, r, 3, 0.9, 0.999, 1e-8)
    assert all(a.dtype == np.float64 for a in mixed)
