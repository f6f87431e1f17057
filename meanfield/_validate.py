"""Argument checks with messages that name the parameter and the allowed range."""

import math
import numbers

import numpy as np

from meanfield._array import namespace


def check_int(name, value, low=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_float(name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real number in [low, high] (open ends where asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
    if (low is not None and (value < low or (low_open and value == low))) or (
        high is not None and (value > high or (high_open and value == high))
    ):
        raise ValueError(f"{name} must be in {span}, got {value}")
    return float(value)


def check_number(name, value, low=0, strict=False):
    """A finite real number >= low (> low if ``strict``), not a bool; returned as given.

    >>> check_number("alpha", float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: alpha must be a finite number >= 0, got inf
    """
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and (value > low if strict else value >= low))
    if not ok:
        shown = value if isinstance(value, numbers.Real) and not isinstance(value, bool) else repr(value)
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low}, got {shown}")
    return value


def check_bool(name, value):
    """True or False (numpy bools too); strings, numbers and None are refused rather than read
    by truth value (bool("no") is True).

    >>> check_bool("shared", "no")
    Traceback (most recent call last):
    ...
    ValueError: shared must be true or false, got 'no'
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_class_indices(name, y, n_classes):
    """Raise a ValueError unless ``y`` is a 1-D array of class indices: integer-valued, in
    [0, n_classes - 1] (any array API array; integer-valued floats pass)."""
    xp = namespace(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must have shape (n_samples,) of class indices, got shape {tuple(y.shape)}")
    if not xp.isdtype(y.dtype, ("integral", "real floating")):
        raise ValueError(f"{name} must hold class indices, integers in [0, {n_classes - 1}], got dtype {y.dtype}")
    bad = (y < 0) | (y > n_classes - 1)
    if xp.isdtype(y.dtype, "real floating"):
        bad = bad | (y != xp.floor(y))  # also NaN
    if bool(xp.any(bad)):
        first = y[int(xp.argmax(xp.astype(bad, xp.int8)))]
        first = int(first) if xp.isdtype(y.dtype, "integral") else float(first)
        raise ValueError(f"{name} must hold class indices, integers in [0, {n_classes - 1}], got {first!r}")


def check_workers(workers):
    """Thread count: an integer >= 1, or -1 for every CPU."""
    if not isinstance(workers, numbers.Integral) or isinstance(workers, bool) or not (
        workers >= 1 or workers == -1
    ):
        raise ValueError(f"workers must be an integer >= 1, or -1 for all CPUs, got {workers!r}")
    return int(workers)
