r"""Time the free-support W2 barycenters of ``meanfield.transport`` against POT's.

Cases (N measures of M atoms in R^D): (100, 100, 3), (100, 20, 800), (50, 500, 3). Atoms and the
initial support are i.i.d. U[-2, 2] (the atom law of the paper's OT experiment), weights are
Dirichlet(1); every case has its own fixed seed. Both solvers start from the same support.

* exact: ``ExactBarycenter()`` (defaults: max_iter = 100, tol = 1e-9 relative) against
  ``ot.lp.free_support_barycenter`` (numItermax = 100, its default stopThr). Both run the same fixed
  point to the same end: once the assignments repeat, the support no longer moves.
* sinkhorn: ``SinkhornBarycenter(relative_reg=0.05)`` against ``ot.bregman.free_support_sinkhorn_barycenter``
  with ``method='sinkhorn_log'`` and the same absolute regularisation (``result.epsilon``), both
  for exactly ``--sinkhorn-iters`` support updates (tol = 0, stopThr = 0) and at most 1000
  iterations per plan (POT's default numInnerItermax). Ours solves each plan to a marginal L1 error
  of 1e-9 (Sinkhorn steps, then Newton's method; potentials warm-started across updates); POT's
  log-domain Sinkhorn stops at its 1000 iterations, short of that on these cases.
* One more exact row with Gibbs weights softmax(-alpha R), R ~ U[0, 1], alpha = 300, as OT-CBO
  produces them: most weights are below 1e-12 of the largest (the weights column shows
  "gibbs:k", k the number above) and ours skips those measures in the iterations (not in the final
  maps); POT solves all of them every iteration.
* One more exact row as OT-CBO calls the solver ("step"): the measures of the first row after one
  OT-CBO move towards its barycenter (dt = 0.1, additive noise 0.05 sqrt(dt)), and the barycenter
  started from the previous one. Ours also takes the previous result as ``warm_start`` (its
  assignments and dual potentials); POT starts from the same support, which is all it can take.

Columns: time of ours and of POT in seconds (minimum over ``--repeats`` interleaved runs; a run
longer than ``--budget`` seconds is not repeated), POT/ours, the objective
(1/2) sum_n beta_n W2^2(Y, mu_n) evaluated with POT's exact ``ot.emd2`` on both final supports
(cost matrices from the differences, so no cancellation floor)
(ours/POT; 1 = same quality), and the support updates each made. Our solver also returns the maps of
all N measures to the barycenter; POT's time does not include computing them.

BLAS runs single-threaded for both unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS
are set: the assignment and network-simplex solvers are single-threaded anyway, and on a loaded
machine OpenBLAS threads busy-wait (measured here: 2-4x slower runs of both libraries). Our solvers
limit numpy's BLAS to one thread during a solve in any case; the setting matters for POT. Timings
depend on the machine and its load; ``--quick`` is a smoke run on tiny cases, not a measurement.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported, see the docstring

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import ot  # noqa: E402

from meanfield.transport import ExactBarycenter, SinkhornBarycenter  # noqa: E402

FULL_CASES = [(100, 100, 3), (100, 20, 800), (50, 500, 3)]
QUICK_CASES = [(8, 10, 2), (6, 5, 30)]


def make_case(n, m, d, weights="dirichlet", seed=0):
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, m, d]))
    measures = rng.uniform(-2.0, 2.0, size=(n, m, d))
    init = rng.uniform(-2.0, 2.0, size=(m, d))
    if weights == "dirichlet":
        beta = rng.dirichlet(np.ones(n))
    else:  # Gibbs weights of OT-CBO at alpha = 300
        logits = -300.0 * rng.uniform(size=n)
        beta = np.exp(logits - logits.max())
        beta /= beta.sum()
    return measures, beta, init


def exact_objective(measures, beta, support):
    """(1/2) sum_n beta_n W2^2(support, mu_n), by POT's network simplex."""
    m = measures.shape[1]
    a, b = np.full(m, 1.0 / m), np.full(support.shape[0], 1.0 / support.shape[0])
    cost = lambda x: ((x[:, None, :] - support[None, :, :]) ** 2).sum(axis=2)  # noqa: E731
    return 0.5 * sum(w * ot.emd2(a, b, cost(x), numItermax=10**8) for x, w in zip(measures, beta))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def compare(ours, pot, repeats, budget):
    """Interleaved runs; minimum time of each and the outputs of the last run."""
    best_ours = best_pot = float("inf")
    for _ in range(repeats):
        t_ours, res = timed(ours)
        t_pot, pot_out = timed(pot)
        best_ours, best_pot = min(best_ours, t_ours), min(best_pot, t_pot)
        if t_ours + t_pot > budget:
            break
    return best_ours, best_pot, res, pot_out


