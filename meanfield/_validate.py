"""Argument checks with messages that name the parameter and the allowed range."""

import math
import numbers


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


def check_workers(workers):
    """Thread count: an integer >= 1, or -1 for every CPU."""
    if not isinstance(workers, numbers.Integral) or isinstance(workers, bool) or not (
        workers >= 1 or workers == -1
    ):
        raise ValueError(f"workers must be an integer >= 1, or -1 for all CPUs, got {workers!r}")
    return int(workers)
