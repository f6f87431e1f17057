r"""Optimal transport between uniform M-atom measures and their Wasserstein-2 barycenters.

A two-layer network of width M is the uniform measure :math:`\mu = \frac1M\sum_i\delta_{x_i}` of its
neurons; OT-CBO moves a population of such measures towards their weighted Wasserstein-2
barycenter (sec. 5 of arXiv 2511.21466). This module holds the transport part alone, usable
without any network:

- :func:`squared_distances` and :func:`w2_squared`: cost matrices and :math:`W_2^2` between uniform
  measures, exact (an assignment problem) or entropic (Sinkhorn steps, then Newton's method);
- :class:`ExactBarycenter` and :class:`SinkhornBarycenter`: the weighted barycenter by the fixed point
  "assign, then average", returning with it the transport map of every measure;
- :func:`variance`: the Wasserstein-over-Wasserstein variance (eq. 64).

Arrays follow the array API standard (numpy by default); the exact assignments are solved on the CPU
by :func:`meanfield.assignment.linear_assignment`, warm-started across iterations and solves. Inputs of
any real floating dtype are solved in float64 and the results (supports, maps, W2) are returned in the
input dtype: the assignment solver's potentials and the entropic plans' marginals need float64 (a
float32 plan entry :math:`\exp((f_i + g_j - C_{ij})/\varepsilon)` carries a relative error of about
:math:`u\, C_{ij}/\varepsilon`, u the float32 unit roundoff, far above the default ``sinkhorn_tol`` at
small ``reg``). With numpy arrays the solvers run BLAS on one thread (their products are small) and
share their work among ``workers`` threads instead.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from dataclasses import dataclass

import array_api_compat
import numpy as np
from threadpoolctl import ThreadpoolController

from meanfield._array import to_numpy
from meanfield._validate import check_float, check_int, check_workers
from meanfield.assignment import _assign, in_blocks, threads

__all__ = [
    "BarycenterResult",
    "ExactBarycenter",
    "SinkhornBarycenter",
    "squared_distances",
    "variance",
    "w2_squared",
]

_METHODS = ("exact", "sinkhorn")


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def _namespace(*arrays):
    """Array namespace of ``arrays`` (lists and scalars become numpy arrays)."""
    arrays = [a if array_api_compat.is_array_api_obj(a) else np.asarray(a) for a in arrays]
    return array_api_compat.array_namespace(*arrays), arrays


def _as_float(xp, a, name):
    if xp.isdtype(a.dtype, "real floating"):
        return a
    if xp.isdtype(a.dtype, ("integral", "bool")):
        return xp.astype(a, xp.float64)
    raise ValueError(f"{name} must be real, got dtype {a.dtype}")


def _check_atoms(xp, a, name, shape):
    """``a`` as a finite float array whose shape matches ``shape`` ("..." = any leading axes)."""
    a = _as_float(xp, a, name)
    fixed = len(shape) - 1 if shape[0] == "..." else len(shape)
    if a.ndim < fixed or (shape[0] != "..." and a.ndim != fixed):
        raise ValueError(
            f"{name} must have shape ({', '.join(shape)}), got shape {tuple(a.shape)}"
        )
    if 0 in a.shape[-2:]:
        raise ValueError(f"{name} needs at least one atom and one coordinate, got {tuple(a.shape)}")
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _check_weights(xp, w, n, dtype):
    w = _as_float(xp, w, "weights")
    if tuple(w.shape) != (n,):
        raise ValueError(f"weights must have shape (N,) = ({n},), got shape {tuple(w.shape)}")
    if not bool(xp.all(xp.isfinite(w))):
        raise ValueError("weights contains NaN or infinite values")
    if bool(xp.any(w < 0)):
        raise ValueError("weights must be non-negative")
    total = float(xp.sum(w))
    if abs(total - 1.0) > math.sqrt(xp.finfo(w.dtype).eps):
        raise ValueError(f"weights must sum to 1, got sum {total:.10g}")
    return xp.astype(w, dtype, copy=False)


def _check_method(method):
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


# Headroom of the cost bound below: with s the largest |coordinate|, |x|^2 and |y|^2 are at most
# D s^2 and |2 x.y| at most 2 D s^2, so every cost (and partial sum) lies within 4 D s^2 of 0; the
# assignment solver forms reduced costs and potentials a few times the costs' span and returns
# nonsense once they overflow. 256 D s^2 <= the largest float keeps that span 32 times below it.
_COST_HEADROOM = 256


def _check_cost_scale(xp, dim, *centred, dtype=None):
    """Raise a FloatingPointError unless the squared distances between the atoms of ``centred``
    (arrays of dimension ``dim``, already centred as the cost is computed) stay finite with the
    headroom the solvers need, in ``dtype`` (the input dtype; default: that of ``centred``), so
    that the results are finite once returned in it. Called before any cost is formed: non-finite
    costs would make the compiled assignment solver read out of bounds, and Sinkhorn's kernels nan."""
    limit = math.sqrt(float(xp.finfo(centred[0].dtype if dtype is None else dtype).max)
                      / (_COST_HEADROOM * dim))
    for a in centred:
        if array_api_compat.size(a) == 0:
            continue
        size = max(float(xp.max(a)), -float(xp.min(a)))
        if not size <= limit:  # also catches nan (a centre that overflowed)
            raise FloatingPointError(
                "squared distances between atoms overflow (non-finite costs); the atoms are too large: "
                f"|coordinate| up to {size:.3g} after centring, the limit for D = {dim} is {limit:.3g}")


def _work_dtype(xp):
    """The dtype the solvers compute in, whatever the inputs' real floating dtype (see the module
    docstring)."""
    return xp.float64


