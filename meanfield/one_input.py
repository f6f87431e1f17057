r"""Compiled evaluation of ensembles of one-input networks (d = 1): the sine, square and shifted-sine
problems, every regression experiment of the paper.

**ReLU, exactly, without the N S M product.** A ReLU network of one input is piecewise linear. With
the inputs sorted, :math:`x_1 \le \dots \le x_S`, neuron m is active (:math:`w_m x + b_m > 0`) on a
contiguous range of indices: a suffix :math:`k \ge s_m` if :math:`w_m \ge 0`, a prefix
:math:`k < e_m` if :math:`w_m < 0`, found by bisection on the same floating-point test
``w * x + b > 0`` the dense pass applies. On its range the neuron contributes
:math:`c_m (w_m x_k + b_m)`, so

.. math:: g(x_k) = \frac1M \Big( x_k \sum_{m\ \mathrm{active}} c_m w_m + \sum_{m\ \mathrm{active}} c_m b_m \Big),

where both sums are running sums over k of the contributions placed at the range ends: a forward
sum for the suffix neurons plus a backward sum for the prefix neurons (no subtraction, so no
cancellation beyond that of summing). Cost :math:`O(N (S + M \log S) + S \log S)` instead of
:math:`O(N S M)`. The gradient is read off the same structure: with :math:`\delta_k = \partial R /
\partial g(x_k)` (C outputs),

.. math::
   \frac{\partial R}{\partial c_m} = \frac1M \Big(w_m \sum_{k \in I_m} \delta_k x_k + b_m \sum_{k \in I_m}
   \delta_k\Big), \quad
   \frac{\partial R}{\partial w_m} = \frac1M\, c_m \cdot \sum_{k \in I_m} \delta_k x_k, \quad
   \frac{\partial R}{\partial b_m} = \frac1M\, c_m \cdot \sum_{k \in I_m} \delta_k,

with :math:`I_m` the active range, whose sums are prefix or suffix sums of :math:`\delta` and
:math:`\delta x`. ReLU's derivative at 0 is taken as 0, as in the dense pass.

**Smooth activations** (tanh, sigmoid) have no such structure: a fused loop evaluates
:math:`\sigma(w_m x_k + b_m)` once per (network, sample, neuron) without the (S, B, M) temporaries
of the dense pass (it also takes ReLU, as a reference for the exact algorithm).

The functions here take and return numpy arrays of one floating dtype (float32 or float64, kept);
:class:`meanfield.network.TwoLayerNetwork` chooses them (``evaluation="auto"``) and the dense
matrix-product pass is their reference in the tests.
"""

import numba
import numpy as np

__all__ = ["sort_inputs", "relu_outputs", "relu_mse", "relu_gradient", "fused_outputs", "fused_gradient"]

_CACHE = True  # compiled kernels are cached next to the module: later processes skip compiling


@numba.njit(cache=_CACHE, inline="always")  # inlined: a call would count references to xs each time
def _active_range(w, b, xs):
    """(start, stop) of the sorted indices k where fl(w * xs[k] + b) > 0 (a suffix or a prefix)."""
    S = xs.shape[0]
    lo, hi = 0, S
    if w >= 0:  # the test is nondecreasing in x: find the first index where it holds
        while lo < hi:
            mid = (lo + hi) // 2
            if w * xs[mid] + b > 0:
                hi = mid
            else:
                lo = mid + 1
        return lo, S
    while lo < hi:  # nonincreasing: find the first index where it fails
        mid = (lo + hi) // 2
        if w * xs[mid] + b > 0:
            lo = mid + 1
        else:
            hi = mid
    return 0, lo


