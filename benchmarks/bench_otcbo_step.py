r"""Time one OT-CBO step against one finite-CBO step at equal N and M, on the square problem.

Setting (that of ``studies/otcbo_square.toml`` unless said otherwise): y = x^2 + 0.01 noise on
x ~ U[0, 1] (``meanfield.problems.square``, 5000 training samples), N = 100 networks of M relu
neurons with one input and one output (D = 3 numbers per neuron), M in {10, 50, 100, 200, 400};
dt = 0.1, lambda = 1, sigma^2 = 1.2, alpha = 1e4 (the study's first epochs), atoms U[-2, 2]; a
minibatch of S' = 100 samples (``--batch-size``; the study uses 2500).

* OT-CBO: ``OTCBO`` with additive noise decayed as in the study, and either barycenter: exact
  (``ExactBarycenter``, its defaults) or Sinkhorn at relative_reg = 0.05 (``--relative_reg``; the study's
  Sinkhorn runs use 0.01) and barycenter_tol = 1e-6, as the study. The step computes the risks,
  the Gibbs weights, the barycenter (warm-started from the previous step's result, as in a run),
  the W2 distances the run records and the move of every atom.
* CBO: ``CBO`` (finite CBO, anisotropic noise) with the same N, M, dt, lambda, sigma^2, alpha and
  minibatch: risks, weights, consensus, move.

Each is timed with the network built with ``evaluation="auto"`` (the default: for these
one-input ReLU networks, exact running sums, :mod:`meanfield.one_input`) and with
``evaluation="dense"`` (matrix products over blocks of networks, as for several inputs); where
``TwoLayerNetwork`` does not take ``evaluation``, the default network alone.

How it is timed: per M, all runs start from the same particles and the exact barycenter that
``OTCBO.init`` computes for them (the Sinkhorn runs too: their init solve, with all N weights
equal, costs far more than a step and is not what a step costs); each run makes one untimed
warm-up step (Sinkhorn's is cold-started), then up to ``--repeats`` timed steps, the runs
interleaved and fed the same minibatches. Times are the median CPU time of this process per step
(one thread: BLAS on one thread unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS
say otherwise, as in the study runner's workers, and ``--workers 1``); a run whose timed steps
exceed ``--budget`` seconds stops repeating (the ``steps`` column gives how many were timed).
``in barycenter`` is the median share of the OT-CBO step's wall time spent in the barycenter solve.
The OT-CBO steps follow the first iterations of a run from random atoms: later steps, with
particles closer to consensus, cost differently. Timings depend on the machine and its load;
``--quick`` is a smoke run on tiny sizes, not a measurement. The table is printed in Markdown.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported, see the docstring

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import importlib.metadata  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import threadpoolctl  # noqa: E402

import meanfield  # noqa: E402
from meanfield._array import keep_freed_memory  # noqa: E402
from meanfield.cbo import CBO, CBOState  # noqa: E402
from meanfield.network import TwoLayerNetwork  # noqa: E402
from meanfield.otcbo import OTCBO  # noqa: E402
from meanfield.problems import square  # noqa: E402

DT, LAMBDA, SIGMA_SQUARED, ALPHA, INIT_SCALE = 0.1, 1.0, 1.2, 1e4, 2.0
NOISE_DECAY = {"kind": "step", "initial": 1.0, "factor": 0.9, "every": 100}
FULL_SIZES, QUICK_SIZES = [10, 50, 100, 200, 400], [5, 10]


def make_network(m, evaluation):
    """The square study's network of width m with ``evaluation``; None where the installed
    ``TwoLayerNetwork`` has no such option."""
    if evaluation is None:
        return TwoLayerNetwork(n_inputs=1, n_outputs=1, n_neurons=m, activation="relu")
    try:
        return TwoLayerNetwork(n_inputs=1, n_outputs=1, n_neurons=m, activation="relu", evaluation=evaluation)
    except TypeError:
        return None


class Run:
    """One method on one network, stepping its own state; collects CPU and wall times per step."""

    def __init__(self, method, network, state, seed):
        self.method, self.network, self.state = method, network, state
        self.rng = np.random.default_rng(seed)
        self.cpu, self.wall, self.barycenter = [], [], []

    def step(self, x, y, timed):
        before = getattr(self.state, "barycenter_time", 0.0)
        cpu, wall = time.process_time(), time.perf_counter()
        self.state = self.method.step(self.state, self.network, x, y, 0, self.rng)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if timed:
            self.cpu.append(cpu)
            self.wall.append(wall)
            self.barycenter.append((getattr(self.state, "barycenter_time", 0.0) - before) / wall)


def time_width(m, args, evaluations, solvers):
    """Rows of the table for width m: {(solver, evaluation): (CBO run, OT-CBO run)}."""
    problem = square(n_train=5000, n_test=10, noise_std=0.01, seed=0)
    networks = {e: make_network(m, e) for e in evaluations}
    methods = {solver: OTCBO(n_particles=args.n_particles, dt=DT, drift_rate=LAMBDA, sigma_squared=SIGMA_SQUARED,
                             noise="additive", noise_decay=NOISE_DECAY, alpha=ALPHA, barycenter=solver,
                             relative_reg=args.relative_reg, barycenter_tol=1e-6 if solver == "sinkhorn" else 1e-9,
                             batch_size=args.batch_size, init_scale=INIT_SCALE, barycenter_workers=args.workers)
               for solver in solvers}
    cbo = CBO(n_particles=args.n_particles, dt=DT, drift_rate=LAMBDA, sigma_squared=SIGMA_SQUARED, alpha=ALPHA,
              noise="anisotropic", batch_size=args.batch_size, init_scale=INIT_SCALE)
    # One initial state for every run: the particles and their unweighted exact barycenter.
    start = OTCBO(n_particles=args.n_particles, init_scale=INIT_SCALE, batch_size=args.batch_size).init(
        networks[evaluations[0]], np.random.default_rng([args.seed, m]))
    cbo_runs = {e: Run(cbo, networks[e], CBOState(start.theta.copy()), args.seed) for e in evaluations}
    rows = {}
    for solver in solvers:
        for e in evaluations:
            state = copy.deepcopy(start)
            if solver == "sinkhorn":  # no exact result to warm-start the entropic solver
                state = dataclasses.replace(state, warm_start=None)
            rows[solver, e] = (cbo_runs[e], Run(methods[solver], networks[e], state, args.seed))
    runs = list(cbo_runs.values()) + [pair[1] for pair in rows.values()]
    batches = np.random.default_rng([args.seed, m, 1])
    for repeat in range(args.repeats + 1):
        idx = batches.choice(problem.n_train, size=args.batch_size, replace=False)
        x, y = problem.x_train[idx], problem.y_train[idx]
        for run in runs:
            if repeat == 0 or sum(run.cpu) < args.budget:
                run.step(x, y, timed=repeat > 0)
    return rows


def blas_setting():
    libs = [f"{lib['internal_api']} {lib.get('version')} on {lib['num_threads']} thread(s)"
            for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    env = ", ".join(f"{v}={os.environ.get(v)}"
                    for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    return f"BLAS: {'; '.join(libs) or 'none found'} ({env}); barycenter solves: one BLAS thread"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    parser.add_argument("--sizes", type=int, nargs="+", help="widths M (default: 10 50 100 200 400)")
    parser.add_argument("--solvers", nargs="+", choices=["exact", "sinkhorn"], default=["exact", "sinkhorn"])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per run after the warm-up (median)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="CPU seconds of timed steps beyond which a run is not repeated")
    parser.add_argument("--n-particles", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--relative_reg", type=float, default=0.05, help="Sinkhorn's relative regularisation")
    parser.add_argument("--workers", type=int, default=1, help="barycenter_workers of OT-CBO")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    if args.quick:
        args.n_particles, args.batch_size, args.repeats = 10, 20, 1
    keep_freed_memory()

    evaluations = ["auto", "dense"] if make_network(2, "dense") is not None else [None]
    print(f"meanfield {meanfield.__version__}, numpy {np.__version__}, numba {importlib.metadata.version('numba')}, "
          f"threadpoolctl {threadpoolctl.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(blas_setting())
    print(f"N = {args.n_particles}, S' = {args.batch_size}, D = 3 (relu, one input), alpha = {ALPHA:g}, "
          f"sigma^2 = {SIGMA_SQUARED}; exact; Sinkhorn relative_reg = {args.relative_reg:g}, barycenter_tol = 1e-6; "
          f"barycenter_workers = {args.workers}; median CPU time per step of up to {args.repeats} "
          "after one warm-up, runs interleaved")
    print()
    columns = ["M", "solver"]
    for e in evaluations:
        tag = "" if e in (None, "auto") else f", {e}"
        columns += [f"CBO{tag} [ms]", f"OT-CBO{tag} [ms]", f"OT-CBO / CBO{tag}", f"in barycenter{tag}"]
    columns.append("steps")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for m in sizes:
        rows = time_width(m, args, evaluations, args.solvers)
        for solver in args.solvers:
            cells, steps = [str(m), solver], []
            for e in evaluations:
                cbo, ot = rows[solver, e]
                t_cbo, t_ot = statistics.median(cbo.cpu), statistics.median(ot.cpu)
                ratio = f"{t_ot / t_cbo:.1f}" if t_ot < 100 * t_cbo else f"{t_ot / t_cbo:.0f}"
                cells += [f"{1e3 * t_cbo:.2f}", f"{1e3 * t_ot:.1f}", ratio,
                          f"{100 * statistics.median(ot.barycenter):.0f} %"]
                steps.append(len(ot.cpu))
            cells.append("/".join(map(str, steps)))
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
