"""Weighted W2 barycenters of uniform measures by the fixed point "solve the plans, then average".

:func:`fixed_point` is the iteration; the plan solver is its parameter: exact plans
(:class:`meanfield.transport.exact.ExactPlans`) for :class:`ExactBarycenter`, entropic ones
(:class:`meanfield.transport.entropic.EntropicPlans`) for :class:`SinkhornBarycenter`.
"""

from __future__ import annotations

from dataclasses import dataclass

import array_api_compat
import numpy as np

from meanfield._array import to_numpy
from meanfield._validate import check_float, check_int, check_workers
from meanfield.transport._inputs import (
    check_atoms,
    check_cost_scale,
    check_weights,
    namespace,
    one_blas_thread,
    work_dtype,
)
from meanfield.transport.costs import matched_w2, with_ones
from meanfield.transport.entropic import EntropicPlans, barycenter_plans, relative_epsilon
from meanfield.transport.exact import ExactPlans, exact_step
from meanfield.transport.result import BarycenterResult, warm_assignments, warm_potentials

__all__ = ["ExactBarycenter", "SinkhornBarycenter", "fixed_point"]




def barycenter_inputs(measures, weights, init, same_size):
    """Checked inputs in the working dtype (float64), and the dtype of the results."""
    xp, (measures, weights, init) = namespace(measures, weights, init)
    x = check_atoms(xp, measures, "measures", ("N", "M", "D"))
    y = check_atoms(xp, init, "init", ("K", "D"))
    if y.shape[-1] != x.shape[-1]:
        raise ValueError(f"init must have D = {x.shape[-1]} columns like measures, got {y.shape[-1]}")
    if same_size and y.shape[0] != x.shape[1]:
        raise ValueError(f"init must have M = {x.shape[1]} atoms like each measure, got {y.shape[0]}")
    dtype = xp.result_type(x, y)
    work = work_dtype(xp)
    beta = check_weights(xp, weights, x.shape[0], work)
    return xp, xp.astype(x, work, copy=False), beta, xp.astype(y, work, copy=False), dtype


def split(xp, beta, threshold):
    """Indices of the measures that take part in the iterations, and of the others."""
    keep = beta >= threshold * xp.max(beta)
    return xp.nonzero(keep)[0], xp.nonzero(~keep)[0]


def merge(xp, first, a, second, b):
    """Rows of a (for indices ``first``) and b (for ``second``) put back in index order."""
    order = xp.argsort(xp.concat([first, second]))
    return xp.take(xp.concat([a, b], axis=0), order, axis=0)



def fixed_point(xp, plans, support, weights, max_iter, tol):
    r"""Alternate plans and support updates until the plans are stationary or ``max_iter`` updates.

    ``plans`` solves the transport of every measure to a support and proposes the next one:
    ``plans.solve(support)`` returns the transport costs (B,), ``plans.next_support()`` the update
    computed from the last plans, and ``plans.stationary(history, tol)`` whether to stop given the
    objectives :math:`\frac12\sum_n\beta_n\langle P_n, C_n\rangle` so far. ``weights`` (B,) are the
    :math:`\beta_n`. Returns the support of the last plans, the objective history, the number of
    updates and whether the plans became stationary.
    """
    history = [0.5 * float(xp.sum(weights * plans.solve(support)))]
    converged = False
    n_iter = 0
    while n_iter < max_iter and not converged:
        support = plans.next_support()
        history.append(0.5 * float(xp.sum(weights * plans.solve(support))))
        n_iter += 1
        converged = plans.stationary(history, tol)
    return support, history, n_iter, converged


