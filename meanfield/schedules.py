"""Schedules for a parameter that changes during training (alpha of CBO, the noise of OT-CBO).

:class:`Constant` and :class:`Step` are functions of a count, ``__call__(count) -> float``, counted
from 0. The count is the epoch unless the schedule's ``unit`` is ``"iteration"`` (an alpha schedule
of finite CBO may use either; OT-CBO's noise decay always counts iterations).
:class:`EffectiveSampleSize` is no function of time: finite CBO solves for alpha at every step from
the particles' risks.
"""

import math
import numbers
import sys
from dataclasses import dataclass

import numpy as np

from meanfield._array import to_numpy
from meanfield._validate import check_number

__all__ = ["Constant", "Step", "EffectiveSampleSize", "ScheduleSpec", "make_schedule"]

_LOG_MAX = math.log(sys.float_info.max)


def _check_unit(name, value):
    if value not in UNITS:
        raise ValueError(f"{name} must be one of {list(UNITS)}, got {value!r}")


def _check_target(name, value):
    check_number(name, value, strict=True)
    if value > 1:
        raise ValueError(f"{name} must be in (0, 1], got {value}")


UNITS = ("epoch", "iteration")


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
    "unit": _check_unit,
    "target": _check_target,
    "maximum": lambda name, v: check_number(name, v, strict=True),
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
    unit = "epoch"  # a constant is the same at every count

    def __post_init__(self):
        _check_fields({"value": self.value})

    def __call__(self, epoch):
        return float(self.value)


@dataclass(frozen=True)
class Step:
    """``initial * factor ** (count // every)``, clipped at ``limit`` (a cap if factor > 1, a floor if < 1).

    The paper's alpha schedule for the sine study is ``Step(1e5, factor=10, every=100, limit=1e7)``:
    ``count`` is the epoch. With ``unit="iteration"`` it is the number of iterations (steps) done.
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
    unit: str = "epoch"

    def __post_init__(self):
        _check_fields({"initial": self.initial, "factor": self.factor, "every": self.every, "limit": self.limit,
                       "unit": self.unit})
        object.__setattr__(self, "every", int(self.every))  # a numpy integer would show in the repr

    def __repr__(self):  # the default unit is left out, so that epoch schedules keep their recorded repr
        unit = "" if self.unit == "epoch" else f", unit={self.unit!r}"
        return (f"Step(initial={self.initial!r}, factor={self.factor!r}, every={self.every!r}, "
                f"limit={self.limit!r}{unit})")

    def __call__(self, count):
        k = count // self.every
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


@dataclass(frozen=True)
class EffectiveSampleSize:
    r"""Alpha chosen at every step so that the Gibbs weights average ``target`` N particles.

    Solves :math:`N_{eff}(\alpha) = 1 / \sum_n \beta_n(\alpha)^2 = \mathrm{target} \cdot N` for
    :math:`\alpha \in [0, \mathrm{maximum}]` on the step's risks, as CBXpy's
    ``effective_sample_size`` scheduler does (Carrillo, Hoffmann, Stuart, Vaes 2022), but before the
    step's weights rather than after, and by bisection in :math:`\log\alpha` to a relative
    precision of about 1e-12 (N_eff decreases in alpha). Where even ``maximum`` keeps more than
    ``target`` N particles in the average, alpha is ``maximum``.

    Parameters
    ----------
    target : float
        Fraction of the particles in (0, 1]; 1 gives alpha = 0 (the plain mean).
    maximum : float
        Largest alpha, finite and > 0.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.consensus import effective_sample_size, gibbs_weights
    >>> risks = np.linspace(0.0, 1.0, 101)
    >>> alpha = EffectiveSampleSize(target=0.2, maximum=1e7).solve(risks)
    >>> round(float(effective_sample_size(gibbs_weights(risks, alpha))), 6)
    20.2
    """

    target: float
    maximum: float = 1e7
    unit = "step"

    def __post_init__(self):
        _check_fields({"target": self.target, "maximum": self.maximum})

    def __call__(self, count):
        """Undefined without risks: NaN (what a dataset records before the first step)."""
        return math.nan

    def solve(self, risks):
        """Alpha for the risks (N,) of one step; float64 risks on the host."""
        risks = np.asarray(risks, dtype=np.float64)
        finite = risks[np.isfinite(risks)]
        if finite.size == 0:
            return float(self.maximum)  # the weights raise their own diagnosis
        gap = finite - finite.min()
        wanted = self.target * risks.size

        def n_eff(alpha):  # the largest weight is exp(0) = 1: no overflow, the sums are >= 1
            w = np.exp(-alpha * gap)
            return float(w.sum() ** 2 / (w * w).sum())

        if self.target == 1 or not np.any(gap > 0):
            return 0.0 if self.target == 1 else float(self.maximum)
        if n_eff(self.maximum) >= wanted:
            return float(self.maximum)
        # N_eff(alpha) >= wanted below alpha_low: alpha * max(gap) small enough keeps every weight
        # within a factor e^-1e-12 of the others
        low, high = math.log(1e-12 / gap.max()), math.log(self.maximum)
        if n_eff(math.exp(low)) < wanted:
            return math.exp(low)
        for _ in range(100):
            if high - low < 1e-12:
                break
            mid = 0.5 * (low + high)
            low, high = (mid, high) if n_eff(math.exp(mid)) >= wanted else (low, mid)
        return math.exp(low)


def schedule_value(schedule, epoch, iteration, risks=None):
    """The value of ``schedule`` at a step: by epoch, by iteration (its ``unit``), or solved from the
    step's risks (:class:`EffectiveSampleSize`; only then are device risks copied to the host)."""
    if isinstance(schedule, EffectiveSampleSize):
        return schedule.solve(to_numpy(risks))
    return schedule(iteration if schedule.unit == "iteration" else epoch)


def require_epoch_schedule(name, schedule, method):
    """Refuse a schedule that ``method`` cannot follow (it counts epochs only)."""
    if schedule.unit != "epoch":
        raise ValueError(f"{name}: method {method!r} follows epoch schedules only (Constant, Step with "
                         f"unit='epoch'), got {schedule!r}; per-iteration and adaptive alpha are finite CBO's")
    return schedule


# what a schedule parameter accepts: a constant, a table with "kind", or a schedule
ScheduleSpec = float | dict | Constant | Step | EffectiveSampleSize


def make_schedule(spec: ScheduleSpec, name: str = "schedule",
                  unit: str = "epoch") -> Constant | Step | EffectiveSampleSize:
    """A schedule from a number (constant), a dict ``{"kind": "step", ...}`` or an instance.

    ``unit`` is what a step table without a ``unit`` key counts: "epoch" for alpha, "iteration" for
    OT-CBO's noise decay. Errors name the schedule: ``alpha.factor must be a finite number > 0, got inf``.
    """
    if isinstance(spec, (Constant, Step, EffectiveSampleSize)):
        return spec
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return Constant(check_number(name, float(spec)))
    if isinstance(spec, dict):
        spec = dict(spec)
        kind = spec.pop("kind", None)
        if kind == "step":
            spec.setdefault("unit", unit)
        kinds = {"constant": Constant, "step": Step, "effective_sample_size": EffectiveSampleSize}
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
