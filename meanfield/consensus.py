r"""Gibbs weights and the consensus point of finite CBO (eq. 22, 24 of arXiv 2511.21466).

.. math:: \beta_n = \frac{e^{-\alpha R_n}}{\sum_k e^{-\alpha R_k}}, \qquad V = \sum_n \beta_n \theta_n

computed with log-sum-exp, so alpha up to 1e7 and beyond stays finite.
"""

from meanfield._array import namespace

__all__ = ["gibbs_weights", "consensus_point"]


def gibbs_weights(risks, alpha, axis=0):
    r"""Gibbs weights :math:`\mathrm{softmax}(-\alpha R)`.

    Parameters
    ----------
    risks : array, shape (N,) or (N, P)
        Risk of each particle (on each of P tasks); +inf gets weight 0, NaN is an error.
    alpha : float
        Inverse temperature >= 0. alpha = 0 gives uniform weights (V is the mean); alpha -> inf
        puts all weight on the best particle (Laplace principle).

    Returns
    -------
    weights : array, shape of ``risks``, non-negative, summing to 1 along ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> gibbs_weights(np.array([1.0, 1.0 + 1e-3, 2.0]), alpha=1e7).round(6)
    array([1., 0., 0.])
    >>> gibbs_weights(np.array([1.0, 3.0]), alpha=0.0)
    array([0.5, 0.5])
    """
    xp = namespace(risks)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if bool(xp.any(xp.isnan(risks))):
        raise FloatingPointError("a particle risk is NaN; Gibbs weights are undefined")
    if not bool(xp.all(xp.any(xp.isfinite(risks), axis=axis))):
        raise FloatingPointError("every particle risk is infinite; Gibbs weights are undefined")
    # alpha * inf would give nan when alpha = 0: exclude infinite risks explicitly
    logits = xp.where(xp.isfinite(risks), -alpha * xp.where(xp.isfinite(risks), risks, 0.0), -xp.inf)
    logits = logits - xp.max(logits, axis=axis, keepdims=True)
    w = xp.exp(logits)
    return w / xp.sum(w, axis=axis, keepdims=True)


def consensus_point(theta, weights):
    """Weighted mean of the particles: theta (N, ...), weights (N,) -> (...)."""
    xp = namespace(theta, weights)
    return xp.tensordot(weights, theta, axes=1)
