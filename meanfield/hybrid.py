r"""Hybrid CBO-Adam (eq. 25 of arXiv 2511.21466): every particle takes a convex combination of
its own Adam step and the CBO move toward the consensus, on the same minibatch.

.. math::
   \theta_n \leftarrow \theta_n - \gamma\, dt\, \frac{\hat s_n}{\sqrt{\hat r_n} + \delta}
   + (1 - \gamma)\left[-\lambda\, dt\, (\theta_n - V) + \sigma\sqrt{dt}\,(\theta_n - V) \odot \xi_n\right]

gamma = 1 is N independent Adam runs with learning rate dt, gamma = 0 is finite CBO: the update is
arranged so both limits reproduce those methods bit for bit with the same seeds.
"""

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from meanfield._array import namespace
from meanfield._validate import check_float
from meanfield.adam import adam_direction
from meanfield.cbo import CBO
from meanfield.schedules import ScheduleSpec, require_epoch_schedule

__all__ = ["HybridCBOAdam", "HybridState"]


@dataclass
class HybridState:
    theta: Any
    s: Any
    r: Any
    k: int = 0
    risks: Any = None
    consensus: Any = None
    weights: Any = None

    @property
    def iteration(self):
        """Steps done (Adam's step count k)."""
        return self.k


class HybridCBOAdam(CBO):
    """Hybrid CBO-Adam; the CBO parameters are those of :class:`meanfield.cbo.CBO`.

    Parameters
    ----------
    gamma : float
        Weight of the Adam step in [0, 1].
    beta1, beta2, eps : float
        Adam's moment decay rates and denominator offset (learning rate = dt, as in the paper).
    **cbo_params
        n_particles, dt, drift_rate, sigma_squared, alpha, noise, batch_size, init_scale, require_decay.
    """

    name = "hybrid"
    passes = 3  # the forward pass and the two products of the backward pass

    def __init__(self, gamma: float = 0.5, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 n_particles: int = 100, dt: float = 0.1, drift_rate: float = 1.0, sigma_squared: float = 1.0,
                 alpha: ScheduleSpec = 1e5, noise: str = "anisotropic", batch_size: int = 100, init_scale: float = 1.0,
                 require_decay: bool = False):
        super().__init__(n_particles=n_particles, dt=dt, drift_rate=drift_rate, sigma_squared=sigma_squared,
                         alpha=alpha, noise=noise, batch_size=batch_size, init_scale=init_scale,
                         require_decay=require_decay)
        require_epoch_schedule("alpha", self.alpha, self.name)
        self.gamma = check_float("gamma", gamma, low=0, high=1)
        self.beta1 = check_float("beta1", beta1, low=0, high=1, high_open=True)
        self.beta2 = check_float("beta2", beta2, low=0, high=1, high_open=True)
        self.eps = check_float("eps", eps, low=0, low_open=True)

    def init(self, network, rng):
        theta = super().init(network, rng).theta
        xp = namespace(theta)
        return HybridState(theta, xp.zeros_like(theta), xp.zeros_like(theta))

    def risks(self, state, network, x, y):
        risks, grad = network.risk_and_grad(state.theta, x, y)
        return SimpleNamespace(risks=risks, grad=grad)

    def rates(self, state, epoch):
        cbo_part = 1.0 - self.gamma
        return cbo_part * self.drift_rate, cbo_part * math.sqrt(self.sigma_squared)

    def advance(self, state, theta, step):
        k = state.k + 1
        s, r, direction = adam_direction(step.grad, state.s, state.r, k, self.beta1, self.beta2, self.eps)
        return HybridState(theta - (self.gamma * self.dt) * direction, s, r, k, step.risks, step.consensus,
                           step.weights)

    def params(self):
        return {**super().params(), "gamma": self.gamma, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}
