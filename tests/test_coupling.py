"""Coupled draws: particle i (and neuron j) get the same initial draw and noise whatever N (and M) is.

The draws themselves are compared (each method's normal draws are recorded as they are made), not
trajectories: runs of different N differ through the interaction, and must differ only there.
"""

import numpy as np
import pytest

from meanfield import CBO, TwoLayerNetwork, train
from meanfield.backend import CoupledGenerator
from meanfield.hybrid import HybridCBOAdam
from meanfield.otcbo import OTCBO
from meanfield.problems import sine


class RecordingDraws:
    """Wraps a method's normal draws and keeps a copy of each."""

    def __init__(self, draw):
        self.draw, self.draws = draw, []

    def __call__(self, rng, like):
        xi = self.draw(rng, like)
        self.draws.append(np.array(xi))
        return xi


class Recording:
    """A method wrapper that keeps the initial particles and every minibatch."""

    def __init__(self, method):
        self.method, self.batches, self.initial = method, [], None

    def __getattr__(self, name):
        return getattr(self.method, name)

    def init(self, network, rng):
        state = self.method.init(network, rng)
        self.initial = np.array(state.theta)
        return state

    def step(self, state, network, x, y, epoch, rng):
        self.batches.append(np.array(x))
        return self.method.step(state, network, x, y, epoch, rng)


PROBLEM = sine(80, 20)


def _run(make, n_particles, n_neurons, draws="coupled", draw_width=8, epochs=3):
    inner = make(n_particles)
    noise = inner._normal = RecordingDraws(inner._normal)
    method = Recording(inner)
    kwargs = {"draws": draws, "draw_width": draw_width} if draws == "coupled" else {}
    net = TwoLayerNetwork(1, 1, n_neurons, **kwargs)
    train(method, net, PROBLEM, epochs=epochs, seed=11)
    return method, noise


METHODS = {
    "cbo": lambda n: CBO(n_particles=n, batch_size=20, alpha=30.0, sigma_squared=0.5),
    "hybrid": lambda n: HybridCBOAdam(n_particles=n, batch_size=20, alpha=30.0),
    "otcbo": lambda n: OTCBO(n_particles=n, batch_size=20, alpha=30.0, sigma_squared=0.5),
}


@pytest.mark.parametrize("label", list(METHODS))
def test_the_first_particles_get_the_same_draws_whatever_n(label):
    small, small_noise = _run(METHODS[label], 5, 6)
    large, large_noise = _run(METHODS[label], 9, 6)
    np.testing.assert_array_equal(large.initial[:5], small.initial)
    assert len(small_noise.draws) == len(large_noise.draws) == 12  # 3 epochs of 4 minibatches
    for xi_small, xi_large in zip(small_noise.draws, large_noise.draws, strict=True):
        np.testing.assert_array_equal(xi_large[:5], xi_small)
    for x_small, x_large in zip(small.batches, large.batches, strict=True):  # one minibatch sequence
        np.testing.assert_array_equal(x_large, x_small)


@pytest.mark.parametrize("label", list(METHODS))
def test_the_first_neurons_get_the_same_draws_whatever_m(label):
    narrow, narrow_noise = _run(METHODS[label], 4, 3)
    wide, wide_noise = _run(METHODS[label], 4, 8)
    np.testing.assert_array_equal(wide.initial[:, :3], narrow.initial)
    for xi_narrow, xi_wide in zip(narrow_noise.draws, wide_noise.draws, strict=True):
        np.testing.assert_array_equal(xi_wide[:, :3], xi_narrow)


def test_plain_draws_are_not_coupled_after_the_first_step():
    # the check above can fail: without coupling, the second step's draws of the first particles differ
    small, small_noise = _run(METHODS["cbo"], 5, 6, draws="host")
    large, large_noise = _run(METHODS["cbo"], 9, 6, draws="host")
    np.testing.assert_array_equal(large.initial[:5], small.initial)  # one C-order block: equal at init
    assert not np.array_equal(large_noise.draws[1][:5], small_noise.draws[1])


def test_particles_draw_independent_standard_normals():
    gen = CoupledGenerator(np.random.default_rng(3), width=50)
    z = gen.standard_normal((400, 50, 3))
    # distinct particles' streams are uncorrelated and standard normal (5 standard errors)
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    corr = np.corrcoef(z[:, :, 0])[np.triu_indices(400, 1)]
    assert np.abs(corr).max() < 5.5 / np.sqrt(50)
    u = gen.uniform(-2.0, 2.0, (400, 50, 3))
    assert u.min() >= -2.0 and u.max() < 2.0 and abs(u.mean()) < 5 * (4 / np.sqrt(12)) / np.sqrt(u.size)


def test_coupled_draws_refuse_a_width_beyond_draw_width():
    with pytest.raises(ValueError, match="draw_width must be an integer >= n_neurons = 6"):
        TwoLayerNetwork(1, 1, 6, draws="coupled", draw_width=4)
    with pytest.raises(ValueError, match="draw_width = 8 needs draws='coupled'"):
        TwoLayerNetwork(1, 1, 6, draw_width=8)
    with pytest.raises(ValueError, match="neurons <= draw_width = 4"):
        CoupledGenerator(np.random.default_rng(0), 4).standard_normal((2, 5, 1))
