"""Tests of meanfield.assignment against scipy's solver and LP duality."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.optimize import linear_sum_assignment

from meanfield.assignment import in_blocks, linear_assignment


def _scipy(cost):
    return np.stack([linear_sum_assignment(c)[1] for c in cost])


def _total(cost, perm):
    return np.take_along_axis(cost, perm[:, :, None], axis=2).sum(axis=(1, 2))


def _assert_certified(cost, perm, potentials):
    """LP duality: with u_i = min_j (C_ij - v_j) all reduced costs are >= 0 by construction, the
    matched ones are 0, so sum u + sum v equals the primal cost and the permutation is optimal."""
    u = (cost - potentials[:, None, :]).min(axis=2)
    matched = np.take_along_axis(cost, perm[:, :, None], axis=2)[..., 0]
    reduced = matched - u - np.take_along_axis(potentials, perm, axis=1)
    scale = np.abs(cost).max() + 1.0
    assert np.abs(reduced).max() <= 1e-12 * scale
    assert_allclose(u.sum(axis=1) + potentials.sum(axis=1), _total(cost, perm), rtol=1e-12, atol=1e-12 * scale)


@pytest.mark.parametrize("m", [1, 2, 3, 7, 60, 200])
def test_cold_solve_equals_scipy_and_is_certified(m):
    cost = np.random.default_rng(m).standard_normal((6, m, m))
    perm, potentials = linear_assignment(cost)
    assert perm.shape == potentials.shape == (6, m)
    assert_array_equal(perm, _scipy(cost))  # continuous costs: the optimum is unique
    _assert_certified(cost, perm, potentials)


@pytest.mark.parametrize("m, batch", [(8, 300), (37, 40)])
def test_ties_give_an_optimal_permutation(m, batch):
    """Integer costs: many equal reduced costs, in the bids and in the path searches."""
    rng = np.random.default_rng(m)
    cost = rng.integers(0, 3, size=(batch, m, m)).astype(float)
    perm, potentials = linear_assignment(cost)
    assert_array_equal(np.sort(perm, axis=1), np.broadcast_to(np.arange(m), perm.shape))
    assert_array_equal(_total(cost, perm), _total(cost, _scipy(cost)))
    _assert_certified(cost, perm, potentials)
    moved = cost + rng.integers(0, 2, size=cost.shape)
    perm, potentials = linear_assignment(moved, potentials, perm)
    assert_array_equal(_total(moved, perm), _total(moved, _scipy(moved)))
    _assert_certified(moved, perm, potentials)


@pytest.mark.parametrize("scale", [1e-6, 1e-2, 1.0, 10.0])
def test_warm_start_after_perturbation_equals_cold_solve(scale):
    rng = np.random.default_rng(2)
    cost = rng.standard_normal((10, 40, 40))
    perm, potentials = linear_assignment(cost)
    moved = cost + scale * rng.standard_normal(cost.shape)
    warm_perm, warm_potentials = linear_assignment(moved, potentials, perm)
    assert_array_equal(warm_perm, _scipy(moved))
    _assert_certified(moved, warm_perm, warm_potentials)


def test_warm_start_from_arbitrary_permutation_and_potentials():
    rng = np.random.default_rng(3)
    cost = rng.standard_normal((20, 30, 30))
    start = np.stack([rng.permutation(30) for _ in range(20)])
    perm, potentials = linear_assignment(cost, 100 * rng.standard_normal((20, 30)), start)
    assert_array_equal(perm, _scipy(cost))
    _assert_certified(cost, perm, potentials)


def test_potentials_stay_bounded_over_many_warm_starts():
    """As in a long OT-CBO run: thousands of warm starts on slowly moving costs. The potentials
    are centred, so they stay on the scale of the costs instead of drifting."""
    rng = np.random.default_rng(6)
    cost = rng.uniform(size=(4, 20, 20))
    perm, potentials = linear_assignment(cost)
    for _ in range(2000):
        cost = np.clip(cost + 0.05 * rng.standard_normal(cost.shape), 0, 1)
        perm, potentials = linear_assignment(cost, potentials, perm)
    assert np.abs(potentials).max() <= 2.0  # costs lie in [0, 1]
    assert_allclose(potentials.mean(axis=1), 0, atol=1e-12)
    assert_array_equal(perm, _scipy(cost))


def test_squared_distance_costs_far_from_origin():
    """The barycenter's costs: |y|^2 - 2 x.y with large offsets; rows equal up to rounding."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((5, 50, 3)) + 1e3, rng.standard_normal((50, 3)) + 1e3
    cost = (y * y).sum(1) - 2 * x @ y.T
    perm, _ = linear_assignment(cost)
    direct = ((x[:, :, None, :] - y) ** 2).sum(-1)
    assert_allclose(_total(direct, perm), _total(direct, _scipy(direct)), rtol=1e-9)


