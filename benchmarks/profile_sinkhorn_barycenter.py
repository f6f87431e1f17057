r"""Where the time of a Sinkhorn OT-CBO run goes: the barycenter's support updates and their parts.

Runs the Sinkhorn half of ``studies/otcbo_square.toml`` (N = 100, relative_reg = 0.01,
barycenter_tol = 1e-6, S' = 2500, additive noise, the study's alpha and noise schedules) at one
width M for a few epochs, and reports, for every barycenter solve (the initial one, with all N
weights equal, and one per OT-CBO step):

* the support updates of its fixed point (at most ``barycenter_max_iter`` = 100) and whether it
  stopped converged (relative change of the objective at most 1e-6) or at the limit;
* the measures taking part (Gibbs weight at least 1e-12 of the largest);
* its CPU time.

The run's CPU time is then split, by timers wrapped around the solver's functions, into the
plans of the fixed point (the measures taking part, at every support update), the plans of the
other measures to the final support (every particle needs its map), Newton's method on the
semi-dual within both (:func:`meanfield.transport.entropic.newton`, and within it the batched
K x K solves and the log-sum-exp passes of the semi-dual), and the exact W2 distances of every
particle to the barycenter that the run records. One
thread (BLAS on one thread, as in the study runner's workers). The numbers depend on the machine
and its load; ``--epochs`` and ``--neurons`` set the size (the defaults take about 3 CPU minutes;
``--quick`` is a smoke run, not a measurement).
The result is printed in Markdown.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported, see the docstring

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import array_api_compat.numpy  # noqa: E402
import numpy as np  # noqa: E402

import meanfield  # noqa: E402
from meanfield import otcbo  # noqa: E402
from meanfield.network import TwoLayerNetwork  # noqa: E402
from meanfield.otcbo import OTCBO  # noqa: E402
from meanfield.problems import square  # noqa: E402
from meanfield.train import train  # noqa: E402
from meanfield.transport import SinkhornBarycenter, entropic  # noqa: E402
from meanfield.transport import barycenter as barycenter_module  # noqa: E402
from meanfield.transport.entropic import EntropicPlans  # noqa: E402

# What the run's time is split into: (label, namespace, attribute). The solver calls these through
# module globals, a class attribute and array_api_compat's numpy namespace, so timing wrappers put
# there see every call; nested parts are counted in their callers too.
PARTS = [
    ("barycenter: plans of the measures taking part, every support update", EntropicPlans, "solve"),
    ("barycenter: plans of the other measures to the final support (their maps)",
     barycenter_module, "barycenter_plans"),
    ("in both, Newton's method on the semi-dual", entropic, "newton"),
    ("  of which the batched K x K solves", array_api_compat.numpy.linalg, "solve"),
    ("  of which the semi-dual's log-sum-exp passes", entropic, "semi_dual"),
    ("W2 of every particle to the barycenter (recorded diagnostics)", otcbo, "w2_squared"),
]


class Timers:
    """CPU seconds spent in each function of PARTS, and a record of every barycenter solve."""

    def __init__(self):
        self.seconds = {label: 0.0 for label, _, _ in PARTS}
        self.at_init = None  # the seconds when the initial solve returned
        self.solves = []
        self.saved = [(namespace, name, getattr(namespace, name)) for _, namespace, name in PARTS]
        self.saved.append((SinkhornBarycenter, "solve", SinkhornBarycenter.solve))

    def timed(self, label, function):
        def wrapper(*args, **kwargs):
            cpu = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.process_time() - cpu
        return wrapper

    def __enter__(self):
        for label, namespace, name in PARTS:
            setattr(namespace, name, self.timed(label, getattr(namespace, name)))
        solve, solves, timers = SinkhornBarycenter.solve, self.solves, self

        def logged_solve(solver, measures, weights, init, warm_start=None):
            cpu = time.process_time()
            result = solve(solver, measures, weights, init, warm_start)
            beta = np.asarray(weights)
            solves.append({"updates": result.n_iter, "converged": result.converged,
                           "active": int(np.sum(beta >= solver.weight_threshold * beta.max())),
                           "cpu": time.process_time() - cpu})
            if len(solves) == 1:
                timers.at_init = dict(timers.seconds)
            return result

        SinkhornBarycenter.solve = logged_solve
        return self

    def __exit__(self, *exc):
        for namespace, name, function in self.saved:
            setattr(namespace, name, function)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=200, help="width M")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of 2 OT-CBO steps each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="M = 5, one epoch (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.neurons, args.epochs = 5, 1
    method = OTCBO(n_particles=100, dt=0.1, drift_rate=1.0, sigma_squared=1.2, noise="additive",
                   noise_decay={"kind": "step", "initial": 1.0, "factor": 0.9, "every": 100, "unit": "iteration"},
                   alpha={"kind": "step", "initial": 1e4, "factor": 10.0, "every": 100, "limit": 1e7},
                   barycenter="sinkhorn", relative_reg=0.01, barycenter_tol=1e-6, batch_size=2500,
                   init_scale=2.0)
    network = TwoLayerNetwork(n_inputs=1, n_outputs=1, n_neurons=args.neurons, activation="relu")
    problem = square(n_train=5000, n_test=2000, noise_std=0.01, seed=0)
    cpu = time.process_time()
    with Timers() as timers:
        train(method, network, problem, args.epochs, seed=args.seed)
    cpu = time.process_time() - cpu
    step_cpu = cpu - timers.solves[0]["cpu"]
    init, steps = timers.solves[0], timers.solves[1:]
    updates = sum(r["updates"] for r in timers.solves)
    print(f"meanfield {meanfield.__version__}, M = {args.neurons}, N = 100, {args.epochs} epochs "
          f"({len(steps)} OT-CBO steps), seed {args.seed}: {cpu:.1f} s of CPU in all\n")
    print("| solve | support updates | stopped at the limit | measures taking part | CPU (s) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| initial (equal weights) | {init['updates']} | {'no' if init['converged'] else 'yes'} | "
          f"{init['active']} | {init['cpu']:.2f} |")
    if steps:
        print(f"| per OT-CBO step, median [range] | {statistics.median(r['updates'] for r in steps):g} "
              f"[{min(r['updates'] for r in steps)}, {max(r['updates'] for r in steps)}] | "
              f"{sum(not r['converged'] for r in steps)} of {len(steps)} | "
              f"{statistics.median(r['active'] for r in steps):g} | "
              f"{statistics.median(r['cpu'] for r in steps):.2f} |")
    solving = sum(r["cpu"] for r in timers.solves)
    print(f"\n{updates} support updates in all; {solving:.1f} s of CPU in barycenter solves. "
          f"The OT-CBO steps, without the initial solve, took {step_cpu:.1f} s:\n")
    print("| part | CPU in the steps (s) | share of the steps | CPU in the initial solve (s) |")
    print("|---|---:|---:|---:|")
    for label, seconds in timers.seconds.items():
        in_steps = seconds - timers.at_init[label]
        print(f"| {label} | {in_steps:.1f} | {in_steps / step_cpu:.0%} | {timers.at_init[label]:.1f} |")


if __name__ == "__main__":
    main()