@numba.njit(cache=_CACHE)
def _relu_outputs(theta, xs, out, ranges, targets, risks):
    """Outputs into ``out`` (N, S, C), or with ``targets`` (S, C) non-empty, only the mean squared
    errors into ``risks`` (N,), without storing the outputs."""
    N, M, D = theta.shape
    S = xs.shape[0]
    C = D - 2
    dtype = theta.dtype
    # contributions c w and c b of the suffix neurons, placed at their first active index, and of
    # the prefix neurons, placed at their last; one row per output, so the running sums are unit-stride
    up_slope = np.empty((C, S), dtype)
    up_shift = np.empty((C, S), dtype)
    down_slope = np.empty((C, S), dtype)
    down_shift = np.empty((C, S), dtype)
    inv_m = 1.0 / M
    fused = targets.shape[0] > 0
    for n in range(N):
        squares = 0.0
        up_slope[:] = 0
        up_shift[:] = 0
        down_slope[:] = 0
        down_shift[:] = 0
        for m in range(M):
            w = theta[n, m, 0]
            b = theta[n, m, 1]
            start, stop = _active_range(w, b, xs)
            ranges[n, m, 0] = start
            ranges[n, m, 1] = stop
            if start >= stop:
                continue
            if w >= 0:
                for c in range(C):
                    up_slope[c, start] += theta[n, m, 2 + c] * w
                    up_shift[c, start] += theta[n, m, 2 + c] * b
            else:
                for c in range(C):
                    down_slope[c, stop - 1] += theta[n, m, 2 + c] * w
                    down_shift[c, stop - 1] += theta[n, m, 2 + c] * b
        for c in range(C):
            slope = 0.0
            shift = 0.0
            for k in range(S - 1, -1, -1):  # backward running sums: the prefix neurons active at k
                slope += down_slope[c, k]
                shift += down_shift[c, k]
                down_slope[c, k] = slope
                down_shift[c, k] = shift
            slope = 0.0
            shift = 0.0
            for k in range(S):  # forward running sums: the suffix neurons active at k
                slope += up_slope[c, k]
                shift += up_shift[c, k]
                g = (xs[k] * (slope + down_slope[c, k]) + (shift + down_shift[c, k])) * inv_m
                if fused:
                    squares += (g - targets[k, c]) ** 2
                else:
                    out[n, k, c] = g
        if fused:
            risks[n] = squares / S


def sort_inputs(x):
    """The stable sorting permutation of one-input samples x (S, 1) and the sorted inputs (S,).
    Inputs already in non-decreasing order (a presorted evaluation set) are recognised in one pass:
    the permutation is then the identity, as a stable sort would give."""
    column = x[:, 0]
    if np.all(column[1:] >= column[:-1]):
        return np.arange(column.shape[0]), np.ascontiguousarray(column)
    order = np.argsort(column, kind="stable")
    return order, np.ascontiguousarray(column[order])


def relu_outputs(theta, xs):
    r"""Outputs of N one-input ReLU networks at sorted inputs, and the active range of every neuron.

    Parameters
    ----------
    theta : ndarray, shape (N, M, 2 + C)
        Neurons laid out ``[w | b | c]``.
    xs : ndarray, shape (S,)
        Inputs in non-decreasing order (ties allowed; see :func:`sort_inputs`), dtype of ``theta``.

    Returns
    -------
    outputs : ndarray, shape (N, S, C)
        :math:`g_n(x_s)`, in the order of ``xs``.
    ranges : ndarray of int64, shape (N, M, 2)
        ``[start, stop)``: the indices of ``xs`` where each neuron is active.

    Examples
    --------
    >>> import numpy as np
    >>> theta = np.array([[[1.0, 0.0, 2.0], [-1.0, 1.0, 4.0]]])
    >>> g, ranges = relu_outputs(theta, np.array([0.5, 2.0]))
    >>> g[0, :, 0].tolist()      # (2 relu(x) + 4 relu(1 - x)) / 2
    [1.5, 2.0]
    >>> ranges[0].tolist()       # neuron 0 active on both inputs, neuron 1 on the first only
    [[0, 2], [0, 1]]
    """
    N, M, D = theta.shape
    out = np.empty((N, xs.shape[0], D - 2), dtype=theta.dtype)
    ranges = np.empty((N, M, 2), dtype=np.int64)
    _relu_outputs(np.ascontiguousarray(theta), xs, out, ranges, np.empty((0, D - 2), theta.dtype),
                  np.empty(0, theta.dtype))
    return out, ranges


