"""Tests of meanfield.transport: W2 between uniform measures and their weighted barycenters."""

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import ot
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from meanfield import transport
from meanfield.transport import (
    BarycenterResult,
    ExactBarycenter,
    SinkhornBarycenter,
    barycenter,
    costs,
    distance,
    entropic,
    exact,
    squared_distances,
    variance,
    w2_squared,
)


def _uniform(m):
    return np.full(m, 1.0 / m)


def _instance(seed, n, m, d):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, m, d)), rng.dirichlet(np.ones(n)), rng.standard_normal((m, d))


# --------------------------------------------------------------------------------------------------
# squared_distances and w2_squared
# --------------------------------------------------------------------------------------------------


def test_squared_distances_matches_direct_formula_batched():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6, 3)) + 100.0  # far from the origin: cancellation is the risk
    y = rng.standard_normal((5, 3)) + 100.0
    direct = ((x[:, :, None, :] - y[None, None, :, :]) ** 2).sum(-1)
    cost = squared_distances(x, y)
    assert cost.shape == (4, 6, 5)
    assert_allclose(cost, direct, rtol=1e-10, atol=1e-10)
    assert (squared_distances(x[0], x[0]) >= 0).all()


def test_w2_exact_matches_pot_emd2():
    rng = np.random.default_rng(1)
    for m, d in [(1, 2), (7, 1), (12, 3), (30, 5)]:
        x, y = rng.standard_normal((m, d)), 2.0 * rng.standard_normal((m, d)) + 1.0
        ref = ot.emd2(_uniform(m), _uniform(m), ot.dist(x, y), numItermax=10**7)
        assert_allclose(float(w2_squared(x, y)), ref, rtol=1e-12)


def test_w2_symmetric_permutation_invariant_and_zero_on_same_multiset():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((15, 3)), rng.standard_normal((15, 3))
    perm = rng.permutation(15)
    for method in ("exact", "sinkhorn"):
        w = float(w2_squared(x, y, method, relative_reg=0.1))
        assert w > 0.1
        assert_allclose(float(w2_squared(y, x, method, relative_reg=0.1)), w, rtol=1e-8)
        assert_allclose(float(w2_squared(x[perm], y, method, relative_reg=0.1)), w, rtol=1e-8)
        assert_allclose(float(w2_squared(x, y[perm], method, relative_reg=0.1)), w, rtol=1e-8)
    assert float(w2_squared(x, x[perm])) == 0.0


def test_w2_batched_equals_loop_and_broadcasts():
    x, _, y = _instance(3, 4, 9, 2)
    batched = w2_squared(x, y)  # y broadcast over the 4 measures
    assert batched.shape == (4,)
    assert_allclose(batched, [float(w2_squared(xi, y)) for xi in x], rtol=1e-14)
    pairs = w2_squared(x[:, None], x[None, :])
    assert pairs.shape == (4, 4)
    assert_allclose(pairs, pairs.T, rtol=1e-12)
    assert_allclose(np.diag(pairs), 0.0, atol=1e-12)


def test_w2_exact_accurate_for_nearly_equal_measures():
    # Consensus: W2^2 many decades below |x|^2; summed from differences, it stays exact.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 3)) + 50.0
    shift = np.array([1e-7, 0.0, 0.0])
    assert_allclose(float(w2_squared(x, x + shift)), 1e-14, rtol=1e-6)


def test_w2_sinkhorn_is_upper_bound_tending_to_exact():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((20, 2)), rng.standard_normal((20, 2)) + 0.5
    exact = float(w2_squared(x, y))
    values = [float(w2_squared(x, y, "sinkhorn", relative_reg)) for relative_reg in (1.0, 0.1, 0.05)]
    assert values[0] > values[1] > values[2] > exact
    assert values[2] - exact < 0.1 * exact
    m = 20
    cost = ot.dist(x, y)
    ref = ot.sinkhorn(_uniform(m), _uniform(m), cost, 0.1 * cost.mean(), method="sinkhorn_log",
                      numItermax=10**5, stopThr=1e-13)
    assert_allclose(values[1], (ref * cost).sum(), rtol=1e-7)


def test_w2_sinkhorn_unequal_sizes_and_degenerate_cost():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((8, 2)), rng.standard_normal((5, 2))
    assert float(w2_squared(x, y, "sinkhorn")) > float(ot.emd2(_uniform(8), _uniform(5), ot.dist(x, y)))
    point = np.ones((3, 2))
    assert float(w2_squared(point, point, "sinkhorn")) == 0.0


def test_w2_sinkhorn_small_reg_cold_start_does_not_underflow():
    # exp(-C/eps) underflows to 0 in every entry here; the log-domain sweep must take over.
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((10, 2)), rng.standard_normal((10, 2)) + 20.0
    assert (np.exp(-ot.dist(x, y) / (1e-3 * ot.dist(x, y).mean())) == 0).all()
    value = float(w2_squared(x, y, "sinkhorn", relative_reg=1e-3))
    cost = ot.dist(x, y)
    ref = ot.sinkhorn(_uniform(10), _uniform(10), cost, 1e-3 * cost.mean(), method="sinkhorn_log",
                      numItermax=10**5, stopThr=1e-13)
    assert_allclose(value, (ref * cost).sum(), rtol=1e-9)
    assert float(w2_squared(x, y)) < value < 1.001 * float(w2_squared(x, y))


def test_w2_sinkhorn_warns_when_not_converged():
    x, y = np.array([[0.0], [1.0]]), np.array([[3.0], [2.0]])
    with pytest.warns(RuntimeWarning, match="sinkhorn_max_iter"):
        w2_squared(x, y, "sinkhorn", relative_reg=0.05, sinkhorn_max_iter=1)