def run_exact(measures, beta, init, repeats, budget, warm_start=None):
    n, m, _ = measures.shape
    masses = [np.full(m, 1.0 / m)] * n
    t_ours, t_pot, res, (support, log) = compare(
        lambda: ExactBarycenter().solve(measures, beta, init, warm_start=warm_start),
        lambda: ot.lp.free_support_barycenter(list(measures), masses, init, weights=beta,
                                              numItermax=100, log=True),
        repeats, budget)
    return t_ours, t_pot, res, support, len(log["displacement_square_norms"])


def otcbo_move(measures, beta, init, seed):
    """The measures after one OT-CBO step to their barycenter, and that barycenter's result."""
    first = ExactBarycenter().solve(measures, beta, init)
    noise = np.random.default_rng(seed).standard_normal(measures.shape)
    moved = measures + 0.1 * (first.maps - measures) + 0.05 * np.sqrt(0.1) * noise
    return moved, first


def mixture_scale(measures, beta):
    """Mean squared distance of two atoms drawn from sum_n beta_n mu_n (SinkhornBarycenter's scale)."""
    mean = beta @ measures.mean(axis=1)
    return 2.0 * beta @ ((measures - mean) ** 2).sum(axis=2).mean(axis=1)


def run_sinkhorn(measures, beta, init, iters, repeats, budget, relative_reg=0.05):
    n, m, _ = measures.shape
    masses = [np.full(m, 1.0 / m)] * n
    eps = relative_reg * mixture_scale(measures, beta)

    def pot():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # POT warns on each plan that hits numInnerItermax
            return ot.bregman.free_support_sinkhorn_barycenter(
                list(measures), masses, init, eps, weights=beta, numItermax=iters,
                numInnerItermax=1000, stopThr=0.0, method="sinkhorn_log")

    solver = SinkhornBarycenter(relative_reg=relative_reg, max_iter=iters, tol=0.0)
    t_ours, t_pot, res, support = compare(lambda: solver.solve(measures, beta, init), pot,
                                          repeats, budget)
    if not np.isclose(res.epsilon, eps, rtol=1e-12):
        raise AssertionError(f"epsilon mismatch: ours {res.epsilon}, passed to POT {eps}")
    return t_ours, t_pot, res, support, iters


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, not a measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per case (min taken)")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="seconds (ours + POT) beyond which a case is not repeated")
    parser.add_argument("--sinkhorn-iters", type=int, default=3,
                        help="support updates of both Sinkhorn barycenters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--solver", choices=["exact", "sinkhorn"], help="run only this solver's rows")
    args = parser.parse_args(argv)
    cases = QUICK_CASES if args.quick else FULL_CASES
    repeats = 1 if args.quick else args.repeats

    print(f"POT {ot.__version__}, numpy {np.__version__}, "
          f"scipy {importlib.metadata.version('scipy')}, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    print(f"times: min over up to {repeats} interleaved runs; objective = (1/2) sum beta W2^2 "
          "by ot.emd2 on each final support")
    header = (f"{'solver':9} {'N':>4} {'M':>4} {'D':>4} {'weights':>9} {'ours[s]':>9} "
              f"{'POT[s]':>9} {'POT/ours':>9} {'obj ours/POT':>13} {'updates ours/POT':>17}")
    print(header)
    print("-" * len(header))
    ExactBarycenter().solve(*make_case(3, 4, 2))  # loads the compiled assignment solver untimed
    rows = [("exact", c, "dirichlet") for c in cases]
    rows += [("exact", cases[0], "gibbs"), ("exact", cases[0], "step")]
    rows += [("sinkhorn", c, "dirichlet") for c in cases]
    rows = [row for row in rows if args.solver in (None, row[0])]
    for solver, (n, m, d), weights in rows:
        measures, beta, init = make_case(n, m, d, "dirichlet" if weights == "step" else weights, args.seed)
        warm_start = None
        if weights == "step":
            measures, warm_start = otcbo_move(measures, beta, init, args.seed)
            init = warm_start.support
        if solver == "exact":
            t_ours, t_pot, res, support, pot_updates = run_exact(
                measures, beta, init, repeats, args.budget, warm_start)
        else:
            t_ours, t_pot, res, support, pot_updates = run_sinkhorn(
                measures, beta, init, args.sinkhorn_iters, repeats, args.budget)
        if weights == "gibbs":
            weights = f"gibbs:{int((beta >= 1e-12 * beta.max()).sum())}"
        ratio = exact_objective(measures, beta, res.support) / exact_objective(measures, beta, support)
        print(f"{solver:9} {n:4d} {m:4d} {d:4d} {weights:>9} {t_ours:9.3f} {t_pot:9.3f} "
              f"{t_pot / t_ours:9.1f} {ratio:13.9f} {f'{res.n_iter}/{pot_updates}':>17}", flush=True)


if __name__ == "__main__":
    main()
