"""Array-namespace helpers: the numeric core is written against the array API standard.

numpy is the default and what CI tests; torch or cupy arrays work through
``array_api_compat`` wherever the core only uses standard functions.
"""

import array_api_compat
import numpy as np


def namespace(*arrays):
    """Array API namespace shared by ``arrays`` (numpy for plain Python/numpy input)."""
    return array_api_compat.array_namespace(*arrays)


def relu_(z):
    """ReLU in place (numpy fast path: no temporary the size of ``z``)."""
    if isinstance(z, np.ndarray):
        return np.maximum(z, 0, out=z)
    xp = namespace(z)
    return xp.maximum(z, xp.zeros_like(z))


def to_numpy(x):
    """Host copy of an array of any namespace, for recording and plotting."""
    return np.asarray(array_api_compat.to_device(x, "cpu")) if not isinstance(x, np.ndarray) else x
