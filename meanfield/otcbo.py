r"""OT-CBO: every particle is a measure, the consensus is a Wasserstein barycenter (sec. 5.1 of
arXiv 2511.21466).

Particle n is the uniform measure :math:`\mu_n` of its M neurons. One iteration computes the risks
on a minibatch, the Gibbs weights :math:`\beta = \mathrm{softmax}(-\alpha R)`, the weighted W2
barycenter :math:`\bar\mu = \arg\min_\nu \frac12\sum_n \beta_n W_2^2(\nu, \mu_n)` (eq. 31; warm-started
at the previous one) and moves every atom along the optimal map :math:`T_n: \mu_n \to \bar\mu`
(eq. 29, 30):

.. math:: x_{n,i} \leftarrow x_{n,i} - \lambda\, dt\, (x_{n,i} - T_n(x_{n,i}))
          + \sigma_k \sqrt{dt}\; \mathcal{N}(x_{n,i} - T_n(x_{n,i}), \xi_{n,i})

with no noise (sigma = 0, the deterministic scheme of Proposition 3), additive noise
:math:`\mathcal{N} = \xi` (the paper's practical scheme, eq. 49-54, sigma_k decreasing) or our
multiplicative extension :math:`\mathcal{N} = (x - T(x)) \odot \xi`, which vanishes at consensus.
"""

import math
import time
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Any

import array_api_compat

from meanfield._array import namespace
from meanfield._validate import check_float, check_int, check_workers
from meanfield.consensus import effective_sample_size
from meanfield.method import ConsensusMethod
from meanfield.multitask import task_assignment
from meanfield.noise import make_noise
from meanfield.schedules import EffectiveSampleSize, ScheduleSpec, make_schedule, require_epoch_schedule, schedule_value
from meanfield.transport import ExactBarycenter, SinkhornBarycenter, variance_from_distances, w2_squared

__all__ = ["OTCBO", "OTCBOState", "MultiTaskOTCBO"]


@dataclass
class OTCBOState:
    """theta (N, M, D): the atoms of every particle measure. consensus (M, D): barycenter support of
    the last step; w2 (N,): W2^2 of the particles entering that step to it; weights (N,).
    warm_start: the last BarycenterResult (one per task for multi-task), whose assignments and
    potentials (exact) or entropic potentials (Sinkhorn) start the next step's solver; a cache,
    not part of the dynamics (Sinkhorn's iterates depend on it within ``sinkhorn_tol``).

    ``w2`` is a diagnostic, read once per recorded epoch: where it costs a solve of its own (the
    exact W2 to an entropic barycenter, N assignment problems), the step stores the call that
    computes it, and the first read makes it."""

    theta: Any
    risks: Any = None
    consensus: Any = None
    weights: Any = None
    _w2: Any = None
    iteration: int = 0
    barycenter_iterations: int = 0
    barycenter_time: float = 0.0
    barycenter_unconverged: int = 0
    warm_start: Any = None

    @property
    def w2(self):
        if callable(self._w2):
            self._w2 = self._w2()
        return self._w2


def _stacked_w2(per_task):
    """W2^2 of every particle to every task's barycenter, (N, P), from P arrays (N,) or deferred calls."""
    per_task = [w2() if callable(w2) else w2 for w2 in per_task]
    return namespace(per_task[0]).stack(per_task, axis=1)


