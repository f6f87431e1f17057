"""The losses of a network's outputs against its targets, for a whole ensemble at once.

``loss(g, targets, grad)`` takes the outputs g (B, S, C) of B networks on S samples and returns
the risk of each network (B,), with ``grad=True`` also dR/dg (B, S, C).
"""

import numpy as np

from meanfield._array import namespace

__all__ = ["LOSSES", "cross_entropy", "mean_squared_error"]


def mean_squared_error(g, y, grad=False):
    """Mean over samples of the squared error summed over outputs; g (B, S, C), y (S, C)."""
    xp = namespace(g)
    r = g - y
    # one output: r^2 itself (a sum over an axis of length 1 is exact but slow)
    value = xp.mean(r[..., 0] * r[..., 0] if r.shape[-1] == 1 else xp.sum(r * r, axis=-1), axis=-1)
    return (value, (2.0 / g.shape[-2]) * r) if grad else value


def cross_entropy(g, y, grad=False):
    """Softmax cross-entropy with log-sum-exp; g (B, S, C) logits, y (S, C) one-hot labels."""
    if isinstance(g, np.ndarray) and isinstance(y, np.ndarray):
        from meanfield.kernels import softmax_cross_entropy  # compiled: one pass over the logits

        return softmax_cross_entropy(g, y, grad)
    xp = namespace(g)
    shift = xp.max(g, axis=-1, keepdims=True)
    e = xp.exp(g - shift)
    z = xp.sum(e, axis=-1, keepdims=True)
    # one-hot rows sum to 1: mean_s [lse_s - g_{s, y_s}]
    value = xp.mean(xp.log(z[..., 0]) + shift[..., 0] - xp.sum(g * y, axis=-1), axis=-1)
    return (value, (e / z - y) / g.shape[-2]) if grad else value


# loss(g, targets, grad): value (B,) and, with grad=True, dR/dg (B, S, C); targets as `targets()` makes
LOSSES = {"mse": mean_squared_error, "cross_entropy": cross_entropy}
