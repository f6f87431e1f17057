"""OT-CBO: Proposition 3 (variance decay), measure-level identities, and a short run."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from meanfield import CBO, TwoLayerNetwork, otcbo, square, train
from meanfield.otcbo import OTCBO, MultiTaskOTCBO


def run_steps(method, net, n_steps, seed=0):
    rng = np.random.default_rng(seed)
    state = method.init(net, rng)
    x, y = rng.uniform(size=(50, 1)), rng.normal(size=50)
    states = [state]
    for _ in range(n_steps):
        states.append(method.step(states[-1], net, x, y, 0, rng))
    return states


@pytest.mark.parametrize("n_neurons, n_particles, dt", [(5, 4, 0.1), (12, 7, 0.5), (20, 3, 1.0), (8, 30, 0.25)])
def test_proposition_3_variance_decays_at_least_geometrically(n_neurons, n_particles, dt):
    """alpha = 0, no noise, warm-started exact barycenter: Var^{k+1} <= (1 - lambda dt)^2 Var^k."""
    drift_rate = 1.0 if dt < 1 else 0.9
    method = OTCBO(n_particles=n_particles, dt=dt, drift_rate=drift_rate, sigma_squared=0.0, alpha=0.0, batch_size=50)
    states = run_steps(method, TwoLayerNetwork(1, 1, n_neurons), 12)
    var = np.array([0.5 * s.w2.mean() for s in states[1:]])
    assert var[0] > 0
    # rounding only: the inequality is exact in exact arithmetic
    assert np.all(var[1:] <= (1 - drift_rate * dt) ** 2 * var[:-1] * (1 + 1e-12) + 1e-15), var[1:] / var[:-1]


def test_one_dimensional_step_moves_sorted_atoms_toward_their_average():
    """In 1-D the barycenter (alpha = 0) is the average of sorted atoms and the maps match by rank."""
    rng = np.random.default_rng(3)
    method = OTCBO(n_particles=4, dt=0.3, sigma_squared=0.0, alpha=0.0, batch_size=5)

    class OneD:  # a network whose neurons are 1-D atoms: risks are irrelevant at alpha = 0
        n_neurons, dim = 6, 1

        def init(self, n, scale, rng):
            return rng.uniform(-scale, scale, size=(n, 6, 1))

        def risk(self, theta, x, y):
            return np.zeros(theta.shape[0])

    state = method.init(OneD(), rng)
    new = method.step(state, OneD(), None, None, 0, rng)
    bary = np.sort(state.theta[..., 0], axis=1).mean(0)
    assert_allclose(np.sort(new.consensus[:, 0]), bary, rtol=1e-12)
    ranks = np.argsort(np.argsort(state.theta[..., 0], axis=1), axis=1)
    expected = state.theta[..., 0] + 0.3 * (bary[ranks] - state.theta[..., 0])
    assert_allclose(new.theta[..., 0], expected, rtol=1e-12)


def test_particles_that_are_permutations_of_one_network_are_at_consensus():
    """A measure does not see the order of its atoms: permuted copies have zero variance and do not
    move, even with multiplicative noise."""
    net = TwoLayerNetwork(1, 1, 6)
    rng = np.random.default_rng(4)
    base = net.init(1, 1.0, rng)[0]
    method = OTCBO(n_particles=5, sigma_squared=1.0, noise="anisotropic", alpha=1e3, batch_size=20)
    state = method.init(net, rng)
    state.theta = np.stack([base[rng.permutation(6)] for _ in range(5)])
    state.consensus = state.theta[2]
    x, y = rng.uniform(size=(20, 1)), rng.normal(size=20)
    new = method.step(state, net, x, y, 0, rng)
    assert_allclose(new.w2, 0.0, atol=1e-24)
    assert_allclose(new.theta, state.theta, rtol=0, atol=1e-15)


def test_additive_noise_decays_with_its_schedule():
    method = OTCBO(n_particles=3, sigma_squared=4.0, noise_decay={"kind": "step", "initial": 1.0, "factor": 0.5,
                                                                  "every": 2}, alpha=0.0, batch_size=10)
    assert [2.0 * method.noise_decay(k) for k in range(5)] == [2.0, 2.0, 1.0, 1.0, 0.5]


def test_noise_decay_counts_what_its_unit_says():
    """A step table without a unit counts iterations (the paper's decay), and says so in its repr; one
    with unit = "epoch" counts epochs. The step's noise rate follows the unit."""
    halving = {"kind": "step", "initial": 1.0, "factor": 0.5, "every": 2}
    per_iteration = OTCBO(sigma_squared=4.0, noise_decay=halving)
    per_epoch = OTCBO(sigma_squared=4.0, noise_decay={**halving, "unit": "epoch"})
    assert "unit='iteration'" in repr(per_iteration.noise_decay)
    state = otcbo.OTCBOState(theta=None, iteration=4)
    assert per_iteration.rates(state, epoch=0) == (1.0, 0.5)
    assert per_epoch.rates(state, epoch=0) == (1.0, 2.0)
    assert per_epoch.rates(state, epoch=2) == (1.0, 1.0)
    with pytest.raises(ValueError, match="noise_decay must be a number or a step schedule"):
        OTCBO(noise_decay={"kind": "effective_sample_size", "target": 0.5})


def test_short_run_on_square_lowers_the_risk_and_records_both_variances():
    method = OTCBO(n_particles=20, dt=0.1, sigma_squared=0.1, alpha=1e4, batch_size=250)
    ds = train(method, TwoLayerNetwork(1, 1, 10), square(n_train=500, n_test=100), 10, seed=0)
    assert ds.train_risk[-1] < 0.2 * ds.train_risk[0]
    for var in ("w_variance", "w_variance_weighted", "barycenter_iterations", "barycenter_time"):
        assert np.all(np.isfinite(ds[var])), var
    assert np.all(np.diff(ds.barycenter_iterations) > 0)
    assert int(ds.barycenter_unconverged[-1]) == 0  # exact, 100 fixed-point iterations allowed


@pytest.mark.parametrize("barycenter", ["exact", "sinkhorn"])
def test_barycenters_stopped_early_are_counted(barycenter):
    """Without a fixed-point update no solve is converged: each solve (initial + 2 per epoch x 3
    epochs) is counted, so users see when reported barycenters are not converged. (One update can
    be enough for the exact solver: the assignments may already repeat.)"""
    method = OTCBO(n_particles=6, dt=0.1, alpha=10.0, batch_size=50, barycenter=barycenter,
                   barycenter_max_iter=0, barycenter_tol=0.0)
    ds = train(method, TwoLayerNetwork(1, 1, 8), square(n_train=100, n_test=20), 3, seed=0)
    assert ds.barycenter_unconverged.values.tolist() == [1, 3, 5, 7]


def test_invalid_parameters():
    with pytest.raises(ValueError, match="barycenter must be one of"):
        OTCBO(barycenter="greedy")
    with pytest.raises(ValueError, match="noise must be one of"):
        OTCBO(noise="isotropic")
    with pytest.raises(ValueError, match=r"relative_reg must be"):
        OTCBO(barycenter="sinkhorn", relative_reg=0.0)
    with pytest.raises(ValueError, match=r"sinkhorn_tol must be"):
        OTCBO(sinkhorn_tol=-1.0)  # checked even when the exact solver is used
    with pytest.raises(ValueError, match=r"sinkhorn_max_iter must be"):
        OTCBO(barycenter="sinkhorn", sinkhorn_max_iter=0)


def test_sinkhorn_plan_limits_reach_the_solver():
    """Sinkhorn-Newton reaches the default 1e-9 at relative_reg = 0.01; three iterations per plan do not, unless
    the plan tolerance is loose."""
    def unconverged(**plan):
        method = OTCBO(n_particles=6, dt=0.1, alpha=10.0, batch_size=50, barycenter="sinkhorn", relative_reg=0.01,
                       barycenter_tol=1e-6, **plan)
        assert method.solver.sinkhorn_max_iter == plan.get("sinkhorn_max_iter", 1000)
        ds = train(method, TwoLayerNetwork(1, 1, 8), square(n_train=100, n_test=20), 2, seed=0)
        return int(ds.barycenter_unconverged[-1])

    assert unconverged() == 0
    assert unconverged(sinkhorn_max_iter=3) == 5  # all 5 solves of 2 epochs
    assert unconverged(sinkhorn_max_iter=3, sinkhorn_tol=1e-3) == 0


def test_decay_violations_counts_and_measures_failures():
    from meanfield.results import decay_violations

    v = np.array([9.0, 1.0, 0.81, 0.6561, 0.6561])  # epoch 0 skipped; then exact 0.81 decay, then a stall
    fraction, excess = decay_violations(v, 0.81)
    assert fraction == pytest.approx(1 / 3) and excess == pytest.approx(1 / 0.81 - 1)


def test_multitask_otcbo_matches_a_loop_over_tasks():
    from meanfield.consensus import gibbs_weights
    from meanfield.otcbo import MultiTaskOTCBO
    from meanfield.transport import ExactBarycenter

    net = TwoLayerNetwork(1, 1, 4)
    rng = np.random.default_rng(5)
    method = MultiTaskOTCBO(n_particles=6, dt=0.2, sigma_squared=0.0, alpha=20.0, batch_size=10)
    state = method.init(net, rng)
    x, y = rng.uniform(size=(10, 1)), rng.normal(size=(10, 3))
    new = method.step(state, net, x, y, 0, rng)
    for p in range(3):
        beta = gibbs_weights(net.risk(state.theta, x, y[:, p]), 20.0)
        result = ExactBarycenter().solve(state.theta, beta, state.consensus)
        assert_allclose(new.consensus[p], result.support, rtol=1e-12)
        for n in (2 * p, 2 * p + 1):  # blocks: particles 2p, 2p + 1 serve task p
            assert_allclose(new.theta[n], state.theta[n] + 0.2 * (result.maps[n] - state.theta[n]), rtol=1e-12)


def test_multitask_otcbo_single_task_equals_otcbo():
    from meanfield import shifted_sines, sine
    from meanfield.otcbo import MultiTaskOTCBO

    kwargs = dict(n_particles=5, dt=0.1, sigma_squared=0.2, noise="anisotropic", alpha=1e3, batch_size=40)
    net = TwoLayerNetwork(1, 1, 4)
    a = train(MultiTaskOTCBO(**kwargs), net, shifted_sines(n_tasks=1, n_train=80, n_test=20, noise_std=0.01), 3, seed=1)
    b = train(OTCBO(**kwargs), net, sine(n_train=80, n_test=20), 3, seed=1)
    assert_allclose(a.train_risk.sel(task=1), b.train_risk, rtol=1e-9)
    assert_allclose(a.w_variance.sel(task=1), b.w_variance, rtol=1e-9)


@pytest.mark.parametrize("multitask", [False, True])
def test_warm_started_steps_follow_the_cold_started_trajectory(multitask):
    """The state carries the last exact result to warm-start the next solve; dropping it each step
    must give the same particles (the warm start only saves assignment work)."""
    import dataclasses

    from meanfield.otcbo import MultiTaskOTCBO

    kwargs = dict(n_particles=8, dt=0.1, sigma_squared=0.5, noise="additive", alpha=50.0, batch_size=30)
    method = MultiTaskOTCBO(**kwargs) if multitask else OTCBO(**kwargs)
    net = TwoLayerNetwork(1, 1, 10)
    x = np.random.default_rng(6).uniform(size=(30, 1))
    y = np.sin(3 * x) + np.arange(2 if multitask else 1) if multitask else np.sin(3 * x[:, 0])
    warm_rng, cold_rng = np.random.default_rng(7), np.random.default_rng(7)
    warm = method.init(net, warm_rng)
    cold = method.init(net, cold_rng)
    for _ in range(6):
        warm = method.step(warm, net, x, y, 0, warm_rng)
        assert warm.warm_start is not None
        cold = method.step(dataclasses.replace(cold, warm_start=None), net, x, y, 0, cold_rng)
        assert_allclose(warm.theta, cold.theta, rtol=0, atol=1e-12)
    assert_allclose(warm.consensus, cold.consensus, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", ["OTCBO", "MultiTaskOTCBO"])
def test_drift_times_dt_above_one_is_refused(cls):
    """lambda dt > 1 moves every atom past its image under the map to the barycenter (Proposition 3
    needs lambda dt in (0, 1]); finite CBO keeps accepting it."""
    method = {"OTCBO": OTCBO, "MultiTaskOTCBO": MultiTaskOTCBO}[cls]
    message = ("drift_rate * dt must be <= 1 (the move toward the barycenter overshoots otherwise), "
               "got drift_rate = 20, dt = 0.1")
    with pytest.raises(ValueError, match=re.escape(message)):
        method(drift_rate=20.0, dt=0.1)
    with pytest.raises(ValueError, match=re.escape("got drift_rate = 1.5, dt = 0.7")):
        method(drift_rate=1.5, dt=0.7)
    method(drift_rate=10.0, dt=0.1)  # lambda dt = 1: every atom moves onto its image
    CBO(drift_rate=20.0, dt=0.1)


_ROOT = Path(otcbo.__file__).resolve().parents[1]  # the subprocess imports this copy of meanfield


@pytest.mark.parametrize("barycenter", ["exact", "sinkhorn"])
@pytest.mark.parametrize("phase", ["init", "step", "multitask step"])
def test_overflowing_atoms_raise_floating_point_error(barycenter, phase):
    """Atoms so large (init_scale = 1e200) that their squared distances overflow: init and step raise
    the transport's FloatingPointError, which the training loop records as a divergence. Run in a
    subprocess: the exact barycenter crashed the process on them before."""
    script = f"""
import numpy as np
from meanfield import TwoLayerNetwork
from meanfield.otcbo import OTCBO, MultiTaskOTCBO
net, rng = TwoLayerNetwork(1, 1, 4), np.random.default_rng(0)
phase = {phase!r}
try:
    if phase == "init":
        OTCBO(n_particles=5, batch_size=10, init_scale=1e200, barycenter={barycenter!r}).init(net, rng)
    else:
        multi = phase == "multitask step"
        method = (MultiTaskOTCBO if multi else OTCBO)(n_particles=6, batch_size=10, barycenter={barycenter!r})
        state = method.init(net, rng)
        state.theta = state.theta * np.array([1e200, 1.0, 1.0])  # input weights: the risks on x = 0 stay finite
        y = rng.normal(size=(10, 2) if multi else 10)
        method.step(state, net, np.zeros((10, 1)), y, 0, rng)
except FloatingPointError as err:
    print("FloatingPointError:", err)
else:
    print("no error")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=_ROOT)
    assert run.returncode == 0, f"exit status {run.returncode}\n{run.stderr[-3000:]}"
    assert "FloatingPointError: squared distances between atoms overflow" in run.stdout, run.stdout + run.stderr[-3000:]


@pytest.mark.parametrize("cls", [OTCBO, MultiTaskOTCBO])
def test_barycenter_workers_are_checked_and_reach_the_solvers(cls):
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match=re.escape(f"barycenter_workers must be an integer >= 1, or -1 for all "
                                                       f"CPUs, got {bad!r}")):
            cls(barycenter_workers=bad)
    assert cls(barycenter_workers=-1).solver.workers == -1
    assert cls(barycenter="sinkhorn", barycenter_workers=2).solver.workers == 2
    assert cls().barycenter_workers == 1


@pytest.mark.parametrize("barycenter", ["exact", "sinkhorn"])
def test_barycenter_workers_do_not_change_the_run(barycenter, monkeypatch):
    from meanfield.transport import entropic

    monkeypatch.setattr(entropic, "BLOCK_ENTRIES", 2 * 6 * 6)  # blocks of two measures to share
    runs = [train(OTCBO(n_particles=5, alpha=30.0, sigma_squared=0.1, batch_size=20, barycenter=barycenter,
                        relative_reg=0.1, barycenter_tol=1e-6, barycenter_max_iter=20, barycenter_workers=workers),
                  TwoLayerNetwork(1, 1, 6), square(n_train=40, n_test=10), 2, seed=3)
            for workers in (1, 2)]
    for var in ("train_risk", "w_variance", "w_variance_weighted", "barycenter_iterations"):
        assert_array_equal(runs[0][var].values, runs[1][var].values)


def test_sinkhorn_warm_started_steps_follow_the_cold_started_trajectory():
    """Each Sinkhorn solve starts from the previous step's potentials; its plans still reach
    sinkhorn_tol, so the particles follow the cold-started ones to about that tolerance
    (alpha = 0: all particles in the barycenter, a well-conditioned fixed point)."""
    import dataclasses

    method = OTCBO(n_particles=6, dt=0.1, sigma_squared=0.5, alpha=0.0, batch_size=20, barycenter="sinkhorn",
                   relative_reg=0.1, barycenter_tol=1e-10)
    net = TwoLayerNetwork(1, 1, 8)
    x = np.random.default_rng(6).uniform(size=(20, 1))
    y = np.sin(3 * x[:, 0])
    warm_rng, cold_rng = np.random.default_rng(7), np.random.default_rng(7)
    warm, cold = method.init(net, warm_rng), method.init(net, cold_rng)
    warm_iterations = cold_iterations = 0
    for _ in range(4):
        warm = method.step(warm, net, x, y, 0, warm_rng)
        cold = method.step(dataclasses.replace(cold, warm_start=None), net, x, y, 0, cold_rng)
        assert warm.warm_start.potentials.shape == (6, 8)
        warm_iterations += warm.warm_start.sinkhorn_iterations
        cold_iterations += cold.warm_start.sinkhorn_iterations
        assert_allclose(warm.theta, cold.theta, rtol=0, atol=1e-9)
    assert warm.barycenter_iterations == cold.barycenter_iterations
    assert warm_iterations <= cold_iterations


@pytest.mark.parametrize("barycenter", ["exact", "sinkhorn"])
def test_float32_particles_give_float32_barycenters_and_distances(barycenter):
    method = OTCBO(n_particles=5, alpha=10.0, batch_size=20, barycenter=barycenter, relative_reg=0.1,
                   barycenter_tol=1e-6)
    theta = np.random.default_rng(8).uniform(-2, 2, size=(5, 7, 3))
    weights = np.random.default_rng(9).dirichlet(np.ones(5))
    theta32, weights32 = theta.astype(np.float32), weights.astype(np.float32)
    result, w2, _ = method._barycenter(theta32, weights32, theta32[0])
    w2 = w2() if callable(w2) else w2  # Sinkhorn's is deferred
    assert result.support.dtype == result.maps.dtype == w2.dtype == np.float32
    ref, ref_w2, _ = method._barycenter(theta, weights, theta[0])
    ref_w2 = ref_w2() if callable(ref_w2) else ref_w2
    assert_allclose(result.support, ref.support, rtol=0, atol=1e-5)
    assert_allclose(w2, ref_w2, rtol=1e-5)
    net = TwoLayerNetwork(1, 1, 7, dtype="float32")
    rng = np.random.default_rng(10)
    state = method.init(net, rng)
    state = method.step(state, net, rng.uniform(size=(20, 1)), rng.normal(size=20), 0, rng)
    assert state.consensus.dtype == state.w2.dtype == np.float32


def test_sinkhorn_steps_defer_the_exact_distances_to_their_first_read(monkeypatch):
    """The recorded W2^2 to an entropic barycenter costs N assignments: a step leaves it to the first
    read (once per recorded epoch), which gives W2^2 of the particles entering the step to its support."""
    calls = []
    real = otcbo.w2_squared

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(otcbo, "w2_squared", counting)
    method = OTCBO(n_particles=6, alpha=10.0, batch_size=20, barycenter="sinkhorn", relative_reg=0.1,
                   barycenter_tol=1e-6, sigma_squared=0.5)
    net = TwoLayerNetwork(1, 1, 5)
    rng = np.random.default_rng(11)
    state = method.init(net, rng)
    first = method.step(state, net, rng.uniform(size=(20, 1)), rng.normal(size=20), 0, rng)
    second = method.step(first, net, rng.uniform(size=(20, 1)), rng.normal(size=20), 0, rng)
    assert calls == []
    w2 = second.w2
    assert calls == [1] and second.w2 is w2 and calls == [1]
    assert_array_equal(w2, real(first.theta, second.consensus))
    assert len(calls) == 1
