r"""Convergence rates: log-log slopes with bootstrap intervals over seeds.

An error that behaves like :math:`e(n) \approx C n^{p}` over sizes :math:`n_1 < \dots < n_K` has the
fitted order :math:`p`, the least-squares slope of :math:`\log \bar e(n_k)` against :math:`\log n_k`,
where :math:`\bar e` aggregates the seeds (their mean, root mean square or median). Seeds are the
independent replicates; the sizes of one seed share its randomness (coupled runs), so the interval
resamples whole seeds, each with all its sizes (a paired bootstrap), and refits the slope.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["RateFit", "fit_rate", "log_slope"]

AGGREGATES = ("mean", "rms", "median", "abs_mean")


def log_slope(sizes, values):
    """Least-squares slope and intercept of log(values) against log(sizes), along the last axis.

    Examples
    --------
    >>> slope, intercept = log_slope([10, 100, 1000], [1.0, 0.1, 0.01])
    >>> round(float(slope), 12), round(float(np.exp(intercept)), 9)
    (-1.0, 10.0)
    """
    u = np.log(np.asarray(sizes, dtype=float))
    v = np.log(np.asarray(values, dtype=float))
    du = u - u.mean()
    slope = np.sum(du * (v - v.mean(axis=-1, keepdims=True)), axis=-1) / np.sum(du * du)
    return slope, v.mean(axis=-1) - slope * u.mean()


def _aggregate(errors, how, axis):
    if how == "median":
        return np.median(errors, axis=axis)
    if how == "abs_mean":  # a bias: signed differences averaged over seeds, then their size
        return np.abs(np.mean(errors, axis=axis))
    return np.mean(errors, axis=axis) if how == "mean" else np.sqrt(np.mean(errors * errors, axis=axis))


@dataclass(frozen=True)
class RateFit:
    """A fitted order with its bootstrap interval.

    Attributes
    ----------
    slope : float
        Fitted order p of ``error ~ C size^p``.
    low, high : float
        Bootstrap interval of the slope (``confidence`` level, percentile method; NaN with one seed).
    prefactor : float
        C.
    sizes : ndarray (K,)
    aggregate : ndarray (K,)
        The seeds' mean (or RMS) error at each size.
    n_seeds : int
        Seeds fitted.
    n_dropped : int
        Seeds left out for a non-finite error (a diverged run) at some size.
    confidence : float
    """

    slope: float
    low: float
    high: float
    prefactor: float
    sizes: np.ndarray
    aggregate: np.ndarray
    n_seeds: int
    n_dropped: int
    confidence: float

    def contains(self, order):
        """Whether ``order`` lies in the interval."""
        return bool(self.low <= order <= self.high)

    def label(self, name="slope"):
        """Text for a legend or a table, e.g. ``slope -0.51 [-0.55, -0.47]`` (no interval from one seed)."""
        text = f"{name} {self.slope:.2f}"
        if np.isfinite(self.low):
            text += f" [{self.low:.2f}, {self.high:.2f}]"
        if self.n_dropped:
            text += f" ({self.n_dropped} diverged seed{'s' if self.n_dropped > 1 else ''} left out)"
        return text


def fit_rate(sizes, errors, aggregate="mean", confidence=0.95, n_resamples=2000, random_state=0):
    r"""Fit ``errors ~ C sizes^p`` with a bootstrap interval of p over the seeds.

    Parameters
    ----------
    sizes : array_like, shape (K,)
        Positive sizes (N, M, ...), at least two distinct.
    errors : array_like, shape (n_seeds, K)
        Errors >= 0, one row per seed; a seed with a non-finite entry (a diverged run) is left out
        whole and counted in ``n_dropped``.
    aggregate : {"mean", "rms", "median", "abs_mean"}
        How the seeds are combined at each size before the fit: the mean error (a strong error
        :math:`E|X_n - X|`), its root mean square, the median (robust to a few outlying seeds), or
        the absolute value of the mean of signed differences (a weak error, or bias,
        :math:`|E[X_n - X]|`; ``errors`` may then be negative).
    confidence : float in (0, 1)
    n_resamples : int
    random_state : int or numpy.random.Generator
        Seed of the resampling (the interval is reproducible).

    Returns
    -------
    RateFit

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sizes = np.array([10, 20, 50, 100, 200])
    >>> errors = sizes ** -0.5 * rng.lognormal(0.0, 0.2, size=(10, 5))
    >>> fit = fit_rate(sizes, errors)
    >>> fit.contains(-0.5), fit.n_seeds
    (True, 10)
    """
    from scipy import stats

    sizes = np.asarray(sizes, dtype=float)
    errors = np.asarray(errors, dtype=float)
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {list(AGGREGATES)}, got {aggregate!r}")
    if sizes.ndim != 1 or len(np.unique(sizes)) < 2 or not np.all(sizes > 0) or not np.all(np.isfinite(sizes)):
        raise ValueError(f"sizes must be a 1-D array of at least two distinct positive sizes, got {sizes}")
    if errors.ndim != 2 or errors.shape[1] != sizes.size:
        raise ValueError(f"errors must have shape (n_seeds, {sizes.size}), got {errors.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    finite = np.all(np.isfinite(errors), axis=1)
    n_dropped, errors = int((~finite).sum()), errors[finite]
    if errors.shape[0] < 1 or (aggregate != "abs_mean" and np.any(errors < 0)):
        raise ValueError("errors must hold at least one seed of finite errors (>= 0 unless aggregate='abs_mean')")
    mean = _aggregate(errors, aggregate, axis=0)
    if np.any(mean <= 0):
        raise ValueError(f"the {aggregate} error is 0 at some size: no rate can be fitted")
    slope, intercept = log_slope(sizes, mean)

    def statistic(sample, axis):  # scipy hands over (K, [resamples,] seeds) with the seeds on `axis`
        return log_slope(sizes, np.moveaxis(_aggregate(sample, aggregate, axis=axis), 0, -1))[0]

    low = high = np.nan
    if errors.shape[0] > 1 and not np.ptp(errors, axis=0).any():  # identical seeds: every resample agrees
        low = high = float(slope)
    elif errors.shape[0] > 1:
        res = stats.bootstrap((errors,), statistic, axis=0, vectorized=True, confidence_level=confidence,
                              n_resamples=n_resamples, method="percentile", random_state=random_state)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return RateFit(float(slope), low, high, float(np.exp(intercept)), sizes, mean, errors.shape[0], n_dropped,
                   confidence)
