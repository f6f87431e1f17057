r"""The step every consensus method shares (CBO, the hybrid, multi-task CBO, OT-CBO).

One iteration on a minibatch is always

1. the risks :math:`R_n` of the particles (per task for multi-task methods);
2. the Gibbs weights :math:`\beta = \mathrm{softmax}(-\alpha R)` over the particles;
3. the targets :math:`T_n`: the consensus point, the consensus of the particle's task, or the image
   of each atom under its transport map to the barycenter;
4. one standard normal draw :math:`\xi` shaped like the particles (:class:`meanfield.noise.NormalDraws`);
5. the move :math:`\theta_n \leftarrow \theta_n - \lambda\, dt\, (\theta_n - T_n) + \sigma \sqrt{dt}\;
   \mathcal{N}(\theta_n - T_n, \xi_n)` (:func:`consensus_update`), plus any extra term of the method.

:class:`ConsensusMethod` runs these steps in that order; a method says only what differs: how it
computes its risks (:meth:`~ConsensusMethod.risks`), its targets (:meth:`~ConsensusMethod.targets`),
its rates (:meth:`~ConsensusMethod.rates`) and the state it keeps (:meth:`~ConsensusMethod.advance`),
in the spirit of CBXpy's pre-step / inner step / post-step template.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np

from meanfield._array import host_floats
from meanfield.consensus import gibbs_weights
from meanfield.noise import AdditiveNoise, AnisotropicNoise, IsotropicNoise, NormalDraws
from meanfield.schedules import schedule_value

__all__ = ["ConsensusMethod", "Method", "consensus_update"]


class Method(Protocol):
    """What :func:`meanfield.train.train` needs of a training method.

    Attributes
    ----------
    name : str
        Its kind, e.g. "cbo".
    batch_size : int
        Minibatch size S'.
    n_particles : int
        Networks trained together.
    passes : int
        Network passes over a minibatch per step per particle (what runs are compared at).
    multitask : bool
        Whether it trains P tasks sharing the inputs (targets (S, P)) rather than one.
    alpha : schedule or None
        Its inverse temperature (:mod:`meanfield.schedules`), recorded per epoch; None without one.
    """

    name: str
    batch_size: int
    n_particles: int
    passes: int
    multitask: bool
    alpha: Any

    def init(self, network, rng):
        """The initial state; ``state.theta`` (N, M, D) holds the particles."""

    def step(self, state, network, x, y, epoch, rng):
        """The state after one iteration on the minibatch (x, y)."""

    def reported_params(self, state):
        """The network(s) the run stands for: (M, D), or (P, M, D) for a multi-task method."""

    def diagnostics(self, state):
        """Per-epoch extras recorded next to the metrics, a dict of scalars or (P,) arrays."""

    def params(self):
        """Hyper-parameters as plain values (dataset attributes)."""

    # a multi-task method also has check_tasks(n_tasks), raising a ValueError if it cannot serve them


def consensus_update(theta, targets, dt, drift_rate, sigma, noise, xi):
    """One consensus move of every particle toward its target (eq. 21).

    Parameters
    ----------
    theta : array, shape (N, ...)
    targets : array, shape (...) or (N, ...)
        The consensus point, or one target per particle.
    dt, drift_rate, sigma : float
        Time step, drift rate lambda and noise rate sigma (not squared).
    noise : callable
        Noise strategy ``noise(diff, xi)``.
    xi : array, shape (N, ...)
        Standard normal draws. numpy arrays of theta's dtype are used as scratch (overwritten)
        with the built-in noise strategies, so the step allocates no temporaries beyond the result;
        the result is bit for bit that of the plain expression.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.noise import AnisotropicNoise
    >>> consensus_update(np.array([[2.0], [4.0]]), np.array([0.0]), 0.1, 1.0, 0.0, AnisotropicNoise(),
    ...                  np.zeros((2, 1)))
    array([[1.8],
           [3.6]])
    """
    if type(noise) is AnisotropicNoise and host_floats(theta, targets, xi) and targets.shape in (
            theta.shape, theta.shape[1:]):
        from meanfield.kernels import anisotropic_update

        return anisotropic_update(theta, targets, xi, drift_rate * dt, sigma * math.sqrt(dt))
    diff = theta - targets
    if not (isinstance(diff, np.ndarray) and isinstance(xi, np.ndarray) and xi.dtype == diff.dtype
            and type(noise) in _IN_PLACE):
        return theta - (drift_rate * dt) * diff + (sigma * math.sqrt(dt)) * noise(diff, xi)
    # theta - (drift_rate dt) diff + (sigma sqrt(dt)) noise, each product and sum as in that expression
    step = noise(diff, xi, out=xi)
    step *= sigma * math.sqrt(dt)
    diff *= drift_rate * dt
    out = theta - diff
    out += step
    return out


_IN_PLACE = (AnisotropicNoise, IsotropicNoise, AdditiveNoise)



class ConsensusMethod:
    """Base of the consensus methods: :meth:`step` is the shared iteration.

    A subclass sets ``dt``, ``drift_rate``, ``sigma_squared``, ``alpha``, ``noise`` and ``batch_size`` and
    defines :meth:`init`, :meth:`targets` and :meth:`advance`; it may override :meth:`risks` and
    :meth:`rates`. The ``step`` record passed between the hooks holds ``risks``, ``alpha`` and
    ``weights``, and whatever the hooks add to it (a gradient, a task assignment, barycenters).
    """

    passes = 1  # network passes over a minibatch per step: the risks (costs compare methods, see train)
    multitask = False

    def __init__(self):
        self._normal = NormalDraws()

    def step(self, state, network, x, y, epoch, rng):
        """One iteration on the minibatch (x, y): risks, weights, targets, noise, move."""
        step = self.risks(state, network, x, y)
        step.alpha = schedule_value(self.alpha, epoch, state.iteration, step.risks)
        step.weights = gibbs_weights(step.risks, step.alpha, axis=0)
        targets = self.targets(state, step)
        xi = self._normal(rng, state.theta)
        drift_rate, sigma = self.rates(state, epoch)
        theta = consensus_update(state.theta, targets, self.dt, drift_rate, sigma, self.noise, xi)
        return self.advance(state, theta, step)

    def init(self, network, rng):
        """The initial state; ``state.theta`` (N, M, D) holds the particles."""
        raise NotImplementedError

    def risks(self, state, network, x, y):
        """The step record with the particles' risks on the minibatch, (N,)."""
        return SimpleNamespace(risks=network.risk(state.theta, x, y))

    def rates(self, state, epoch):
        """Drift rate lambda and noise rate sigma (not squared) of this step's move."""
        return self.drift_rate, math.sqrt(self.sigma_squared)

    def targets(self, state, step):
        """Where each particle moves, (M, D) or (N, M, D)."""
        raise NotImplementedError

    def advance(self, state, theta, step):
        """The state after the move to ``theta``."""
        raise NotImplementedError

    def diagnostics(self, state):
        """Per-epoch extras; none by default."""
        return {}
