r"""Adam on the minibatch risk (eq. 17-20 of arXiv 2511.21466), for one or more independent networks.

.. math::
   s &\leftarrow \beta_1 s + (1 - \beta_1) d, \quad r \leftarrow \beta_2 r + (1 - \beta_2) d \odot d, \\
   \theta &\leftarrow \theta - dt\, \frac{s / (1 - \beta_1^k)}{\sqrt{r / (1 - \beta_2^k)} + \delta}

with d the analytic gradient of the minibatch risk and k the iteration count (from 1).
"""

from dataclasses import dataclass
from typing import Any

from meanfield._array import host_floats, namespace
from meanfield._validate import check_float, check_int

__all__ = ["Adam", "AdamState", "adam_direction"]


def adam_direction(grad, s, r, k, beta1, beta2, eps):
    """Moments after step ``k`` (from 1) and the bias-corrected direction s^ / (sqrt(r^) + eps).

    Examples
    --------
    >>> import numpy as np
    >>> s, r, d = adam_direction(np.array([2.0]), np.zeros(1), np.zeros(1), 1, 0.9, 0.999, 0.0)
    >>> d    # the first Adam step is sign(grad)
    array([1.])
    """
    if host_floats(grad, s, r) and grad.shape == s.shape == r.shape:
        from meanfield.kernels import adam_moments

        return adam_moments(grad, s, r, k, beta1, beta2, eps)
    xp = namespace(grad)
    s = beta1 * s + (1.0 - beta1) * grad
    r = beta2 * r + (1.0 - beta2) * grad * grad
    direction = (s / (1.0 - beta1**k)) / (xp.sqrt(r / (1.0 - beta2**k)) + eps)
    return s, r, direction


@dataclass
class AdamState:
    theta: Any
    s: Any
    r: Any
    k: int = 0
    risks: Any = None


class Adam:
    """Adam with learning rate ``lr`` on ``n_particles`` independent networks (default one).

    Parameters
    ----------
    lr : float
        Learning rate > 0 (the paper uses the CBO time step).
    beta1, beta2 : float
        Moment decay rates in [0, 1).
    eps : float
        delta > 0 in the denominator.
    batch_size : int
        Minibatch size S'.
    n_particles : int
        Number of independent networks; the reported one is the best on the last minibatch.
    init_scale : float
        Initial law U[-init_scale, init_scale] per component.
    """

    name = "adam"
    passes = 3  # the forward pass and the two products of the backward pass
    multitask = False
    alpha = None

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 batch_size: int = 100, n_particles: int = 1, init_scale: float = 1.0):
        self.lr = check_float("lr", lr, low=0, low_open=True)
        self.beta1 = check_float("beta1", beta1, low=0, high=1, high_open=True)
        self.beta2 = check_float("beta2", beta2, low=0, high=1, high_open=True)
        self.eps = check_float("eps", eps, low=0, low_open=True)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.n_particles = check_int("n_particles", n_particles, low=1)
        self.init_scale = check_float("init_scale", init_scale, low=0, low_open=True)

    def init(self, network, rng):
        xp = namespace(theta := network.init(self.n_particles, self.init_scale, rng))
        return AdamState(theta, xp.zeros_like(theta), xp.zeros_like(theta))

    def step(self, state, network, x, y, epoch, rng):
        risks, grad = network.risk_and_grad(state.theta, x, y)
        k = state.k + 1
        s, r, direction = adam_direction(grad, state.s, state.r, k, self.beta1, self.beta2, self.eps)
        return AdamState(state.theta - self.lr * direction, s, r, k, risks)

    def reported_params(self, state):
        xp = namespace(state.theta)
        best = 0 if state.risks is None else int(xp.argmin(state.risks))
        return state.theta[best]

    def diagnostics(self, state):
        return {}

    def params(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "batch_size": self.batch_size, "n_particles": self.n_particles, "init_scale": self.init_scale}
