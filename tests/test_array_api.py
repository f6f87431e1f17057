"""The numeric core on another array namespace (torch, CPU): same numbers as numpy.

Skipped where torch is not installed (CI); this is the first check for a GPU backend.
"""

import numpy as np
import pytest

from meanfield import CBO, TwoLayerNetwork, consensus_point, gibbs_weights
from meanfield.hybrid import HybridCBOAdam
from meanfield.method import consensus_update
from meanfield.noise import AnisotropicNoise, IsotropicNoise
from meanfield.otcbo import OTCBO
from meanfield.transport import ExactBarycenter, SinkhornBarycenter, w2_squared

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("loss, C", [("mse", 1), ("cross_entropy", 3)])
def test_network_on_torch_matches_numpy(activation, loss, C):
    rng = np.random.default_rng(0)
    net = TwoLayerNetwork(2, C, 5, activation=activation, loss=loss, block_elements=40)
    theta, x = net.init(4, 1.0, rng), rng.normal(size=(7, 2))
    y = rng.integers(0, C, 7) if loss == "cross_entropy" else rng.normal(size=7)
    risks, grad = net.risk_and_grad(torch.asarray(theta), torch.asarray(x), torch.asarray(y))
    np.testing.assert_allclose(risks.numpy(), net.risk(theta, x, y), rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), net.risk_and_grad(theta, x, y)[1], rtol=1e-10, atol=1e-14)


def test_consensus_and_update_on_torch_match_numpy():
    rng = np.random.default_rng(1)
    risks, theta, xi = rng.uniform(size=6), rng.normal(size=(6, 3, 2)), rng.normal(size=(6, 3, 2))
    w = gibbs_weights(torch.asarray(risks), 1e7)
    np.testing.assert_allclose(w.numpy(), gibbs_weights(risks, 1e7))
    v = consensus_point(torch.asarray(theta), w)
    for noise in (AnisotropicNoise(), IsotropicNoise()):
        moved = consensus_update(torch.asarray(theta), v, 0.1, 1.0, 1.2, noise, torch.asarray(xi))
        expected = consensus_update(theta, v.numpy(), 0.1, 1.0, 1.2, noise, xi)
        np.testing.assert_allclose(moved.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("method", [CBO(n_particles=4, batch_size=8, alpha=1e3),
                                    HybridCBOAdam(n_particles=4, batch_size=8, alpha=1e3)])
def test_steps_keep_torch_tensors(method):
    net, rng = TwoLayerNetwork(1, 1, 5), np.random.default_rng(2)
    state = method.init(net, np.random.default_rng(3))
    reference = method.step(state, net, x := rng.uniform(size=(8, 1)), y := rng.normal(size=8), 0,
                            np.random.default_rng(4))
    for name, value in vars(state).items():
        if isinstance(value, np.ndarray):
            setattr(state, name, torch.asarray(value))
    new = method.step(state, net, torch.asarray(x), torch.asarray(y), 0, np.random.default_rng(4))
    assert isinstance(new.theta, torch.Tensor)
    np.testing.assert_allclose(new.theta.numpy(), reference.theta, rtol=1e-12)


def test_transport_on_torch_matches_numpy():
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-2, 2, size=(6, 8, 3)), rng.uniform(-2, 2, size=(8, 3))
    beta = rng.dirichlet(np.ones(6))
    for method in ("exact", "sinkhorn"):
        got = w2_squared(torch.asarray(x), torch.asarray(y), method=method, relative_reg=0.5)
        assert isinstance(got, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), w2_squared(x, y, method=method, relative_reg=0.5), rtol=1e-12)
    for solver in (ExactBarycenter(weight_threshold=0.2), SinkhornBarycenter(relative_reg=0.1, max_iter=5)):
        ref = solver.solve(x, beta, y)
        res = solver.solve(torch.asarray(x), torch.asarray(beta), torch.asarray(y))
        assert isinstance(res.support, torch.Tensor) and isinstance(res.maps, torch.Tensor)
        np.testing.assert_allclose(res.support.numpy(), ref.support, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(res.maps.numpy(), ref.maps, rtol=1e-12, atol=1e-14)
        assert res.n_iter == ref.n_iter
    warm = ExactBarycenter().solve(torch.asarray(x), torch.asarray(beta), torch.asarray(y))
    again = ExactBarycenter().solve(torch.asarray(x), torch.asarray(beta), warm.support, warm_start=warm)
    np.testing.assert_allclose(again.support.numpy(), warm.support.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("barycenter", ["exact", "sinkhorn"])
def test_otcbo_step_keeps_torch_tensors(barycenter):
    method = OTCBO(n_particles=4, batch_size=8, alpha=1e2, sigma_squared=0.1, barycenter=barycenter, relative_reg=0.1)
    net, rng = TwoLayerNetwork(1, 1, 5), np.random.default_rng(2)
    x, y = rng.uniform(size=(8, 1)), rng.normal(size=8)
    state = method.init(net, np.random.default_rng(3))
    reference = method.step(state, net, x, y, 0, np.random.default_rng(4))
    for name, value in vars(state).items():
        if isinstance(value, np.ndarray):
            setattr(state, name, torch.asarray(value))
    new = method.step(state, net, torch.asarray(x), torch.asarray(y), 0, np.random.default_rng(4))
    assert isinstance(new.theta, torch.Tensor)
    np.testing.assert_allclose(new.theta.numpy(), reference.theta, rtol=1e-12, atol=1e-14)
