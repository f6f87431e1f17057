"""Forward pass, risks and gradients of the ensemble against independent computations."""

import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import expit, logsumexp

from meanfield.network import TwoLayerNetwork

ACTS = {"relu": lambda z: max(z, 0.0), "tanh": np.tanh, "sigmoid": expit}


def loop_forward(theta, x, d, act):
    """Plain loop over particles, samples and neurons: g(x) = (1/M) sum_m c_m act(w_m . x + b_m)."""
    n_particles, n_neurons, dim = theta.shape
    out = np.zeros((n_particles, x.shape[0], dim - d - 1))
    for n in range(n_particles):
        for s in range(x.shape[0]):
            for m in range(n_neurons):
                w, b, c = theta[n, m, :d], theta[n, m, d], theta[n, m, d + 1 :]
                out[n, s] += c * ACTS[act](float(w @ x[s] + b)) / n_neurons
    return out


def central_differences(net, theta, x, y, h=1e-6):
    """d risk_n / d theta_n by central differences, one component at a time."""
    numeric = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        step = np.zeros_like(theta)
        step[idx] = h
        numeric[idx] = (net.risk(theta + step, x, y)[idx[0]] - net.risk(theta - step, x, y)[idx[0]]) / (2 * h)
    return numeric


@pytest.mark.parametrize("activation", sorted(ACTS))
@pytest.mark.parametrize("d, C, evaluation", [(1, 1, "dense"), (1, 1, "auto"), (1, 2, "fused_1d"), (3, 4, "dense")])
def test_forward_matches_loop(activation, d, C, evaluation):
    rng = np.random.default_rng(1)
    net = TwoLayerNetwork(d, C, 7, activation=activation, block_elements=50, evaluation=evaluation)
    theta, x = net.init(5, 1.0, rng), rng.normal(size=(6, d))
    assert_allclose(net.forward(theta, x), loop_forward(theta, x, d, activation), rtol=1e-12, atol=1e-14)


def test_blocking_does_not_change_results():
    rng = np.random.default_rng(2)
    theta, x = rng.normal(size=(9, 11, 3)), rng.normal(size=(13, 1))
    ref = TwoLayerNetwork(1, 1, 11, block_elements=None, evaluation="dense")
    for block in (1, 143, 10**6):
        net = TwoLayerNetwork(1, 1, 11, block_elements=block, evaluation="dense")
        assert_allclose(net.forward(theta, x), ref.forward(theta, x), rtol=1e-13)
        y = rng.normal(size=13)
        assert_allclose(net.risk_and_grad(theta, x, y)[1], ref.risk_and_grad(theta, x, y)[1], rtol=1e-12)


def test_output_invariant_under_neuron_permutation():
    rng = np.random.default_rng(3)
    net = TwoLayerNetwork(2, 3, 10)
    theta, x = net.init(4, 1.0, rng), rng.normal(size=(8, 2))
    permuted = theta[:, rng.permutation(10), :]
    assert not np.allclose(permuted, theta)
    assert_allclose(net.forward(permuted, x), net.forward(theta, x), rtol=1e-13)


def test_risks_match_direct_formulas():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 2))
    mse = TwoLayerNetwork(2, 1, 5)
    theta, y = mse.init(3, 1.0, rng), rng.normal(size=20)
    g = mse.forward(theta, x)[..., 0]
    assert_allclose(mse.risk(theta, x, y), ((g - y) ** 2).mean(axis=1), rtol=1e-13)

    ce = TwoLayerNetwork(2, 4, 5, loss="cross_entropy")
    theta, labels = ce.init(3, 3.0, rng), rng.integers(0, 4, size=20)
    logits = ce.forward(theta, x)
    expected = (logsumexp(logits, axis=-1) - logits[:, np.arange(20), labels]).mean(axis=1)
    assert_allclose(ce.risk(theta, x, labels), expected, rtol=1e-13)


