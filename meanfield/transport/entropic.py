r"""Entropic transport plans between uniform measures: log-stabilised Sinkhorn steps, then Newton's
method on the semi-dual.

The regularisation is relative throughout: :math:`\varepsilon = \mathrm{relative\_reg}\cdot s` with s a mean
squared distance between atoms of the two sides (:func:`relative_epsilon`), so ``relative_reg`` does not
depend on the units (POT's ``reg`` is the absolute :math:`\varepsilon`).
"""

from __future__ import annotations

import math

import array_api_compat

from meanfield.assignment import in_blocks


def logsumexp(xp, z, axis):
    top = xp.max(z, axis=axis, keepdims=True)
    return xp.squeeze(top, axis=axis) + xp.log(xp.sum(xp.exp(z - top), axis=axis))


# The marginal error is checked every few scaling steps, as POT does: each check is a reduction
# and a host sync (costly on a GPU), and a scaling step is cheap.
CHECK_EVERY = 10
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
BLOCK_ENTRIES = 2**21


def sinkhorn(xp, cost, eps, f, g, max_iter, tol):
    r"""Entropic OT between uniform measures, batched over the leading axis of ``cost``.

    Solves :math:`\min_P \langle P, C\rangle - \varepsilon H(P)` with marginals (1/M, 1/K), in two
    phases that share ``max_iter``:

    1. Sinkhorn scaling steps in the log-stabilised form of Schmitzer (2019): potentials f, g (in
       cost units) carry the scale and the loop runs cheap scaling steps u, v on the absorbed kernel
       exp((f + g - C)/eps), folding u, v back before they can overflow;
    2. Newton's method on the semi-dual (:func:`newton`), for the measures whose marginal error is
       still above ``tol``. Sinkhorn alone converges linearly at a rate that tends to 1 as eps -> 0
       (at relative_reg = 0.01 thousands of steps leave errors ~1e-4); Newton converges quadratically.

    cost (B, M, K); eps (B,); f (B, M) and g (B, K) warm-start potentials, or f None to start
    from g alone. Returns the final potentials, the plans
    (B, M, K), whether every plan's marginal L1 error fell below ``tol``, and the iterations taken,
    summed over the plans (the scaling steps count once per plan of the batch).
    """
    B, M, K = cost.shape
    e = eps[:, None]
    e3 = eps[:, None, None]
    # The plan depends on f + g only. Warm starts passed from solve to solve pick up a common offset
    # (the scaling steps do not preserve it), and over hundreds of OT-CBO steps f and g grow to
    # thousands of eps of opposite signs: the semi-dual mean(f) + mean(g) then cancels to fewer
    # digits than Newton's line search needs, and the plans stall short of ``tol``.
    offset = xp.mean(g, axis=1, keepdims=True)
    g = g - offset
    if f is not None:
        f = f + offset
    if f is None:
        # From g alone: rows made exact by f(g), then columns by one log-domain update of g, so
        # that the row error checked below measures how far the start is (with exact rows it
        # would read 0, and Newton's method would start however far off the columns are).
        f = semi_dual(xp, cost, eps, g)[0]
        g = e * (-math.log(K) - logsumexp(xp, (f[:, :, None] - cost) / e3, axis=1))
    kernel = xp.exp((f[:, :, None] + g[:, None, :] - cost) / e3)
    tiny = xp.finfo(cost.dtype).smallest_normal
    rows, cols = xp.sum(kernel, axis=2), xp.sum(kernel, axis=1)
    if not bool(xp.all(xp.isfinite(rows)) & xp.all(rows > tiny) & xp.all(cols > tiny)):
        # The warm start is too far off (a row or column of the kernel under- or overflows): one
        # log-domain sweep leaves every row with mass >= 1/(M K) and every column with 1/K.
        f = semi_dual(xp, cost, eps, g)[0]
        g = e * (-math.log(K) - logsumexp(xp, (f[:, :, None] - cost) / e3, axis=1))
        kernel = xp.exp((f[:, :, None] + g[:, None, :] - cost) / e3)
    u = xp.ones_like(f)
    v = xp.ones_like(g)
    limit = math.log(xp.finfo(cost.dtype).max) / 4
    sweeps = 0
    while sweeps < min(max_iter, _SINKHORN_SWEEPS):
        rows = (kernel @ v[:, :, None])[:, :, 0]
        if sweeps % CHECK_EVERY == 0:
            err = float(xp.max(xp.sum(xp.abs(u * rows - 1 / M), axis=1)))
            if not math.isfinite(err):
                raise FloatingPointError("Sinkhorn diverged; increase relative_reg")
            if err <= max(tol, _NEWTON_SWITCH):
                break
        u = (1 / M) / rows
        v = (1 / K) / (u[:, None, :] @ kernel)[:, 0, :]
        if float(xp.max(xp.abs(xp.log(xp.concat([u, v], axis=1))))) > limit:
            f, g = f + e * xp.log(u), g + e * xp.log(v)
            kernel = xp.exp((f[:, :, None] + g[:, None, :] - cost) / e3)
            u, v = xp.ones_like(f), xp.ones_like(g)
        sweeps += 1
    f, g, plan, converged, steps = newton(xp, cost, eps, g + e * xp.log(v), max_iter - sweeps, tol)
    return f, g, plan, converged, steps + B * sweeps


