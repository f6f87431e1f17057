"""Schedules for a parameter that changes with the epoch (alpha of CBO, the noise of OT-CBO).

Each schedule has one method, ``__call__(epoch) -> float``; epochs count from 0.
"""

import math
import numbers
import sys
from dataclasses import dataclass

from meanfield._validate import check_number

__all__ = ["Constant", "Step", "make_schedule"]

_LOG_MAX = math.log(sys.float_info.max)


def _check_every(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


# The check of every field of Constant and Step, by name. make_schedule runs them with the schedule's
# name as prefix ("alpha.factor") before constructing; __post_init__ runs them again with plain names.
_FIELD_CHECKS = {
    "value": lambda name, v: check_number(name, v),
    "initial": lambda name, v: check_number(name, v),
    "factor": lambda name, v: check_number(name, v, strict=True),
    "every": _check_every,
    "limit": lambda name, v: v is None or check_number(name, v),
}


def _check_fields(fields, prefix=""):
    for key, value in fields.items():
        _FIELD_CHECKS[key](prefix + key, value)


def _exp(x):
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class Constant:
    """The same value at every epoch.

    >>> Constant(1e5)(42)
    100000.0
    """

    value: float

    def __post_init__(self):
        _check_fields({"value": self.value})

    def __call__(self, epoch):
        return float(self.value)


@dataclass(frozen=True)
class Step:
    """``initial * factor ** (epoch // every)``, clipped at ``limit`` (a cap if factor > 1, a floor if < 1).

    The paper's alpha schedule for the sine study is ``Step(1e5, factor=10, every=100, limit=1e7)``.
    A growing schedule never overflows: past the float range it is ``limit``, or inf without one.

    >>> s = Step(1e5, factor=10.0, every=100, limit=1e7)
    >>> [s(0), s(99), s(100), s(250), s(10_000)]
    [100000.0, 100000.0, 1000000.0, 10000000.0, 10000000.0]
    >>> Step(1e5, factor=10.0, every=1)(400)
    inf
    """

    initial: float
    factor: float
    every: int
    limit: float | None = None

    def __post_init__(self):
        _check_fields({"initial": self.initial, "factor": self.factor, "every": self.every, "limit": self.limit})
        object.__setattr__(self, "every", int(self.every))  # a numpy integer would show in the repr

    def __call__(self, epoch):
        k = epoch // self.every
        log_value = math.log(self.initial) + k * math.log(self.factor) if self.initial > 0 else -math.inf
        if self.initial == 0:
            value = 0.0
        elif log_value > _LOG_MAX + 1:
            # far past the float range: skip factor ** k, which would raise (or, with an int
            # factor, build a huge exact integer)
            value = math.inf
        else:
            try:
                value = float(self.initial * self.factor ** k)
            except OverflowError:  # factor ** k alone overflows; the product may still be finite
                value = _exp(log_value)
        if self.limit is not None:
            value = min(value, self.limit) if self.factor >= 1 else max(value, self.limit)
        return float(value)


def make_schedule(spec, name="schedule"):
    """A schedule from a number (constant), a dict ``{"kind": "step", ...}`` or an instance.

    Errors name the schedule: ``alpha.factor must be a finite number > 0, got inf``.
    """
    if isinstance(spec, (Constant, Step)):
        return spec
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return Constant(check_number(name, float(spec)))
    if isinstance(spec, dict):
        spec = dict(spec)
        kind = spec.pop("kind", None)
        kinds = {"constant": Constant, "step": Step}
        if kind not in kinds:
            raise ValueError(f"{name}.kind must be one of {sorted(kinds)}, got {kind!r}")
        allowed = set(kinds[kind].__dataclass_fields__)
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown key(s) {sorted(unknown)} in {name}; allowed: {sorted(allowed | {'kind'})}")
        _check_fields(spec, prefix=f"{name}.")
        try:
            return kinds[kind](**spec)
        except TypeError as err:
            raise ValueError(f"{name}: {err}") from None
    raise ValueError(f"{name} must be a number or a table with 'kind', got {spec!r}")