@dataclass(frozen=True)
class ExactBarycenter:
    r"""Weighted W2 barycenter of uniform M-atom measures by exact assignments.

    Minimises, over M-atom supports :math:`Y = (y_1, \dots, y_M)`,

    .. math::
        F(Y) = \frac12 \sum_{n=1}^N \beta_n W_2^2\Big(\frac1M\sum_j\delta_{y_j}, \mu_n\Big)

    by the fixed point of Cuturi and Doucet (2014, Alg. 2 with step 1; POT's
    ``ot.lp.free_support_barycenter``): the optimal plan between two uniform M-atom measures is a
    permutation :math:`\pi_n`, and the support update is

    .. math::
        y_j \leftarrow \sum_n \beta_n\, x_{n, \pi_n^{-1}(j)}.

    F never increases; the iteration stops at a local minimum (the exact problem is NP-hard for
    N >= 3): when the assignments repeat (the next update would return the same support), when
    the relative decrease of F is at most ``tol``, or after ``max_iter`` updates.

    Measures with :math:`\beta_n < \mathrm{weight\_threshold}\cdot\max_m\beta_m` are left out of the
    iterations (Gibbs weights at large alpha are mostly negligible) and the others are
    renormalised; all measures are matched to the final support for ``maps`` and ``objective``.

    The problem is translation-equivariant, so the atoms are centred once on the weighted mean,
    which keeps the expanded cost ``|x|^2 + |y|^2 - 2 x.y`` accurate; the iterations read the objective
    off the assignment costs and the final ``objective`` is summed from the matched differences
    (exact to rounding even when the measures are nearly equal).

    Parameters
    ----------
    max_iter : int >= 0
        Maximum number of support updates.
    tol : float >= 0
        Relative decrease of the objective below which the iteration stops.
    weight_threshold : float in [0, 1]
        Relative weight below which a measure is skipped during the iterations; 0 keeps all.
    workers : int >= 1 or -1
        Threads solving the N assignment problems of an iteration; -1 uses every CPU. The result
        does not depend on it.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.transport import ExactBarycenter
    >>> measures = np.array([[[0.0], [2.0]], [[6.0], [4.0]]])
    >>> res = ExactBarycenter().solve(measures, np.array([0.5, 0.5]), init=np.array([[0.0], [1.0]]))
    >>> res.support.ravel().tolist(), res.objective, res.converged
    ([2.0, 4.0], 2.0, True)
    >>> res.assignment.tolist()
    [[0, 1], [1, 0]]

    References
    ----------
    Cuturi, M. and Doucet, A. (2014). Fast computation of Wasserstein barycenters. ICML.
    Alvarez-Esteban, P. C., del Barrio, E., Cuesta-Albertos, J. A. and Matran, C. (2016).
    A fixed-point approach to barycenters in Wasserstein space. J. Math. Anal. Appl. 441(2).
    """

    max_iter: int = 100
    tol: float = 1e-9
    weight_threshold: float = 1e-12
    workers: int = 1

    def __post_init__(self):
        check_int("max_iter", self.max_iter, low=0)
        check_float("tol", self.tol, low=0)
        check_float("weight_threshold", self.weight_threshold, low=0, high=1)
        check_workers(self.workers)

    def solve(self, measures, weights, init, warm_start=None):
        r"""Barycenter of ``measures`` with ``weights``, starting from the support ``init``.

        Parameters
        ----------
        measures : array-like, shape (N, M, D), float
            Atoms of the N uniform measures.
        weights : array-like, shape (N,), float
            Barycentric weights :math:`\beta`, non-negative, summing to 1.
        init : array-like, shape (M, D), float
            Initial support (warm start, e.g. the previous consensus).
        warm_start : BarycenterResult, optional
            A previous exact result for N measures of M atoms, typically the one whose support
            is ``init``: its assignments and potentials start the assignment solver. Only the
            speed depends on it; the iterates are the same (up to ties between equal-cost
            assignments).

        Returns
        -------
        result : BarycenterResult
            ``support`` and ``maps`` in the dtype of the inputs.
        """
        xp, x, beta, init, dtype = barycenter_inputs(measures, weights, init, same_size=True)
        warm = warm_assignments(warm_start, x.shape[0], x.shape[1])
        with one_blas_thread(xp):
            return self._solve(xp, x, beta, init, dtype, warm)

    def _solve(self, xp, x, beta, init, dtype, warm):
        B, M, D = x.shape
        centre = xp.tensordot(beta, xp.mean(x, axis=1), axes=1)
        active, rest = split(xp, beta, self.weight_threshold)
        xa = (xp.take(x, active, axis=0) if rest.shape[0] else x) - centre
        support = init - centre
        # later supports are convex combinations of the atoms of xa, so one check covers them
        check_cost_scale(xp, D, xa, support, dtype=dtype)
        wa = xp.take(beta, active, axis=0)
        rows_a = to_numpy(active)
        warm_a = None if warm is None else (warm[0][rows_a], warm[1][rows_a])
        plans = ExactPlans(xp, xa, wa / xp.sum(wa), self.workers, warm_a)
        del xa  # the plans keep [x, 1]: one copy of the atoms
        support, history, n_iter, converged = fixed_point(xp, plans, support, wa, self.max_iter, self.tol)
        perm = plans.perm
        potentials = np.empty((B, M))
        potentials[rows_a] = plans.warm[0]
        if rest.shape[0]:
            rows_r = to_numpy(rest)
            xr = xp.take(x, rest, axis=0) - centre
            check_cost_scale(xp, D, xr, dtype=dtype)
            warm_r = None if warm is None else (warm[0][rows_r], warm[1][rows_r])
            perm_r, _, _, (potentials[rows_r], _) = exact_step(
                xp, with_ones(xp, xr), xp.sum(xp.vecdot(xr, xr), axis=1), support, self.workers, warm_r)
            perm = merge(xp, active, perm, rest, perm_r)
        support = support + centre
        maps = xp.reshape(xp.take(support, xp.reshape(perm, (-1,)), axis=0), (B, M, D))
        return BarycenterResult(
            support=xp.astype(support, dtype, copy=False),
            objective=0.5 * float(xp.sum(beta * matched_w2(xp, x, maps))),
            n_iter=n_iter,
            converged=bool(converged),
            maps=xp.astype(maps, dtype, copy=False),
            assignment=perm,
            history=np.asarray(history),
            potentials=potentials,
        )


