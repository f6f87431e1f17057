"""The compiled one-input evaluations against the dense matrix-product pass and finite differences."""

import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from test_network import central_differences

from meanfield import one_input
from meanfield.network import TwoLayerNetwork


def dense_and(evaluation, n_outputs=1, n_neurons=9, activation="relu", loss="mse", dtype="float64"):
    kwargs = dict(n_inputs=1, n_outputs=n_outputs, n_neurons=n_neurons, activation=activation, loss=loss)
    return (TwoLayerNetwork(**kwargs, evaluation="dense"),
            TwoLayerNetwork(**kwargs, evaluation=evaluation, dtype=dtype))


def targets(rng, S, C, loss):
    return rng.integers(0, C, size=S) if loss == "cross_entropy" else rng.normal(size=(S, C) if C > 1 else S)


def assert_agree(dense, fast, theta, x, y, rtol=1e-12):
    """Outputs, risks and gradients agree to ``rtol`` relative to their largest magnitude."""
    g_ref, g = dense.forward(theta, x), fast.forward(theta, x)
    assert_allclose(g, g_ref, rtol=0, atol=rtol * max(np.abs(g_ref).max(), 1e-300))
    risk_ref, grad_ref = dense.risk_and_grad(theta, x, y)
    risk, grad = fast.risk_and_grad(theta, x, y)
    assert_allclose(risk, risk_ref, rtol=rtol)
    assert_allclose(fast.risk(theta, x, y), risk_ref, rtol=rtol)
    assert_allclose(grad, grad_ref, rtol=0, atol=rtol * max(np.abs(grad_ref).max(), 1e-300))


@pytest.mark.parametrize("loss, C", [("mse", 1), ("mse", 3), ("cross_entropy", 4)])
@pytest.mark.parametrize("N, M, S", [(1, 1, 1), (7, 13, 50), (3, 40, 257)])
def test_relu_1d_matches_the_dense_pass_on_random_networks(loss, C, N, M, S):
    rng = np.random.default_rng([N, M, S, C])
    dense, fast = dense_and("relu_1d", C, M, loss=loss)
    theta, x = rng.normal(size=(N, M, 2 + C)), rng.uniform(-2, 2, size=(S, 1))
    assert_agree(dense, fast, theta, x, targets(rng, S, C, loss))


def test_relu_1d_on_adversarial_inputs():
    """Ties between inputs, zero and negative-zero weights, breakpoints exactly on data points (dyadic
    inputs and weights, so w x + b is exactly 0 there in any order of evaluation), neurons active
    nowhere or everywhere, unsorted inputs."""
    rng = np.random.default_rng(7)
    x = rng.permutation(np.repeat(np.arange(-8, 9) / 8.0, 3))[:, None]  # every value three times
    w = np.array([0.0, -0.0, 0.0, 1.0, -1.0, 2.0, -0.5, 4.0, 1.0, -1.0, 0.25, 0.0])
    b = np.array([1.0, 1.0, -1.0, 0.5, 0.5, -1.0, 0.25, 8.0, -9.0, -9.0, 0.0, 0.0])  # 8.0, -9: all / none
    c = rng.normal(size=(12, 2))
    theta = np.concatenate([w[:, None], b[:, None], c], axis=1)[None]
    theta = np.concatenate([theta, theta[:, rng.permutation(12)]], axis=0)
    dense, fast = dense_and("relu_1d", 2, 12)
    assert_agree(dense, fast, theta, x, rng.normal(size=(x.shape[0], 2)), rtol=1e-13)
    # the breakpoints are data points: x = -b / w is in the data for neurons 3..6 and 10
    assert set(-b[[3, 4, 5, 6, 10]] / w[[3, 4, 5, 6, 10]]) <= set(x[:, 0])


