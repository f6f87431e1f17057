"""Array-namespace helpers: the numeric core is written against the array API standard.

numpy is the default and what CI tests; torch or cupy arrays work through
``array_api_compat`` wherever the core only uses standard functions.
"""

import ctypes
import ctypes.util
import numbers

import array_api_compat
import numpy as np

# glibc malloc settings that keep freed memory in the process (see keep_freed_memory); the study
# runner sets them in its worker processes through these environment variables
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": 2**28, "MALLOC_TRIM_THRESHOLD_": 2**30}


def namespace(*arrays):
    """Array API namespace shared by ``arrays`` (numpy for plain Python/numpy input)."""
    if arrays and all(type(a) is np.ndarray for a in arrays):  # the common case, without the general lookup
        return _NUMPY
    return array_api_compat.array_namespace(*arrays)


_NUMPY = array_api_compat.array_namespace(np.empty(0))


def host_floats(*arrays):
    """Whether ``arrays`` are C-contiguous numpy arrays of one floating dtype: what the compiled
    kernels of :mod:`meanfield.kernels` take."""
    dtype = arrays[0].dtype if isinstance(arrays[0], np.ndarray) else None
    return dtype in (np.float32, np.float64) and all(
        isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous for a in arrays)


def relu_(z):
    """ReLU in place (numpy fast path: no temporary the size of ``z``)."""
    if isinstance(z, np.ndarray):
        return np.maximum(z, 0, out=z)
    xp = namespace(z)
    return xp.maximum(z, xp.zeros_like(z))


def to_numpy(x):
    """Host copy of an array of any namespace (or a Python number), for recording and plotting."""
    if isinstance(x, np.ndarray | np.generic | numbers.Number):
        return np.asarray(x)
    return np.asarray(array_api_compat.to_device(x, "cpu"))


def keep_freed_memory():
    """Let glibc keep freed memory for reuse instead of returning it to the system.

    By default glibc serves large blocks by fresh ``mmap`` calls and returns freed heap above a
    threshold to the system, so every large numpy temporary of a training step is page-faulted in
    anew; on virtual machines that can cost more than the arithmetic. This raises the mmap
    threshold to 256 MiB and the trim threshold to 1 GiB (the process then holds up to that much
    freed memory). The ``meanfield`` command calls it; a Python user can call it, or start Python
    with the environment variables of ``MALLOC_SETTINGS``. Returns False where the C library is
    not glibc (nothing is changed there).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, MALLOC_SETTINGS["MALLOC_MMAP_THRESHOLD_"])
                and mallopt(m_trim_threshold, MALLOC_SETTINGS["MALLOC_TRIM_THRESHOLD_"]))
