"""The result of a barycenter solve, and the checks of a result passed back as a warm start."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meanfield._array import to_numpy

__all__ = ["BarycenterResult"]


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


def warm_assignments(warm_start, n, m):
    """(potentials, assignment) as numpy arrays from an exact BarycenterResult, or None."""
    if warm_start is None:
        return None
    if (not isinstance(warm_start, BarycenterResult) or warm_start.potentials is None
            or warm_start.assignment is None):
        raise ValueError("warm_start must be a BarycenterResult of ExactBarycenter.solve")
    potentials = warm_potentials(warm_start, n, m, f"N = {n} measures of M = {m} atoms")
    assignment = to_numpy(warm_start.assignment)
    # the compiled solver indexes the costs with the assignment unchecked
    if assignment.shape != (n, m) or not np.array_equal(np.sort(assignment, axis=1),
                                                        np.broadcast_to(np.arange(m), (n, m))):
        raise ValueError("warm_start.assignment must hold a permutation of 0..M-1 for each of the N "
                         "measures")
    return potentials, assignment


def warm_potentials(warm_start, n, k, sizes):
    """The warm start's potentials as a float64 numpy array of shape (n, k), checked."""
    potentials = np.asarray(to_numpy(warm_start.potentials), dtype=np.float64)
    if potentials.shape != (n, k):
        raise ValueError(f"warm_start must come from {sizes}, got a result for shape {potentials.shape}")
    if not np.all(np.isfinite(potentials)):
        raise ValueError("warm_start.potentials contains NaN or infinite values")
    return potentials
