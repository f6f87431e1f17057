"""Multi-task CBO against plain loops over tasks, and its limits."""

import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from meanfield import CBO, TwoLayerNetwork, shifted_sines, sine, train
from meanfield.consensus import gibbs_weights
from meanfield.multitask import MultiTaskCBO, task_assignment

NET = TwoLayerNetwork(1, 1, 5)


def test_risk_matrix_matches_per_task_risks():
    rng = np.random.default_rng(0)
    theta, x, y = NET.init(6, 1.0, rng), rng.uniform(size=(30, 1)), rng.normal(size=(30, 4))
    loop = np.stack([NET.risk(theta, x, y[:, p]) for p in range(4)], axis=1)
    assert_allclose(NET.risk_matrix(theta, x, y), loop, rtol=1e-11, atol=1e-15)


def test_consensus_per_task_matches_a_loop_over_tasks():
    rng = np.random.default_rng(1)
    m = MultiTaskCBO(n_particles=8, dt=0.1, sigma_squared=0.0, alpha=30.0, batch_size=20)
    state = m.init(NET, rng)
    x, y = rng.uniform(size=(20, 1)), rng.normal(size=(20, 4))
    new = m.step(state, NET, x, y, 0, rng)
    assign = task_assignment(8, 4)
    for p in range(4):
        w = gibbs_weights(NET.risk(state.theta, x, y[:, p]), 30.0)
        v = sum(w[n] * state.theta[n] for n in range(8))
        assert_allclose(new.consensus[p], v, rtol=1e-12, atol=1e-14)
        for n in np.flatnonzero(assign == p):  # sigma = 0: particle n moves toward V_p(n)
            assert_allclose(new.theta[n], state.theta[n] - 0.1 * (state.theta[n] - v), rtol=1e-12, atol=1e-14)


def test_independent_mode_only_weighs_the_tasks_own_particles():
    rng = np.random.default_rng(2)
    m = MultiTaskCBO(n_particles=6, dt=0.1, sigma_squared=0.0, alpha=0.0, batch_size=10, shared=False)
    state = m.init(NET, rng)
    new = m.step(state, NET, rng.uniform(size=(10, 1)), rng.normal(size=(10, 3)), 0, rng)
    for p in range(3):
        assert_allclose(new.consensus[p], state.theta[2 * p : 2 * p + 2].mean(0), rtol=1e-13)


def test_one_task_equals_finite_cbo():
    kwargs = dict(n_particles=6, dt=0.1, sigma_squared=1.2, alpha=1e3, batch_size=40)
    single = sine(n_train=160, n_test=40)
    one_task = shifted_sines(n_tasks=1, n_train=160, n_test=40, noise_std=0.01)
    # same inputs and targets as a (S, 1) matrix
    assert_array_equal(one_task.y_train[:, 0], single.y_train)
    a = train(MultiTaskCBO(**kwargs), NET, one_task, 3, seed=2)
    b = train(CBO(**kwargs), NET, single, 3, seed=2)
    assert_allclose(a.train_risk.sel(task=1), b.train_risk, rtol=1e-10)
    assert_allclose(a.final_params.sel(task=1), b.final_params, rtol=1e-10)


def test_dataset_has_a_task_dimension_and_risks_fall():
    ds = train(MultiTaskCBO(n_particles=20, dt=0.2, sigma_squared=1.8, alpha=1e4, batch_size=100), NET,
               shifted_sines(n_tasks=5, n_train=500, n_test=100), 10, seed=0)
    assert ds.train_risk.dims == ("epoch", "task") and list(ds.task.values) == [1, 2, 3, 4, 5]
    assert ds.final_params.dims == ("task", "neuron", "component")
    assert ds.variance.dims == ("epoch",)
    assert float(ds.train_risk.isel(epoch=-1).median()) < 0.5 * float(ds.train_risk.isel(epoch=0).median())


def test_assignment_errors():
    with pytest.raises(ValueError, match="n_particles must be >= the number of tasks 5, got 4"):
        task_assignment(4, 5)
    with pytest.raises(ValueError, match="assignment must be one of"):
        MultiTaskCBO(assignment="random")
    with pytest.raises(ValueError, match="cannot train a single-task problem"):
        train(MultiTaskCBO(n_particles=4, batch_size=10), NET, sine(n_train=20, n_test=5), 1)
    with pytest.raises(ValueError, match="cannot train a multi-task problem"):
        train(CBO(n_particles=4, batch_size=10), NET, shifted_sines(n_tasks=2, n_train=20, n_test=5), 1)
    with pytest.raises(ValueError, match="n_particles must be >= the number of tasks 3"):
        train(MultiTaskCBO(n_particles=2, batch_size=10), NET, shifted_sines(n_tasks=3, n_train=20, n_test=5), 1)


@pytest.mark.parametrize("value", ["no", "yes", 0, 1, None])
def test_shared_must_be_a_bool(value):
    with pytest.raises(ValueError, match=re.escape(f"shared must be true or false, got {value!r}")):
        MultiTaskCBO(shared=value)
    with pytest.raises(ValueError, match=re.escape(f"require_decay must be true or false, got {value!r}")):
        MultiTaskCBO(require_decay=value)


def test_shared_accepts_python_and_numpy_bools():
    assert MultiTaskCBO(shared=np.False_).shared is False
    assert MultiTaskCBO(shared=True).shared is True
    assert MultiTaskCBO(shared=False).params()["shared"] == 0