def semi_dual(xp, cost, eps, g):
    """Row potentials f(g) that make every row marginal exact, and the dual objective
    mean(f) + mean(g) (concave in g): (B, M), (B,)."""
    M = cost.shape[1]
    f = eps[:, None] * (-math.log(M) - logsumexp(xp, (g[:, None, :] - cost) / eps[:, None, None], axis=2))
    return f, xp.mean(f, axis=1) + xp.mean(g, axis=1)


def newton(xp, cost, eps, g, max_iter, tol):
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
    f, F = semi_dual(xp, cost, eps, g)
    for it in range(max_iter + 1):
        plan = xp.exp((f[:, :, None] + g[:, None, :] - cost) / eps[:, None, None])
        residual = 1 / K - xp.sum(plan, axis=1)
        error = xp.sum(xp.abs(residual), axis=1)
        if not bool(xp.all(xp.isfinite(error))):
            raise FloatingPointError("Sinkhorn diverged; increase relative_reg")
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
            f_new, F_new = semi_dual(xp, cost, eps, g + t[:, None] * step)
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


def relative_epsilon(xp, relative_reg, mean_cost):
    """The absolute regularisation relative_reg * s for the mean squared distance s between atoms of the two
    sides (any shape); a zero s (all atoms equal) falls back to relative_reg."""
    return relative_reg * xp.where(mean_cost > 0, mean_cost, xp.ones_like(mean_cost))


def barycenter_plans(xp, x, x_sq, support, eps, f, g, share, max_iter, tol, workers):
    r"""Entropic plans :math:`P_n` of every measure of x (B, M, D) to ``support`` (K, D), block by
    block, and what the barycenter needs of them.

    ``x_sq`` (B, M) holds :math:`|x_i|^2`, so a cost matrix costs one batched product. The
    potentials f (B, M) and g (B, K) start each plan; both None starts from zero, f None
    from g alone. Returns the final f and g, the transport costs
    :math:`\langle P_n, C_n\rangle` (B,), the maps :math:`M P_n Y` (B, M, D), the next support
    :math:`K\sum_n \mathrm{share}_n P_n^\top x_n` (K, D) if ``share`` (B,) is given (else None),
    whether every plan reached ``tol`` in ``max_iter`` iterations (:func:`sinkhorn`), by blocks of
    ``BLOCK_ENTRIES`` entries on ``workers`` threads, and the iterations taken.
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
        fb, gb, plan, ok, steps = sinkhorn(xp, cost, eps_b, fb, gb, max_iter, tol)
        update = None
        if share is not None:  # this block's share of the next support, before the plans go
            weighted = xp.reshape(xb * share[s][:, None, None], (-1, D))
            update = xp.matrix_transpose(xp.reshape(plan, (-1, K))) @ weighted
        parts[s.start] = (fb, gb, xp.sum(plan * cost, axis=(1, 2)), M * (plan @ support), update,
                          ok, steps)

    in_blocks(block, B, -(-B * M * K // BLOCK_ENTRIES), workers)
    f, g, cost, maps, updates, ok, steps = zip(*(parts[k] for k in sorted(parts)))
    update = None
    if share is not None:
        update = updates[0]
        for part in updates[1:]:  # in block order: the sum does not depend on the threads
            update = update + part
        update = K * update
    return (xp.concat(f, axis=0), xp.concat(g, axis=0), xp.concat(cost, axis=0),
            xp.concat(maps, axis=0), update, all(ok), sum(steps))


class EntropicPlans:
    r"""The entropic plans of the barycenter's fixed point (see
    :func:`meanfield.transport.barycenter.fixed_point`).

    ``x`` (B, M, D): the centred atoms of the measures that take part, ``x_sq`` (B, M) their squared
    norms; ``share`` (B,): their weights, summing to 1; ``g``: warm-start column potentials (B, K)
    or None. Each :meth:`solve` starts from the potentials of the last one.
    """

    def __init__(self, xp, x, x_sq, share, eps, g, max_iter, tol, workers):
        self.xp, self.x, self.x_sq, self.share, self.eps = xp, x, x_sq, share, eps
        self.max_iter, self.tol, self.workers = max_iter, tol, workers
        self.f, self.g = None, g
        self.steps = 0

    def solve(self, support):
        self.f, self.g, self.cost, self.maps, self.update, self.ok, steps = barycenter_plans(
            self.xp, self.x, self.x_sq, support, self.eps, self.f, self.g, self.share, self.max_iter,
            self.tol, self.workers)
        self.steps += steps
        return self.cost

    def next_support(self):
        return self.update

    def stationary(self, history, tol):
        """The relative change of the objective is at most ``tol``."""
        return abs(history[-2] - history[-1]) <= tol * abs(history[-2])
