"""Compiled kernels (numba) shared by the networks, whatever their number of inputs, and the methods.

Imported on first use, so that ``import meanfield`` loads no numba.
"""

import numba
import numpy as np

__all__ = ["adam_moments", "anisotropic_update", "softmax_cross_entropy"]

_CACHE = True  # compiled kernels are cached next to the module: later processes skip compiling


@numba.njit(cache=_CACHE)
def _softmax_cross_entropy(g, y, value, delta, grad):
    B, S, C = g.shape
    inv_s = 1.0 / S
    exps = np.empty(C)  # float64 holds each exp exactly, whatever the dtype of g
    for b in range(B):
        total = 0.0
        for s in range(S):
            shift = g[b, s, 0]
            for c in range(1, C):
                shift = max(shift, g[b, s, c])
            z = 0.0
            picked = 0.0
            for c in range(C):
                exps[c] = np.exp(g[b, s, c] - shift)
                z += exps[c]
                picked += g[b, s, c] * y[s, c]
            total += np.log(z) + shift - picked
            if grad:
                for c in range(C):
                    delta[b, s, c] = (exps[c] / z - y[s, c]) * inv_s
        value[b] = total * inv_s


def softmax_cross_entropy(g, y, grad=False):
    r"""Mean softmax cross-entropy of logits ``g`` (B, S, C) against one-hot ``y`` (S, C), per batch row,
    :math:`\frac1S\sum_s [\log\sum_c e^{g_{sc}} - \sum_c y_{sc} g_{sc}]` with the log-sum-exp shifted by
    the row maximum, in one compiled pass (numpy's reductions over an axis of C = 10 spend most of
    their time per row); with ``grad``, also :math:`\partial/\partial g = (\mathrm{softmax}(g) - y) / S`.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.kernels import softmax_cross_entropy
    >>> value = softmax_cross_entropy(np.zeros((1, 2, 4)), np.eye(4)[[0, 3]])
    >>> bool(np.isclose(value[0], np.log(4)))
    True
    """
    g = np.ascontiguousarray(g)
    y = np.ascontiguousarray(y, dtype=g.dtype)
    value = np.empty(g.shape[0], dtype=g.dtype)
    delta = np.empty(g.shape if grad else (0, 0, 0), dtype=g.dtype)
    _softmax_cross_entropy(g, y, value, delta, grad)
    return (value, delta) if grad else value


@numba.njit(cache=_CACHE)
def _adam_moments(grad, s, r, beta1, rest1, beta2, rest2, bias1, bias2, eps, s_out, r_out, direction):
    for i in range(grad.shape[0]):
        g = grad[i]
        s_i = beta1 * s[i] + rest1 * g
        r_i = beta2 * r[i] + rest2 * g * g
        s_out[i] = s_i
        r_out[i] = r_i
        direction[i] = (s_i / bias1) / (np.sqrt(r_i / bias2) + eps)


def adam_moments(grad, s, r, k, beta1, beta2, eps):
    r"""Adam's moments after step ``k`` and its bias-corrected direction in one compiled pass:
    :math:`s' = \beta_1 s + (1 - \beta_1) g`, :math:`r' = \beta_2 r + (1 - \beta_2) g \odot g` and
    :math:`(s' / (1 - \beta_1^k)) / (\sqrt{r' / (1 - \beta_2^k)} + \delta)`, each operation rounded in the
    arrays' dtype in the order of :func:`meanfield.adam.adam_direction`'s expression, so the results are
    bit for bit that expression's (one pass over the parameters instead of eight).

    ``grad``, ``s``, ``r``: C-contiguous numpy arrays of one shape and one floating dtype. Returns new
    arrays (s', r', direction).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.kernels import adam_moments
    >>> s, r, d = adam_moments(np.array([2.0]), np.zeros(1), np.zeros(1), 1, 0.9, 0.999, 0.0)
    >>> s, r, d
    (array([0.2]), array([0.004]), array([1.]))
    """
    dtype = grad.dtype.type
    s_out, r_out, direction = (np.empty_like(grad) for _ in range(3))
    # the scalars as numpy's expression rounds them: Python floats cast to the arrays' dtype
    _adam_moments(grad.reshape(-1), s.reshape(-1), r.reshape(-1), dtype(beta1), dtype(1.0 - beta1), dtype(beta2),
                  dtype(1.0 - beta2), dtype(1.0 - beta1**k), dtype(1.0 - beta2**k), dtype(eps),
                  s_out.reshape(-1), r_out.reshape(-1), direction.reshape(-1))
    return s_out, r_out, direction


@numba.njit(cache=_CACHE)
def _anisotropic_update(theta, targets, xi, drift, noise, out):
    N, K = theta.shape
    shared = targets.shape[0] == 1
    for n in range(N):
        row = 0 if shared else n
        for i in range(K):
            diff = theta[n, i] - targets[row, i]
            out[n, i] = (theta[n, i] - diff * drift) + (diff * xi[n, i]) * noise


def anisotropic_update(theta, targets, xi, drift, noise):
    r"""The consensus move with anisotropic noise in one compiled pass,
    :math:`\theta \leftarrow (\theta - (\theta - T)\,\lambda dt) + ((\theta - T) \odot \xi)\,\sigma\sqrt{dt}`,
    every operation rounded in the arrays' dtype in the order of
    :func:`meanfield.method.consensus_update`'s array operations, so the result is bit for bit theirs
    (one pass over the particles instead of five).

    ``theta``, ``xi`` (N, ...); ``targets`` shaped like ``theta`` or like one particle (one
    consensus point); C-contiguous numpy arrays of one floating dtype. ``drift`` is
    :math:`\lambda dt` and ``noise`` :math:`\sigma\sqrt{dt}`, Python floats. Returns a new array.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.kernels import anisotropic_update
    >>> anisotropic_update(np.array([[2.0], [4.0]]), np.array([0.0]), np.array([[0.0], [1.0]]), 0.1, 0.5)
    array([[1.8],
           [5.6]])
    """
    dtype = theta.dtype.type
    n = theta.shape[0]
    out = np.empty_like(theta)
    rows = n if targets.shape == theta.shape else 1
    _anisotropic_update(theta.reshape(n, -1), targets.reshape(rows, -1), xi.reshape(n, -1), dtype(drift), dtype(noise),
                        out.reshape(n, -1))
    return out
