"""Schedules for a parameter that changes with the epoch (alpha of CBO, the noise of OT-CBO).

Each schedule has one method, ``__call__(epoch) -> float``; epochs count from 0.
"""

import math
from dataclasses import dataclass

__all__ = ["Constant", "Step", "make_schedule"]


@dataclass(frozen=True)
class Constant:
    """The same value at every epoch.

    >>> Constant(1e5)(42)
    100000.0
    """

    value: float

    def __post_init__(self):
        if not math.isfinite(self.value) or self.value < 0:
            raise ValueError(f"value must be finite and >= 0, got {self.value}")

    def __call__(self, epoch):
        return float(self.value)


@dataclass(frozen=True)
class Step:
    """``initial * factor ** (epoch // every)``, clipped at ``limit`` (a cap if factor > 1, a floor if < 1).

    The paper's alpha schedule for the sine study is ``Step(1e5, factor=10, every=100, limit=1e7)``.

    >>> s = Step(1e5, factor=10.0, every=100, limit=1e7)
    >>> [s(0), s(99), s(100), s(250), s(10_000)]
    [100000.0, 100000.0, 1000000.0, 10000000.0, 10000000.0]
    """

    initial: float
    factor: float
    every: int
    limit: float | None = None

    def __post_init__(self):
        if not math.isfinite(self.initial) or self.initial < 0:
            raise ValueError(f"initial must be finite and >= 0, got {self.initial}")
        if not self.factor > 0:
            raise ValueError(f"factor must be > 0, got {self.factor}")
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be an integer >= 1, got {self.every!r}")
        if self.limit is not None and not self.limit >= 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")

    def __call__(self, epoch):
        # exponent clipped so a long run cannot overflow before the limit applies
        value = self.initial * self.factor ** min(epoch // self.every, 1000)
        if self.limit is not None:
            value = min(value, self.limit) if self.factor >= 1 else max(value, self.limit)
        return float(value)


def make_schedule(spec, name="schedule"):
    """A schedule from a number (constant), a dict ``{"kind": "step", ...}`` or an instance."""
    if isinstance(spec, (Constant, Step)):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Constant(float(spec))
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
        try:
            return kinds[kind](**spec)
        except TypeError as err:
            raise ValueError(f"{name}: {err}") from None
    raise ValueError(f"{name} must be a number or a table with 'kind', got {spec!r}")