class OTCBO(ConsensusMethod):
    r"""OT-CBO on networks seen as measures of their neurons.

    Parameters
    ----------
    n_particles : int
        Number of particle measures N >= 1.
    dt, drift_rate : float
        Time step > 0 and drift rate :math:`\lambda > 0`, with :math:`\lambda\, dt \le 1`.
    sigma_squared : float
        :math:`\sigma^2 \geq 0` at the first iteration; 0 is the deterministic scheme.
    noise : {"additive", "anisotropic"}
        Additive (paper, eq. 49-54) or multiplicative in matched coordinates ("anisotropic").
    noise_decay : float, dict or schedule
        Factor on sigma over iterations or epochs, as its ``unit`` says; a step table without a
        ``unit`` counts iterations (the paper: x0.9 every 100 iterations,
        ``{kind = "step", initial = 1.0, factor = 0.9, every = 100, unit = "iteration"}``).
    alpha : float, dict or schedule
        Inverse temperature over epochs.
    barycenter : {"exact", "sinkhorn"}
        Barycenter solver (:class:`meanfield.transport.ExactBarycenter` or ``SinkhornBarycenter``).
    relative_reg : float
        Relative entropic regularisation of "sinkhorn".
    barycenter_max_iter : int
        Fixed-point iterations per barycenter.
    barycenter_tol : float
        Relative decrease of the barycenter objective at which the fixed point stops.
    sinkhorn_max_iter, sinkhorn_tol : int, float
        Iterations per entropic plan (Sinkhorn steps, then Newton steps) and the marginal L1 error
        at which a plan stops ("sinkhorn" only).
    batch_size : int
        Minibatch size S'.
    init_scale : float
        Initial atoms i.i.d. U[-init_scale, init_scale] per component (the paper: 2).
    barycenter_workers : int >= 1 or -1
        Threads of the barycenter solver (the N assignment problems of "exact", the blocks of
        measures of "sinkhorn") and of the W2 distances; -1 uses every CPU. The results do not
        depend on it.
    """

    name = "otcbo"
    passes = 1  # the risks; the barycenter's cost is recorded apart (barycenter_time)

    def __init__(self, n_particles: int = 100, dt: float = 0.1, drift_rate: float = 1.0, sigma_squared: float = 0.0,
                 noise: str = "additive", noise_decay: ScheduleSpec = 1.0, alpha: ScheduleSpec = 1e4,
                 barycenter: str = "exact", relative_reg: float = 0.05, barycenter_max_iter: int = 100,
                 barycenter_tol: float = 1e-9, sinkhorn_max_iter: int = 1000, sinkhorn_tol: float = 1e-9,
                 batch_size: int = 100, init_scale: float = 2.0, barycenter_workers: int = 1):
        super().__init__()
        self.n_particles = check_int("n_particles", n_particles, low=1)
        self.dt = check_float("dt", dt, low=0, low_open=True)
        self.drift_rate = check_float("drift_rate", drift_rate, low=0, low_open=True)
        if self.drift_rate * self.dt > 1:
            # x <- x - lambda dt (x - T(x)) with lambda dt > 1 moves every atom past its image T(x)
            # under the map to the barycenter: Proposition 3 needs lambda dt in (0, 1].
            raise ValueError("drift_rate * dt must be <= 1 (the move toward the barycenter overshoots otherwise), "
                             f"got drift_rate = {self.drift_rate:.15g}, dt = {self.dt:.15g}")
        self.sigma_squared = check_float("sigma_squared", sigma_squared, low=0)
        if noise not in ("additive", "anisotropic"):
            raise ValueError(f"noise must be one of ['additive', 'anisotropic'], got {noise!r}")
        self.noise = make_noise(noise)
        self.noise_decay = make_schedule(noise_decay, "noise_decay", unit="iteration")
        if isinstance(self.noise_decay, EffectiveSampleSize):
            raise ValueError("noise_decay must be a number or a step schedule, not an effective sample size")
        self.alpha = require_epoch_schedule("alpha", make_schedule(alpha, "alpha"), self.name)
        try:
            self.barycenter_workers = check_workers(barycenter_workers)
        except ValueError:
            raise ValueError("barycenter_workers must be an integer >= 1, or -1 for all CPUs, "
                             f"got {barycenter_workers!r}") from None
        workers = self.barycenter_workers
        solvers = {"exact": ExactBarycenter(barycenter_max_iter, barycenter_tol, workers=workers),  # both validate
                   "sinkhorn": SinkhornBarycenter(relative_reg, barycenter_max_iter, barycenter_tol,
                                                  sinkhorn_max_iter, sinkhorn_tol, workers=workers)}
        if barycenter not in solvers:
            raise ValueError(f"barycenter must be one of {sorted(solvers)}, got {barycenter!r}")
        self.barycenter, self.solver = barycenter, solvers[barycenter]
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.init_scale = check_float("init_scale", init_scale, low=0, low_open=True)

    def _barycenter(self, theta, weights, init, warm_start=None):
        start = time.perf_counter()
        result = self.solver.solve(theta, weights, init, warm_start=warm_start)
        elapsed = time.perf_counter() - start
        # exact maps are optimal for the final support, so they give W2^2 directly; entropic maps do
        # not, and the exact W2^2 to the support is left to the first read (OTCBOState.w2)
        if self.barycenter == "exact":
            xp = namespace(theta)
            w2 = xp.mean(xp.sum((theta - result.maps) ** 2, axis=-1), axis=-1)
        else:
            w2 = partial(w2_squared, theta, result.support, workers=self.barycenter_workers)
        return result, w2, elapsed

    def init(self, network, rng):
        """Initial measures; the consensus starts as their unweighted barycenter (from particle 0)."""
        xp = namespace(theta := network.init(self.n_particles, self.init_scale, rng))
        weights = xp.full((self.n_particles,), 1.0 / self.n_particles, dtype=theta.dtype,
                          device=array_api_compat.device(theta))
        result, w2, elapsed = self._barycenter(theta, weights, theta[0])
        return OTCBOState(theta, None, result.support, weights, w2, 0, result.n_iter, elapsed,
                          int(not result.converged), result)

    def targets(self, state, step):
        """The image of every atom under its optimal map to the weighted barycenter (eq. 29, 30)."""
        step.result, step.w2, step.seconds = self._barycenter(state.theta, step.weights, state.consensus,
                                                              state.warm_start)
        return step.result.maps

    def rates(self, state, epoch):
        decay = schedule_value(self.noise_decay, epoch, state.iteration)
        return self.drift_rate, math.sqrt(self.sigma_squared) * decay

    def advance(self, state, theta, step):
        result = step.result
        return OTCBOState(theta, step.risks, result.support, step.weights, step.w2, state.iteration + 1,
                          state.barycenter_iterations + result.n_iter, state.barycenter_time + step.seconds,
                          state.barycenter_unconverged + int(not result.converged), result)

    def reported_params(self, state):
        """The barycenter network of the last step."""
        return state.consensus

    def diagnostics(self, state):
        """Per-epoch extras: both W-over-W variances of the particles entering the last step around
        its barycenter (eq. 64), and the cumulative barycenter iterations, seconds and unconverged solves."""
        return {"w_variance": variance_from_distances(state.w2),
                "w_variance_weighted": variance_from_distances(state.w2, state.weights),
                "effective_sample_size": effective_sample_size(state.weights),
                "barycenter_iterations": state.barycenter_iterations, "barycenter_time": state.barycenter_time,
                "barycenter_unconverged": state.barycenter_unconverged}


