r"""Two-layer networks as empirical measures of their neurons, evaluated for a whole ensemble.

A network of width :math:`M` on inputs :math:`x \in \mathbb{R}^d` with :math:`C` outputs is

.. math:: g(x) = \frac{1}{M} \sum_{m=1}^{M} c_m\, \sigma(w_m \cdot x + b_m)

(mean-field scaling, eq. 3 of arXiv 2511.21466). Neuron :math:`m` is the atom
:math:`\theta_m = (w_m, b_m, c_m) \in \mathbb{R}^D`, :math:`D = d + 1 + C`, and the network is the
uniform measure of its atoms, so its output does not depend on the order of the neurons.

An ensemble of N networks is one array ``theta`` of shape ``(n_particles, n_neurons, D)`` whose last
axis is laid out as ``[w (d) | b (1) | c (C)]``.
"""

import numbers
from dataclasses import dataclass

import array_api_compat
import numpy as np

from meanfield._array import namespace, relu_
from meanfield._validate import check_class_indices, check_float, check_int
from meanfield.backend import CoupledGenerator, DeviceGenerator, namespace_of, resolve
from meanfield.losses import LOSSES

__all__ = ["TwoLayerNetwork", "ACTIVATIONS", "LOSSES", "EVALUATIONS", "DTYPES"]


def _sigmoid_(z):
    xp = namespace(z)
    return 1.0 / (1.0 + xp.exp(-z))


# activation: (sigma applied to the pre-activation, may overwrite it; sigma' written in terms of
# h = sigma(z), so the backward pass needs no second copy of z)
ACTIVATIONS = {
    "relu": (relu_, lambda h: h > 0),
    "tanh": (lambda z: namespace(z).tanh(z), lambda h: 1.0 - h * h),
    "sigmoid": (_sigmoid_, lambda h: h * (1.0 - h)),
}


