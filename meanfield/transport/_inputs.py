"""Input checks, the working dtype and the BLAS thread limit shared by the transport solvers."""

from __future__ import annotations

import contextlib
import math
import threading

import array_api_compat
import numpy as np
from threadpoolctl import ThreadpoolController

METHODS = ("exact", "sinkhorn")


def namespace(*arrays):
    """Array namespace of ``arrays`` (lists and scalars become numpy arrays)."""
    arrays = [a if array_api_compat.is_array_api_obj(a) else np.asarray(a) for a in arrays]
    return array_api_compat.array_namespace(*arrays), arrays


def _as_float(xp, a, name):
    if xp.isdtype(a.dtype, "real floating"):
        return a
    if xp.isdtype(a.dtype, ("integral", "bool")):
        return xp.astype(a, xp.float64)
    raise ValueError(f"{name} must be real, got dtype {a.dtype}")


def check_atoms(xp, a, name, shape):
    """``a`` as a finite float array whose shape matches ``shape`` ("..." = any leading axes)."""
    a = _as_float(xp, a, name)
    fixed = len(shape) - 1 if shape[0] == "..." else len(shape)
    if a.ndim < fixed or (shape[0] != "..." and a.ndim != fixed):
        raise ValueError(
            f"{name} must have shape ({', '.join(shape)}), got shape {tuple(a.shape)}"
        )
    if 0 in a.shape[-2:]:
        raise ValueError(f"{name} needs at least one atom and one coordinate, got {tuple(a.shape)}")
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def check_weights(xp, w, n, dtype):
    w = _as_float(xp, w, "weights")
    if tuple(w.shape) != (n,):
        raise ValueError(f"weights must have shape (N,) = ({n},), got shape {tuple(w.shape)}")
    if not bool(xp.all(xp.isfinite(w))):
        raise ValueError("weights contains NaN or infinite values")
    if bool(xp.any(w < 0)):
        raise ValueError("weights must be non-negative")
    total = float(xp.sum(w))
    if abs(total - 1.0) > math.sqrt(xp.finfo(w.dtype).eps):
        raise ValueError(f"weights must sum to 1, got sum {total:.10g}")
    return xp.astype(w, dtype, copy=False)


def check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# Headroom of the cost bound below: with s the largest |coordinate|, |x|^2 and |y|^2 are at most
# D s^2 and |2 x.y| at most 2 D s^2, so every cost (and partial sum) lies within 4 D s^2 of 0; the
# assignment solver forms reduced costs and potentials a few times the costs' span and returns
# nonsense once they overflow. 256 D s^2 <= the largest float keeps that span 32 times below it.
_COST_HEADROOM = 256


def check_cost_scale(xp, dim, *centred, dtype=None):
    """Raise a FloatingPointError unless the squared distances between the atoms of ``centred``
    (arrays of dimension ``dim``, already centred as the cost is computed) stay finite with the
    headroom the solvers need, in ``dtype`` (the input dtype; default: that of ``centred``), so
    that the results are finite once returned in it. Called before any cost is formed: non-finite
    costs would make the compiled assignment solver read out of bounds, and Sinkhorn's kernels nan."""
    limit = math.sqrt(float(xp.finfo(centred[0].dtype if dtype is None else dtype).max)
                      / (_COST_HEADROOM * dim))
    for a in centred:
        if array_api_compat.size(a) == 0:
            continue
        size = max(float(xp.max(a)), -float(xp.min(a)))
        if not size <= limit:  # also catches nan (a centre that overflowed)
            raise FloatingPointError(
                "squared distances between atoms overflow (non-finite costs); the atoms are too large: "
                f"|coordinate| up to {size:.3g} after centring, the limit for D = {dim} is {limit:.3g}")


def work_dtype(xp):
    """The dtype the solvers compute in, whatever the inputs' real floating dtype (see
    :mod:`meanfield.transport`)."""
    return xp.float64


# The solvers' products are small: (M, D + 1) @ (D + 1, M) cost blocks, batched matrix-vector
# products and (K, M) @ (M, K) couplings in Sinkhorn-Newton. On them a multi-threaded BLAS spends
# more time dispatching to its threads than computing, and its idle threads spin, taking the cores
# the assignment solver (or the other worker threads) run on next. The solves therefore run with
# one BLAS thread and get their parallelism from ``workers`` instead. One controller serves every
# call: creating one scans the loaded libraries, which costs more than a small solve.
_BLAS_CONTROLLER = None
_BLAS_LOCK = threading.Lock()
_blas_users = 0
_blas_limiter = None


@contextlib.contextmanager
def one_blas_thread(xp):
    """Run the block with numpy's BLAS on one thread, restoring its setting afterwards.

    A no-op for other array namespaces (torch and cupy manage their own threads). Re-entrant and
    shared by concurrent callers: the first to enter sets the limit, the last to leave restores
    it, so threads solving at the same time do not restore each other's limit too early. The limit
    is process-wide: other threads' BLAS calls made meanwhile also run on one thread.
    """
    global _BLAS_CONTROLLER, _blas_users, _blas_limiter
    if not array_api_compat.is_numpy_namespace(xp):
        yield
        return
    with _BLAS_LOCK:
        if _blas_users == 0:
            if _BLAS_CONTROLLER is None:
                _BLAS_CONTROLLER = ThreadpoolController().select(user_api="blas")
            _blas_limiter = _BLAS_CONTROLLER.limit(limits=1)
        _blas_users += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


# --------------------------------------------------------------------------------------------------
# numerical core
# --------------------------------------------------------------------------------------------------