# --------------------------------------------------------------------------------------------------
# BLAS threads
# --------------------------------------------------------------------------------------------------

# The solvers' products are small: (M, D + 1) @ (D + 1, M) cost blocks, batched matrix-vector
# products and (K, M) @ (M, K) couplings in Sinkhorn-Newton. On them a multi-threaded BLAS spends
# more time dispatching to its threads than computing, and its idle threads spin, taking the cores
# the assignment solver (or the other worker threads) run on next. The solves therefore run with
# one BLAS thread and get their parallelism from ``workers`` instead. One controller serves every
# call: creating one scans the loaded libraries, which costs more than a small solve.
_BLAS_CONTROLLER = None
_BLAS_LOCK = threading.Lock()
_blas_users = 0
_blas_limiter = None


@contextlib.contextmanager
def _one_blas_thread(xp):
    """Run the block with numpy's BLAS on one thread, restoring its setting afterwards.

    A no-op for other array namespaces (torch and cupy manage their own threads). Re-entrant and
    shared by concurrent callers: the first to enter sets the limit, the last to leave restores
    it, so threads solving at the same time do not restore each other's limit too early. The limit
    is process-wide: other threads' BLAS calls made meanwhile also run on one thread.
    """
    global _BLAS_CONTROLLER, _blas_users, _blas_limiter
    if not array_api_compat.is_numpy_namespace(xp):
        yield
        return
    with _BLAS_LOCK:
        if _blas_users == 0:
            if _BLAS_CONTROLLER is None:
                _BLAS_CONTROLLER = ThreadpoolController().select(user_api="blas")
            _blas_limiter = _BLAS_CONTROLLER.limit(limits=1)
        _blas_users += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


# --------------------------------------------------------------------------------------------------
# numerical core
# --------------------------------------------------------------------------------------------------


def squared_distances(x, y):
    r"""Batched squared Euclidean cost matrices.

    .. math::
        C_{ij} = \|x_i - y_j\|^2 = \|x_i\|^2 + \|y_j\|^2 - 2\, x_i \cdot y_j

    computed with one batched matrix product and clipped at 0. Both point sets are first shifted by
    the mean of ``y``, which leaves C unchanged in exact arithmetic and reduces the cancellation
    error when the points sit far from the origin.

    Parameters
    ----------
    x : array-like, shape (..., M, D), float
        First point sets.
    y : array-like, shape (..., K, D), float
        Second point sets; the leading axes broadcast against those of ``x``.

    Returns
    -------
    C : array, shape (..., M, K), float
        Squared distances, non-negative.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.transport import squared_distances
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0]])
    >>> y = np.array([[0.0, 1.0]])
    >>> squared_distances(x, y)
    array([[1.],
           [2.]])
    """
    xp, (x, y) = _namespace(x, y)
    x = _check_atoms(xp, x, "x", ("...", "M", "D"))
    y = _check_atoms(xp, y, "y", ("...", "K", "D"))
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must have the same dimension D, got {x.shape[-1]} and {y.shape[-1]}")
    return _sqdist(xp, x, y)


def _sqdist(xp, x, y, dtype=None):
    """Squared distances, after checking that they fit in ``dtype`` (default: the atoms' dtype)."""
    centre = xp.mean(y, axis=-2, keepdims=True)
    x = x - centre
    y = y - centre
    _check_cost_scale(xp, x.shape[-1], x, y, dtype=dtype)
    cross = x @ xp.matrix_transpose(y)
    cost = xp.sum(x * x, axis=-1)[..., :, None] + xp.sum(y * y, axis=-1)[..., None, :] - 2 * cross
    return xp.clip(cost, 0, None)


def _assignments(xp, cost):
    """Optimal permutation (row i -> column) of each square cost matrix (B, M, M), on the cost's
    device."""
    host = np.ascontiguousarray(to_numpy(cost), dtype=np.float64)  # finite: inputs are checked
    B, M = host.shape[:2]
    perm = np.empty((B, M), dtype=np.intp)
    potentials, inverse, total = np.empty((B, M)), np.empty((B, M), dtype=np.intp), np.empty(B)
    _assign(host, potentials, perm, inverse, total, False)
    return xp.asarray(perm, device=array_api_compat.device(cost))


def _gather_rows(xp, points, index):
    """``out[b, i] = points[b, index[b, i]]`` for points (B, M, D) and index (B, M)."""
    B, M, D = points.shape
    offset = index + M * xp.arange(B, dtype=index.dtype, device=array_api_compat.device(index))[:, None]
    flat = xp.take(xp.reshape(points, (B * M, D)), xp.reshape(offset, (-1,)), axis=0)
    return xp.reshape(flat, (B, M, D))


def _matched_w2(xp, x, matched):
    """W2^2 of the permutation coupling x_i <-> matched_i, per batch element: (B, M, D) -> (B,).

    Summed from the matched differences rather than read off the cost matrix: the expanded form
    |x|^2 + |y|^2 - 2 x.y carries an absolute error ~ eps |x|^2, which swamps W2^2 once the measures
    reach consensus (the variance_decay study tracks it down by many decades)."""
    d = x - matched
    return xp.sum(xp.vecdot(d, d, axis=-1), axis=-1) / x.shape[-2]


def _logsumexp(xp, z, axis):
    top = xp.max(z, axis=axis, keepdims=True)
    return xp.squeeze(top, axis=axis) + xp.log(xp.sum(xp.exp(z - top), axis=axis))