def relu_mse(theta, xs, targets):
    r"""Mean squared errors :math:`\frac1S \sum_s |g_n(x_s) - y_s|^2` of N one-input ReLU networks,
    without storing their outputs.

    Parameters
    ----------
    theta : ndarray, shape (N, M, 2 + C)
    xs : ndarray, shape (S,)
        Sorted inputs (see :func:`sort_inputs`).
    targets : ndarray, shape (S, C)
        The targets in the order of ``xs``.

    Returns
    -------
    risks : ndarray, shape (N,)

    Examples
    --------
    >>> import numpy as np
    >>> theta = np.array([[[1.0, 0.0, 2.0]]])                    # g(x) = 2 relu(x)
    >>> relu_mse(theta, np.array([0.0, 1.0]), np.array([[1.0], [1.0]]))   # ((0 - 1)^2 + (2 - 1)^2) / 2
    array([1.])
    """
    N, M, D = theta.shape
    risks = np.empty(N, dtype=theta.dtype)
    targets = np.ascontiguousarray(targets, dtype=theta.dtype)
    if targets.shape != (xs.shape[0], D - 2):
        raise ValueError(f"targets must have shape ({xs.shape[0]}, {D - 2}), got {targets.shape}")
    _relu_outputs(np.ascontiguousarray(theta), xs, np.empty((0, 0, 0), theta.dtype),
                  np.empty((N, M, 2), dtype=np.int64), targets, risks)
    return risks


@numba.njit(cache=_CACHE)
def _relu_gradient(theta, xs, delta, ranges, grad):
    N, M, D = theta.shape
    S = xs.shape[0]
    C = D - 2
    dtype = theta.dtype
    # prefix[c, k] = sum_{j < k}, suffix[c, k] = sum_{j >= k} of delta and delta * x
    pre_d = np.empty((C, S + 1), dtype)
    pre_dx = np.empty((C, S + 1), dtype)
    suf_d = np.empty((C, S + 1), dtype)
    suf_dx = np.empty((C, S + 1), dtype)
    inv_m = 1.0 / M
    for n in range(N):
        for c in range(C):
            total_d = 0.0
            total_dx = 0.0
            for k in range(S):
                pre_d[c, k] = total_d
                pre_dx[c, k] = total_dx
                total_d += delta[n, k, c]
                total_dx += delta[n, k, c] * xs[k]
            pre_d[c, S] = total_d
            pre_dx[c, S] = total_dx
            total_d = 0.0
            total_dx = 0.0
            suf_d[c, S] = 0.0
            suf_dx[c, S] = 0.0
            for k in range(S - 1, -1, -1):
                total_d += delta[n, k, c]
                total_dx += delta[n, k, c] * xs[k]
                suf_d[c, k] = total_d
                suf_dx[c, k] = total_dx
        for m in range(M):
            w = theta[n, m, 0]
            b = theta[n, m, 1]
            start = ranges[n, m, 0]
            stop = ranges[n, m, 1]
            g_w = 0.0
            g_b = 0.0
            for c in range(C):
                if start >= stop:
                    sd = 0.0
                    sdx = 0.0
                elif w >= 0:
                    sd = suf_d[c, start]
                    sdx = suf_dx[c, start]
                else:
                    sd = pre_d[c, stop]
                    sdx = pre_dx[c, stop]
                cm = theta[n, m, 2 + c]
                g_w += cm * sdx
                g_b += cm * sd
                grad[n, m, 2 + c] = (w * sdx + b * sd) * inv_m
            grad[n, m, 0] = g_w * inv_m
            grad[n, m, 1] = g_b * inv_m


def relu_gradient(theta, xs, delta, ranges, out=None):
    r"""Gradient of a risk with respect to the neurons of N one-input ReLU networks.

    Parameters
    ----------
    theta : ndarray, shape (N, M, 2 + C)
    xs : ndarray, shape (S,)
        Sorted inputs, as given to :func:`relu_outputs`.
    delta : ndarray, shape (N, S, C)
        :math:`\partial R_n / \partial g_n(x_s)` in the order of ``xs``.
    ranges : ndarray
        As returned by :func:`relu_outputs` for the same ``theta`` and ``xs``.
    out : ndarray, shape (N, M, 2 + C), optional
        Where to write the gradient.

    Returns
    -------
    grad : ndarray, shape (N, M, 2 + C)

    Examples
    --------
    >>> import numpy as np
    >>> theta = np.array([[[1.0, 0.0, 2.0]]])          # g(x) = 2 relu(x)
    >>> xs = np.array([-1.0, 0.5])
    >>> _, ranges = relu_outputs(theta, xs)
    >>> relu_gradient(theta, xs, np.ones((1, 2, 1)), ranges)[0].tolist()   # sums over x > 0 only
    [[1.0, 2.0, 0.5]]
    """
    grad = np.empty(theta.shape, dtype=theta.dtype) if out is None else out
    _relu_gradient(np.ascontiguousarray(theta), xs, np.ascontiguousarray(delta), ranges, grad)
    return grad


