r"""Multi-task CBO (sec. 3.4.2 of arXiv 2511.21466): P tasks sharing one ensemble of N particles.

Per iteration the N x P risk matrix comes from one forward pass per particle (the tasks share their
inputs); task p has its own consensus (eq. 28)

.. math:: V_p = \sum_n \mathrm{softmax}_n(-\alpha R[:, p])\, \theta_n

and particle n drifts and diffuses toward the consensus of its task p(n) (eq. 27). With
``shared=False`` every task only sees its own particles: that is P independent CBO runs in one
vectorised ensemble, the baseline with the same number of risk evaluations per task.
"""

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import array_api_compat

from meanfield._array import namespace
from meanfield._validate import check_bool
from meanfield.cbo import CBO
from meanfield.schedules import ScheduleSpec, require_epoch_schedule

__all__ = ["MultiTaskCBO", "MultiTaskState", "task_assignment"]


def task_assignment(n_particles, n_tasks, kind="blocks"):
    """Task of every particle, an int array (N,).

    "blocks": consecutive blocks, p(n) = floor(n P / N) (the paper's p(n) = ceil(n / 2) for
    N = 200, P = 100); "round_robin": p(n) = n mod P.

    >>> task_assignment(6, 3).tolist(), task_assignment(6, 3, "round_robin").tolist()
    ([0, 0, 1, 1, 2, 2], [0, 1, 2, 0, 1, 2])
    """
    import numpy as np

    if n_particles < n_tasks:
        raise ValueError(f"n_particles must be >= the number of tasks {n_tasks}, got {n_particles}")
    kinds = {"blocks": lambda n: n * n_tasks // n_particles, "round_robin": lambda n: n % n_tasks}
    if kind not in kinds:
        raise ValueError(f"assignment must be one of {sorted(kinds)}, got {kind!r}")
    out = kinds[kind](np.arange(n_particles))
    empty = sorted(set(range(n_tasks)) - set(out.tolist()))
    if empty:
        raise ValueError(f"assignment {kind!r} leaves task(s) {empty} without particles")
    return out


@dataclass
class MultiTaskState:
    """theta (N, M, D); risks (N, P) (+inf where a task may not use a particle); consensus (P, M, D);
    Gibbs weights (N, P)."""

    theta: Any
    risks: Any = None
    consensus: Any = None
    assignment: Any = None
    weights: Any = None
    iteration: int = 0


class MultiTaskCBO(CBO):
    """Multi-task CBO; the CBO parameters are those of :class:`meanfield.cbo.CBO`.

    Parameters
    ----------
    assignment : {"blocks", "round_robin"}
        How particles are assigned to tasks (see :func:`task_assignment`).
    shared : bool
        True: every task's consensus weighs all particles (the paper's multi-task CBO).
        False: only the task's own particles (P independent CBO runs of N / P particles).
    n_particles : int
        In total, over all tasks.
    dt, drift_rate, sigma_squared, alpha, noise, batch_size, init_scale, require_decay
        As for :class:`meanfield.cbo.CBO`.
    """

    name = "multitask"
    multitask = True

    def __init__(self, assignment: str = "blocks", shared: bool = True, n_particles: int = 100, dt: float = 0.1,
                 drift_rate: float = 1.0, sigma_squared: float = 1.0, alpha: ScheduleSpec = 1e5,
                 noise: str = "anisotropic", batch_size: int = 100, init_scale: float = 1.0,
                 require_decay: bool = False):
        super().__init__(n_particles=n_particles, dt=dt, drift_rate=drift_rate, sigma_squared=sigma_squared,
                         alpha=alpha, noise=noise, batch_size=batch_size, init_scale=init_scale,
                         require_decay=require_decay)
        require_epoch_schedule("alpha", self.alpha, self.name)
        task_assignment(2, 1, assignment)  # validates the name early
        self.assignment, self.shared = assignment, check_bool("shared", shared)

    def check_tasks(self, n_tasks):
        """Raise a ValueError if this ensemble cannot serve ``n_tasks`` tasks."""
        task_assignment(self.n_particles, n_tasks, self.assignment)

    def init(self, network, rng):
        return MultiTaskState(super().init(network, rng).theta)

    def risks(self, state, network, x, y):
        """The risk matrix (N, P); +inf where a task does not weigh a particle (``shared=False``)."""
        xp = namespace(state.theta)
        assign = state.assignment
        if assign is None:
            assign = xp.asarray(task_assignment(self.n_particles, y.shape[1], self.assignment),
                                device=array_api_compat.device(state.theta))
        if self.shared:
            risks = network.risk_matrix(state.theta, x, y)
        else:  # a task ignores the particles of the others: only the own-task risk is needed
            g = network.forward(state.theta, x)[..., 0]
            own_risk = xp.mean((g - xp.take(xp.matrix_transpose(y), assign, axis=0)) ** 2, axis=1)
            own = assign[:, None] == xp.arange(y.shape[1], device=array_api_compat.device(y))[None, :]
            risks = xp.where(own, own_risk[:, None], xp.inf)
        return SimpleNamespace(risks=risks, assignment=assign)

    def targets(self, state, step):
        """The consensus of every particle's task: V_p (eq. 28) gathered by p(n)."""
        xp = namespace(state.theta)
        step.consensus = xp.tensordot(xp.matrix_transpose(step.weights), state.theta, axes=1)  # (P, M, D)
        return xp.take(step.consensus, step.assignment, axis=0)

    def advance(self, state, theta, step):
        return MultiTaskState(theta, step.risks, step.consensus, step.assignment, step.weights, state.iteration + 1)

    def reported_params(self, state):
        """The consensus network of every task, (P, M, D) (the ensemble mean before the first step)."""
        if state.consensus is None:
            xp = namespace(state.theta)
            return xp.mean(state.theta, axis=0)[None]
        return state.consensus

    def params(self):
        return {**super().params(), "assignment": self.assignment, "shared": int(self.shared)}
