"""Squared W2 distances between uniform measures and their Wasserstein-over-Wasserstein variance."""

from __future__ import annotations

import math
import warnings

import array_api_compat
import numpy as np

from meanfield._validate import check_float, check_int, check_workers
from meanfield.assignment import in_blocks, threads
from meanfield.transport import entropic, exact
from meanfield.transport._inputs import check_atoms, check_method, check_weights, namespace, one_blas_thread, work_dtype
from meanfield.transport.costs import cost_matrices, gather_rows, matched_w2

__all__ = ["variance", "variance_from_distances", "w2_squared"]


def w2_squared(x, y, method: str = "exact", relative_reg: float = 0.05, *, sinkhorn_max_iter: int = 1000,
               sinkhorn_tol: float = 1e-9, workers: int = 1):
    r"""Squared Wasserstein-2 distance between uniform measures on point sets.

    For :math:`\mu = \frac1M\sum_i\delta_{x_i}` and :math:`\nu = \frac1K\sum_j\delta_{y_j}`:

    - ``"exact"`` (M = K): :math:`W_2^2 = \min_\pi \frac1M\sum_i \|x_i - y_{\pi(i)}\|^2` over
      permutations, which is the optimal transport cost (Birkhoff);
    - ``"sinkhorn"``: :math:`\langle P_\varepsilon, C\rangle` with :math:`P_\varepsilon` the entropic
      plan :math:`\arg\min_P \langle P, C\rangle - \varepsilon H(P)`, computed by log-stabilised
      Sinkhorn steps and then Newton's method on the semi-dual, which converges quadratically
      where Sinkhorn alone stalls at small relative_reg. ``relative_reg`` is relative:
      :math:`\varepsilon = \mathrm{relative\_reg}\cdot\mathrm{mean}(C)`, the mean squared distance between an
      atom of x and an atom of y. The value is an upper bound of
      the exact :math:`W_2^2` and tends to it as relative_reg -> 0.

    Parameters
    ----------
    x : array-like, shape (..., M, D), float
        Atoms of the first measures.
    y : array-like, shape (..., K, D), float
        Atoms of the second measures; leading axes broadcast against those of ``x``.
    method : {"exact", "sinkhorn"}
        Exact assignment (:func:`meanfield.assignment.linear_assignment`) or entropic OT.
    relative_reg : float > 0
        Entropic regularisation relative to the mean cost (``"sinkhorn"`` only).
    sinkhorn_max_iter : int >= 1
        Maximum iterations of the entropic solver, Sinkhorn steps (at most 50) and Newton steps
        together (``"sinkhorn"`` only).
    sinkhorn_tol : float >= 0
        Stop when the L1 error of the plan's marginals is below this (``"sinkhorn"`` only); a
        :class:`RuntimeWarning` is raised if it is not reached.
    workers : int >= 1 or -1
        Threads sharing the pairs of measures; -1 uses every CPU. The result does not depend on it.

    Returns
    -------
    w2 : array, shape (...), float
        The squared distances, one per broadcast batch element, in the dtype of the inputs (solved
        in float64).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.transport import w2_squared
    >>> x = np.array([[0.0], [1.0]])
    >>> y = np.array([[3.0], [2.0]])
    >>> float(w2_squared(x, y))
    4.0
    >>> round(float(w2_squared(x, y, method="sinkhorn", relative_reg=0.05)), 4)
    4.0116
    >>> round(float(w2_squared(x, y, method="sinkhorn", relative_reg=1.0)), 4)
    4.4447

    References
    ----------
    Peyre, G. and Cuturi, M. (2019). Computational Optimal Transport. Foundations and Trends in
    Machine Learning 11(5-6).
    """
    check_method(method)
    check_float("relative_reg", relative_reg, low=0, low_open=True)
    check_int("sinkhorn_max_iter", sinkhorn_max_iter, low=1)
    check_float("sinkhorn_tol", sinkhorn_tol, low=0)
    check_workers(workers)
    xp, (x, y) = namespace(x, y)
    x = check_atoms(xp, x, "x", ("...", "M", "D"))
    y = check_atoms(xp, y, "y", ("...", "K", "D"))
    M, K, D = x.shape[-2], y.shape[-2], x.shape[-1]
    if y.shape[-1] != D:
        raise ValueError(f"x and y must have the same dimension D, got {D} and {y.shape[-1]}")
    if method == "exact" and M != K:
        raise ValueError(f"method='exact' needs as many atoms in y as in x, got M={M} and K={K}")
    dtype = xp.result_type(x, y)
    work = work_dtype(xp)
    batch = tuple(np.broadcast_shapes(tuple(x.shape[:-2]), tuple(y.shape[:-2])))
    B = math.prod(batch)
    xb = xp.reshape(xp.broadcast_to(xp.astype(x, work, copy=False), batch + (M, D)), (B, M, D))
    yb = xp.reshape(xp.broadcast_to(xp.astype(y, work, copy=False), batch + (K, D)), (B, K, D))
    parts = {}  # first index of a block -> its results, filled by the worker threads

    # Pairs are solved in blocks: an exact block's costs stay in cache until its assignments have
    # read them, and the entropic plans, with their temporaries, fit in bounded memory.
    def exact_block(s):
        perm = exact.optimal_permutations(xp, cost_matrices(xp, xb[s], yb[s], dtype))
        parts[s.start] = (matched_w2(xp, xb[s], gather_rows(xp, yb[s], perm)), True)

    def sinkhorn_block(s):
        cost = cost_matrices(xp, xb[s], yb[s], dtype)
        f, g = (xp.zeros((cost.shape[0], n), dtype=work, device=array_api_compat.device(cost))
                for n in (M, K))
        eps = entropic.relative_epsilon(xp, relative_reg, xp.mean(cost, axis=(-2, -1)))
        _, _, plan, ok, _ = entropic.sinkhorn(xp, cost, eps, f, g, sinkhorn_max_iter, sinkhorn_tol)
        parts[s.start] = (xp.sum(plan * cost, axis=(-2, -1)), ok)

    with one_blas_thread(xp):
        if method == "exact":
            in_blocks(exact_block, B, max(threads(workers), -(-B * M * K // exact.BLOCK_ENTRIES)), workers)
        else:  # blocks independent of workers: they set the iterates (see entropic.BLOCK_ENTRIES)
            in_blocks(sinkhorn_block, B, -(-B * M * K // entropic.BLOCK_ENTRIES), workers)
    if B == 0:
        return xp.zeros(batch, dtype=dtype, device=array_api_compat.device(x))
    w2, ok = zip(*(parts[k] for k in sorted(parts)))
    if not all(ok):
        warnings.warn(
            f"Sinkhorn did not reach sinkhorn_tol={sinkhorn_tol} in {sinkhorn_max_iter} iterations; "
            "increase sinkhorn_max_iter or relative_reg",
            RuntimeWarning,
            stacklevel=2,
        )
    return xp.astype(xp.reshape(xp.concat(w2, axis=0), batch), dtype, copy=False)



def variance(measures, support, weights=None, method: str = "exact", relative_reg: float = 0.05) -> float:
    r"""Wasserstein-over-Wasserstein variance of uniform measures around a barycenter (eq. 64).

    .. math::
        \mathrm{Var} = \frac{1}{2N}\sum_{n=1}^N W_2^2(\mu_n, \bar\mu)
        \quad\text{or, with weights,}\quad
        \mathrm{Var}_\beta = \frac12\sum_{n=1}^N \beta_n W_2^2(\mu_n, \bar\mu),

    :math:`\bar\mu` the uniform measure on ``support``. :math:`\mathrm{Var}_\beta` at the barycenter
    is the barycenter objective.

    Parameters
    ----------
    measures : array-like, shape (N, M, D), float
        Atoms of the N uniform measures.
    support : array-like, shape (M, D), float
        Atoms of the barycenter (any K atoms for ``"sinkhorn"``).
    weights : array-like, shape (N,), float, optional
        Non-negative weights summing to 1; None for the unweighted variance.
    method : {"exact", "sinkhorn"}
        How :math:`W_2^2` is computed, see :func:`w2_squared`.
    relative_reg : float > 0
        Relative entropic regularisation (``"sinkhorn"`` only).

    Returns
    -------
    var : float

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.transport import variance
    >>> measures = np.array([[[0.0], [2.0]], [[6.0], [4.0]]])
    >>> variance(measures, np.array([[2.0], [4.0]]))
    2.0
    >>> variance(measures, np.array([[2.0], [4.0]]), weights=np.array([0.25, 0.75]))
    2.0
    """
    check_method(method)
    xp, (measures, support) = namespace(measures, support)
    x = check_atoms(xp, measures, "measures", ("N", "M", "D"))
    w2 = w2_squared(x, support, method=method, relative_reg=relative_reg)
    if weights is not None:
        weights = check_weights(xp, xp.asarray(weights, device=array_api_compat.device(w2)), x.shape[0], w2.dtype)
    return float(variance_from_distances(w2, weights))


def variance_from_distances(w2, weights=None, axis: int = -1):
    r"""Wasserstein-over-Wasserstein variance (eq. 64) from the squared distances to the barycenter.

    .. math::
        \mathrm{Var} = \frac{1}{2N}\sum_{n=1}^N W_2^2(\mu_n, \bar\mu), \qquad
        \mathrm{Var}_\beta = \frac12\sum_{n=1}^N \beta_n W_2^2(\mu_n, \bar\mu).

    Parameters
    ----------
    w2 : array, float
        :math:`W_2^2(\mu_n, \bar\mu)` along ``axis``.
    weights : array, float, optional
        Weights :math:`\beta`, shaped like ``w2`` and summing to 1 along ``axis`` (not checked); None
        for the unweighted variance.
    axis : int
        The axis of the N measures.

    Returns
    -------
    var : array, float
        ``w2``'s shape without ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.transport import variance_from_distances
    >>> float(variance_from_distances(np.array([2.0, 6.0])))
    2.0
    >>> float(variance_from_distances(np.array([2.0, 6.0]), np.array([0.75, 0.25])))
    1.5
    """
    xp = array_api_compat.array_namespace(w2)
    if weights is None:
        return 0.5 * xp.mean(w2, axis=axis)
    return 0.5 * xp.sum(weights * w2, axis=axis)