def test_workers_and_inputs_unchanged():
    rng = np.random.default_rng(5)
    cost = rng.standard_normal((9, 25, 25))
    perm, potentials = linear_assignment(cost)
    start_p, start_v = perm.copy(), potentials.copy()
    moved = cost + 0.1 * rng.standard_normal(cost.shape)
    one = linear_assignment(moved, potentials, perm, workers=1)
    three = linear_assignment(moved, potentials, perm, workers=3)
    assert_array_equal(one[0], three[0])
    assert_array_equal(one[1], three[1])
    assert_array_equal(perm, start_p)  # the warm start is copied, not overwritten
    assert_array_equal(potentials, start_v)


def test_empty_batch_and_empty_problems():
    perm, potentials = linear_assignment(np.zeros((0, 4, 4)))
    assert perm.shape == potentials.shape == (0, 4)
    perm, potentials = linear_assignment(np.zeros((3, 0, 0)))
    assert perm.shape == potentials.shape == (3, 0)


@pytest.mark.parametrize("n, n_blocks", [(0, 3), (1, 3), (7, 1), (7, 3), (7, 7), (7, 20)])
@pytest.mark.parametrize("workers", [1, 2])
def test_in_blocks_covers_the_range_once(n, n_blocks, workers):
    hits = np.zeros(n, dtype=int)
    calls = []

    def fn(block):
        calls.append(block)
        hits[block] += 1

    in_blocks(fn, n, n_blocks, workers)
    assert_array_equal(hits, np.ones(n, dtype=int))
    assert len(calls) == min(n, n_blocks) and all(b.stop > b.start for b in calls)


@pytest.mark.parametrize("kwargs, match", [
    (dict(cost=np.zeros((3, 3))), r"cost must have shape \(B, M, M\)"),
    (dict(cost=np.zeros((1, 3, 4))), r"cost must have shape \(B, M, M\)"),
    (dict(cost=np.zeros((1, 2, 2)), potentials=np.zeros((1, 2))), "needs both potentials and assignment"),
    (dict(cost=np.zeros((1, 2, 2)), potentials=np.zeros((1, 3)), assignment=np.zeros((1, 3), int)),
     r"shape \(B, M\) = \(1, 2\)"),
    (dict(cost=np.zeros((1, 2, 2)), potentials=np.zeros((1, 2)), assignment=np.array([[0, 0]])),
     "permutation of 0..M-1"),
    (dict(cost=np.zeros((1, 2, 2)), potentials=np.array([[0.0, np.inf]]), assignment=np.array([[0, 1]])),
     "potentials contains NaN"),
    (dict(cost=np.zeros((1, 2, 2)), workers=0), "workers must be an integer >= 1"),
])
def test_invalid_inputs_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        linear_assignment(**kwargs)


@pytest.mark.parametrize("cost, match", [
    (np.full((1, 2, 2), np.nan), "cost contains NaN or infinite values"),
    (np.array([[[0.0, np.inf], [1.0, 2.0]]]), "cost contains NaN or infinite values"),
    # finite, but c - v overflows inside the solver
    (np.array([[[1e308, -1e308], [0.0, 1.0]]]), r"cost entries span inf, their max - min must be <= 5.62e\+306"),
    (np.array([[[1e307, -1e306], [0.0, 1.0]]]), r"cost entries span 1.1e\+307"),
])
def test_costs_the_solver_cannot_handle_raise_floating_point_error(cost, match):
    with pytest.raises(FloatingPointError, match=match):
        linear_assignment(cost)


def test_costs_within_the_span_limit_are_solved():
    cost = np.array([[[5e306, 0.0], [0.0, 5e306]]])
    perm, _ = linear_assignment(cost)
    assert_array_equal(perm, [[1, 0]])
