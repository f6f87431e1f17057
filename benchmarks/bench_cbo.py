r"""Time one finite-CBO iteration of the sine study: ``meanfield`` against CBXpy, in one process.

Setting (Fig. 2 of arXiv 2511.21466): N = 200 networks of M = 100 relu neurons on d = 1 input and
C = 1 output (D = 3 numbers per neuron), a minibatch of S' = 800 samples shared by all networks,
anisotropic noise, alpha = 1e5 (constant), dt = 0.1, lambda = 1, sigma^2 = 1.6.

What is timed (median CPU time of this process over ``--repeats`` after one warm-up call, the
timings interleaved; same minibatch throughout; BLAS on one thread unless OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS / MKL_NUM_THREADS say otherwise, as in the study runner's workers; freed memory
kept for reuse by both codes, ``meanfield._array.keep_freed_memory``, as the ``meanfield`` command
does):

* ours   ``CBO.step``: risks of all N networks, Gibbs weights, consensus, move of every particle,
  with the default evaluation (exact running sums for one-input ReLU networks,
  :mod:`meanfield.one_input`);
* dense  the same step with ``TwoLayerNetwork(evaluation="dense")``: matrix products over blocks
  of networks, what every problem with more than one input uses;
* cbx    ``cbx.dynamics.CBO.step()`` on particles of shape (1, N, M*D) with the objective a CBXpy
  user writes: plain broadcasting numpy over (1, N, S', M). Its alpha scheduler is not involved
  (we call ``.step()`` ourselves; the 1.05x alpha growth lives only in ``optimize``) and particle
  batching is off (``batch_args={'size': N}``, CBXpy's default). Its default tracking and
  post-processing (NaN replacement, clipping to +-1e8) stay on, as a user would have them; the
  time of its step outside its objective call (measured inside the same step) is printed too;
* forward ``TwoLayerNetwork.risk`` alone on the same batch, to see how much of our step is not the
  forward pass.

How to read the output: ``ratio`` = cbx time / our time (target >= 30); ``throughput`` = N S' M
neuron evaluations per second of our step; ``outside forward`` = 1 - t_forward / t_step, the share
of our iteration spent on weights, consensus, noise and update. Before timing, the
script asserts on a tiny case that both objectives give the same per-particle risks
("objective check: ok") and that one step of each, fed the same normal draws, moves the particles
identically ("step check: ok"). Timings depend on BLAS threads and machine load; ``--quick`` is a
tiny smoke run for the tests, not a measurement.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported, see the docstring

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from cbx.dynamics import CBO as CbxCBO  # noqa: E402

from meanfield._array import keep_freed_memory  # noqa: E402
from meanfield.cbo import CBO, CBOState  # noqa: E402
from meanfield.network import TwoLayerNetwork  # noqa: E402
from meanfield.problems import sine  # noqa: E402

DT, LAMBDA, SIGMA_SQUARED, ALPHA = 0.1, 1.0, 1.6, 1e5


def cbx_objective(x, y, n_neurons):
    """Mean squared error of every particle on (x (S,), y (S,)): flat (R, N, M*3) -> (R, N).

    The flat particle is our (M, D) network read row by row, i.e. [w_1, b_1, c_1, w_2, ...].
    """
    def f(p):
        p = p.reshape(*p.shape[:-1], n_neurons, 3)
        w, b, c = p[..., 0], p[..., 1], p[..., 2]                           # (R, N, M)
        h = np.maximum(x[None, None, :, None] * w[..., None, :] + b[..., None, :], 0)  # (R, N, S, M)
        g = (h * c[..., None, :]).mean(-1)                                  # (R, N, S)
        return ((g - y) ** 2).mean(-1)
    return f


def make_cbx(theta, x, y, seed, **kwargs):
    """A CBXpy CBO on our particles theta (N, M, 3) and the minibatch (x (S, 1), y (S,))."""
    n, m, _ = theta.shape
    return CbxCBO(
        cbx_objective(x[:, 0], y, m), f_dim="3D", x=theta.reshape(1, n, m * 3).copy(),
        noise="anisotropic", alpha=ALPHA, dt=DT, lamda=LAMBDA, sigma=math.sqrt(SIGMA_SQUARED),
        batch_args={"size": n}, sampler=np.random.default_rng(seed).standard_normal,
        verbosity=0, **kwargs,
    )


def check_equivalence(seed=1, n=5, m=7, s=13):
    """Same risks and, with the same normal draws, the same step in both codes on a tiny case."""
    rng = np.random.default_rng(seed)
    net = TwoLayerNetwork(n_inputs=1, n_outputs=1, n_neurons=m)
    theta = rng.uniform(-1, 1, size=(n, m, 3))
    x, y = rng.uniform(0, 1, size=(s, 1)), rng.standard_normal(s)
    theirs = cbx_objective(x[:, 0], y, m)(theta.reshape(1, n, m * 3))[0]
    for evaluation in ("auto", "dense"):
        ours = TwoLayerNetwork(n_inputs=1, n_outputs=1, n_neurons=m, evaluation=evaluation).risk(theta, x, y)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    print("objective check: ok")

    # alpha = 10 so that several particles carry weight; check_f_dims off: it would consume draws
    cbo = CBO(n_particles=n, dt=DT, drift_rate=LAMBDA, sigma_squared=SIGMA_SQUARED, alpha=10.0, batch_size=s)
    new = cbo.step(CBOState(theta), net, x, y, 0, np.random.default_rng(seed))
    dyn = make_cbx(theta, x, y, seed, check_f_dims=False)
    dyn.alpha[:] = 10.0
    dyn.step()
    np.testing.assert_allclose(dyn.x.reshape(n, m, 3), new.theta, rtol=1e-10, atol=1e-12)
    print("step check: ok")


def median_times(fns, repeats):
    """Median CPU time of each callable; calls are interleaved so load changes hit all alike."""
    for fn in fns:
        fn()                                               # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            t0 = time.process_time()
            fn()
            t.append(time.process_time() - t0)
    return [statistics.median(t) for t in times]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per code (median reported)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    args = parser.parse_args(argv)
    n, m, s, repeats = (8, 10, 32, 1) if args.quick else (200, 100, 800, args.repeats)
    keep_freed_memory()

    print(f"cbx {importlib.metadata.version('cbx')}, numpy {np.__version__}, "
          f"BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}")
    print(f"N = {n} networks, M = {m} neurons, S' = {s}, d = C = 1, relu, anisotropic, "
          f"alpha = {ALPHA:g}, dt = {DT}, lambda = {LAMBDA}, sigma^2 = {SIGMA_SQUARED}; "
          f"median of {repeats}")
    check_equivalence()

    problem = sine()
    rng = np.random.default_rng(0)
    batch = rng.choice(problem.n_train, size=s, replace=False)
    x, y = problem.x_train[batch], problem.y_train[batch]
    net = TwoLayerNetwork(n_inputs=1, n_outputs=1, n_neurons=m)
    dense = TwoLayerNetwork(n_inputs=1, n_outputs=1, n_neurons=m, evaluation="dense")
    cbo = CBO(n_particles=n, dt=DT, drift_rate=LAMBDA, sigma_squared=SIGMA_SQUARED, alpha=ALPHA, batch_size=s)
    state = cbo.init(net, rng)
    theta0 = state.theta.copy()
    dense_state, dense_rng = CBOState(theta0.copy()), np.random.default_rng(1)

    def ours():
        nonlocal state
        state = cbo.step(state, net, x, y, 0, rng)

    def ours_dense():
        nonlocal dense_state
        dense_state = cbo.step(dense_state, dense, x, y, 0, dense_rng)

    dyn = make_cbx(theta0, x, y, seed=0)
    objective, inside = dyn.f, []                          # time cbx's objective inside its step

    def timed_objective(p):
        t0 = time.perf_counter()
        out = objective(p)
        inside.append(time.perf_counter() - t0)
        return out

    def cbx_rest():                                        # one step minus its objective call
        t0 = time.perf_counter()
        dyn.step()
        return time.perf_counter() - t0 - inside[-1]

    dyn.f = timed_objective
    rest = []
    t_ours, t_dense, t_forward, t_cbx = median_times(
        [ours, ours_dense, lambda: net.risk(theta0, x, y), lambda: rest.append(cbx_rest())], repeats)
    t_cbx_rest = statistics.median(rest[1:])

    print(f"ours  : {1e3 * t_ours:9.2f} ms / iteration (CPU time)")
    print(f"dense : {1e3 * t_dense:9.2f} ms / iteration (evaluation='dense')")
    print(f"cbx   : {1e3 * t_cbx:9.2f} ms / iteration "
          f"(outside its objective: {1e3 * t_cbx_rest:.2f} ms)")
    print(f"ratio cbx / ours : {t_cbx / t_ours:.1f}x (target >= 30x); cbx / dense : {t_cbx / t_dense:.1f}x")
    print(f"throughput : {n * s * m / t_ours:.3g} neuron evaluations / s")
    print(f"forward (net.risk) : {1e3 * t_forward:.2f} ms; outside forward : "
          f"{100 * (1 - t_forward / t_ours):.1f} % of our step")


if __name__ == "__main__":
    main()
