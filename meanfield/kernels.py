"""Compiled kernels that serve every network, whatever its number of inputs (numba).

Imported on first use, so that ``import meanfield`` loads no numba.
"""

import numba
import numpy as np

__all__ = ["softmax_cross_entropy"]

_CACHE = True  # compiled kernels are cached next to the module: later processes skip compiling


@numba.njit(cache=_CACHE)
def _softmax_cross_entropy(g, y, value, delta, grad):
    B, S, C = g.shape
    inv_s = 1.0 / S
    for b in range(B):
        total = 0.0
        for s in range(S):
            shift = g[b, s, 0]
            for c in range(1, C):
                shift = max(shift, g[b, s, c])
            z = 0.0
            picked = 0.0
            for c in range(C):
                z += np.exp(g[b, s, c] - shift)
                picked += g[b, s, c] * y[s, c]
            total += np.log(z) + shift - picked
            if grad:
                for c in range(C):
                    delta[b, s, c] = (np.exp(g[b, s, c] - shift) / z - y[s, c]) * inv_s
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