# The marginal error is checked every few scaling steps, as POT does: each check is a reduction
# and a host sync (costly on a GPU), and a scaling step is cheap.
_SINKHORN_CHECK_EVERY = 10
# Scaling steps stop and Newton's method takes over once every marginal L1 error is below this, or
# after _SINKHORN_SWEEPS steps. Newton converges quadratically only close to the solution; scaling
# steps get there cheaply (docs/benchmarks.md has the measurement).
_NEWTON_SWITCH = 1e-2
_SINKHORN_SWEEPS = 50
# Plan entries (measures x M x K) solved at a time by the entropic solvers. A block's Sinkhorn-Newton
# solve keeps about a dozen arrays of this size alive (cost, kernel, plan, Newton's couplings and
# Laplacians, the line search's temporaries): 2**21 float64 entries bound its memory whatever N.
# Blocks are independent plan problems but for the scaling phase, which stops when the worst plan of
# its block is close enough for Newton's method, so the block size (and not ``workers``) sets the
# iterates, within ``sinkhorn_tol``.
_SINKHORN_BLOCK_ENTRIES = 2**21


def _sinkhorn(xp, cost, eps, f, g, max_iter, tol):
    r"""Entropic OT between uniform measures, batched over the leading axis of ``cost``.

    Solves :math:`\min_P \langle P, C\rangle - \varepsilon H(P)` with marginals (1/M, 1/K), in two
    phases that share ``max_iter``:

    1. Sinkhorn scaling steps in the log-stabilised form of Schmitzer (2019): potentials f, g (in
       cost units) carry the scale and the loop runs cheap scaling steps u, v on the absorbed kernel
       exp((f + g - C)/eps), folding u, v back before they can overflow;
    2. Newton's method on the semi-dual (:func:`_newton`), for the measures whose marginal error is
       still above ``tol``. Sinkhorn alone converges linearly at a rate that tends to 1 as eps -> 0
       (at reg = 0.01 thousands of steps leave errors ~1e-4); Newton converges quadratically.

    cost (B, M, K); eps (B,); f (B, M) and g (B, K) warm-start potentials, or f None to start
    from g alone. Returns the final potentials, the plans
    (B, M, K), whether every plan's marginal L1 error fell below ``tol``, and the iterations taken,
    summed over the plans (the scaling steps count once per plan of the batch).
    """
    B, M, K = cost.shape
    e = eps[:, None]
    e3 = eps[:, None, None]
    if f is None:
        # From g alone: rows made exact by f(g), then columns by one log-domain update of g, so
        # that the row error checked below measures how far the start is (with exact rows it
        # would read 0, and Newton's method would start however far off the columns are).
        f = _semi_dual(xp, cost, eps, g)[0]
        g = e * (-math.log(K) - _logsumexp(xp, (f[:, :, None] - cost) / e3, axis=1))
    kernel = xp.exp((f[:, :, None] + g[:, None, :] - cost) / e3)
    tiny = xp.finfo(cost.dtype).smallest_normal
    rows, cols = xp.sum(kernel, axis=2), xp.sum(kernel, axis=1)
    if not bool(xp.all(xp.isfinite(rows)) & xp.all(rows > tiny) & xp.all(cols > tiny)):
        # The warm start is too far off (a row or column of the kernel under- or overflows): one
        # log-domain sweep leaves every row with mass >= 1/(M K) and every column with 1/K.
        f = _semi_dual(xp, cost, eps, g)[0]
        g = e * (-math.log(K) - _logsumexp(xp, (f[:, :, None] - cost) / e3, axis=1))
        kernel = xp.exp((f[:, :, None] + g[:, None, :] - cost) / e3)
    u = xp.ones_like(f)
    v = xp.ones_like(g)
    limit = math.log(xp.finfo(cost.dtype).max) / 4
    sweeps = 0
    while sweeps < min(max_iter, _SINKHORN_SWEEPS):
        rows = (kernel @ v[:, :, None])[:, :, 0]
        if sweeps % _SINKHORN_CHECK_EVERY == 0:
            err = float(xp.max(xp.sum(xp.abs(u * rows - 1 / M), axis=1)))
            if not math.isfinite(err):
                raise FloatingPointError("Sinkhorn diverged; increase reg")
            if err <= max(tol, _NEWTON_SWITCH):
                break
        u = (1 / M) / rows
        v = (1 / K) / (u[:, None, :] @ kernel)[:, 0, :]
        if float(xp.max(xp.abs(xp.log(xp.concat([u, v], axis=1))))) > limit:
            f, g = f + e * xp.log(u), g + e * xp.log(v)
            kernel = xp.exp((f[:, :, None] + g[:, None, :] - cost) / e3)
            u, v = xp.ones_like(f), xp.ones_like(g)
        sweeps += 1
    f, g, plan, converged, steps = _newton(xp, cost, eps, g + e * xp.log(v), max_iter - sweeps, tol)
    return f, g, plan, converged, steps + B * sweeps


def _semi_dual(xp, cost, eps, g):
    """Row potentials f(g) that make every row marginal exact, and the dual objective
    mean(f) + mean(g) (concave in g): (B, M), (B,)."""
    M = cost.shape[1]
    f = eps[:, None] * (-math.log(M) - _logsumexp(xp, (g[:, None, :] - cost) / eps[:, None, None], axis=2))
    return f, xp.mean(f, axis=1) + xp.mean(g, axis=1)


