r"""Diffusion of finite CBO: how the noise scales with the distance to the consensus.

Each strategy has one method, ``__call__(diff, xi, out=None)``, mapping the offsets
``diff = theta_n - V`` (N, ...) and standard normal draws ``xi`` of the same shape to the noise
direction; the update adds :math:`\sigma\sqrt{dt}` times it. ``out`` (numpy arrays only) is where
to write it, which may be ``xi`` itself; a user-supplied strategy may take only ``(diff, xi)``.
"""

import math

import array_api_compat
import numpy as np

from meanfield._array import namespace
from meanfield.backend import DeviceGenerator

__all__ = ["AnisotropicNoise", "IsotropicNoise", "AdditiveNoise", "make_noise", "NormalDraws"]


class NormalDraws:
    """Standard normal draws shaped and typed like the particles, into a reused buffer.

    A fresh array per step costs page faults at the sizes of the MNIST study; the buffer is
    overwritten by the next draw, so what it returns is scratch for one step. The draws are always
    float64 ones, rounded for float32 particles: a float32 run sees the noise of the float64 run
    with the same seed. Arrays of other libraries get host draws copied to their device, or with a
    :class:`~meanfield.backend.DeviceGenerator` for ``rng``, draws made on the device. ``rng`` may
    also be a :class:`~meanfield.backend.CoupledGenerator` (one stream per particle).

    Examples
    --------
    >>> import numpy as np
    >>> draw = NormalDraws()
    >>> xi = draw(np.random.default_rng(0), np.zeros((2, 3), dtype=np.float32))
    >>> xi.dtype, bool(np.array_equal(xi, np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)))
    (dtype('float32'), True)
    """

    def __init__(self):
        self._buffers = {}

    def _buffer(self, shape, dtype):
        buffer = self._buffers.get(dtype)
        if buffer is None or buffer.shape != shape:
            buffer = self._buffers[dtype] = np.empty(shape, dtype=dtype)
        return buffer

    def __call__(self, rng, like):
        if isinstance(rng, DeviceGenerator):  # drawn where `like` lives
            return rng.standard_normal(tuple(like.shape), dtype=like.dtype)
        if not isinstance(like, np.ndarray):
            xp = namespace(like)
            return xp.asarray(rng.standard_normal(tuple(like.shape)), dtype=like.dtype,
                              device=array_api_compat.device(like))
        xi = rng.standard_normal(out=self._buffer(like.shape, np.dtype(np.float64)))
        if like.dtype == xi.dtype:
            return xi
        out = self._buffer(like.shape, like.dtype)
        out[...] = xi
        return out

    def __getstate__(self):  # a method sent to another process does not carry its scratch
        return {"_buffers": {}}


class AnisotropicNoise:
    r"""Componentwise :math:`(\theta_n - V) \odot \xi_n` (eq. 21).

    Consensus forms for :math:`2\lambda > \sigma^2`, independently of the dimension.

    Examples
    --------
    >>> import numpy as np
    >>> AnisotropicNoise()(np.array([[1.0, -2.0]]), np.array([[0.5, 0.5]]))
    array([[ 0.5, -1. ]])
    """

    name = "anisotropic"

    def __call__(self, diff, xi, out=None):
        return diff * xi if out is None else np.multiply(diff, xi, out=out)

    @staticmethod
    def decay_bound(drift_rate, dim):
        """Largest sigma^2 for which the variance is guaranteed to decay (the continuous-time condition)."""
        return 2.0 * drift_rate

    @staticmethod
    def step_variance_factor(dt, drift_rate, sigma_squared, dim):
        r"""Mean factor of :math:`|\theta_n - V|^2` in one step about a fixed consensus,
        :math:`E[(1 - \lambda dt + \sigma\sqrt{dt}\,\xi)^2] = (1 - \lambda dt)^2 + \sigma^2 dt`
        per component: below 1 is the discrete-time condition for the variance to decay.

        >>> round(AnisotropicNoise.step_variance_factor(0.1, 1.0, 1.6, 300), 12)
        0.97
        """
        return (1.0 - drift_rate * dt) ** 2 + sigma_squared * dt


class IsotropicNoise:
    r""":math:`|\theta_n - V|\, \xi_n` with the Euclidean norm over a whole particle.

    Consensus forms for :math:`2\lambda > D_{total}\,\sigma^2`: the bound degrades with dimension.

    Examples
    --------
    >>> import numpy as np
    >>> IsotropicNoise()(np.array([[3.0, 4.0]]), np.array([[1.0, -1.0]]))
    array([[ 5., -5.]])
    """

    name = "isotropic"

    def __call__(self, diff, xi, out=None):
        xp = namespace(diff)
        flat = xp.reshape(diff, (diff.shape[0], -1))
        norm = xp.reshape(xp.sqrt(xp.sum(flat * flat, axis=1)), (-1,) + (1,) * (diff.ndim - 1))
        return norm * xi if out is None else np.multiply(norm, xi, out=out)

    @staticmethod
    def decay_bound(drift_rate, dim):
        return 2.0 * drift_rate / dim

    @staticmethod
    def step_variance_factor(dt, drift_rate, sigma_squared, dim):
        r"""As :meth:`AnisotropicNoise.step_variance_factor`, with every one of the ``dim`` components
        scaled by the whole norm: :math:`(1 - \lambda dt)^2 + \sigma^2 dt\, D`."""
        return (1.0 - drift_rate * dt) ** 2 + sigma_squared * dt * dim


class AdditiveNoise:
    r"""Additive :math:`\xi_n`, independent of the distance to the consensus (the paper's practical
    OT-CBO scheme, eq. 49-54, with a decreasing noise rate). It does not vanish at consensus, so no
    decay of the variance is guaranteed.

    Examples
    --------
    >>> import numpy as np
    >>> AdditiveNoise()(np.array([[3.0, 4.0]]), np.array([[1.0, -1.0]]))
    array([[ 1., -1.]])
    """

    name = "additive"

    def __call__(self, diff, xi, out=None):
        if out is None or out is xi:
            return xi
        out[...] = xi
        return out

    @staticmethod
    def decay_bound(drift_rate, dim):
        return 0.0

    @staticmethod
    def step_variance_factor(dt, drift_rate, sigma_squared, dim):
        """NaN: additive noise adds variance at consensus, no factor describes it."""
        return math.nan


_NOISES = {cls.name: cls for cls in (AnisotropicNoise, IsotropicNoise, AdditiveNoise)}


def make_noise(noise):
    """A noise strategy from its name ("anisotropic", "isotropic") or an instance."""
    if isinstance(noise, str):
        if noise not in _NOISES:
            raise ValueError(f"noise must be one of {sorted(_NOISES)}, got {noise!r}")
        return _NOISES[noise]()
    if not callable(noise):
        raise ValueError(f"noise must be one of {sorted(_NOISES)} or a callable, got {noise!r}")
    return noise
