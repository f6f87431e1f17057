r"""Square linear assignment problems, batched and warm-startable.

For each cost matrix :math:`C \in \mathbb{R}^{M\times M}` of a batch, find the permutation

.. math::
    \sigma^\star = \arg\min_\sigma \sum_i C_{i\sigma(i)}

together with column potentials :math:`v` that certify it: with :math:`u_i = \min_j (C_{ij} - v_j)`,
every reduced cost :math:`C_{ij} - u_i - v_j` is non-negative and zero on :math:`(i, \sigma(i))` (LP
duality). The barycenter fixed point of :mod:`meanfield.transport` solves N such problems per
iteration, and between iterations (and between OT-CBO steps) the costs move little: a row whose old
column is still its cheapest under the old potentials keeps it, and only the other rows are
re-assigned. That warm start is what scipy's ``linear_sum_assignment`` cannot take, hence this solver.

Algorithm (Jonker and Volgenant, 1987): the rows left free go through the augmenting row reduction
(an auction-like pass that settles most of them in O(M) each), and the rest through shortest
augmenting paths (Dijkstra on reduced costs, O(M^2) each). The result is optimal like scipy's, up
to rounding in the reduced costs (the tests check the LP certificate to 1e-12 of the cost scale);
ties may be broken differently. The potentials are returned centred (mean 0). Compiled with numba,
so it runs on the CPU (array-API callers pass host copies); the batch can be split over threads.

References
----------
Jonker, R. and Volgenant, A. (1987). A shortest augmenting path algorithm for dense and sparse
linear assignment problems. Computing 38, 325-340.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from meanfield._validate import check_workers

__all__ = ["linear_assignment"]


@numba.njit(cache=True, nogil=True, inline="always")
def _open_min(dist):
    """Smallest tentative distance: min of ``dist`` over the entries above -inf (the settled
    columns), with four running minima like :func:`_row_min`."""
    m = dist.shape[0]
    b0 = b1 = b2 = b3 = np.inf
    j = 0
    while j + 4 <= m:
        r0, r1, r2, r3 = dist[j], dist[j + 1], dist[j + 2], dist[j + 3]
        b0 = r0 if r0 < b0 and r0 > -np.inf else b0
        b1 = r1 if r1 < b1 and r1 > -np.inf else b1
        b2 = r2 if r2 < b2 and r2 > -np.inf else b2
        b3 = r3 if r3 < b3 and r3 > -np.inf else b3
        j += 4
    for j in range(j, m):
        r0 = dist[j]
        b0 = r0 if r0 < b0 and r0 > -np.inf else b0
    return min(min(b0, b1), min(b2, b3))


@numba.njit(cache=True, nogil=True, inline="always")
def _settle(dist, low, row_of_col, cols, reached, hi):
    """Append the columns at tentative distance ``low`` to ``cols[hi:]`` (``reached`` keeps their
    distance) and mark them settled with distance -inf; stop at a free column. Returns
    (hi, the free column or -1)."""
    for j in range(dist.shape[0]):
        if dist[j] == low:
            dist[j] = -np.inf
            cols[hi] = j
            reached[hi] = low
            hi += 1
            if row_of_col[j] < 0:
                return hi, j
    return hi, -1


@numba.njit(cache=True, nogil=True)
def _augment(c, v, row_of_col, col_of_row, start, dist, pred, cols, reached):
    """Shortest augmenting path from the free row ``start`` (Dijkstra on the reduced costs
    c_ij - v_j, as in Jonker and Volgenant): columns are settled in batches of equal distance, only
    those settled before the last batch get new potentials, and the path is flipped into the
    matching. ``cols[:lo]`` are the scanned columns, ``cols[lo:hi]`` the settled ones waiting. A
    settled column's distance is -inf, so the relaxation runs over whole rows in order with no
    test per column and vectorises, which beats visiting the unsettled columns through an index
    list (docs/benchmarks.md)."""
    m = c.shape[0]
    for j in range(m):
        pred[j] = start
        dist[j] = c[start, j] - v[j]
    lo = hi = ready = 0
    end = -1
    low = 0.0
    while end < 0:
        if lo == hi:  # the next batch: all columns at the smallest tentative distance
            ready = lo
            low = _open_min(dist)
            hi, end = _settle(dist, low, row_of_col, cols, reached, hi)
            if end >= 0:
                break
        j = cols[lo]  # scan a settled column: relax the distances through its row
        lo += 1
        i = row_of_col[j]
        h = c[i, j] - v[j] - low
        c_row = c[i]
        tie = False
        for k in range(m):
            r = c_row[k] - v[k] - h
            better = r < dist[k]
            dist[k] = r if better else dist[k]
            pred[k] = i if better else pred[k]
            tie |= better & (r == low)
        if tie:  # columns reached at distance low join the batch
            hi, end = _settle(dist, low, row_of_col, cols, reached, hi)
    for k in range(ready):  # settled before the last batch: closer than the free column
        v[cols[k]] += reached[k] - low
    i = -1
    j = end
    while i != start:  # flip the path
        i = pred[j]
        row_of_col[j] = i
        j, col_of_row[i] = col_of_row[i], j


@numba.njit(cache=True, nogil=True, inline="always")
def _row_min(c_row, v):
    """min_j c_row[j] - v[j], with four running minima: one is a chain of dependent min
    instructions, four run in parallel (the result is the same; docs/benchmarks.md)."""
    m = v.shape[0]
    b0 = b1 = b2 = b3 = np.inf
    j = 0
    while j + 4 <= m:
        r0, r1 = c_row[j] - v[j], c_row[j + 1] - v[j + 1]
        r2, r3 = c_row[j + 2] - v[j + 2], c_row[j + 3] - v[j + 3]
        b0 = r0 if r0 < b0 else b0
        b1 = r1 if r1 < b1 else b1
        b2 = r2 if r2 < b2 else b2
        b3 = r3 if r3 < b3 else b3
        j += 4
    for j in range(j, m):
        r0 = c_row[j] - v[j]
        b0 = r0 if r0 < b0 else b0
    return min(min(b0, b1), min(b2, b3))


@numba.njit(cache=True, nogil=True)
def _solve(c, potentials, assignment, inverse, warm):
    """One problem, in place: ``assignment[i]`` column of row i, ``inverse[j]`` row of column j,
    ``potentials[j]`` v_j."""
    m = c.shape[0]
    if m == 0:
        return
    v = np.zeros(m)
    row_of_col = np.full(m, -1, np.int64)
    col_of_row = np.full(m, -1, np.int64)
    free = np.empty(4 * m + 1, np.int64)  # room for the rows the reduction re-queues
    n_free = 0
    if warm:
        v[:] = potentials
        for i in range(m):  # keep the rows whose old column is still (one of) their cheapest
            j = assignment[i]
            if c[i, j] - v[j] <= _row_min(c[i], v):
                row_of_col[j] = i
                col_of_row[i] = j
            else:
                free[n_free] = i
                n_free += 1
    else:
        for i in range(m):
            free[i] = i
        n_free = m

    # Augmenting row reduction: a free row takes its cheapest column and lowers that column's
    # potential to its second-cheapest reduced cost, evicting the owner, who bids next. Up to 3
    # bids per free row (about JV's two passes; on barycenter costs at M = 100 and 500, 3 was
    # within 5% of the best of 1-8) before the shortest paths take the rest.
    k = 0
    for _ in range(3 * n_free):
        if k == n_free:
            break
        i = free[k]
        k += 1
        first = second = np.inf
        j1 = j2 = -1
        for j in range(m):
            r = c[i, j] - v[j]
            if r < second:
                if r < first:
                    second, j2, first, j1 = first, j1, r, j
                else:
                    second, j2 = r, j
        owner = row_of_col[j1]
        if first < second:
            if second < np.inf:
                v[j1] -= second - first
        elif owner >= 0:
            j1 = j2
            owner = row_of_col[j1]
        row_of_col[j1] = i
        col_of_row[i] = j1
        if owner >= 0:
            col_of_row[owner] = -1
            if first < second:
                k -= 1
                free[k] = owner
            else:
                free[n_free] = owner
                n_free += 1

    # Invariant here: every matched row is at its minimum reduced cost c_ij - v_j, so the
    # shortest augmenting paths below keep the matching optimal.
    dist = np.empty(m)
    pred = np.empty(m, np.int64)
    cols = np.empty(m, np.int64)
    reached = np.empty(m)
    for t in range(k, n_free):
        _augment(c, v, row_of_col, col_of_row, free[t], dist, pred, cols, reached)
    assignment[:] = col_of_row
    inverse[:] = row_of_col
    # Potentials are defined up to a constant; centring keeps them from drifting over many warm
    # starts (each augmentation lowers some of them), which would cost precision in c - v.
    potentials[:] = v - np.mean(v)


@numba.njit(cache=True, nogil=True)
def assign_in_place(cost, potentials, assignment, inverse, total, warm):
    """The unchecked, single-threaded core of :func:`linear_assignment`, in place: cost float64
    C-contiguous (B, M, M); potentials (B, M) float64 and assignment (B, M) intp are the warm start
    if ``warm`` and are overwritten by the result; inverse[b, j] gets the row matched to column j
    and total[b] the optimal cost."""
    for b in range(cost.shape[0]):
        c = cost[b]
        _solve(c, potentials[b], assignment[b], inverse[b], warm)
        total[b] = 0.0
        for i in range(c.shape[0]):
            total[b] += c[i, assignment[b, i]]


# The costs' max - min must stay this factor below the largest float: the solver's potentials and
# reduced costs span a few times the costs' range.
_SPAN_HEADROOM = 32


def threads(workers):
    """The number of threads ``workers`` asks for (-1: every CPU)."""
    return (os.cpu_count() or 1) if workers == -1 else workers


def in_blocks(fn, n, n_blocks, workers):
    """Call ``fn(slice)`` on ``n_blocks`` contiguous slices of range(n), on ``threads(workers)``
    threads. The compiled solver and BLAS release the GIL, so the blocks run in parallel."""
    workers = threads(workers)
    bounds = np.linspace(0, n, min(n_blocks, n) + 1).round().astype(int)
    blocks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    if workers == 1 or len(blocks) <= 1:
        for block in blocks:
            fn(block)
    else:
        with ThreadPoolExecutor(min(workers, len(blocks))) as pool:
            list(pool.map(fn, blocks))


def linear_assignment(cost, potentials=None, assignment=None, workers=1):
    r"""Optimal permutation of every square cost matrix of a batch, warm-started if asked.

    Parameters
    ----------
    cost : numpy.ndarray, shape (B, M, M), float
        Cost matrices, finite, with max - min at most 1/32 of the largest float (a
        FloatingPointError otherwise). Any float dtype; solved in float64.
    potentials : numpy.ndarray, shape (B, M), float, optional
        Column potentials v of a previous solve (warm start; needs ``assignment`` too).
    assignment : numpy.ndarray, shape (B, M), int, optional
        Previous permutations: ``assignment[b, i]`` is the column of row i.
    workers : int >= 1 or -1
        Threads sharing the batch; -1 uses every CPU. The result does not depend on it.

    Returns
    -------
    assignment : numpy.ndarray, shape (B, M), intp
        Optimal column of each row.
    potentials : numpy.ndarray, shape (B, M), float64
        Column potentials certifying optimality (pass them back for the next, nearby problem).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.assignment import linear_assignment
    >>> cost = np.array([[[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]])
    >>> perm, v = linear_assignment(cost)
    >>> perm.tolist()
    [[1, 0, 2]]
    >>> linear_assignment(cost + 0.1, v, perm)[0].tolist()  # warm start from the first solve
    [[1, 0, 2]]
    """
    workers = check_workers(workers)
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if cost.ndim != 3 or cost.shape[1] != cost.shape[2]:
        raise ValueError(f"cost must have shape (B, M, M), got shape {cost.shape}")
    # The compiled solver trusts its input: NaN or inf breaks its comparisons (it may then read out
    # of bounds and crash the process), and so do reduced costs that overflow.
    if not np.all(np.isfinite(cost)):
        raise FloatingPointError("cost contains NaN or infinite values; the costs must be finite")
    if cost.size:
        span, limit = float(np.max(cost)) - float(np.min(cost)), float(np.finfo(np.float64).max) / _SPAN_HEADROOM
        if not span <= limit:
            raise FloatingPointError(
                f"cost entries span {span:.3g}, their max - min must be <= {limit:.3g} "
                "(reduced costs would overflow)")
    batch, m = cost.shape[:2]
    warm = potentials is not None or assignment is not None
    if warm:
        if potentials is None or assignment is None:
            raise ValueError("a warm start needs both potentials and assignment")
        potentials = np.array(potentials, dtype=np.float64)  # copies: solved in place
        assignment = np.array(assignment, dtype=np.intp)
        if potentials.shape != (batch, m) or assignment.shape != (batch, m):
            raise ValueError(
                f"potentials and assignment must have shape (B, M) = ({batch}, {m}), "
                f"got {potentials.shape} and {assignment.shape}")
        if not np.all(np.isfinite(potentials)):
            raise ValueError("potentials contains NaN or infinite values")
        if m and not np.array_equal(np.sort(assignment, axis=1),
                                    np.broadcast_to(np.arange(m), (batch, m))):
            raise ValueError("assignment must hold a permutation of 0..M-1 in every row")
    if not warm:
        potentials = np.zeros((batch, m))
        assignment = np.zeros((batch, m), dtype=np.intp)
    inverse = np.empty((batch, m), dtype=np.intp)
    total = np.empty(batch)
    in_blocks(lambda s: assign_in_place(cost[s], potentials[s], assignment[s], inverse[s], total[s], warm),
              batch, threads(workers), workers)
    return assignment, potentials
