r"""Finite consensus-based optimization over whole networks (sec. 3.3 of arXiv 2511.21466).

N particles :math:`\theta_n \in \mathbb{R}^{M D}`. One iteration on a minibatch shared by all
particles computes the risks :math:`R_n`, the Gibbs weights :math:`\beta = \mathrm{softmax}(-\alpha R)`,
the consensus :math:`V = \sum_n \beta_n \theta_n` and moves every particle by (eq. 21)

.. math:: \theta_n \leftarrow \theta_n - \lambda\, dt\, (\theta_n - V)
          + \sigma \sqrt{dt}\; \mathcal{N}(\theta_n - V, \xi_n), \qquad \xi_n \sim N(0, I)

where :math:`\mathcal{N}` is the noise strategy (anisotropic: componentwise product).
"""

from dataclasses import dataclass
from typing import Any

from meanfield._array import namespace
from meanfield._validate import check_bool, check_float, check_int
from meanfield.consensus import consensus_point, effective_sample_size
from meanfield.method import ConsensusMethod
from meanfield.noise import make_noise
from meanfield.schedules import ScheduleSpec, make_schedule

__all__ = ["CBO", "CBOState"]


@dataclass
class CBOState:
    """theta (N, M, D); risks (N,), consensus (M, D), Gibbs weights (N,) and alpha of the last step
    (None before the first); the number of steps done."""

    theta: Any
    risks: Any = None
    consensus: Any = None
    weights: Any = None
    alpha: float | None = None
    iteration: int = 0


class CBO(ConsensusMethod):
    r"""Finite CBO with Gibbs-weighted consensus, drift and multiplicative noise.

    Parameters
    ----------
    n_particles : int
        Number of networks N >= 1.
    dt : float
        Time step > 0.
    drift_rate : float
        Drift rate :math:`\lambda > 0`.
    sigma_squared : float
        Noise rate :math:`\sigma^2 \geq 0` (the paper quotes :math:`\sigma^2`).
    alpha : float, dict or schedule
        Inverse temperature: constant, a schedule over epochs or iterations, or solved at every step
        for an effective sample size (see :mod:`meanfield.schedules`).
    noise : {"anisotropic", "isotropic"} or callable
    batch_size : int
        Minibatch size S', shared by all particles.
    init_scale : float
        Initial law: every component i.i.d. U[-init_scale, init_scale].
    require_decay : bool
        If True, refuse noise rates for which consensus is not guaranteed
        (anisotropic: :math:`\sigma^2 < 2\lambda`; isotropic: :math:`\sigma^2 < 2\lambda / (M D)`).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.network import TwoLayerNetwork
    >>> net = TwoLayerNetwork(n_inputs=1, n_outputs=1, n_neurons=5)
    >>> cbo = CBO(n_particles=4, dt=0.1, sigma_squared=0.0, alpha=0.0, batch_size=3)
    >>> rng = np.random.default_rng(0)
    >>> state = cbo.init(net, rng)
    >>> x, y = rng.uniform(size=(3, 1)), np.zeros(3)
    >>> new = cbo.step(state, net, x, y, epoch=0, rng=rng)
    >>> bool(np.allclose(new.theta - new.consensus, 0.9 * (state.theta - new.consensus)))
    True
    """

    name = "cbo"

    def __init__(self, n_particles: int = 100, dt: float = 0.1, drift_rate: float = 1.0, sigma_squared: float = 1.0,
                 alpha: ScheduleSpec = 1e5, noise: str = "anisotropic", batch_size: int = 100, init_scale: float = 1.0,
                 require_decay: bool = False):
        super().__init__()
        self.n_particles = check_int("n_particles", n_particles, low=1)
        self.dt = check_float("dt", dt, low=0, low_open=True)
        self.drift_rate = check_float("drift_rate", drift_rate, low=0, low_open=True)
        self.sigma_squared = check_float("sigma_squared", sigma_squared, low=0)
        self.alpha = make_schedule(alpha, "alpha")
        self.noise = make_noise(noise)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.init_scale = check_float("init_scale", init_scale, low=0, low_open=True)
        self.require_decay = check_bool("require_decay", require_decay)

    def init(self, network, rng):
        if self.require_decay and hasattr(self.noise, "decay_bound"):
            bound = self.noise.decay_bound(self.drift_rate, network.n_neurons * network.dim)
            if not (self.sigma_squared < bound or self.sigma_squared == 0):
                raise ValueError(
                    f"sigma_squared must be < {bound:g} with {self.noise.name} noise and drift_rate "
                    f"{self.drift_rate:g} for a guaranteed decay (require_decay=True), got {self.sigma_squared}"
                )
        return CBOState(network.init(self.n_particles, self.init_scale, rng))

    def targets(self, state, step):
        step.consensus = consensus_point(state.theta, step.weights)
        return step.consensus

    def advance(self, state, theta, step):
        return CBOState(theta, step.risks, step.consensus, step.weights, step.alpha, state.iteration + 1)

    def reported_params(self, state):
        """The network a CBO run stands for: the consensus of the last step (the mean before it)."""
        xp = namespace(state.theta)
        return xp.mean(state.theta, axis=0) if state.consensus is None else state.consensus

    def diagnostics(self, state):
        """Per-epoch extras: the effective sample size of the last step's Gibbs weights (and the alpha
        of that step, which differs from the epoch's schedule value for per-iteration or adaptive alpha)."""
        if state.weights is None:
            return {}
        extras = {"effective_sample_size": effective_sample_size(state.weights)}
        if getattr(state, "alpha", None) is not None:
            extras["alpha"] = state.alpha
        return extras

    def params(self):
        """Hyper-parameters as plain values (for dataset attributes)."""
        return {
            "n_particles": self.n_particles, "dt": self.dt, "drift_rate": self.drift_rate,
            "sigma_squared": self.sigma_squared, "alpha": repr(self.alpha), "noise": self.noise.name,
            "batch_size": self.batch_size, "init_scale": self.init_scale,
        }
