"""Exact transport plans between uniform M-atom measures: optimal permutations (assignments)."""

from __future__ import annotations

import array_api_compat
import numpy as np

from meanfield._array import to_numpy
from meanfield.assignment import assign_in_place, in_blocks, threads
from meanfield.transport.costs import gather_rows, with_ones


def optimal_permutations(xp, cost):
    """Optimal permutation (row i -> column) of each square cost matrix (B, M, M), on the cost's
    device."""
    host = np.ascontiguousarray(to_numpy(cost), dtype=np.float64)  # finite: inputs are checked
    B, M = host.shape[:2]
    perm = np.empty((B, M), dtype=np.intp)
    potentials, inverse, total = np.empty((B, M)), np.empty((B, M), dtype=np.intp), np.empty(B)
    assign_in_place(host, potentials, perm, inverse, total, False)
    return xp.asarray(perm, device=array_api_compat.device(cost))


# Entries of the cost matrices computed and solved at a time: blocks of about 1 MB stay in cache
# between the product that writes them and the solver that scans them several times (one (B, M, M)
# product at B = 50, M = 500 writes 100 MB, and took longer than the warm-started solves).
BLOCK_ENTRIES = 2**17


def exact_step(xp, x1, x_sq, support, workers, warm):
    """Optimal permutations of every measure to ``support`` and their inverses (on x1's device),
    W2^2 (B,), and the host copies (potentials, permutations) that warm-start the next step.

    The assignment only needs ``|y_j|^2 - 2 x_i.y_j`` (``|x_i|^2`` is constant along a row), which
    is one product ``[x, 1] @ [-2 y, |y|^2]^T`` with ``x1`` = [x, 1] (B, M, D + 1) built once per
    solve (at small D faster than forming the terms separately), per block of measures. W2^2 is the
    optimal cost plus ``x_sq`` = ``sum_i |x_i|^2``. ``warm``: the (potentials, permutations) of the
    last step, overwritten. The assignments run on the host: the blocks' costs go there, and only
    (B, M) results come back."""
    B, M, _ = x1.shape
    y1t = xp.matrix_transpose(
        xp.concat([-2 * support, xp.sum(support * support, axis=1)[:, None]], axis=1))
    if warm is None:
        potentials, perm = np.empty((B, M)), np.empty((B, M), dtype=np.intp)
    else:
        potentials, perm = warm
    inverse, total = np.empty((B, M), dtype=np.intp), np.empty(B)

    def solve_block(s):
        cost = np.ascontiguousarray(to_numpy(x1[s] @ y1t), dtype=np.float64)  # (b, M, M), host
        assign_in_place(cost, potentials[s], perm[s], inverse[s], total[s], warm is not None)

    in_blocks(solve_block, B, max(threads(workers), -(-B * M * M // BLOCK_ENTRIES)), workers)
    device = array_api_compat.device(x1)
    w2 = (x_sq + xp.asarray(total, dtype=x1.dtype, device=device)) / M
    return xp.asarray(perm, device=device), xp.asarray(inverse, device=device), w2, (potentials, perm)


class ExactPlans:
    r"""The exact plans of the barycenter's fixed point (see :func:`meanfield.transport.barycenter.fixed_point`).

    ``x`` (B, M, D): the centred atoms of the measures that take part; ``share`` (B,): their
    weights, summing to 1; ``warm``: host (potentials, permutations) from a previous solve, or
    None. :meth:`solve` matches every measure to a support by a permutation and returns its
    :math:`W_2^2`; :meth:`next_support` is :math:`y_j = \sum_n \beta_n x_{n, \pi_n^{-1}(j)}`.
    """

    def __init__(self, xp, x, share, workers, warm):
        self.xp, self.share, self.workers, self.warm = xp, share, workers, warm
        self.dim = x.shape[2]
        self.x_sq = xp.sum(xp.vecdot(x, x), axis=1)
        self.x1 = with_ones(xp, x)  # [x, 1]: also what the support update gathers (one copy of x)
        self.previous = None

    def solve(self, support):
        # the step overwrites the host permutations: keep the last ones to detect a fixed point
        self.previous = None if self.warm is None else self.warm[1].copy()
        self.perm, self.inverse, w2, self.warm = exact_step(self.xp, self.x1, self.x_sq, support, self.workers,
                                                            self.warm)
        return w2

    def next_support(self):
        # y_j = sum_n beta_n x_{n, pi_n^{-1}(j)}: gather each measure in barycenter order.
        xp = self.xp
        return xp.tensordot(self.share, gather_rows(xp, self.x1, self.inverse), axes=1)[:, :self.dim]

    def stationary(self, history, tol):
        """The objective stopped decreasing, or the assignments repeat (the next update would
        return the same support)."""
        return (history[-2] - history[-1] <= tol * abs(history[-2])
                or np.array_equal(self.previous, self.warm[1]))