# how outputs and gradients are computed (see TwoLayerNetwork, parameter ``evaluation``)
EVALUATIONS = ("auto", "dense", "relu_1d", "fused_1d")
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class TwoLayerNetwork:
    r"""Architecture of a mean-field two-layer network and its ensemble-wide numerics.

    Parameters
    ----------
    n_inputs : int
        Input dimension d >= 1.
    n_outputs : int
        Output dimension C >= 1 (number of classes for ``loss="cross_entropy"``, which needs C >= 2).
    n_neurons : int
        Width M >= 1.
    activation : {"relu", "tanh", "sigmoid"}
    loss : {"mse", "cross_entropy"}
        Mean squared error :math:`\frac1S\sum_s |g(x_s) - y_s|^2` or softmax cross-entropy
        :math:`\frac1S\sum_s [\log\sum_c e^{g_c(x_s)} - g_{y_s}(x_s)]` with labels as class indices.
    block_elements : int, None or "auto"
        Dense evaluation: particles are processed in blocks whose hidden activations (block, S, M)
        hold about this many numbers, so they stay in cache and memory stays bounded. ``None``
        processes all at once. "auto": 2**17 on the CPU (cache-sized), 2**26 on a GPU (few large
        products).
    evaluation : {"auto", "dense", "relu_1d", "fused_1d"}
        "dense": matrix products over blocks of networks (any input dimension, any array API
        namespace). "relu_1d": exact prefix sums for one-input ReLU networks, cost
        O(N (S + M log S)) instead of O(N S M) (:mod:`meanfield.one_input`). "fused_1d": one
        compiled loop for one-input networks, any activation. "auto" takes "relu_1d" for one-input
        ReLU networks, "fused_1d" for other one-input networks and "dense" otherwise, and "dense"
        for arrays that are not numpy arrays. All agree to rounding.
    dtype : {"float64", "float32"} or None
        Floating type of the particles ``init`` draws and of the targets; the evaluation keeps the
        dtype of ``theta`` and casts the inputs to it. None: float64 on the CPU, float32 on a GPU.
    backend : {"numpy", "torch"}
        Array library of the particles and data (:mod:`meanfield.backend`).
    device : str or None
        Where a torch backend computes: "cpu" (the default), "cuda" or "cuda:k".
    draws : {"host", "device", "coupled"} or None
        Where and how a run's random draws are made (:mod:`meanfield.backend`): None takes "host" on
        the CPU (a torch run then gives numpy's numbers) and "device" on a GPU; "coupled" gives
        every particle its own streams, so that runs of different N (and M up to ``draw_width``)
        share their draws particle by particle.
    draw_width : int or None
        With ``draws="coupled"``: neuron rows drawn per particle, at least ``n_neurons`` (the widest
        network of a coupled sweep over M). None: ``n_neurons``.

    Examples
    --------
    >>> import numpy as np
    >>> net = TwoLayerNetwork(n_inputs=1, n_outputs=1, n_neurons=2)
    >>> theta = np.array([[[1.0, 0.0, 2.0], [-1.0, 1.0, 4.0]]])   # one network, two neurons
    >>> net.forward(theta, np.array([[0.5]]))    # (2 * relu(0.5) + 4 * relu(0.5)) / 2
    array([[[1.5]]])
    """

    n_inputs: int
    n_outputs: int
    n_neurons: int
    activation: str = "relu"
    loss: str = "mse"
    block_elements: int | str | None = "auto"
    evaluation: str = "auto"
    dtype: str | None = None
    backend: str = "numpy"
    device: str | None = None
    draws: str | None = None
    draw_width: int | None = None

    def __post_init__(self):
        for name in ("n_inputs", "n_outputs", "n_neurons"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        if self.loss == "cross_entropy" and self.n_outputs < 2:
            raise ValueError(f"n_outputs must be >= 2 for loss='cross_entropy', got {self.n_outputs}")
        device, draws, dtype = resolve(self.backend, self.device, self.draws, self.dtype)
        object.__setattr__(self, "device", device)  # frozen: the resolved values replace the defaults
        object.__setattr__(self, "draws", draws)
        object.__setattr__(self, "dtype", dtype)
        if self.draw_width is None:
            object.__setattr__(self, "draw_width", self.n_neurons)
        w = self.draw_width
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < self.n_neurons:
            raise ValueError(f"draw_width must be an integer >= n_neurons = {self.n_neurons}, got {w!r}")
        if w != self.n_neurons and draws != "coupled":
            raise ValueError(f"draw_width = {w} needs draws='coupled', got draws={draws!r}")
        if self.block_elements == "auto":
            object.__setattr__(self, "block_elements", 2**17 if device == "cpu" else 2**26)
        b = self.block_elements
        if b is not None and (isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1):
            raise ValueError(f"block_elements must be an integer >= 1, None or 'auto', got {b!r}")
        if self.evaluation not in EVALUATIONS:
            raise ValueError(f"evaluation must be one of {list(EVALUATIONS)}, got {self.evaluation!r}")
        if self.evaluation in ("relu_1d", "fused_1d") and self.backend != "numpy":
            raise ValueError(f"evaluation={self.evaluation!r} needs backend='numpy' (it is compiled for the CPU); "
                             "use evaluation='dense' or 'auto'")
        if self.evaluation in ("relu_1d", "fused_1d") and self.n_inputs != 1:
            raise ValueError(f"evaluation={self.evaluation!r} needs n_inputs = 1, got {self.n_inputs}")
        if self.evaluation == "relu_1d" and self.activation != "relu":
            raise ValueError(f"evaluation='relu_1d' needs activation='relu', got {self.activation!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")

    @property
    def dim(self):
        """D = d + 1 + C, the dimension of one neuron."""
        return self.n_inputs + 1 + self.n_outputs

    @property
    def xp(self):
        """The array API namespace of the backend."""
        return namespace_of(self.backend)

    def asarray(self, x, dtype=None):
        """``x`` as an array of the backend on its device (``dtype``: a name, or None to keep x's)."""
        xp = self.xp
        return xp.asarray(x, dtype=None if dtype is None else getattr(xp, dtype), device=self.device)

    def generator(self, rng):
        """The stream a run draws from: ``rng`` itself, or seeded from its SeedSequence a
        :class:`~meanfield.backend.DeviceGenerator` (``draws="device"``) or a
        :class:`~meanfield.backend.CoupledGenerator` (``draws="coupled"``)."""
        if self.draws == "device":
            return DeviceGenerator(rng, self.device)
        return CoupledGenerator(rng, self.draw_width) if self.draws == "coupled" else rng

    def init(self, n_particles, scale, rng):
        """Ensemble of ``n_particles`` networks with every component i.i.d. U[-scale, scale].

        Returns an array of the backend, shape (n_particles, n_neurons, D), of ``dtype`` (float32
        particles are the float64 draws rounded, so both start from the same network). ``rng``: a
        numpy Generator (host draws) or a :class:`~meanfield.backend.DeviceGenerator`.
        """
        check_int("n_particles", n_particles, low=1)
        check_float("init_scale", scale, low=0, low_open=True)
        theta = rng.uniform(-scale, scale, size=(n_particles, self.n_neurons, self.dim))
        if self.backend == "numpy" and isinstance(theta, np.ndarray):
            return theta.astype(self.dtype, copy=False)
        return self.asarray(theta, self.dtype)

    def targets(self, y):
        """Targets in the form the loss uses: (S, C) floats for mse, one-hot (S, C) for cross-entropy.

        Class indices must be integers in [0, C - 1] (integer-valued floats are accepted): any other
        label would become an all-zero one-hot row, a wrong loss and gradient with no error.

        >>> import numpy as np
        >>> TwoLayerNetwork(1, 3, 2, loss="cross_entropy").targets(np.array([2, 0]))
        array([[0., 0., 1.],
               [1., 0., 0.]])
        """
        xp = namespace(y)
        dtype = getattr(xp, self.dtype)
        if self.loss == "cross_entropy":
            check_class_indices("y", y, self.n_outputs)
            return xp.astype(y[:, None] == xp.arange(self.n_outputs, device=array_api_compat.device(y)), dtype)
        return xp.astype(xp.reshape(y, (y.shape[0], self.n_outputs)), dtype, copy=False)

    # ----------------------------------------------------------------------------------------------
    # numeric core: everything below works on any array API namespace
    def _blocks(self, n_particles, n_samples):
        if self.block_elements is None:
            return [(0, n_particles)]
        size = max(1, self.block_elements // (n_samples * self.n_neurons))
        return [(i, min(i + size, n_particles)) for i in range(0, n_particles, size)]

    def _hidden(self, theta, x_aug):
        """h = sigma(w.x + b) of a block of B networks, shape (S, B, M), from x_aug = [x | 1] (S, d + 1).

        The first layer of all B networks is ONE matrix product (S, d + 1) @ (d + 1, B M): the inputs
        are read once per block, not once per network, which beats a batched product (docs/benchmarks.md).
        """
        xp = namespace(theta)
        B, M = theta.shape[0], self.n_neurons
        w = xp.reshape(xp.permute_dims(theta[..., : self.n_inputs + 1], (2, 0, 1)), (self.n_inputs + 1, B * M))
        z = xp.reshape(xp.matmul(x_aug, w), (x_aug.shape[0], B, M))
        return ACTIVATIONS[self.activation][0](z)

    @staticmethod
    def _per_network(a):
        """(S, B, K) -> (B, S, K) view, for products batched over networks."""
        return namespace(a).permute_dims(a, (1, 0, 2))

    def _augment(self, x, dtype):
        xp = namespace(x)
        self._check_inputs(x)
        x = xp.astype(x, dtype, copy=False)
        return xp.concat([x, xp.ones((x.shape[0], 1), dtype=dtype, device=array_api_compat.device(x))], axis=1)

    def _mode(self, theta):
        """The evaluation used for ``theta``: compiled ones need numpy arrays."""
        if self.evaluation == "auto":
            if self.n_inputs != 1 or not isinstance(theta, np.ndarray):
                return "dense"
            return "relu_1d" if self.activation == "relu" else "fused_1d"
        if self.evaluation != "dense" and not isinstance(theta, np.ndarray):
            raise TypeError(f"evaluation={self.evaluation!r} needs numpy arrays, got {type(theta).__name__}; "
                            "use evaluation='dense' or 'auto' for other array libraries")
        return self.evaluation

    def sorts_inputs(self, theta):
        """Whether the risks of ``theta`` are sums over the samples sorted by input (the exact one-input
        ReLU evaluation), so that they do not depend on the order of the samples, bit for bit."""
        return self._mode(theta) == "relu_1d"

    def _compiled(self, theta, x, y, mode, grad_out=None):
        """Outputs (N, S, C) of a compiled evaluation in the order of x, or with ``y``, the risks
        (and the gradient). "relu_1d" works on the samples sorted by x: the risk is a mean over
        samples, so they are not put back in order for it. ``grad_out``: compute the gradient into it."""
        from meanfield import one_input

        self._check_inputs(x)
        x = np.asarray(x, dtype=theta.dtype)
        loss = LOSSES[self.loss]
        if mode == "fused_1d":
            g = one_input.fused_outputs(theta, x, self.activation)
            if y is None:
                return g
            if grad_out is None:
                return loss(g, self.targets(y))
            risks, delta = loss(g, self.targets(y), grad=True)
            return risks, one_input.fused_gradient(theta, x, self.activation, delta, out=grad_out)
        order, xs = one_input.sort_inputs(x)
        if y is not None and grad_out is None and self.loss == "mse":
            return one_input.relu_mse(theta, xs, self.targets(y)[order])
        g, ranges = one_input.relu_outputs(theta, xs)
        if y is None:
            out = np.empty_like(g)
            out[:, order] = g
            return out
        t = self.targets(y)[order]
        if grad_out is None:
            return loss(g, t)
        risks, delta = loss(g, t, grad=True)
        return risks, one_input.relu_gradient(theta, xs, delta, ranges, out=grad_out)

    def _check_inputs(self, x):
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"x must have shape (n_samples, {self.n_inputs}), got {tuple(x.shape)}")

    def _check_theta(self, theta):
        if theta.ndim != 3 or theta.shape[1:] != (self.n_neurons, self.dim):
            raise ValueError(
                f"theta must have shape (n_particles, {self.n_neurons}, {self.dim}), got {tuple(theta.shape)}"
            )

    def _dense_outputs(self, theta, x):
        """(i, j, outputs (j - i, S, C)) of every block of networks, by matrix products."""
        xp = namespace(theta, x)
        x_aug = self._augment(x, theta.dtype)
        for i, j in self._blocks(theta.shape[0], x.shape[0]):
            h = self._per_network(self._hidden(theta[i:j], x_aug))
            yield i, j, xp.matmul(h, theta[i:j, :, self.n_inputs + 1 :]) / self.n_neurons

    def forward(self, theta, x):
        """Outputs g(x) of every network: theta (N, M, D), x (S, d) -> (N, S, C), dtype of theta."""
        xp = namespace(theta, x)
        self._check_theta(theta)
        mode = self._mode(theta)
        if mode != "dense":
            return self._compiled(theta, x, None, mode)
        out = xp.empty((theta.shape[0], x.shape[0], self.n_outputs), dtype=theta.dtype,
                       device=array_api_compat.device(theta))
        for i, j, g in self._dense_outputs(theta, x):
            out[i:j, ...] = g
        return out

    def risk(self, theta, x, y):
        """Risk of every network on (x, y): theta (N, M, D), x (S, d), y (S,) or (S, C) -> (N,)."""
        xp = namespace(theta, x)
        self._check_theta(theta)
        mode = self._mode(theta)
        if mode != "dense":
            return self._compiled(theta, x, y, mode)
        t, loss = self.targets(y), LOSSES[self.loss]
        risks = xp.empty((theta.shape[0],), dtype=theta.dtype, device=array_api_compat.device(theta))
        for i, j, g in self._dense_outputs(theta, x):  # the loss per block: no (N, S, C) array
            risks[i:j] = loss(g, t)
        return risks

    def risk_matrix(self, theta, x, y):
        """Mean squared error of every network on every task sharing the inputs x.

        theta (N, M, D), x (S, d), y (S, P) -> (N, P); needs loss "mse" and one output. One forward
        pass per network serves all P tasks: R[n, p] = mean_s g_ns^2 - 2 mean_s g_ns y_sp + mean_s y_sp^2
        (a matrix product instead of an (N, S, P) array).
        """
        xp = namespace(theta, y)
        if self.loss != "mse" or self.n_outputs != 1:
            raise ValueError("risk_matrix needs loss='mse' and n_outputs=1")
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have shape ({x.shape[0]}, n_tasks), got {tuple(y.shape)}")
        g = self.forward(theta, x)[..., 0]
        n = x.shape[0]
        r = (xp.sum(g * g, axis=1)[:, None] - 2.0 * xp.matmul(g, y) + xp.sum(y * y, axis=0)[None, :]) / n
        return xp.maximum(r, xp.zeros_like(r))  # rounding can leave -1e-17 where the fit is exact

    def risk_and_grad(self, theta, x, y):
        """Risk (N,) and its analytic gradient with respect to theta, (N, M, D)."""
        xp = namespace(theta, x)
        self._check_theta(theta)
        mode = self._mode(theta)
        if mode != "dense":
            return self._compiled(theta, x, y, mode, grad_out=np.empty_like(theta))
        t = self.targets(y)
        x_aug = self._augment(x, theta.dtype)
        d, M = self.n_inputs, self.n_neurons
        risks = xp.empty((theta.shape[0],), dtype=theta.dtype, device=array_api_compat.device(theta))
        grad = xp.empty(theta.shape, dtype=theta.dtype, device=array_api_compat.device(theta))
        derivative = ACTIVATIONS[self.activation][1]
        for i, j in self._blocks(theta.shape[0], x.shape[0]):
            c = theta[i:j, :, d + 1 :]
            h = self._hidden(theta[i:j], x_aug)  # (S, B, M)
            risks[i:j], delta = LOSSES[self.loss](xp.matmul(self._per_network(h), c) / M, t, grad=True)
            grad[i:j, :, d + 1 :] = xp.matmul(xp.permute_dims(h, (1, 2, 0)), delta) / M
            # back through the activation: dR/dz = (delta c^T / M) * sigma'(z), laid out (S, B, M)
            dz = self._per_network(xp.matmul(delta, xp.matrix_transpose(c))) * derivative(h) / M
            # first-layer gradient of all B networks as one product (d + 1, S) @ (S, B M)
            g_w = xp.matmul(xp.matrix_transpose(x_aug), xp.reshape(dz, (x.shape[0], -1)))
            grad[i:j, :, : d + 1] = xp.permute_dims(xp.reshape(g_w, (d + 1, j - i, M)), (1, 2, 0))
        return risks, grad