def _near_tie_costs(seed, batch, m, k):
    """Squared distances between clustered atoms: many near-equal assignments, the hard case for
    Sinkhorn at small relative_reg (OT-CBO measures look like this once neurons cluster)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-2, 2, size=(batch, 4, 2))
    x = centres[:, rng.integers(0, 4, m)] + 0.05 * rng.standard_normal((batch, m, 2))
    y = centres[:, rng.integers(0, 4, k)] + 0.05 * rng.standard_normal((batch, k, 2))
    return ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)


def test_newton_hessian_is_the_finite_difference_of_the_semidual_gradient():
    # The Newton step uses -L/eps as the Hessian of the semi-dual F(g), L the coupling Laplacian
    # built from the off-diagonal couplings; check it against central differences of grad F.
    cost = _near_tie_costs(0, 1, 6, 5)
    eps = np.array([0.3])
    g = np.random.default_rng(1).standard_normal((1, 5))

    def grad(g):  # dF/dg = column-marginal residual 1/K - P^T 1, with rows exact
        f, _ = entropic.semi_dual(np, cost, eps, g)
        return 1 / 5 - np.exp((f[:, :, None] + g[:, None, :] - cost) / eps).sum(axis=1)

    f, _ = entropic.semi_dual(np, cost, eps, g)
    plan = np.exp((f[:, :, None] + g[:, None, :] - cost) / eps)[0]
    coupling = 6 * plan.T @ plan * (1 - np.eye(5))
    laplacian = np.diag(coupling.sum(axis=1)) - coupling
    h, unit = 1e-6, np.eye(5)
    numeric = np.stack([(grad(g + h * unit[j]) - grad(g - h * unit[j]))[0] / (2 * h) for j in range(5)], axis=1)
    assert_allclose(numeric, -laplacian / eps[0], rtol=1e-6, atol=1e-9)
    # and grad F is the finite difference of F itself
    semi = lambda g: entropic.semi_dual(np, cost, eps, g)[1][0]  # noqa: E731
    numeric_grad = [(semi(g + h * unit[j]) - semi(g - h * unit[j])) / (2 * h) for j in range(5)]
    assert_allclose(numeric_grad, grad(g)[0], rtol=1e-6, atol=1e-10)


def test_sinkhorn_newton_converges_at_small_reg_and_matches_pot():
    cost = _near_tie_costs(2, 6, 12, 12)
    eps = 0.01 * cost.mean(axis=(1, 2))
    zeros = np.zeros((6, 12))
    f, g, plan, converged, steps = entropic.sinkhorn(np, cost, eps, zeros, zeros, 100, 1e-9)
    assert steps > 0
    assert converged
    # the optimality certificate of entropic OT: Gibbs form with both marginals right
    assert_allclose(plan, np.exp((f[:, :, None] + g[:, None, :] - cost) / eps[:, None, None]), rtol=1e-12)
    assert np.abs(plan.sum(axis=2) - 1 / 12).sum(axis=1).max() < 1e-12  # rows exact
    assert np.abs(plan.sum(axis=1) - 1 / 12).sum(axis=1).max() <= 1e-9
    # POT's log-domain Sinkhorn gives the same plan where 2000 of its steps converge (measured: three
    # of these six; on two, even 1e5 steps leave a marginal error of 3e-6, which Newton removes in
    # under 100 iterations)
    compared = 0
    for b in range(6):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # POT warns where it stops at numItermax
            ref = ot.sinkhorn(_uniform(12), _uniform(12), cost[b], eps[b], method="sinkhorn_log",
                              numItermax=2000, stopThr=1e-12)
        if np.abs(ref.sum(axis=0) - 1 / 12).sum() < 1e-10:
            assert_allclose(plan[b], ref, atol=1e-9)
            compared += 1
    assert compared >= 3
    # an iteration cap that stops before convergence is reported, and one that does not is not
    assert not entropic.sinkhorn(np, cost, eps, zeros, zeros, 3, 1e-9)[3]
    assert entropic.sinkhorn(np, cost, eps, zeros, zeros, 1, 2.0)[3]  # an L1 error is at most 2


# --------------------------------------------------------------------------------------------------
# exact barycenter
# --------------------------------------------------------------------------------------------------


def test_exact_barycenter_1d_is_weighted_average_of_sorted_atoms():
    x, beta, init = _instance(10, 6, 11, 1)
    res = ExactBarycenter().solve(x, beta, init)
    expected = np.tensordot(beta, np.sort(x[:, :, 0], axis=1), axes=1)
    assert_allclose(np.sort(res.support[:, 0]), expected, rtol=1e-13, atol=1e-14)
    assert res.converged


def test_exact_barycenter_two_measures_lie_on_matched_geodesic():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 10, 3))
    x[1] += 2.0
    perm = ot.emd(_uniform(10), _uniform(10), ot.dist(x[0], x[1])).argmax(axis=1)
    w2 = float(w2_squared(x[0], x[1]))
    for t in (0.2, 0.5, 0.9):
        res = ExactBarycenter().solve(x, np.array([t, 1 - t]), init=x[0])
        geodesic = t * x[0] + (1 - t) * x[1, perm]
        assert_allclose(float(w2_squared(res.support, geodesic)), 0.0, atol=1e-20)
        assert_allclose(res.objective, 0.5 * t * (1 - t) * w2, rtol=1e-12)


def test_exact_barycenter_of_translates_is_translated_mean():
    rng = np.random.default_rng(12)
    base = rng.standard_normal((9, 2))
    shifts = rng.standard_normal((5, 2)) * 3.0
    x = np.stack([rng.permutation(base) + a for a in shifts])
    beta = rng.dirichlet(np.ones(5))
    res = ExactBarycenter().solve(x, beta, init=rng.standard_normal((9, 2)))
    mean_shift = beta @ shifts
    assert_allclose(float(w2_squared(res.support, base + mean_shift)), 0.0, atol=1e-20)
    assert_allclose(res.maps, x - shifts[:, None, :] + mean_shift, atol=1e-12)
    assert_allclose(res.objective, 0.5 * beta @ ((shifts - mean_shift) ** 2).sum(1), rtol=1e-12)


@pytest.mark.parametrize("seed, n, m, d", [(20, 5, 8, 2), (21, 12, 15, 3), (22, 4, 25, 1)])
def test_exact_barycenter_matches_pot_free_support(seed, n, m, d):
    x, beta, init = _instance(seed, n, m, d)
    res = ExactBarycenter(tol=0.0).solve(x, beta, init)
    pot = ot.lp.free_support_barycenter(list(x), [_uniform(m)] * n, init, weights=beta,
                                        numItermax=10**4, stopThr=1e-30)
    pot_objective = 0.5 * sum(b * ot.emd2(_uniform(m), _uniform(m), ot.dist(xi, pot), numItermax=10**7)
                              for xi, b in zip(x, beta))
    assert_allclose(res.objective, pot_objective, rtol=1e-9)
    assert_allclose(float(w2_squared(res.support, pot)), 0.0, atol=1e-20)


def test_exact_objective_never_increases():
    x, beta, init = _instance(30, 40, 30, 2)
    res = ExactBarycenter(tol=0.0).solve(x, beta, 5.0 * init)
    assert res.n_iter >= 5 and res.history.shape == (res.n_iter + 1,)
    steps = np.diff(res.history)
    assert (steps <= 1e-13 * res.history[0]).all()
    assert steps.min() < -0.01 * res.history[0]  # the iteration does work
    assert_allclose(res.history[-1], res.objective, rtol=1e-10)


def test_exact_result_maps_assignment_and_objective_are_consistent():
    x, beta, init = _instance(31, 7, 10, 3)
    res = ExactBarycenter().solve(x, beta, init)
    assert isinstance(res, BarycenterResult) and res.epsilon is None
    assert res.assignment.shape == (7, 10) and res.maps.shape == (7, 10, 3)
    assert_array_equal(np.sort(res.assignment, axis=1), np.tile(np.arange(10), (7, 1)))
    assert_array_equal(res.maps, res.support[res.assignment])
    per_measure = ((x - res.maps) ** 2).sum(axis=(1, 2)) / 10
    assert_allclose(per_measure, w2_squared(x, res.support), rtol=1e-12)  # maps are optimal
    assert_allclose(res.objective, 0.5 * beta @ per_measure, rtol=1e-14)
    assert_allclose(res.objective, variance(x, res.support, beta), rtol=1e-14)
    # At the fixed point the support is the weighted mean of the matched atoms (the first-order condition of
    # the barycenter problem).
    inverse = np.argsort(res.assignment, axis=1)
    assert_allclose(res.support, np.einsum("n,nmd->md", beta, x[np.arange(7)[:, None], inverse]),
                    atol=1e-12)


def test_negligible_weights_are_skipped_but_still_mapped():
    x, beta, init = _instance(32, 8, 12, 2)
    beta = np.concatenate([beta[:5] / beta[:5].sum(), np.full(3, 1e-20)])
    skipped = ExactBarycenter().solve(x, beta, init)
    full = ExactBarycenter(weight_threshold=0.0).solve(x, beta, init)
    assert_allclose(skipped.support, full.support, atol=1e-12)
    assert_array_equal(skipped.assignment, full.assignment)
    per_measure = ((x - skipped.maps) ** 2).sum(axis=(1, 2)) / 12
    assert_allclose(per_measure, w2_squared(x, skipped.support), rtol=1e-12)
    # The skipped measures do not move the barycenter: it is the one of the first five alone.
    alone = ExactBarycenter().solve(x[:5], beta[:5] / beta[:5].sum(), init)
    assert_allclose(skipped.support, alone.support, atol=1e-12)


def test_exact_max_iter_zero_workers_and_blocks_give_same_result(monkeypatch):
    x, beta, init = _instance(33, 6, 10, 2)
    res0 = ExactBarycenter(max_iter=0).solve(x, beta, init)
    assert res0.n_iter == 0 and not res0.converged
    assert_allclose(res0.support, init, rtol=0, atol=1e-15)
    assert_allclose(res0.objective, variance(x, init, beta), rtol=1e-13)
    one = ExactBarycenter().solve(x, beta, init)
    two = ExactBarycenter(workers=2).solve(x, beta, init)
    monkeypatch.setattr(exact, "BLOCK_ENTRIES", 1)  # every measure a block of its own
    blocks = ExactBarycenter().solve(x, beta, init)
    for other in (two, blocks):
        assert_array_equal(one.support, other.support)
        assert_array_equal(one.assignment, other.assignment)
        assert_array_equal(one.history, other.history)


@pytest.mark.parametrize("threshold", [0.0, 1e-12])
def test_warm_start_from_previous_result_changes_nothing_but_speed(threshold):
    """As in OT-CBO: the measures move a little towards the last barycenter, and the next solve
    starts from its support, assignments and potentials."""
    rng = np.random.default_rng(40)
    x, _, init = _instance(40, 12, 15, 2)
    logits = -30.0 * rng.uniform(size=12)  # Gibbs-like: some measures fall below the threshold
    beta = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    solver = ExactBarycenter(weight_threshold=threshold)
    first = solver.solve(x, beta, init)
    assert first.potentials.shape == (12, 15)
    moved = x - 0.1 * (x - first.maps) + 0.05 * rng.standard_normal(x.shape)
    warm = solver.solve(moved, beta, first.support, warm_start=first)
    cold = solver.solve(moved, beta, first.support)
    assert_allclose(warm.support, cold.support, rtol=0, atol=1e-13)
    assert_array_equal(warm.assignment, cold.assignment)
    assert warm.n_iter == cold.n_iter
    assert_allclose(warm.history, cold.history, rtol=1e-13)


def test_exact_stops_when_assignments_repeat():
    """With tol = 0 only a repeated assignment (or max_iter) ends the iteration; started again at
    its result, the solver makes one update, finds the same assignments and returns the same support."""
    x, beta, init = _instance(34, 20, 15, 2)
    res = ExactBarycenter(tol=0.0).solve(x, beta, 3.0 * init)
    assert res.converged and 1 <= res.n_iter < 100
    assert (np.diff(res.history) < 0).all()  # no final update that leaves the support as it was
    again = ExactBarycenter(tol=0.0).solve(x, beta, res.support, warm_start=res)
    assert again.converged and again.n_iter == 1
    assert_array_equal(again.assignment, res.assignment)
    assert_allclose(again.support, res.support, rtol=0, atol=1e-14)
    assert again.history[1] == again.history[0]


@pytest.mark.parametrize("seed", range(10))
def test_one_dominant_measure_stops_at_once(seed):
    """Gibbs weights at large alpha often leave one measure: the barycenter is that measure and the
    objective is 0 up to rounding, sometimes negative (seeds 2, 3, 7 here). The fixed point must stop
    after one update instead of running to max_iter."""
    x = np.random.default_rng(seed).standard_normal((5, 10, 3)) * 3 + 1
    beta = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    res = ExactBarycenter().solve(x, beta, x[1][::-1])
    assert res.converged and res.n_iter == 1
    assert_allclose(res.support, x[1][::-1], rtol=1e-12)


def test_warm_start_must_be_a_matching_exact_result():
    x, beta, init = _instance(41, 5, 6, 2)
    exact = ExactBarycenter().solve(x, beta, init)
    with pytest.raises(ValueError, match="warm_start must come from N = 4 measures of M = 6"):
        ExactBarycenter().solve(x[:4], beta[:4] / beta[:4].sum(), init, warm_start=exact)
    entropic = SinkhornBarycenter().solve(x, beta, init)
    with pytest.raises(ValueError, match="warm_start must be a BarycenterResult of ExactBarycenter"):
        ExactBarycenter().solve(x, beta, init, warm_start=entropic)


# --------------------------------------------------------------------------------------------------
# Sinkhorn barycenter
# --------------------------------------------------------------------------------------------------


def test_sinkhorn_barycenter_tends_to_exact_as_reg_decreases():
    x, beta, init = _instance(40, 5, 12, 1)
    exact = np.tensordot(beta, np.sort(x[:, :, 0], axis=1), axes=1)[:, None]
    errors = []
    for relative_reg in (1.0, 0.1, 0.01):
        res = SinkhornBarycenter(relative_reg=relative_reg, max_iter=30).solve(x, beta, init)
        errors.append(float(w2_squared(res.support, exact)))
    # W2^2 to the exact barycenter falls by more than 10x per decade of relative_reg (measured: 60x, 22x).
    assert errors[0] > 10 * errors[1] > 100 * errors[2]
    # Entropic plans shrink the barycenter towards its mean.
    spread = res.support.var()
    assert spread < exact.var()


def test_sinkhorn_barycenter_matches_pot_and_reports_epsilon():
    x, beta, init = _instance(41, 6, 10, 2)
    res = SinkhornBarycenter(relative_reg=0.5, max_iter=20, tol=0.0).solve(x, beta, init)
    mean = beta @ x.mean(axis=1)
    scale = 2 * beta @ ((x - mean) ** 2).sum(2).mean(1)
    assert_allclose(res.epsilon, 0.5 * scale, rtol=1e-13)
    pot = ot.bregman.free_support_sinkhorn_barycenter(
        list(x), [_uniform(10)] * 6, init, res.epsilon, weights=beta, numItermax=20, stopThr=0.0,
        method="sinkhorn_log")
    assert_allclose(res.support, pot, atol=1e-7)
    assert res.assignment is None and res.n_iter == 20


def test_sinkhorn_maps_are_barycentric_projections_for_all_measures():
    x, beta, init = _instance(42, 6, 8, 2)
    beta = np.concatenate([beta[:4] / beta[:4].sum(), [1e-20, 1e-20]])
    res = SinkhornBarycenter(relative_reg=0.2, tol=1e-6).solve(x, beta, init)
    assert res.maps.shape == (6, 8, 2) and res.converged
    for n in range(6):
        cost = ot.dist(x[n], res.support)
        plan = ot.sinkhorn(_uniform(8), _uniform(8), cost, res.epsilon, method="sinkhorn_log",
                           numItermax=10**5, stopThr=1e-13)
        assert_allclose(res.maps[n], 8 * plan @ res.support, atol=1e-7)


# --------------------------------------------------------------------------------------------------
# variance
# --------------------------------------------------------------------------------------------------


def test_variance_unweighted_and_weighted():
    x, beta, init = _instance(50, 5, 7, 2)
    w2 = np.array([ot.emd2(_uniform(7), _uniform(7), ot.dist(xi, init)) for xi in x])
    assert_allclose(variance(x, init), w2.mean() / 2, rtol=1e-12)
    assert_allclose(variance(x, init, beta), beta @ w2 / 2, rtol=1e-12)
    assert variance(x, init, method="sinkhorn", relative_reg=0.2) > variance(x, init)


# --------------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------------

_X, _BETA, _INIT = _instance(60, 3, 4, 2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: squared_distances(np.ones(3), np.ones((2, 3))), "x must have shape"),
        (lambda: squared_distances(np.ones((2, 3)), np.ones((2, 2))), "dimension D"),
        (lambda: w2_squared(np.ones((3, 2)), np.ones((4, 2))), "method='exact'"),
        (lambda: w2_squared(np.full((3, 2), np.nan), np.ones((3, 2))), "x contains NaN"),
        (lambda: w2_squared(np.ones((3, 2)), np.ones((3, 2)), method="emd"), "method must be"),
        (lambda: w2_squared(np.ones((3, 2)), np.ones((3, 2)), "sinkhorn", relative_reg=0.0), r"relative_reg .* \(0"),
        (lambda: w2_squared(np.ones((3, 2)), np.ones((3, 2)), "sinkhorn", relative_reg=-1), "relative_reg"),
        (lambda: w2_squared(np.ones((3, 2)), np.ones((3, 2)), workers=0), "workers"),
        (lambda: w2_squared(np.ones((3, 2)), np.ones((3, 2)) * 1j), "y must be real"),
        (lambda: ExactBarycenter().solve(_X[0], _BETA, _INIT), "measures must have shape"),
        (lambda: ExactBarycenter().solve(_X, _BETA, _INIT[:3]), "init must have M = 4"),
        (lambda: ExactBarycenter().solve(_X, _BETA, _INIT[:, :1]), "init must have D = 2"),
        (lambda: ExactBarycenter().solve(_X, _BETA[:2], _INIT), "weights must have shape"),
        (lambda: ExactBarycenter().solve(_X, [0.5, 0.7, -0.2], _INIT), "non-negative"),
        (lambda: ExactBarycenter().solve(_X, [0.5, 0.5, 0.5], _INIT), "sum to 1"),
        (lambda: ExactBarycenter().solve(_X, [np.nan, 0.5, 0.5], _INIT), "weights contains NaN"),
        (lambda: ExactBarycenter().solve(_X, _BETA, np.full((4, 2), np.inf)), "init contains"),
        (lambda: ExactBarycenter(max_iter=-1), "max_iter"),
        (lambda: ExactBarycenter(tol=-1e-3), "tol"),
        (lambda: ExactBarycenter(weight_threshold=1.5), "weight_threshold"),
        (lambda: SinkhornBarycenter(relative_reg=0), "relative_reg"),
        (lambda: SinkhornBarycenter(sinkhorn_max_iter=0), "sinkhorn_max_iter"),
        (lambda: SinkhornBarycenter(sinkhorn_tol=float("nan")), "sinkhorn_tol"),
        (lambda: variance(_X, _INIT, weights=[1.0, 0.0]), "weights must have shape"),
    ],
)
def test_invalid_inputs_raise_value_error_naming_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_integer_inputs_are_accepted_as_float():
    x = np.array([[[0], [2]], [[6], [4]]])
    res = ExactBarycenter().solve(x, [0.5, 0.5], [[0], [1]])
    assert res.support.dtype == np.float64
    assert_allclose(res.support[:, 0], [2.0, 4.0])


@pytest.mark.parametrize("param, value", [
    ("max_iter", True), ("max_iter", 2.5), ("tol", float("inf")), ("tol", float("nan")), ("tol", "1e-9"),
    ("weight_threshold", float("nan")), ("workers", True),
])
def test_exact_barycenter_parameters_refuse_bools_non_numbers_and_non_finite(param, value):
    with pytest.raises(ValueError, match=param):
        ExactBarycenter(**{param: value})


@pytest.mark.parametrize("param, value", [
    ("relative_reg", float("inf")), ("relative_reg", True), ("relative_reg", "0.1"), ("max_iter", True),
    ("tol", float("nan")),
    ("sinkhorn_max_iter", 10.0), ("sinkhorn_tol", float("inf")), ("weight_threshold", True),
])
def test_sinkhorn_barycenter_parameters_refuse_bools_non_numbers_and_non_finite(param, value):
    with pytest.raises(ValueError, match=param):
        SinkhornBarycenter(**{param: value})


# --------------------------------------------------------------------------------------------------
# atoms so large that the squared distances overflow
# --------------------------------------------------------------------------------------------------

_ROOT = Path(transport.__file__).resolve().parents[2]  # the subprocess imports this copy of meanfield
_OVERFLOW_SETUP = (
    "import numpy as np\n"
    "from meanfield.transport import ExactBarycenter, SinkhornBarycenter, squared_distances, variance, w2_squared\n"
    "m = np.random.default_rng(0).uniform(-2, 2, (5, 4, 3)); w = np.full(5, 0.2)\n"
    "one_huge = m.copy(); one_huge[3] *= 1e200\n"
)


@pytest.mark.parametrize("call", [
    "ExactBarycenter().solve(m * 1e200, w, m[0] * 1e200)",
    "SinkhornBarycenter().solve(m * 1e200, w, m[0] * 1e200)",
    "ExactBarycenter().solve(m, w, m[0] * 1e200)",  # only the initial support
    # only a measure of negligible weight, which is matched after the iterations
    "ExactBarycenter().solve(one_huge, np.array([0.5, 0.5, 0.0, 0.0, 0.0]), m[0])",
    "w2_squared(m * 1e200, m[0] * 1e200)",
    "w2_squared(m * 1e200, m[0] * 1e200, method='sinkhorn')",
    "squared_distances(m * 1e200, m[0])",
    "variance(m * 1e200, m[0] * 1e200)",
])
def test_overflowing_costs_raise_floating_point_error_before_the_solver(call):
    """Finite atoms whose squared distances overflow: a clear FloatingPointError, raised before any
    cost is formed (no overflow warning). Run in a subprocess: the compiled assignment solver
    crashed the process on such costs, which must fail this test rather than kill pytest."""
    script = (_OVERFLOW_SETUP + "try:\n    " + call + "\nexcept FloatingPointError as err:\n"
              "    print('FloatingPointError:', err)\nelse:\n    print('no error')\n")
    run = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", script],
                         capture_output=True, text=True, timeout=300, cwd=_ROOT)
    assert run.returncode == 0, f"exit status {run.returncode}\n{run.stderr[-3000:]}"
    assert ("FloatingPointError: squared distances between atoms overflow (non-finite costs); "
            "the atoms are too large") in run.stdout, run.stdout + run.stderr[-3000:]


def test_large_but_safe_atoms_give_the_scaled_barycenter():
    """The overflow check leaves room: atoms at 1e100 are solved like the same atoms at scale 1."""
    x, beta, init = _instance(30, 6, 5, 3)
    small = ExactBarycenter().solve(x, beta, init)
    large = ExactBarycenter().solve(x * 1e100, beta, init * 1e100)
    assert_array_equal(large.assignment, small.assignment)
    assert_allclose(large.support, small.support * 1e100, rtol=1e-12)
    assert_allclose(large.objective, small.objective * 1e200, rtol=1e-12)
    sink = SinkhornBarycenter(relative_reg=0.1).solve(x * 1e100, beta, init * 1e100)
    assert_allclose(sink.support, SinkhornBarycenter(relative_reg=0.1).solve(x, beta, init).support * 1e100, rtol=1e-8)


# --------------------------------------------------------------------------------------------------
# blocks of measures, warm starts, BLAS threads and dtypes
# --------------------------------------------------------------------------------------------------


def test_sinkhorn_blocks_match_one_block_and_do_not_depend_on_workers(monkeypatch):
    """Blocks of measures change only when the scaling steps hand over to Newton's method (the
    worst plan of a block decides), so the plans agree within sinkhorn_tol and the supports to
    about that; the block sum of the support update makes the result independent of threads."""
    x, beta, init = _instance(70, 7, 9, 2)
    solver = SinkhornBarycenter(relative_reg=0.1, max_iter=6, tol=0.0)
    one = solver.solve(x, beta, init)
    monkeypatch.setattr(entropic, "BLOCK_ENTRIES", 1)  # every measure a block of its own
    blocks = solver.solve(x, beta, init)
    threaded = SinkhornBarycenter(relative_reg=0.1, max_iter=6, tol=0.0, workers=2).solve(x, beta, init)
    assert blocks.n_iter == one.n_iter == 6  # tol = 0: the same number of updates
    assert_allclose(blocks.support, one.support, rtol=0, atol=1e-9)
    assert_allclose(blocks.maps, one.maps, rtol=0, atol=1e-9)
    assert_allclose(blocks.history, one.history, rtol=1e-9)
    for field in ("support", "maps", "history", "potentials"):
        assert_array_equal(getattr(threaded, field), getattr(blocks, field))


def test_sinkhorn_blocks_bound_the_memory(monkeypatch):
    """numpy's allocations (seen by tracemalloc, in every thread: the plans dominate here) at one
    measure per block are a fraction of those of all measures at once; the solve's arrays of
    N M D numbers are small next to the plans."""
    import tracemalloc

    x, beta, init = _instance(71, 40, 60, 2)
    solver = SinkhornBarycenter(relative_reg=0.2, max_iter=1, tol=0.0)

    def peak():
        tracemalloc.start()
        try:
            solver.solve(x, beta, init)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole = peak()
    monkeypatch.setattr(entropic, "BLOCK_ENTRIES", 60 * 60)
    assert whole > 5 * 40 * 60 * 60 * 8  # several (N, M, K) float64 arrays alive at once
    assert peak() < whole / 5


@pytest.mark.parametrize("threshold", [0.0, 1e-12])
def test_sinkhorn_warm_start_gives_the_same_barycenter_in_fewer_iterations(threshold):
    """As in OT-CBO: the measures move towards the last barycenter, and the next solve starts from
    its support and potentials. The plans still reach sinkhorn_tol, so the barycenter agrees with
    the cold-started one to about that tolerance, and the plan solves take no more iterations."""
    rng = np.random.default_rng(72)
    x, _, _ = _instance(72, 10, 12, 2)
    init = rng.standard_normal((9, 2))  # K != M
    logits = -30.0 * rng.uniform(size=10)  # Gibbs-like: some measures fall below the threshold
    beta = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    solver = SinkhornBarycenter(relative_reg=0.1, tol=1e-7, weight_threshold=threshold)
    first = solver.solve(x, beta, init)
    assert first.potentials.shape == (10, 9) and first.sinkhorn_iterations > 0
    moved = x - 0.1 * (x - first.maps) + 0.05 * rng.standard_normal(x.shape)
    warm = solver.solve(moved, beta, first.support, warm_start=first)
    cold = solver.solve(moved, beta, first.support)
    assert warm.converged and cold.converged and warm.n_iter == cold.n_iter  # plans within sinkhorn_tol
    assert_allclose(warm.support, cold.support, rtol=0, atol=1e-9)
    assert_allclose(warm.maps, cold.maps, rtol=0, atol=1e-9)
    assert_allclose(warm.history, cold.history, rtol=1e-9)
    assert warm.sinkhorn_iterations <= cold.sinkhorn_iterations


@pytest.mark.parametrize("move", [0.01, 0.3])
def test_sinkhorn_started_from_column_potentials_alone(move, monkeypatch):
    """A warm start from g alone (the previous step's plans, atoms moved since): f(g) makes the rows
    exact, so the columns are made exact too before the scaling steps check the rows. A start whose
    columns are far off then takes scaling steps instead of handing over to Newton's method at
    once, which from there took more than twice the Newton steps of a cold start. A near start
    takes fewer steps of either kind than a cold one."""
    rng = np.random.default_rng(80)
    x, y = rng.uniform(-2, 2, (6, 30, 2)), rng.uniform(-2, 2, (30, 2))
    cost = lambda atoms: ((atoms[:, :, None] - y[None, None]) ** 2).sum(-1)  # noqa: E731
    moved = cost(x + move * rng.standard_normal(x.shape))
    eps = 0.05 * moved.mean(axis=(1, 2))
    zeros = np.zeros((6, 30)), np.zeros((6, 30))
    g = entropic.sinkhorn(np, cost(x), eps, *zeros, 1000, 1e-12)[1]
    newton_steps = []
    newton = entropic.newton

    def spy(*args):
        out = newton(*args)
        newton_steps.append(out[4])
        return out

    monkeypatch.setattr(entropic, "newton", spy)
    f_w, g_w, plan, converged, warm = entropic.sinkhorn(np, moved, eps, None, g, 1000, 1e-9)
    cold = entropic.sinkhorn(np, moved, eps, *zeros, 1000, 1e-9)[4]
    assert converged and np.abs(plan.sum(axis=1) - 1 / 30).sum(axis=1).max() <= 1e-9
    assert_allclose(plan, np.exp((f_w[:, :, None] + g_w[:, None, :] - moved) / eps[:, None, None]), rtol=1e-12)
    if move == 0.3:
        assert warm - newton_steps[0] >= 6 * entropic.CHECK_EVERY  # scaling steps taken
        assert newton_steps[0] <= newton_steps[1] + 6  # at most one more Newton step per plan
    else:
        assert warm < cold and newton_steps[0] <= newton_steps[1]


def test_sinkhorn_converges_from_the_drifted_warm_start_of_a_real_run():
    """Two plans captured from the full otcbo_square study (M = 50, seed 0, the OT-CBO step of epoch
    431) in meanfield 0.4.0: their warm-start g had drifted to about +3000 eps (f(g) to -3000 eps),
    the semi-dual mean(f) + mean(g) cancelled below the line search's resolution, and Newton's method
    ran to the 1000-step limit with marginal errors of 8e-9 and 8e-8. Centred, they converge at once."""
    data = np.load(Path(__file__).parent / "data" / "sinkhorn_drifted_warm_start.npz")
    cost, eps, g = data["cost"], data["eps"], data["g"]
    assert (g.mean(axis=1) / eps > 2900).all()  # the fixture is the drifted case
    f_w, g_w, plan, converged, steps = entropic.sinkhorn(np, cost, eps, None, g, 1000, 1e-9)
    assert converged and steps < 200
    assert np.abs(plan.sum(axis=1) - 1 / 50).sum(axis=1).max() <= 1e-9
    assert np.abs(plan.sum(axis=2) - 1 / 50).sum(axis=1).max() <= 1e-9
    centred = entropic.sinkhorn(np, cost, eps, None, g - g.mean(axis=1, keepdims=True), 1000, 1e-9)
    assert_allclose(plan, centred[2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("with_f", [False, True])
def test_sinkhorn_removes_a_common_offset_of_the_warm_start(with_f, monkeypatch):
    """The plan depends on f + g only: a warm start shifted by +-3000 eps gives the same plans in the
    same steps, and Newton's method receives potentials of the centred size, not the shifted one."""
    rng = np.random.default_rng(81)
    x, y = rng.uniform(-2, 2, (4, 40, 3)), rng.uniform(-2, 2, (40, 3))
    cost = lambda atoms: ((atoms[:, :, None] - y[None, None]) ** 2).sum(-1)  # noqa: E731
    moved = cost(x + 0.05 * rng.standard_normal(x.shape))
    eps = 0.01 * moved.mean(axis=(1, 2))
    f, g = entropic.sinkhorn(np, cost(x), eps, np.zeros((4, 40)), np.zeros((4, 40)), 1000, 1e-12)[:2]
    offset = 3000 * eps[:, None]
    given = []
    newton = entropic.newton

    def spy(xp, cost, eps, g, *args):
        given.append(np.abs(g.mean(axis=1) / eps).max())
        return newton(xp, cost, eps, g, *args)

    monkeypatch.setattr(entropic, "newton", spy)
    centred = entropic.sinkhorn(np, moved, eps, f if with_f else None, g, 1000, 1e-9)
    shifted = entropic.sinkhorn(np, moved, eps, f - offset if with_f else None, g + offset, 1000, 1e-9)
    assert centred[3] and shifted[3] and shifted[4] == centred[4]
    assert_allclose(shifted[2], centred[2], rtol=0, atol=1e-12)
    assert given[1] < given[0] + 1 < 100


def test_sinkhorn_warm_start_must_be_a_matching_sinkhorn_result():
    x, beta, init = _instance(73, 5, 6, 2)
    entropic = SinkhornBarycenter(relative_reg=0.2).solve(x, beta, init)
    with pytest.raises(ValueError, match="warm_start must come from N = 4 measures and K = 6 barycenter atoms"):
        SinkhornBarycenter(relative_reg=0.2).solve(x[:4], beta[:4] / beta[:4].sum(), init, warm_start=entropic)
    with pytest.raises(ValueError, match="K = 5 barycenter atoms"):
        SinkhornBarycenter(relative_reg=0.2).solve(x, beta, init[:5], warm_start=entropic)
    exact = ExactBarycenter().solve(x, beta, init)
    with pytest.raises(ValueError, match="warm_start must be a BarycenterResult of SinkhornBarycenter"):
        SinkhornBarycenter(relative_reg=0.2).solve(x, beta, init, warm_start=exact)
    with pytest.raises(ValueError, match="warm_start must be a BarycenterResult of SinkhornBarycenter"):
        SinkhornBarycenter(relative_reg=0.2).solve(x, beta, init, warm_start=entropic.potentials)
    broken = BarycenterResult(**{**vars(entropic), "potentials": np.full((5, 6), np.nan)})
    with pytest.raises(ValueError, match="warm_start.potentials contains NaN"):
        SinkhornBarycenter(relative_reg=0.2).solve(x, beta, init, warm_start=broken)
    shuffled = BarycenterResult(**{**vars(exact), "assignment": np.zeros((5, 6), dtype=int)})
    with pytest.raises(ValueError, match="warm_start.assignment must hold a permutation"):
        ExactBarycenter().solve(x, beta, init, warm_start=shuffled)


def test_w2_blocks_and_workers_give_the_same_distances(monkeypatch):
    x, _, y = _instance(74, 6, 8, 3)
    exact_w2, entropic_w2 = w2_squared(x[:, None], x[None]), w2_squared(x, y, "sinkhorn", relative_reg=0.2)
    monkeypatch.setattr(exact, "BLOCK_ENTRIES", 1)
    monkeypatch.setattr(entropic, "BLOCK_ENTRIES", 1)
    assert_array_equal(w2_squared(x[:, None], x[None]), exact_w2)  # exact: block-independent
    assert_array_equal(w2_squared(x[:, None], x[None], workers=2), exact_w2)
    blocked = w2_squared(x, y, "sinkhorn", relative_reg=0.2)
    assert_allclose(blocked, entropic_w2, rtol=1e-9)
    assert_array_equal(w2_squared(x, y, "sinkhorn", relative_reg=0.2, workers=2), blocked)


def test_solves_run_blas_on_one_thread_and_give_the_same_results(monkeypatch):
    """The solvers limit numpy's BLAS to one thread while they work and restore the setting after,
    also when they raise; the results are those of the unlimited BLAS."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import contextlib

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]

    x, beta, init = _instance(75, 8, 40, 3)
    solvers = [ExactBarycenter(), SinkhornBarycenter(relative_reg=0.1, max_iter=3, tol=0.0)]
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        seen = []
        check = costs.check_cost_scale  # called by every solve before its costs

        def spy(*args, **kwargs):
            seen.append(blas_threads())
            return check(*args, **kwargs)

        for module in (barycenter, costs):
            monkeypatch.setattr(module, "check_cost_scale", spy)
        limited = [solver.solve(x, beta, init) for solver in solvers]
        w2 = w2_squared(x, init, "sinkhorn", relative_reg=0.1)
        assert len(seen) >= 3 and all(threads == [1] * len(before) for threads in seen)
        assert blas_threads() == before
        with pytest.raises(FloatingPointError):
            solvers[1].solve(x * 1e200, beta, init * 1e200)
        assert blas_threads() == before
        for module in (barycenter, distance):
            monkeypatch.setattr(module, "one_blas_thread", lambda xp: contextlib.nullcontext())
        free = [solver.solve(x, beta, init) for solver in solvers]
        assert_array_equal(w2_squared(x, init, "sinkhorn", relative_reg=0.1), w2)
    for a, b in zip(limited, free):
        assert_array_equal(a.support, b.support)
        assert_array_equal(a.maps, b.maps)
        assert a.objective == b.objective


@pytest.mark.parametrize("solver", [ExactBarycenter(), SinkhornBarycenter(relative_reg=0.1, tol=1e-8)],
                         ids=["exact", "sinkhorn"])
def test_float32_inputs_give_float32_results_that_agree_with_float64(solver):
    """Solved in float64 internally: float32 atoms give float32 supports and maps equal to the
    float64 solve of the same (rounded) atoms up to the final rounding to float32."""
    x, beta, init = _instance(76, 6, 10, 3)
    x32, beta32, init32 = x.astype(np.float32), beta.astype(np.float32), init.astype(np.float32)
    res = solver.solve(x32, beta32, init32)
    ref = solver.solve(x32.astype(np.float64), beta32.astype(np.float64), init32.astype(np.float64))
    assert res.support.dtype == res.maps.dtype == np.float32
    eps32 = np.finfo(np.float32).eps
    assert_allclose(res.support, ref.support, rtol=eps32, atol=eps32)
    assert_allclose(res.maps, ref.maps, rtol=eps32, atol=eps32)
    assert res.objective == ref.objective and res.n_iter == ref.n_iter
    # and close to the float64 problem itself: the inputs' rounding moves the barycenter that little
    assert_allclose(res.support, solver.solve(x, beta, init).support, rtol=0, atol=1e-5)
    for method in ("exact", "sinkhorn"):
        w2 = w2_squared(x32, init32, method, relative_reg=0.1)
        assert w2.dtype == np.float32
        assert_allclose(w2, w2_squared(x, init, method, relative_reg=0.1), rtol=1e-5)
    assert squared_distances(x32, init32).dtype == np.float32


@pytest.mark.parametrize("call", [
    lambda x, w: ExactBarycenter().solve(x, w, x[0]),
    lambda x, w: SinkhornBarycenter().solve(x, w, x[0]),
    lambda x, w: w2_squared(x, x[0]),
    lambda x, w: w2_squared(x, x[0], "sinkhorn"),
], ids=["exact", "sinkhorn", "w2 exact", "w2 sinkhorn"])
def test_cost_scale_limit_is_that_of_the_input_dtype(call):
    """Atoms at 1e18 overflow float32 squared distances (the results are float32) though the
    solvers compute in float64; in float64 they are fine."""
    x = np.random.default_rng(77).uniform(-1e18, 1e18, size=(3, 4, 2))
    w = np.full(3, 1 / 3)
    call(x, w)
    with pytest.raises(FloatingPointError, match="the limit for D = 2 is 8.15e\\+17"):
        call(x.astype(np.float32), w.astype(np.float32))
