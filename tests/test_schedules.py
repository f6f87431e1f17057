"""Schedules: the closed form, no overflow past the float range, and errors that name the field."""

import math
import random
import re

import numpy as np
import pytest

from meanfield import CBO
from meanfield.otcbo import OTCBO
from meanfield.schedules import Constant, EffectiveSampleSize, Step, make_schedule


def test_a_capped_step_never_overflows():
    s = Step(1e5, 10.0, 1, 1e7)
    assert s(310) == 1e7 and s(10**6) == 1e7
    assert Step(1e5, 10, 1, 1e7)(10**9) == 1e7  # an int factor must not build 10 ** 1e9 either
    assert Step(0.0, 10.0, 1, 1e7)(10**6) == 0.0
    assert Step(0, 10, 1)(10**9) == 0.0


def test_a_step_without_limit_reaches_inf_past_the_float_range():
    assert Step(1e5, 10.0, 1)(400) == math.inf
    assert Step(1, 10, 1)(400) == math.inf
    # factor ** k alone overflows while the product does not
    assert Step(1e-300, 10.0, 1)(310) == pytest.approx(1e10, rel=1e-12)


def test_a_step_is_bit_identical_to_the_closed_form_where_that_is_finite():
    rng = random.Random(0)  # Python numbers: ints and floats as a TOML file gives them
    checked = 0
    for _ in range(20_000):
        initial = rng.choice([0, 1, 1e4, 1e5, 10.0 ** rng.uniform(-30, 30)])
        factor = rng.choice([10, 2, 10.0, 0.9, 0.5, 1.0, 1, rng.uniform(0.01, 100)])
        every = rng.choice([1, 7, 100])
        limit = rng.choice([None, 1e7, 0.5, rng.uniform(0, 1e10)])
        epoch = rng.randrange(5000)
        try:
            expected = initial * factor ** (epoch // every)
            if limit is not None:
                expected = min(expected, limit) if factor >= 1 else max(expected, limit)
            expected = float(expected)
        except OverflowError:
            continue
        got = Step(initial, factor, every, limit)(epoch)
        assert got == expected and math.copysign(1, got) == math.copysign(1, expected), (
            initial, factor, every, limit, epoch)
        checked += 1
    assert checked > 10_000


def _step(**fields):
    return {"kind": "step", "initial": 1e5, "factor": 10.0, "every": 10, **fields}


@pytest.mark.parametrize("spec, match", [
    (_step(factor=math.inf), "alpha.factor must be a finite number > 0, got inf"),
    (_step(factor=0.0), "alpha.factor must be a finite number > 0, got 0.0"),
    (_step(factor="10"), "alpha.factor must be a finite number > 0, got '10'"),
    (_step(factor=True), "alpha.factor must be a finite number > 0, got True"),
    (_step(initial=math.nan), "alpha.initial must be a finite number >= 0, got nan"),
    (_step(initial=-1.0), "alpha.initial must be a finite number >= 0, got -1.0"),
    (_step(limit=math.inf), "alpha.limit must be a finite number >= 0, got inf"),
    (_step(limit=False), "alpha.limit must be a finite number >= 0, got False"),
    (_step(every=True), "alpha.every must be an integer >= 1, got True"),
    (_step(every=2.0), "alpha.every must be an integer >= 1, got 2.0"),
    (_step(every=0), "alpha.every must be an integer >= 1, got 0"),
    ({"kind": "constant", "value": math.inf}, "alpha.value must be a finite number >= 0, got inf"),
    (-1.0, "alpha must be a finite number >= 0, got -1.0"),
    (-1, "alpha must be a finite number >= 0, got -1.0"),
    (math.nan, "alpha must be a finite number >= 0, got nan"),
    (math.inf, "alpha must be a finite number >= 0, got inf"),
    (True, "alpha must be a number or a table with 'kind', got True"),
    ("1e5", "alpha must be a number or a table with 'kind', got '1e5'"),
])
def test_schedule_errors_name_the_schedule_and_the_field(spec, match):
    with pytest.raises(ValueError, match=f"^{re.escape(match)}$"):
        make_schedule(spec, "alpha")


def test_methods_name_their_schedules():
    with pytest.raises(ValueError, match="^alpha.factor must be a finite number > 0, got inf$"):
        CBO(alpha={"kind": "step", "initial": 1e5, "factor": math.inf, "every": 10})
    with pytest.raises(ValueError, match="^noise_decay.factor must be a finite number > 0, got inf$"):
        OTCBO(noise_decay={"kind": "step", "initial": 1.0, "factor": math.inf, "every": 10})
    with pytest.raises(ValueError, match="^alpha must be a finite number >= 0, got -1.0$"):
        OTCBO(alpha=-1.0)


@pytest.mark.parametrize("make, match", [
    (lambda: Step(1.0, math.inf, 1), "^factor must be a finite number > 0, got inf$"),
    (lambda: Step(math.inf, 2.0, 1), "^initial must be a finite number >= 0, got inf$"),
    (lambda: Step(1.0, 2.0, 1, math.inf), "^limit must be a finite number >= 0, got inf$"),
    (lambda: Step(1.0, 2.0, True), "^every must be an integer >= 1, got True$"),
    (lambda: Step(1.0, "2", 1), "^factor must be a finite number > 0, got '2'$"),
    (lambda: Constant(-1.0), "^value must be a finite number >= 0, got -1.0$"),
    (lambda: Constant(True), "^value must be a finite number >= 0, got True$"),
])
def test_schedules_used_directly_name_the_plain_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_numpy_numbers_are_accepted_and_the_repr_is_unchanged():
    assert make_schedule(np.float32(2.5), "alpha")(3) == 2.5
    s = Step(1e5, 10.0, np.int64(100), 1e7)
    assert repr(s) == "Step(initial=100000.0, factor=10.0, every=100, limit=10000000.0)"
    assert repr(make_schedule({"kind": "step", "initial": 1e4, "factor": 10, "every": 20}, "alpha")) == (
        "Step(initial=10000.0, factor=10, every=20, limit=None)")


# --- per-iteration and adaptive alpha ---------------------------------------------------------------

def test_epoch_schedules_keep_their_repr_and_iteration_ones_say_so():
    assert repr(Step(1e5, 10.0, 100, 1e7)) == "Step(initial=100000.0, factor=10.0, every=100, limit=10000000.0)"
    s = make_schedule({"kind": "step", "initial": 1e5, "factor": 10.0, "every": 100, "unit": "iteration"}, "alpha")
    assert s.unit == "iteration" and repr(s).endswith(", unit='iteration')")
    with pytest.raises(ValueError, match=r"^alpha.unit must be one of \['epoch', 'iteration'\], got 'step'$"):
        make_schedule({"kind": "step", "initial": 1.0, "factor": 2.0, "every": 1, "unit": "step"}, "alpha")


@pytest.mark.parametrize("target", [0.02, 0.1, 0.5, 0.9])
def test_effective_sample_size_alpha_gives_the_target_n_eff(target):
    """The solved alpha's Gibbs weights average target * N particles (checked with the library's
    weights and Kish's formula written out here)."""
    from meanfield.consensus import gibbs_weights

    risks = np.random.default_rng(int(100 * target)).gamma(2.0, 0.01, size=200)
    alpha = EffectiveSampleSize(target=target, maximum=1e12).solve(risks)
    w = gibbs_weights(risks, alpha)
    assert abs(1.0 / np.sum(w ** 2) - target * 200) < 1e-6 * 200


def test_effective_sample_size_alpha_limits():
    risks = np.linspace(0.0, 1.0, 11)
    assert EffectiveSampleSize(target=1.0).solve(risks) == 0.0
    assert EffectiveSampleSize(target=0.5, maximum=3.0).solve(risks) == 3.0  # N_eff(3) > 5.5: capped
    assert EffectiveSampleSize(target=0.5, maximum=3.0).solve(np.ones(11)) == 3.0  # ties: any alpha
    assert math.isnan(EffectiveSampleSize(target=0.5)(7))  # no value without risks
    for spec, match in [({"target": 0.0}, r"^alpha.target must be a finite number > 0, got 0.0$"),
                        ({"target": 1.5}, r"^alpha.target must be in \(0, 1\], got 1.5$"),
                        ({"target": 0.5, "maximum": math.inf}, "^alpha.maximum must be a finite number > 0, got inf$")]:
        with pytest.raises(ValueError, match=match):
            make_schedule({"kind": "effective_sample_size", **spec}, "alpha")


def test_cbo_follows_a_per_iteration_alpha_and_records_the_last_steps():
    from meanfield import TwoLayerNetwork, sine, train

    schedule = Step(10.0, 10.0, 3, 1e4, unit="iteration")
    cbo = CBO(n_particles=6, batch_size=25, alpha=schedule)
    net, rng = TwoLayerNetwork(1, 1, 3), np.random.default_rng(0)
    state = cbo.init(net, rng)
    x, y = rng.uniform(size=(25, 1)), rng.normal(size=25)
    for k in range(8):
        state = cbo.step(state, net, x, y, epoch=0, rng=rng)
        assert state.alpha == schedule(k) and state.iteration == k + 1
    ds = train(cbo, net, sine(n_train=100, n_test=10), epochs=3, seed=1)  # 4 iterations per epoch
    np.testing.assert_array_equal(ds.alpha.values, [10.0, 100.0, 1000.0, 1e4])


def test_epoch_only_methods_refuse_per_iteration_and_adaptive_alpha():
    from meanfield.hybrid import HybridCBOAdam
    from meanfield.multitask import MultiTaskCBO

    for alpha in (Step(1.0, 2.0, 1, unit="iteration"), EffectiveSampleSize(0.5)):
        for method in (HybridCBOAdam, MultiTaskCBO, OTCBO):
            with pytest.raises(ValueError, match=f"^alpha: method '{method.name}' follows epoch schedules only"):
                method(alpha=alpha)


def test_a_per_iteration_alpha_without_limit_is_refused_before_training():
    from meanfield import TwoLayerNetwork, sine, train

    cbo = CBO(n_particles=4, batch_size=10, alpha=Step(1e5, 10.0, 1, unit="iteration"))
    with pytest.raises(ValueError, match="^alpha reaches inf by iteration 3999; give its schedule a limit$"):
        train(cbo, TwoLayerNetwork(1, 1, 2), sine(n_train=100, n_test=10), epochs=400)