def test_cross_entropy_is_stable_for_huge_logits():
    net = TwoLayerNetwork(1, 2, 1, loss="cross_entropy")
    theta = np.array([[[1.0, 0.0, 2e4, -2e4]]])  # logits (2e4, -2e4) at x = 1
    risk = net.risk(theta, np.array([[1.0]]), np.array([1]))
    assert_allclose(risk, [4e4])


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("loss, C", [("mse", 2), ("cross_entropy", 3)])
def test_gradient_matches_central_differences(activation, loss, C):
    rng = np.random.default_rng(5)
    net = TwoLayerNetwork(2, C, 4, activation=activation, loss=loss)
    theta, x = net.init(2, 1.0, rng), rng.normal(size=(9, 2))
    y = rng.integers(0, C, size=9) if loss == "cross_entropy" else rng.normal(size=(9, C))
    risks, grad = net.risk_and_grad(theta, x, y)
    assert_allclose(risks, net.risk(theta, x, y), rtol=1e-14)
    # central differences: truncation O(h^2) and rounding O(eps / h) are both ~1e-10 here
    assert_allclose(grad, central_differences(net, theta, x, y), rtol=1e-6, atol=1e-8)


def test_invalid_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="n_neurons must be an integer >= 1"):
        TwoLayerNetwork(1, 1, 0)
    with pytest.raises(ValueError, match="activation must be one of"):
        TwoLayerNetwork(1, 1, 3, activation="gelu")
    with pytest.raises(ValueError, match="n_outputs must be >= 2"):
        TwoLayerNetwork(1, 1, 3, loss="cross_entropy")
    net = TwoLayerNetwork(2, 1, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(n_samples, 2\)"):
        net.forward(np.zeros((1, 3, 4)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"theta must have shape \(n_particles, 3, 4\)"):
        net.forward(np.zeros((1, 3, 5)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="n_particles must be >= 1"):
        net.init(-1, 1.0, np.random.default_rng())


@pytest.mark.parametrize("labels, shown", [
    ([3, 12, 0], "12"), ([3, -1, 0], "-1"), ([3.0, 0.5, 0.0], "0.5"), ([3.0, np.nan, 0.0], "nan"),
    ([10, 2], "10"),
])
def test_cross_entropy_refuses_labels_that_are_not_class_indices(labels, shown):
    """Such labels made all-zero one-hot rows before: a wrong loss and gradient with no error."""
    net = TwoLayerNetwork(2, 10, 3, loss="cross_entropy")
    y = np.array(labels)
    theta = net.init(2, 1.0, np.random.default_rng(0))
    x = np.zeros((len(labels), 2))
    message = re.escape(f"y must hold class indices, integers in [0, 9], got {shown}")
    for call in (lambda: net.targets(y), lambda: net.risk(theta, x, y), lambda: net.risk_and_grad(theta, x, y)):
        with pytest.raises(ValueError, match=message):
            call()


def test_cross_entropy_accepts_integer_valued_labels_of_any_dtype():
    net = TwoLayerNetwork(2, 10, 3, loss="cross_entropy")
    expected = np.eye(10)[[9, 0, 4]]
    for y in (np.array([9, 0, 4]), np.array([9, 0, 4], dtype=np.uint8), np.array([9.0, 0.0, 4.0])):
        assert_array_equal(net.targets(y), expected)
    with pytest.raises(ValueError, match=r"y must have shape \(n_samples,\) of class indices, got shape \(3, 1\)"):
        net.targets(np.array([[9], [0], [4]]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_inputs=True), "n_inputs must be an integer >= 1, got True"),
    (dict(n_neurons=2.0), "n_neurons must be an integer >= 1, got 2.0"),
    (dict(block_elements=2.5), "block_elements must be an integer >= 1, None or 'auto', got 2.5"),
    (dict(block_elements=float("nan")), "block_elements must be an integer >= 1, None or 'auto', got nan"),
    (dict(block_elements=True), "block_elements must be an integer >= 1, None or 'auto', got True"),
    (dict(block_elements="4096"), "block_elements must be an integer >= 1, None or 'auto', got '4096'"),
])
def test_sizes_refuse_bools_floats_and_strings(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        TwoLayerNetwork(**{"n_inputs": 1, "n_outputs": 1, "n_neurons": 3, **kwargs})


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), True, 0.0])
def test_init_scale_must_be_a_finite_positive_number(scale):
    with pytest.raises(ValueError, match="init_scale must be"):
        TwoLayerNetwork(1, 1, 3).init(2, scale, np.random.default_rng(0))