def test_relu_1d_active_ranges_apply_the_dense_test():
    xs = np.array([-1.0, 0.0, 0.0, 0.5, 2.0])
    theta = np.array([[[1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [2.0, -1.0, 1.0]]])
    _, ranges = one_input.relu_outputs(theta, xs)
    # x > 0; x < 0; everywhere (w = 0, b > 0); nowhere (w = b = 0: relu(0) = 0); x > 1/2 (0.5 itself is 0)
    assert ranges[0].tolist() == [[3, 5], [0, 1], [0, 5], [5, 5], [4, 5]]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("loss, C", [("mse", 1), ("cross_entropy", 3)])
def test_fused_1d_matches_the_dense_pass(activation, loss, C):
    rng = np.random.default_rng(11)
    dense, fast = dense_and("fused_1d", C, 6, activation=activation, loss=loss)
    theta, x = rng.normal(size=(5, 6, 2 + C)), rng.uniform(-2, 2, size=(33, 1))
    assert_agree(dense, fast, theta, x, targets(rng, 33, C, loss))


@pytest.mark.parametrize("evaluation", ["relu_1d", "fused_1d"])
def test_compiled_gradients_match_central_differences(evaluation):
    """An independent check of the gradient formulas, away from the kinks of ReLU."""
    rng = np.random.default_rng(3)
    net = TwoLayerNetwork(1, 2, 4, evaluation=evaluation)
    theta, x, y = rng.normal(size=(2, 4, 4)), rng.uniform(-1, 1, size=(15, 1)), rng.normal(size=(15, 2))
    _, grad = net.risk_and_grad(theta, x, y)
    # no breakpoint -b/w lies within h |x| / |w| of a data point for this seed, so the risk is smooth there
    assert_allclose(grad, central_differences(net, theta, x, y), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("evaluation", ["relu_1d", "fused_1d"])
def test_float32_evaluation_stays_float32_and_agrees_to_its_rounding(evaluation):
    rng = np.random.default_rng(5)
    dense, fast = dense_and(evaluation, 1, 30, dtype="float32")
    theta, x, y = rng.normal(size=(6, 30, 3)), rng.uniform(0, 1, size=(200, 1)), rng.normal(size=200)
    theta32 = theta.astype(np.float32)
    risk, grad = fast.risk_and_grad(theta32, x, y)
    assert risk.dtype == grad.dtype == fast.forward(theta32, x).dtype == np.float32
    risk_ref, grad_ref = dense.risk_and_grad(theta32.astype(np.float64), x.astype(np.float32).astype(np.float64),
                                             y.astype(np.float32).astype(np.float64))
    assert_allclose(risk, risk_ref, rtol=1e-5)
    assert_allclose(grad, grad_ref, rtol=0, atol=1e-5 * np.abs(grad_ref).max())


def test_auto_picks_the_compiled_evaluation_for_one_input_numpy_networks():
    theta = np.zeros((1, 3, 3))
    assert TwoLayerNetwork(1, 1, 3)._mode(theta) == "relu_1d"
    assert TwoLayerNetwork(1, 1, 3, activation="tanh")._mode(theta) == "fused_1d"
    assert TwoLayerNetwork(2, 1, 3)._mode(np.zeros((1, 3, 4))) == "dense"
    assert TwoLayerNetwork(1, 1, 3, evaluation="dense")._mode(theta) == "dense"


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_inputs=2, evaluation="relu_1d"), "evaluation='relu_1d' needs n_inputs = 1, got 2"),
    (dict(n_inputs=3, evaluation="fused_1d"), "evaluation='fused_1d' needs n_inputs = 1, got 3"),
    (dict(activation="tanh", evaluation="relu_1d"), "evaluation='relu_1d' needs activation='relu', got 'tanh'"),
    (dict(evaluation="fast"), "evaluation must be one of ['auto', 'dense', 'relu_1d', 'fused_1d'], got 'fast'"),
    (dict(dtype="float16"), "dtype must be one of ['float64', 'float32'], got 'float16'"),
])
def test_invalid_evaluation_and_dtype_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TwoLayerNetwork(**{"n_inputs": 1, "n_outputs": 1, "n_neurons": 3, **kwargs})


def test_init_in_float32_rounds_the_float64_draws():
    a = TwoLayerNetwork(1, 1, 4).init(3, 1.0, np.random.default_rng(0))
    b = TwoLayerNetwork(1, 1, 4, dtype="float32").init(3, 1.0, np.random.default_rng(0))
    assert b.dtype == np.float32
    assert_array_equal(b, a.astype(np.float32))


@pytest.mark.parametrize("layout", ["clustered", "outliers", "constant", "two_points"])
def test_relu_1d_on_inputs_far_from_uniform(layout):
    """Ties, clusters and outliers: the bisection must find the exact boundary of the dense test."""
    rng = np.random.default_rng(13)
    x = {"clustered": np.concatenate([rng.normal(0, 1e-9, 300), rng.normal(5, 1e-9, 5)]),
         "outliers": np.concatenate([rng.uniform(0, 1, 200), [-1e6, 1e6, 3e5]]),
         "constant": np.full(40, 0.3),
         "two_points": np.repeat([-1.0, 1.0], 20)}[layout][:, None]
    dense, fast = dense_and("relu_1d", 1, 60)
    theta = rng.normal(size=(5, 60, 3))
    theta[:, :20, 1] = -theta[:, :20, 0] * rng.choice(x[:, 0], 20)  # breakpoints at data points
    assert_agree(dense, fast, theta, x, rng.normal(size=x.shape[0]), rtol=1e-11)
    brute = np.array([[((m[0] * np.sort(x[:, 0]) + m[1]) > 0).nonzero()[0] for m in net] for net in theta],
                     dtype=object)
    _, ranges = one_input.relu_outputs(theta, np.sort(x[:, 0]))
    for n in range(5):
        for m in range(60):
            active = brute[n, m]
            expected = [active[0], active[-1] + 1] if len(active) else None
            if expected is not None:
                assert ranges[n, m].tolist() == expected
            else:
                assert ranges[n, m, 0] >= ranges[n, m, 1]


def test_relu_1d_risks_do_not_depend_on_the_order_of_the_samples_bit_for_bit():
    """Sums over the samples sorted by input (ties kept in their stable order): the sorted copy of a
    data set, which training evaluates on, gives every risk bit for bit; sort_inputs recognises it."""
    rng = np.random.default_rng(12)
    x = np.round(rng.uniform(-1, 1, size=(300, 1)), 2)  # many ties
    y = rng.normal(size=(300, 2))
    net = TwoLayerNetwork(1, 2, 9)
    theta = net.init(7, 1.0, rng)
    assert net.sorts_inputs(theta) and not TwoLayerNetwork(1, 2, 9, activation="tanh").sorts_inputs(theta)
    order = np.argsort(x[:, 0], kind="stable")
    assert_array_equal(one_input.sort_inputs(x[order])[0], np.arange(300))
    assert_array_equal(one_input.sort_inputs(x[order])[1], one_input.sort_inputs(x)[1])
    assert_array_equal(net.risk(theta, x[order], y[order]), net.risk(theta, x, y))