_KINDS = {"tanh": 0, "sigmoid": 1, "relu": 2}


@numba.njit(cache=_CACHE)
def _activate(z, kind):
    if kind == 0:
        return np.tanh(z)
    if kind == 1:
        return 1.0 / (1.0 + np.exp(-z))
    return max(z, 0.0)


@numba.njit(cache=_CACHE)
def _derivative(h, kind):
    """sigma'(z) in terms of h = sigma(z), as the dense pass writes it."""
    if kind == 0:
        return 1.0 - h * h
    if kind == 1:
        return h * (1.0 - h)
    return 1.0 if h > 0 else 0.0


@numba.njit(cache=_CACHE)
def _fused_outputs(theta, x, kind, out):
    N, M, D = theta.shape
    S = x.shape[0]
    C = D - 2
    inv_m = 1.0 / M
    acc = np.empty(C, theta.dtype)
    for n in range(N):
        for k in range(S):
            acc[:] = 0
            for m in range(M):
                h = _activate(theta[n, m, 0] * x[k] + theta[n, m, 1], kind)
                for c in range(C):
                    acc[c] += theta[n, m, 2 + c] * h
            for c in range(C):
                out[n, k, c] = acc[c] * inv_m


@numba.njit(cache=_CACHE)
def _fused_gradient(theta, x, kind, delta, grad):
    N, M, D = theta.shape
    S = x.shape[0]
    C = D - 2
    inv_m = 1.0 / M
    for n in range(N):
        grad[n] = 0
        for k in range(S):
            for m in range(M):
                h = _activate(theta[n, m, 0] * x[k] + theta[n, m, 1], kind)
                slope = _derivative(h, kind)
                dh = 0.0
                for c in range(C):
                    dh += delta[n, k, c] * theta[n, m, 2 + c]
                    grad[n, m, 2 + c] += delta[n, k, c] * h
                dz = dh * slope
                grad[n, m, 0] += dz * x[k]
                grad[n, m, 1] += dz
        for m in range(M):
            for j in range(D):
                grad[n, m, j] *= inv_m


def fused_outputs(theta, x, activation):
    r"""Outputs of N one-input networks by one fused loop over networks, samples and neurons.

    Parameters
    ----------
    theta : ndarray, shape (N, M, 2 + C)
    x : ndarray, shape (S, 1)
    activation : {"tanh", "sigmoid", "relu"}

    Returns
    -------
    outputs : ndarray, shape (N, S, C)

    Examples
    --------
    >>> import numpy as np
    >>> theta = np.array([[[1.0, 0.0, 2.0]]])
    >>> bool(fused_outputs(theta, np.array([[0.5]]), "tanh")[0, 0, 0] == 2 * np.tanh(0.5))
    True
    """
    out = np.empty((theta.shape[0], x.shape[0], theta.shape[2] - 2), dtype=theta.dtype)
    _fused_outputs(np.ascontiguousarray(theta), np.ascontiguousarray(x[:, 0]), _KINDS[activation], out)
    return out


def fused_gradient(theta, x, activation, delta, out=None):
    r"""Gradient of a risk with respect to the neurons, from :math:`\delta = \partial R / \partial g`
    (N, S, C), by one fused loop; shapes as in :func:`relu_gradient`."""
    grad = np.empty(theta.shape, dtype=theta.dtype) if out is None else out
    _fused_gradient(np.ascontiguousarray(theta), np.ascontiguousarray(x[:, 0]), _KINDS[activation],
                     np.ascontiguousarray(delta), grad)
    return grad