def _newton(xp, cost, eps, g, max_iter, tol):
    r"""Newton's method on the semi-dual of entropic OT (Brauer, Clason, Lorenz and Wirth 2017).

    With f = f(g) making the rows exact and :math:`P = \exp((f \oplus g - C)/\varepsilon)`, the
    semi-dual :math:`F(g) = \frac1M\sum_i f_i + \frac1K\sum_j g_j` is concave, its gradient is the
    column-marginal residual :math:`r = 1/K - P^\top 1`, and its negative Hessian is
    :math:`L/\varepsilon` with L the graph Laplacian of the column couplings
    :math:`A_{jk} = M\sum_i P_{ij}P_{ik}` (j != k). L is formed from A alone, not as
    :math:`\mathrm{diag}(P^\top 1) - A` with A's diagonal: for near-permutation plans (small eps)
    that difference cancels to no digits. The step solves
    :math:`(L + 0.01\,\|r\|_1 I/K + 11^\top/K)\,\delta = \varepsilon r`: the rank-one term fixes
    the additive gauge of g, and the damping (Levenberg-Marquardt style, vanishing at the solution,
    so the convergence stays quadratic) keeps the system solvable when groups of columns decouple at
    small eps (measured on clustered atoms: damping 1 took twice the steps of 0.01, which was as
    fast as 1e-8). The step is halved until F increases (Armijo);
    near the optimum F's gain falls below its rounding, so gains within rounding also pass.
    Measures leave the batch as they converge. Returns (f, g, plans, all converged) in batch order
    and the Newton steps taken, summed over the plans.
    """
    B, M, K = cost.shape
    device = array_api_compat.device(cost)
    eye = xp.eye(K, dtype=cost.dtype, device=device)
    index = xp.arange(B, device=device)
    done = []  # (index, f, g, plan) of the measures that left the batch
    steps = 0
    f, F = _semi_dual(xp, cost, eps, g)
    for it in range(max_iter + 1):
        plan = xp.exp((f[:, :, None] + g[:, None, :] - cost) / eps[:, None, None])
        residual = 1 / K - xp.sum(plan, axis=1)
        error = xp.sum(xp.abs(residual), axis=1)
        if not bool(xp.all(xp.isfinite(error))):
            raise FloatingPointError("Sinkhorn diverged; increase reg")
        finished = error <= tol
        if bool(xp.any(finished)):
            keep, out = xp.nonzero(~finished)[0], xp.nonzero(finished)[0]
            steps += it * out.shape[0]
            done.append(tuple(xp.take(a, out, axis=0) for a in (index, f, g, plan)))
            index, f, g, plan, cost, eps, F, residual, error = (
                xp.take(a, keep, axis=0) for a in (index, f, g, plan, cost, eps, F, residual, error))
        if index.shape[0] == 0 or it == max_iter:
            break
        coupling = M * (xp.matrix_transpose(plan) @ plan) * (1 - eye)
        damping = xp.sum(coupling, axis=2) + 0.01 * error[:, None] / K
        laplacian = eye * damping[:, :, None] - coupling + 1 / K
        step = xp.linalg.solve(laplacian, (eps[:, None] * residual)[:, :, None])[:, :, 0]
        slope = xp.sum(residual * step, axis=1)
        floor = 1e-13 * (xp.abs(F) + eps)
        t = xp.ones_like(F)
        for _ in range(40):
            f_new, F_new = _semi_dual(xp, cost, eps, g + t[:, None] * step)
            accept = F_new - F >= 1e-4 * t * slope - floor
            if bool(xp.all(accept)):
                break
            t = xp.where(accept, t, t / 2)
        g, f, F = g + t[:, None] * step, f_new, F_new
    converged = index.shape[0] == 0
    if not converged:
        done.append((index, f, g, plan))
        steps += it * index.shape[0]
    index, f, g, plan = (xp.concat([part[k] for part in done], axis=0) for k in range(4))
    order = xp.argsort(index)
    return (*(xp.take(a, order, axis=0) for a in (f, g, plan)), converged, steps)


def _relative_eps(xp, cost, reg):
    """reg * mean(C) per batch element; a zero cost (all atoms equal) falls back to reg."""
    scale = xp.mean(cost, axis=(-2, -1))
    return reg * xp.where(scale > 0, scale, xp.ones_like(scale))


