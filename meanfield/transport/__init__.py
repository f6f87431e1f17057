r"""Optimal transport between uniform M-atom measures and their Wasserstein-2 barycenters.

A two-layer network of width M is the uniform measure :math:`\mu = \frac1M\sum_i\delta_{x_i}` of its
neurons; OT-CBO moves a population of such measures towards their weighted Wasserstein-2
barycenter (sec. 5 of arXiv 2511.21466). This package holds the transport part alone, usable
without any network:

- :func:`squared_distances` and :func:`w2_squared`: cost matrices and :math:`W_2^2` between uniform
  measures, exact (an assignment problem) or entropic (Sinkhorn steps, then Newton's method);
- :class:`ExactBarycenter` and :class:`SinkhornBarycenter`: the weighted barycenter by the fixed point
  "assign, then average", returning with it the transport map of every measure;
- :func:`variance` and :func:`variance_from_distances`: the Wasserstein-over-Wasserstein variance
  (eq. 64).

One concept per module: :mod:`~meanfield.transport.costs` (cost matrices),
:mod:`~meanfield.transport.exact` (exact plans), :mod:`~meanfield.transport.entropic` (entropic
plans, with the relative regularisation), :mod:`~meanfield.transport.barycenter` (the fixed point,
whose plan solver is a parameter) and :mod:`~meanfield.transport.distance` (W2 and the variance).

Arrays follow the array API standard (numpy by default); the exact assignments are solved on the CPU
by :func:`meanfield.assignment.linear_assignment`, warm-started across iterations and solves. Inputs of
any real floating dtype are solved in float64 and the results (supports, maps, W2) are returned in the
input dtype: the assignment solver's potentials and the entropic plans' marginals need float64 (a
float32 plan entry :math:`\exp((f_i + g_j - C_{ij})/\varepsilon)` carries a relative error of about
:math:`u\, C_{ij}/\varepsilon`, u the float32 unit roundoff, far above the default ``sinkhorn_tol`` at
small ``relative_reg``). With numpy arrays the solvers run BLAS on one thread (their products are small) and
share their work among ``workers`` threads instead.
"""

from meanfield.transport.barycenter import ExactBarycenter, SinkhornBarycenter
from meanfield.transport.costs import squared_distances
from meanfield.transport.distance import variance, variance_from_distances, w2_squared
from meanfield.transport.result import BarycenterResult

__all__ = [
    "BarycenterResult",
    "ExactBarycenter",
    "SinkhornBarycenter",
    "squared_distances",
    "variance",
    "variance_from_distances",
    "w2_squared",
]