@dataclass(frozen=True)
class SinkhornBarycenter:
    r"""Weighted entropic W2 barycenter of uniform measures (free support, fixed uniform weights).

    The fixed point of :class:`ExactBarycenter` with entropic plans :math:`P_n` (POT's
    ``ot.bregman.free_support_sinkhorn_barycenter``): given the support Y (K atoms),

    .. math::
        P_n = \arg\min_{P \in \Pi(\frac1M, \frac1K)} \langle P, C(\mu_n, Y)\rangle
              - \varepsilon H(P), \qquad
        y_j \leftarrow K \sum_n \beta_n \sum_i (P_n)_{ij}\, x_{n,i},

    with :math:`\varepsilon = \mathrm{relative\_reg}\cdot s`, where s is the mean squared distance between two
    atoms drawn independently from the mixture :math:`\sum_n\beta_n\mu_n` (for one measure, the mean
    of its cost matrix with itself), so ``relative_reg`` does not depend on the units nor on ``init``. Each
    plan is solved to ``sinkhorn_tol`` by Sinkhorn steps and then Newton's method on the semi-dual
    (plain Sinkhorn needs thousands of steps at relative_reg = 0.01 and POT's stops unconverged there), with
    the potentials warm-started from one update to the next. Entropic plans shrink the
    barycenter; it tends to the exact one as relative_reg -> 0. The reported objective is
    :math:`\frac12\sum_n\beta_n\langle P_n, C_n\rangle`; the iteration stops when its relative
    change is at most ``tol`` or after ``max_iter`` updates.

    The plans are solved in blocks of measures of about 2**21 entries in all, so the memory does
    not grow with N: each block's plans give their share of the next support,
    :math:`K\sum_{n \in \text{block}} \beta_n P_n^\top x_n`, their transport costs and maps, and are
    dropped.

    Parameters
    ----------
    relative_reg : float > 0
        Entropic regularisation relative to the cost scale s.
    max_iter : int >= 0
        Maximum number of support updates.
    tol : float >= 0
        Relative change of the objective below which the iteration stops.
    sinkhorn_max_iter : int >= 1
        Maximum iterations per entropic plan: Sinkhorn steps (at most 50), then Newton steps.
    sinkhorn_tol : float >= 0
        L1 error of the plan's marginals at which an entropic solve stops.
    weight_threshold : float in [0, 1]
        As in :class:`ExactBarycenter`.
    workers : int >= 1 or -1
        Threads sharing the blocks of measures; -1 uses every CPU. The result does not depend on
        it; the memory grows with it (one block per thread).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.transport import SinkhornBarycenter
    >>> measures = np.array([[[0.0], [2.0]], [[6.0], [4.0]]])
    >>> res = SinkhornBarycenter(relative_reg=0.01).solve(measures, np.array([0.5, 0.5]), np.array([[0.0], [1.0]]))
    >>> np.round(res.support.ravel(), 3).tolist(), round(res.objective, 3), res.assignment is None
    ([2.0, 4.0], 2.0, True)

    References
    ----------
    Cuturi, M. and Doucet, A. (2014). Fast computation of Wasserstein barycenters. ICML.
    Schmitzer, B. (2019). Stabilized sparse scaling algorithms for entropy regularized transport
    problems. SIAM J. Sci. Comput. 41(3).
    """

    relative_reg: float = 0.05
    max_iter: int = 100
    tol: float = 1e-9
    sinkhorn_max_iter: int = 1000
    sinkhorn_tol: float = 1e-9
    weight_threshold: float = 1e-12
    workers: int = 1

    def __post_init__(self):
        check_float("relative_reg", self.relative_reg, low=0, low_open=True)
        check_int("max_iter", self.max_iter, low=0)
        check_float("tol", self.tol, low=0)
        check_int("sinkhorn_max_iter", self.sinkhorn_max_iter, low=1)
        check_float("sinkhorn_tol", self.sinkhorn_tol, low=0)
        check_float("weight_threshold", self.weight_threshold, low=0, high=1)
        check_workers(self.workers)

    def solve(self, measures, weights, init, warm_start=None):
        r"""Entropic barycenter of ``measures`` with ``weights``, starting from the support ``init``.

        Parameters
        ----------
        measures : array-like, shape (N, M, D), float
            Atoms of the N uniform measures.
        weights : array-like, shape (N,), float
            Barycentric weights :math:`\beta`, non-negative, summing to 1.
        init : array-like, shape (K, D), float
            Initial support (warm start, e.g. the previous consensus).
        warm_start : BarycenterResult, optional
            A previous result of this solver for N measures and K barycenter atoms, typically the
            one whose support is ``init``: its potentials g start the first plans instead of zero
            (f(g) makes their rows exact, then one update of g their columns). The plans still
            reach ``sinkhorn_tol``, so the result is the same to about that tolerance; only the
            iterations differ.

        Returns
        -------
        result : BarycenterResult
            With ``assignment`` None, ``epsilon`` the absolute regularisation, and ``support`` and
            ``maps`` in the dtype of the inputs.
        """
        xp, x, beta, init, dtype = barycenter_inputs(measures, weights, init, same_size=False)
        warm = None
        if warm_start is not None:
            if (not isinstance(warm_start, BarycenterResult) or warm_start.potentials is None
                    or warm_start.epsilon is None):
                raise ValueError("warm_start must be a BarycenterResult of SinkhornBarycenter.solve")
            sizes = f"N = {x.shape[0]} measures and K = {init.shape[0]} barycenter atoms"
            warm = xp.asarray(warm_potentials(warm_start, x.shape[0], init.shape[0], sizes),
                              dtype=x.dtype, device=array_api_compat.device(x))
        with one_blas_thread(xp):
            return self._solve(xp, x, beta, init, dtype, warm)

    def _solve(self, xp, x, beta, init, dtype, warm):
        # Centred once on the mixture mean (the problem is translation-equivariant), which keeps
        # the expanded costs accurate; the mean square of the centred atoms gives the cost scale.
        centre = xp.tensordot(beta, xp.mean(x, axis=1), axes=1)
        x = x - centre
        support = init - centre
        # later supports are convex combinations of the atoms of x, so one check covers them
        check_cost_scale(xp, x.shape[2], x, support, dtype=dtype)
        x_sq = xp.sum(x * x, axis=2)
        # s: the mean squared distance between two independent atoms of the mixture
        scale = xp.asarray(2 * float(xp.sum(beta * xp.mean(x_sq, axis=1))), dtype=x.dtype,
                           device=array_api_compat.device(x))
        eps = float(relative_epsilon(xp, self.relative_reg, scale))
        active, rest = split(xp, beta, self.weight_threshold)
        wa = xp.take(beta, active, axis=0)
        g = None if warm is None else xp.take(warm, active, axis=0)
        plans = EntropicPlans(xp, xp.take(x, active, axis=0), xp.take(x_sq, active, axis=0), wa / xp.sum(wa), eps,
                              g, self.sinkhorn_max_iter, self.sinkhorn_tol, self.workers)
        support, history, n_iter, converged = fixed_point(xp, plans, support, wa, self.max_iter, self.tol)
        # the plans to the final support: the last ones solved
        g, cost, maps, ok, steps = plans.g, plans.cost, plans.maps, plans.ok, plans.steps
        if rest.shape[0]:
            g_r = None if warm is None else xp.take(warm, rest, axis=0)
            _, g_r, cost_r, maps_r, _, ok_r, more = barycenter_plans(
                xp, xp.take(x, rest, axis=0), xp.take(x_sq, rest, axis=0), support, eps, None, g_r, None,
                self.sinkhorn_max_iter, self.sinkhorn_tol, self.workers)
            maps = merge(xp, active, maps, rest, maps_r)
            cost = merge(xp, active, cost, rest, cost_r)
            g = merge(xp, active, g, rest, g_r)
            ok, steps = ok and ok_r, steps + more
        return BarycenterResult(
            support=xp.astype(support + centre, dtype, copy=False),
            objective=0.5 * float(xp.sum(beta * cost)),
            n_iter=n_iter,
            converged=bool(converged and ok),
            maps=xp.astype(maps + centre, dtype, copy=False),
            history=np.asarray(history),
            epsilon=eps,
            potentials=g,
            sinkhorn_iterations=int(steps),
        )