def w2_squared(
    x, y, method="exact", reg=0.05, *, sinkhorn_max_iter=1000, sinkhorn_tol=1e-9, workers=1
):
    r"""Squared Wasserstein-2 distance between uniform measures on point sets.

    For :math:`\mu = \frac1M\sum_i\delta_{x_i}` and :math:`\nu = \frac1K\sum_j\delta_{y_j}`:

    - ``"exact"`` (M = K): :math:`W_2^2 = \min_\pi \frac1M\sum_i \|x_i - y_{\pi(i)}\|^2` over
      permutations, which is the optimal transport cost (Birkhoff);
    - ``"sinkhorn"``: :math:`\langle P_\varepsilon, C\rangle` with :math:`P_\varepsilon` the entropic
      plan :math:`\arg\min_P \langle P, C\rangle - \varepsilon H(P)`, computed by log-stabilised
      Sinkhorn steps and then Newton's method on the semi-dual, which converges quadratically
      where Sinkhorn alone stalls at small reg. ``reg`` is relative:
      :math:`\varepsilon = \mathrm{reg}\cdot\mathrm{mean}(C)`, the mean squared distance between an
      atom of x and an atom of y. The value is an upper bound of
      the exact :math:`W_2^2` and tends to it as reg -> 0.

    Parameters
    ----------
    x : array-like, shape (..., M, D), float
        Atoms of the first measures.
    y : array-like, shape (..., K, D), float
        Atoms of the second measures; leading axes broadcast against those of ``x``.
    method : {"exact", "sinkhorn"}
        Exact assignment (:func:`meanfield.assignment.linear_assignment`) or entropic OT.
    reg : float > 0
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
    >>> round(float(w2_squared(x, y, method="sinkhorn", reg=0.05)), 4)
    4.0116
    >>> round(float(w2_squared(x, y, method="sinkhorn", reg=1.0)), 4)
    4.4447

    References
    ----------
    Peyre, G. and Cuturi, M. (2019). Computational Optimal Transport. Foundations and Trends in
    Machine Learning 11(5-6).
    """
    _check_method(method)
    check_float("reg", reg, low=0, low_open=True)
    check_int("sinkhorn_max_iter", sinkhorn_max_iter, low=1)
    check_float("sinkhorn_tol", sinkhorn_tol, low=0)
    check_workers(workers)
    xp, (x, y) = _namespace(x, y)
    x = _check_atoms(xp, x, "x", ("...", "M", "D"))
    y = _check_atoms(xp, y, "y", ("...", "K", "D"))
    M, K, D = x.shape[-2], y.shape[-2], x.shape[-1]
    if y.shape[-1] != D:
        raise ValueError(f"x and y must have the same dimension D, got {D} and {y.shape[-1]}")
    if method == "exact" and M != K:
        raise ValueError(f"method='exact' needs as many atoms in y as in x, got M={M} and K={K}")
    dtype = xp.result_type(x, y)
    work = _work_dtype(xp)
    batch = tuple(np.broadcast_shapes(tuple(x.shape[:-2]), tuple(y.shape[:-2])))
    B = math.prod(batch)
    xb = xp.reshape(xp.broadcast_to(xp.astype(x, work, copy=False), batch + (M, D)), (B, M, D))
    yb = xp.reshape(xp.broadcast_to(xp.astype(y, work, copy=False), batch + (K, D)), (B, K, D))
    parts = {}  # first index of a block -> its results, filled by the worker threads

    # Pairs are solved in blocks: an exact block's costs stay in cache until its assignments have
    # read them, and the entropic plans, with their temporaries, fit in bounded memory.
    def exact_block(s):
        perm = _assignments(xp, _sqdist(xp, xb[s], yb[s], dtype))
        parts[s.start] = (_matched_w2(xp, xb[s], _gather_rows(xp, yb[s], perm)), True)

    def sinkhorn_block(s):
        cost = _sqdist(xp, xb[s], yb[s], dtype)
        f, g = (xp.zeros((cost.shape[0], n), dtype=work, device=array_api_compat.device(cost))
                for n in (M, K))
        _, _, plan, ok, _ = _sinkhorn(xp, cost, _relative_eps(xp, cost, reg), f, g,
                                      sinkhorn_max_iter, sinkhorn_tol)
        parts[s.start] = (xp.sum(plan * cost, axis=(-2, -1)), ok)

    with _one_blas_thread(xp):
        if method == "exact":
            in_blocks(exact_block, B, max(threads(workers), -(-B * M * K // _BLOCK_ENTRIES)), workers)
        else:  # blocks independent of workers: they set the iterates (see _SINKHORN_BLOCK_ENTRIES)
            in_blocks(sinkhorn_block, B, -(-B * M * K // _SINKHORN_BLOCK_ENTRIES), workers)
    if B == 0:
        return xp.zeros(batch, dtype=dtype, device=array_api_compat.device(x))
    w2, ok = zip(*(parts[k] for k in sorted(parts)))
    if not all(ok):
        warnings.warn(
            f"Sinkhorn did not reach sinkhorn_tol={sinkhorn_tol} in {sinkhorn_max_iter} iterations; "
            "increase sinkhorn_max_iter or reg",
            RuntimeWarning,
            stacklevel=2,
        )
    return xp.astype(xp.reshape(xp.concat(w2, axis=0), batch), dtype, copy=False)


# --------------------------------------------------------------------------------------------------
# barycenters
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BarycenterResult:
    r"""Weighted W2 barycenter of uniform measures and the transport maps towards it.

    Attributes
    ----------
    support : array, shape (K, D), float
        Atoms of the barycenter (K = M for the exact solver), in the dtype of the inputs, like
        ``maps``.
    objective : float
        :math:`\frac12\sum_n\beta_n W_2^2(\bar\mu, \mu_n)` at ``support`` over all measures (for
        Sinkhorn, :math:`W_2^2` is the transport cost of the entropic plan).
    n_iter : int
        Number of support updates performed.
    converged : bool
        Whether the relative change of the objective fell below ``tol`` (for Sinkhorn, also that
        the final plans reached ``sinkhorn_tol``).
    maps : array, shape (N, M, D), float
        ``maps[n, i]``: image of atom i of measure n under its transport map to the final support
        (exact: the matched barycenter atom; Sinkhorn: the barycentric projection).
    assignment : array of int, shape (N, M), or None
        Exact solver: index of the barycenter atom matched to atom i of measure n. None for Sinkhorn.
    history : numpy.ndarray, shape (n_iter + 1,), float
        Objective before the first and after each support update, over the measures that took part
        in the iterations (weights above the threshold); non-increasing for the exact solver.
    epsilon : float or None
        Absolute entropic regularisation used (Sinkhorn), None for the exact solver.
    potentials : array, shape (N, K), float64, or None
        Column potentials of each measure's final transport: exact solver, a numpy array of the
        LP duals certifying each assignment (see :mod:`meanfield.assignment`); Sinkhorn, the dual
        potentials g of the entropic plans (cost units, in the namespace of the inputs). Pass the
        result as ``warm_start`` to the next solve of the same solver.
    sinkhorn_iterations : int or None
        Sinkhorn solver: scaling steps and Newton steps summed over every entropic plan solved
        (one per measure and support, a block's scaling steps counting for each of its
        measures); None for the exact solver.
    """

    support: object
    objective: float
    n_iter: int
    converged: bool
    maps: object
    assignment: object = None
    history: np.ndarray = None
    epsilon: float | None = None
    potentials: object = None
    sinkhorn_iterations: int | None = None


def _barycenter_inputs(measures, weights, init, same_size):
    """Checked inputs in the working dtype (float64), and the dtype of the results."""
    xp, (measures, weights, init) = _namespace(measures, weights, init)
    x = _check_atoms(xp, measures, "measures", ("N", "M", "D"))
    y = _check_atoms(xp, init, "init", ("K", "D"))
    if y.shape[-1] != x.shape[-1]:
        raise ValueError(f"init must have D = {x.shape[-1]} columns like measures, got {y.shape[-1]}")
    if same_size and y.shape[0] != x.shape[1]:
        raise ValueError(f"init must have M = {x.shape[1]} atoms like each measure, got {y.shape[0]}")
    dtype = xp.result_type(x, y)
    work = _work_dtype(xp)
    beta = _check_weights(xp, weights, x.shape[0], work)
    return xp, xp.astype(x, work, copy=False), beta, xp.astype(y, work, copy=False), dtype


def _split(xp, beta, threshold):
    """Indices of the measures that take part in the iterations, and of the others."""
    keep = beta >= threshold * xp.max(beta)
    return xp.nonzero(keep)[0], xp.nonzero(~keep)[0]


def _merge(xp, first, a, second, b):
    """Rows of a (for indices ``first``) and b (for ``second``) put back in index order."""
    order = xp.argsort(xp.concat([first, second]))
    return xp.take(xp.concat([a, b], axis=0), order, axis=0)


# Entries of the cost matrices computed and solved at a time: blocks of about 1 MB stay in cache
# between the product that writes them and the solver that scans them several times (one (B, M, M)
# product at B = 50, M = 500 writes 100 MB, and took longer than the warm-started solves).
_BLOCK_ENTRIES = 2**17


def _exact_step(xp, x1, x_sq, support, workers, warm):
    """Optimal permutations of every measure to ``support`` and their inverses (on x1's device),
    W2^2 (B,), and the host copies (potentials, permutations) that warm-start the next step.

    The assignment only needs |y_j|^2 - 2 x_i.y_j (|x_i|^2 is constant along a row), which is one
    product [x, 1] @ [-2 y, |y|^2]^T with ``x1`` = [x, 1] (B, M, D + 1) built once per solve (at
    small D faster than forming the terms separately), per block of measures. W2^2 is the
    optimal cost plus ``x_sq`` = sum_i |x_i|^2. ``warm``: the (potentials, permutations) of the
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
        _assign(cost, potentials[s], perm[s], inverse[s], total[s], warm is not None)

    in_blocks(solve_block, B, max(threads(workers), -(-B * M * M // _BLOCK_ENTRIES)), workers)
    device = array_api_compat.device(x1)
    w2 = (x_sq + xp.asarray(total, dtype=x1.dtype, device=device)) / M
    return xp.asarray(perm, device=device), xp.asarray(inverse, device=device), w2, (potentials, perm)


def _with_ones(xp, x):
    return xp.concat([x, xp.ones(x.shape[:-1] + (1,), dtype=x.dtype,
                                 device=array_api_compat.device(x))], axis=-1)


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
    which keeps the expanded cost |x|^2 + |y|^2 - 2 x.y accurate; the iterations read the objective
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
        xp, x, beta, init, dtype = _barycenter_inputs(measures, weights, init, same_size=True)
        warm = _warm_arrays(warm_start, x.shape[0], x.shape[1])
        with _one_blas_thread(xp):
            return self._solve(xp, x, beta, init, dtype, warm)

    def _solve(self, xp, x, beta, init, dtype, warm):
        B, M, D = x.shape
        centre = xp.tensordot(beta, xp.mean(x, axis=1), axes=1)
        active, rest = _split(xp, beta, self.weight_threshold)
        xa = (xp.take(x, active, axis=0) if rest.shape[0] else x) - centre
        support = init - centre
        # later supports are convex combinations of the atoms of xa, so one check covers them
        _check_cost_scale(xp, D, xa, support, dtype=dtype)
        xa_sq = xp.sum(xp.vecdot(xa, xa), axis=1)
        xa1 = _with_ones(xp, xa)  # [x, 1]: also what the support update gathers (one copy of x)
        del xa
        wa = xp.take(beta, active, axis=0)
        share = wa / xp.sum(wa)
        rows_a = to_numpy(active)
        warm_a = None if warm is None else (warm[0][rows_a], warm[1][rows_a])
        perm, inverse, w2, warm_a = _exact_step(xp, xa1, xa_sq, support, self.workers, warm_a)
        history = [0.5 * float(xp.sum(wa * w2))]
        converged = False
        n_iter = 0
        while n_iter < self.max_iter and not converged:
            # y_j = sum_n beta_n x_{n, pi_n^{-1}(j)}: gather each measure in barycenter order.
            support = xp.tensordot(share, _gather_rows(xp, xa1, inverse), axes=1)[:, :D]
            previous = warm_a[1].copy()  # the step overwrites the host permutations
            perm, inverse, w2, warm_a = _exact_step(xp, xa1, xa_sq, support, self.workers, warm_a)
            history.append(0.5 * float(xp.sum(wa * w2)))
            n_iter += 1
            # Repeated assignments would give the same support again: a fixed point.
            converged = (history[-2] - history[-1] <= self.tol * abs(history[-2])
                         or np.array_equal(previous, warm_a[1]))
        potentials = np.empty((B, M))
        potentials[rows_a] = warm_a[0]
        if rest.shape[0]:
            rows_r = to_numpy(rest)
            xr = xp.take(x, rest, axis=0) - centre
            _check_cost_scale(xp, D, xr, dtype=dtype)
            warm_r = None if warm is None else (warm[0][rows_r], warm[1][rows_r])
            perm_r, _, _, (potentials[rows_r], _) = _exact_step(
                xp, _with_ones(xp, xr), xp.sum(xp.vecdot(xr, xr), axis=1), support, self.workers, warm_r)
            perm = _merge(xp, active, perm, rest, perm_r)
        support = support + centre
        maps = xp.reshape(xp.take(support, xp.reshape(perm, (-1,)), axis=0), (B, M, D))
        return BarycenterResult(
            support=xp.astype(support, dtype, copy=False),
            objective=0.5 * float(xp.sum(beta * _matched_w2(xp, x, maps))),
            n_iter=n_iter,
            converged=bool(converged),
            maps=xp.astype(maps, dtype, copy=False),
            assignment=perm,
            history=np.asarray(history),
            potentials=potentials,
        )


def _warm_arrays(warm_start, n, m):
    """(potentials, assignment) as numpy arrays from an exact BarycenterResult, or None."""
    if warm_start is None:
        return None
    if (not isinstance(warm_start, BarycenterResult) or warm_start.potentials is None
            or warm_start.assignment is None):
        raise ValueError("warm_start must be a BarycenterResult of ExactBarycenter.solve")
    potentials = _warm_potentials(warm_start, n, m, f"N = {n} measures of M = {m} atoms")
    assignment = to_numpy(warm_start.assignment)
    # the compiled solver indexes the costs with the assignment unchecked
    if assignment.shape != (n, m) or not np.array_equal(np.sort(assignment, axis=1),
                                                        np.broadcast_to(np.arange(m), (n, m))):
        raise ValueError("warm_start.assignment must hold a permutation of 0..M-1 for each of the N "
                         "measures")
    return potentials, assignment


def _warm_potentials(warm_start, n, k, sizes):
    """The warm start's potentials as a float64 numpy array of shape (n, k), checked."""
    potentials = np.asarray(to_numpy(warm_start.potentials), dtype=np.float64)
    if potentials.shape != (n, k):
        raise ValueError(f"warm_start must come from {sizes}, got a result for shape {potentials.shape}")
    if not np.all(np.isfinite(potentials)):
        raise ValueError("warm_start.potentials contains NaN or infinite values")
    return potentials


@dataclass(frozen=True)
class SinkhornBarycenter:
    r"""Weighted entropic W2 barycenter of uniform measures (free support, fixed uniform weights).

    The fixed point of :class:`ExactBarycenter` with entropic plans :math:`P_n` (POT's
    ``ot.bregman.free_support_sinkhorn_barycenter``): given the support Y (K atoms),

    .. math::
        P_n = \arg\min_{P \in \Pi(\frac1M, \frac1K)} \langle P, C(\mu_n, Y)\rangle
              - \varepsilon H(P), \qquad
        y_j \leftarrow K \sum_n \beta_n \sum_i (P_n)_{ij}\, x_{n,i},

    with :math:`\varepsilon = \mathrm{reg}\cdot s`, where s is the mean squared distance between two
    atoms drawn independently from the mixture :math:`\sum_n\beta_n\mu_n` (for one measure, the mean
    of its cost matrix with itself), so ``reg`` does not depend on the units nor on ``init``. Each
    plan is solved to ``sinkhorn_tol`` by Sinkhorn steps and then Newton's method on the semi-dual
    (plain Sinkhorn needs thousands of steps at reg = 0.01 and POT's stops unconverged there), with
    the potentials warm-started from one update to the next. Entropic plans shrink the
    barycenter; it tends to the exact one as reg -> 0. The reported objective is
    :math:`\frac12\sum_n\beta_n\langle P_n, C_n\rangle`; the iteration stops when its relative
    change is at most ``tol`` or after ``max_iter`` updates.

    The plans are solved in blocks of measures of about 2**21 entries in all, so the memory does
    not grow with N: each block's plans give their share of the next support,
    :math:`K\sum_{n \in \text{block}} \beta_n P_n^\top x_n`, their transport costs and maps, and are
    dropped.

    Parameters
    ----------
    reg : float > 0
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
    >>> res = SinkhornBarycenter(reg=0.01).solve(measures, np.array([0.5, 0.5]), np.array([[0.0], [1.0]]))
    >>> np.round(res.support.ravel(), 3).tolist(), round(res.objective, 3), res.assignment is None
    ([2.0, 4.0], 2.0, True)

    References
    ----------
    Cuturi, M. and Doucet, A. (2014). Fast computation of Wasserstein barycenters. ICML.
    Schmitzer, B. (2019). Stabilized sparse scaling algorithms for entropy regularized transport
    problems. SIAM J. Sci. Comput. 41(3).
    """

    reg: float = 0.05
    max_iter: int = 100
    tol: float = 1e-9
    sinkhorn_max_iter: int = 1000
    sinkhorn_tol: float = 1e-9
    weight_threshold: float = 1e-12
    workers: int = 1

    def __post_init__(self):
        check_float("reg", self.reg, low=0, low_open=True)
        check_int("max_iter", self.max_iter, low=0)
        check_float("tol", self.tol, low=0)
        check_int("sinkhorn_max_iter", self.sinkhorn_max_iter, low=1)
        check_float("sinkhorn_tol", self.sinkhorn_tol, low=0)
        check_float("weight_threshold", self.weight_threshold, low=0, high=1)
        check_workers(self.workers)

    def _plans(self, xp, x, x_sq, support, eps, f, g, share=None):
        r"""Entropic plans :math:`P_n` of every measure of x (B, M, D) to ``support`` (K, D), block by
        block, and what the barycenter needs of them.

        ``x_sq`` (B, M) holds :math:`|x_i|^2`, so a cost matrix costs one batched product. The
        potentials f (B, M) and g (B, K) start each plan; both None starts from zero, f None
        from g alone. Returns the final f and g, the transport costs
        :math:`\langle P_n, C_n\rangle` (B,), the maps :math:`M P_n Y` (B, M, D), the next support
        :math:`K\sum_n \mathrm{share}_n P_n^\top x_n` (K, D) if ``share`` (B,) is given, whether
        every plan reached ``sinkhorn_tol`` and the iterations taken.
        """
        B, M, D = x.shape
        K = support.shape[0]
        device = array_api_compat.device(x)
        y_sq = xp.sum(support * support, axis=1)
        support_t = xp.matrix_transpose(support)
        parts = {}  # first measure of a block -> its results, filled by the worker threads

        def block(s):
            xb = x[s]
            cost = xp.clip(x_sq[s][:, :, None] + y_sq - 2 * (xb @ support_t), 0, None)
            b = cost.shape[0]
            if g is None:
                fb, gb = (xp.zeros((b, n), dtype=x.dtype, device=device) for n in (M, K))
            else:
                fb, gb = (None if f is None else f[s]), g[s]
            eps_b = xp.full((b,), eps, dtype=x.dtype, device=device)
            fb, gb, plan, ok, steps = _sinkhorn(xp, cost, eps_b, fb, gb, self.sinkhorn_max_iter,
                                                self.sinkhorn_tol)
            update = None
            if share is not None:  # this block's share of the next support, before the plans go
                weighted = xp.reshape(xb * share[s][:, None, None], (-1, D))
                update = xp.matrix_transpose(xp.reshape(plan, (-1, K))) @ weighted
            parts[s.start] = (fb, gb, xp.sum(plan * cost, axis=(1, 2)), M * (plan @ support), update,
                              ok, steps)

        in_blocks(block, B, -(-B * M * K // _SINKHORN_BLOCK_ENTRIES), self.workers)
        f, g, cost, maps, updates, ok, steps = zip(*(parts[k] for k in sorted(parts)))
        update = None
        if share is not None:
            update = updates[0]
            for part in updates[1:]:  # in block order: the sum does not depend on the threads
                update = update + part
            update = K * update
        return (xp.concat(f, axis=0), xp.concat(g, axis=0), xp.concat(cost, axis=0),
                xp.concat(maps, axis=0), update, all(ok), sum(steps))

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
        xp, x, beta, init, dtype = _barycenter_inputs(measures, weights, init, same_size=False)
        warm = None
        if warm_start is not None:
            if (not isinstance(warm_start, BarycenterResult) or warm_start.potentials is None
                    or warm_start.epsilon is None):
                raise ValueError("warm_start must be a BarycenterResult of SinkhornBarycenter.solve")
            sizes = f"N = {x.shape[0]} measures and K = {init.shape[0]} barycenter atoms"
            warm = xp.asarray(_warm_potentials(warm_start, x.shape[0], init.shape[0], sizes),
                              dtype=x.dtype, device=array_api_compat.device(x))
        with _one_blas_thread(xp):
            return self._solve(xp, x, beta, init, dtype, warm)

    def _solve(self, xp, x, beta, init, dtype, warm):
        # Centred once on the mixture mean (the problem is translation-equivariant), which keeps
        # the expanded costs accurate; the mean square of the centred atoms gives the cost scale.
        centre = xp.tensordot(beta, xp.mean(x, axis=1), axes=1)
        x = x - centre
        support = init - centre
        # later supports are convex combinations of the atoms of x, so one check covers them
        _check_cost_scale(xp, x.shape[2], x, support, dtype=dtype)
        x_sq = xp.sum(x * x, axis=2)
        scale = 2 * float(xp.sum(beta * xp.mean(x_sq, axis=1)))
        eps = self.reg * (scale if scale > 0 else 1.0)
        active, rest = _split(xp, beta, self.weight_threshold)
        xa = xp.take(x, active, axis=0)
        xa_sq = xp.take(x_sq, active, axis=0)
        wa = xp.take(beta, active, axis=0)
        share = wa / xp.sum(wa)
        g = None if warm is None else xp.take(warm, active, axis=0)
        f, g, cost, maps, update, ok, steps = self._plans(xp, xa, xa_sq, support, eps, None, g, share)
        history = [0.5 * float(xp.sum(wa * cost))]
        converged = False
        n_iter = 0
        while n_iter < self.max_iter and not converged:
            support = update
            f, g, cost, maps, update, ok, more = self._plans(xp, xa, xa_sq, support, eps, f, g, share)
            steps += more
            history.append(0.5 * float(xp.sum(wa * cost)))
            n_iter += 1
            converged = abs(history[-2] - history[-1]) <= self.tol * abs(history[-2])
        if rest.shape[0]:
            g_r = None if warm is None else xp.take(warm, rest, axis=0)
            _, g_r, cost_r, maps_r, _, ok_r, more = self._plans(
                xp, xp.take(x, rest, axis=0), xp.take(x_sq, rest, axis=0), support, eps, None, g_r)
            maps = _merge(xp, active, maps, rest, maps_r)
            cost = _merge(xp, active, cost, rest, cost_r)
            g = _merge(xp, active, g, rest, g_r)
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


def variance(measures, support, weights=None, method="exact", reg=0.05):
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
    reg : float > 0
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
    _check_method(method)
    xp, (measures, support) = _namespace(measures, support)
    x = _check_atoms(xp, measures, "measures", ("N", "M", "D"))
    w2 = w2_squared(x, support, method=method, reg=reg)
    if weights is None:
        return 0.5 * float(xp.mean(w2))
    beta = _check_weights(xp, xp.asarray(weights, device=array_api_compat.device(w2)), x.shape[0], w2.dtype)
    return 0.5 * float(xp.sum(beta * w2))