class MultiTaskOTCBO(OTCBO):
    r"""Multi-task OT-CBO (eq. 32, 33): task p has Gibbs weights :math:`\beta_p = \mathrm{softmax}(-\alpha R[:, p])`
    over all particles and its own barycenter :math:`\bar\mu_p`; particle n moves along its optimal map
    to :math:`\bar\mu_{p(n)}`. Parameters: those of :class:`OTCBO` and ``assignment`` as in
    :func:`meanfield.multitask.task_assignment`. The recorded W-over-W variances are those of each
    task's particles around its barycenter, averaged over tasks (weighted: sum over all particles
    with the task's weights, averaged over tasks).
    """

    name = "multitask_otcbo"
    multitask = True

    def __init__(self, assignment: str = "blocks", n_particles: int = 100, dt: float = 0.1, drift_rate: float = 1.0,
                 sigma_squared: float = 0.0, noise: str = "additive", noise_decay: ScheduleSpec = 1.0,
                 alpha: ScheduleSpec = 1e4, barycenter: str = "exact", relative_reg: float = 0.05,
                 barycenter_max_iter: int = 100, barycenter_tol: float = 1e-9, sinkhorn_max_iter: int = 1000,
                 sinkhorn_tol: float = 1e-9, batch_size: int = 100, init_scale: float = 2.0,
                 barycenter_workers: int = 1):
        super().__init__(n_particles=n_particles, dt=dt, drift_rate=drift_rate, sigma_squared=sigma_squared,
                         noise=noise, noise_decay=noise_decay, alpha=alpha, barycenter=barycenter,
                         relative_reg=relative_reg,
                         barycenter_max_iter=barycenter_max_iter, barycenter_tol=barycenter_tol,
                         sinkhorn_max_iter=sinkhorn_max_iter, sinkhorn_tol=sinkhorn_tol,
                         batch_size=batch_size, init_scale=init_scale, barycenter_workers=barycenter_workers)
        task_assignment(2, 1, assignment)  # validates the name early
        self.assignment = assignment

    def check_tasks(self, n_tasks):
        task_assignment(self.n_particles, n_tasks, self.assignment)

    def risks(self, state, network, x, y):
        return SimpleNamespace(risks=network.risk_matrix(state.theta, x, y),
                               assignment=task_assignment(self.n_particles, y.shape[1], self.assignment))

    def targets(self, state, step):
        """The image of every atom under its optimal map to its task's barycenter (eq. 32, 33)."""
        xp = namespace(state.theta)
        n_tasks = step.weights.shape[1]
        previous = state.consensus if state.consensus.ndim == 3 else xp.stack([state.consensus] * n_tasks)
        warm = state.warm_start if isinstance(state.warm_start, tuple) else (state.warm_start,) * n_tasks
        supports, targets, w2, results = [], xp.zeros_like(state.theta), [], []
        step.seconds = 0.0
        for p in range(n_tasks):  # one barycenter per task; each solve is compiled/vectorised over particles
            result, w2_p, seconds = self._barycenter(state.theta, step.weights[:, p], previous[p], warm[p])
            supports.append(result.support)
            results.append(result)
            own = xp.asarray(step.assignment == p, device=array_api_compat.device(state.theta))
            targets = xp.where(own[:, None, None], result.maps, targets)
            w2.append(w2_p)
            step.seconds += seconds
        step.w2 = partial(_stacked_w2, w2) if any(map(callable, w2)) else _stacked_w2(w2)
        step.supports, step.results = xp.stack(supports), tuple(results)
        return targets

    def advance(self, state, theta, step):
        iterations = sum(result.n_iter for result in step.results)
        unconverged = sum(int(not result.converged) for result in step.results)
        return OTCBOState(theta, step.risks, step.supports, step.weights, step.w2, state.iteration + 1,
                          state.barycenter_iterations + iterations, state.barycenter_time + step.seconds,
                          state.barycenter_unconverged + unconverged, step.results)

    def reported_params(self, state):
        """Every task's barycenter network, (P, M, D) (one unweighted barycenter before the first step)."""
        return state.consensus if state.consensus.ndim == 3 else state.consensus[None]

    def diagnostics(self, state):
        xp = namespace(state.w2)
        if state.w2.ndim == 1:  # before the first step: one unweighted barycenter
            return super().diagnostics(state)
        device = array_api_compat.device(state.w2)
        assign = xp.asarray(task_assignment(self.n_particles, state.w2.shape[1], self.assignment), device=device)
        own = xp.astype(assign[:, None] == xp.arange(state.w2.shape[1], device=device)[None, :], state.w2.dtype)
        unweighted = xp.sum(own * state.w2, axis=0) / xp.sum(own, axis=0)
        return {"w_variance": variance_from_distances(unweighted),
                "w_variance_weighted": xp.mean(variance_from_distances(state.w2, state.weights, axis=0)),
                "effective_sample_size": effective_sample_size(state.weights),
                "barycenter_iterations": state.barycenter_iterations, "barycenter_time": state.barycenter_time,
                "barycenter_unconverged": state.barycenter_unconverged}
