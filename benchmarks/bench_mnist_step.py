r"""Time one iteration of the MNIST study's methods against this machine's matrix-product bound.

Setting (Fig. 4 of arXiv 2511.21466): N = 1000 networks of M = 20 relu neurons on d = 784 inputs and
C = 10 outputs (softmax cross-entropy), a minibatch of S' = 1000 images shared by all networks.
The inputs are i.i.d. U[0, 1] pixels and the labels uniform: the time of a step does not depend on
the values (no MNIST files needed).

The bound: a CBO iteration must evaluate every network's first layer, one product
(S', d + 1) @ (d + 1, N M) of 2 S' (d + 1) N M flops; its time, measured here in the same run,
dtype and BLAS thread count, is the ``gemm`` column. The hybrid's gradient needs a second product of
the same size (the first-layer gradient), so its bound is two. Everything else of an iteration
(second layer, loss, Gibbs weights, consensus, normal draws, update) is the overhead the ratio shows.

A second floor: a CBO iteration also draws one standard normal per coordinate of every particle,
N M (d + 1 + C) of them (float64 draws, rounded for float32 particles, as
:class:`meanfield.noise.NormalDraws` makes them), timed here as the ``draws`` column; the last column
is the iteration against GEMM + draws, what is left for everything else.

What is timed: the minimum over ``--repeats`` of the CPU time of this process for one call, after a
warm-up; CBO (``CBO.step``), hybrid CBO-Adam (gamma = 0.7) and Adam on one network, in float64 and
float32 (``TwoLayerNetwork(dtype=...)``), with the study's ``block_elements``. BLAS runs on one
thread unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS say otherwise (the study
runner's workers are single-threaded); freed memory is kept for reuse as the ``meanfield`` command
does. ``--quick`` is a smoke run on tiny sizes, not a measurement.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported, see the docstring

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from meanfield._array import keep_freed_memory  # noqa: E402
from meanfield.adam import Adam  # noqa: E402
from meanfield.cbo import CBO  # noqa: E402
from meanfield.hybrid import HybridCBOAdam  # noqa: E402
from meanfield.network import TwoLayerNetwork  # noqa: E402
from meanfield.noise import NormalDraws  # noqa: E402


def best_time(fn, repeats):
    """Minimum CPU time of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method (minimum reported)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    args = parser.parse_args(argv)
    n, m, s, d, repeats = (20, 5, 50, 30, 1) if args.quick else (1000, 20, 1000, 784, args.repeats)
    keep_freed_memory()
    print(f"numpy {np.__version__}, BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}; N = {n}, M = {m}, "
          f"S' = {s}, d = {d}, C = 10; minimum CPU time of {repeats}")
    rng = np.random.default_rng(0)
    x, labels = rng.uniform(0, 1, size=(s, d)), rng.integers(0, 10, size=s)
    print("| dtype | gemm (s) | draws (s) | CBO (s) | CBO / gemm | CBO / (gemm + draws) | hybrid (s) | "
          "hybrid / 2 gemm | Adam, 1 network (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for dtype in ("float64", "float32"):
        net = TwoLayerNetwork(d, 10, m, loss="cross_entropy", block_elements=4194304, dtype=dtype)
        inputs = x.astype(dtype)  # as train() casts the data once
        x_aug = np.concatenate([x, np.ones((s, 1))], axis=1).astype(dtype)
        weights = rng.uniform(-1, 1, size=(d + 1, n * m)).astype(dtype)
        t_gemm = best_time(lambda: x_aug @ weights, repeats)
        particles = np.zeros((n, m, d + 1 + 10), dtype=dtype)
        draw, draw_rng = NormalDraws(), np.random.default_rng(3)
        t_draws = best_time(lambda: draw(draw_rng, particles), repeats)
        times = {}
        for method in (CBO(n_particles=n, sigma_squared=1.4, alpha=1e5, batch_size=s),
                       HybridCBOAdam(gamma=0.7, n_particles=n, sigma_squared=1.2, alpha=1e4, batch_size=s),
                       Adam(lr=0.1, batch_size=s)):
            state = method.init(net, np.random.default_rng(1))
            noise = np.random.default_rng(2)

            def step():
                nonlocal state
                state = method.step(state, net, inputs, labels, 0, noise)

            times[method.name] = best_time(step, repeats)
        print(f"| {dtype} | {t_gemm:.3f} | {t_draws:.3f} | {times['cbo']:.3f} | {times['cbo'] / t_gemm:.2f}x | "
              f"{times['cbo'] / (t_gemm + t_draws):.2f}x | {times['hybrid']:.3f} | "
              f"{times['hybrid'] / (2 * t_gemm):.2f}x | {times['adam']:.4f} |")
    print("targets: CBO / gemm <= 1.5 in float32")


if __name__ == "__main__":
    main()
