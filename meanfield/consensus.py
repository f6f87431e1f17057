r"""Gibbs weights and the consensus point of finite CBO (eq. 22, 24 of arXiv 2511.21466).

.. math:: \beta_n = \frac{e^{-\alpha R_n}}{\sum_k e^{-\alpha R_k}}, \qquad V = \sum_n \beta_n \theta_n

computed with the risks shifted by their minimum, so any finite alpha stays finite.
"""

import numpy as np

from meanfield._array import namespace
from meanfield._validate import check_number

__all__ = ["gibbs_weights", "consensus_point", "effective_sample_size"]


def gibbs_weights(risks, alpha: float, axis: int = 0):
    r"""Gibbs weights :math:`\mathrm{softmax}(-\alpha R)`.

    Parameters
    ----------
    risks : array, shape (N,) or (N, P)
        Risk of each particle (on each of P tasks); +inf gets weight 0. A NaN risk, or only
        infinite ones, raise a FloatingPointError for numpy arrays and give NaN weights for
        arrays of other libraries (a check would stall the device every step).
    alpha : float
        Inverse temperature, finite and >= 0. alpha = 0 gives uniform weights (V is the mean);
        alpha -> inf puts all weight on the best particle (Laplace principle).

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
    >>> gibbs_weights(np.array([1e10, 2e10, np.inf]), alpha=1e300)
    array([1., 0., 0.])
    """
    host = isinstance(risks, np.ndarray)
    # numpy's own functions on host arrays: the same operations without array_api_compat's wrappers,
    # whose overhead is most of the cost on N risks
    xp = np if host else namespace(risks)
    alpha = float(check_number("alpha", alpha))
    if host and bool(xp.any(xp.isnan(risks))):
        raise FloatingPointError("a particle risk is NaN; Gibbs weights are undefined")
    finite = xp.isfinite(risks)
    if host and not bool(xp.all(xp.any(finite, axis=axis))):
        raise FloatingPointError("every particle risk is infinite; Gibbs weights are undefined")
    # Shifted by the smallest finite risk before scaling: alpha * R itself can overflow at large
    # alpha (then inf - inf = nan), while alpha * (R - min R) >= 0 only underflows to weight 0.
    # Infinite risks are replaced before the product, since alpha * inf is nan when alpha = 0.
    low = xp.min(xp.where(finite, risks, xp.inf), axis=axis, keepdims=True)
    gap = xp.where(finite, risks, low) - low
    if alpha > 0:  # exp(-800) is 0 already: clipping there changes no weight and avoids overflow
        gap = xp.clip(gap, None, 800.0 / alpha)
    logits = xp.where(finite, -alpha * gap, -xp.inf)
    w = xp.exp(logits)
    w = w / xp.sum(w, axis=axis, keepdims=True)  # all risks infinite: 0 / 0, NaN weights
    if not host:  # on a device the checks above would wait for the device: NaN weights report it instead
        w = xp.where(xp.any(xp.isnan(risks), axis=axis, keepdims=True), xp.nan, w)
    return w


def effective_sample_size(weights, axis: int = 0):
    r"""Kish's effective sample size :math:`N_{eff} = 1 / \sum_n \beta_n^2` of normalised weights.

    N for uniform weights (alpha = 0), 1 when one particle has all the weight (alpha -> inf): the
    number of particles the consensus effectively averages, which sets its Monte Carlo error.

    Examples
    --------
    >>> import numpy as np
    >>> float(effective_sample_size(np.full(4, 0.25))), float(effective_sample_size(np.array([1.0, 0.0])))
    (4.0, 1.0)
    """
    xp = namespace(weights)
    return 1.0 / xp.sum(weights * weights, axis=axis)


def consensus_point(theta, weights):
    """Weighted mean of the particles: theta (N, ...), weights (N,) -> (...)."""
    if isinstance(theta, np.ndarray) and isinstance(weights, np.ndarray):
        return np.tensordot(weights, theta, axes=1)
    return namespace(theta, weights).tensordot(weights, theta, axes=1)
