r"""Diffusion of finite CBO: how the noise scales with the distance to the consensus.

Each strategy has one method, ``__call__(diff, xi)``, mapping the offsets
``diff = theta_n - V`` (N, ...) and standard normal draws ``xi`` of the same shape to the noise
direction; the update adds :math:`\sigma\sqrt{dt}` times it.
"""

from meanfield._array import namespace

__all__ = ["AnisotropicNoise", "IsotropicNoise", "AdditiveNoise", "make_noise"]


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

    def __call__(self, diff, xi):
        return diff * xi

    @staticmethod
    def decay_bound(drift, dim):
        """Largest sigma^2 for which the variance is guaranteed to decay."""
        return 2.0 * drift


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

    def __call__(self, diff, xi):
        xp = namespace(diff)
        flat = xp.reshape(diff, (diff.shape[0], -1))
        norm = xp.sqrt(xp.sum(flat * flat, axis=1))
        return xp.reshape(norm, (-1,) + (1,) * (diff.ndim - 1)) * xi

    @staticmethod
    def decay_bound(drift, dim):
        return 2.0 * drift / dim


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

    def __call__(self, diff, xi):
        return xi

    @staticmethod
    def decay_bound(drift, dim):
        return 0.0


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
