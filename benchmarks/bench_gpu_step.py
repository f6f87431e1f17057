r"""Time one iteration of CBO, hybrid CBO-Adam and Adam at the paper's MNIST size on a torch device.

Setting (Fig. 4 of arXiv 2511.21466): N = 1000 networks of M = 20 relu neurons on d = 784 inputs and
C = 10 outputs (softmax cross-entropy), a minibatch of S' = 1000 images shared by all networks, with
the torch backend (``TwoLayerNetwork(backend="torch", device=...)``) and draws made on the device.
Inputs are i.i.d. U[0, 1] and labels uniform: the time of a step does not depend on the values.

The bound: a CBO iteration must evaluate every network's first layer, one product
(S', d + 1) @ (d + 1, N M); its time, measured here in the same run and dtype, is the ``gemm``
column, and the ratio of a step to it is the target of the GPU backend (CBO within 2x). The
hybrid's gradient needs a second product of that size, so its bound is two GEMMs. Adam trains one
network, so its row is a latency, not a throughput.

What is timed: the minimum over ``--repeats`` of the wall time of one call, with the device
synchronised before and after (``torch.cuda.synchronize``). TF32 stays off (torch's default for
matrix products), so float32 means float32. ``--quick`` is a smoke run on tiny sizes on any device
(CI runs it on the CPU), not a measurement.

Usage::

    python benchmarks/bench_gpu_step.py --device cuda --out results/gpu
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np


def best_time(fn, sync, repeats):
    """Minimum wall time of ``fn()`` over ``repeats`` synchronised calls after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, help="directory for gpu_step.json and gpu_step.md")
    args = parser.parse_args(argv)

    import torch

    from meanfield.adam import Adam
    from meanfield.cbo import CBO
    from meanfield.hybrid import HybridCBOAdam
    from meanfield.network import TwoLayerNetwork

    N, M, S, d, C = (20, 4, 50, 784, 10) if args.quick else (1000, 20, 1000, 784, 10)
    repeats = 2 if args.quick else args.repeats
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    net = TwoLayerNetwork(d, C, M, loss="cross_entropy", backend="torch", device=args.device, dtype=args.dtype,
                          draws="device")
    rng = np.random.default_rng(0)
    gen = net.generator(rng)
    x = net.asarray(rng.uniform(size=(S, d)), args.dtype)
    y = net.asarray(rng.integers(0, C, size=S))
    dtype = getattr(torch, args.dtype)
    x_aug = torch.rand((S, d + 1), dtype=dtype, device=device)
    w = torch.rand((d + 1, N * M), dtype=dtype, device=device)
    gemm = best_time(lambda: x_aug @ w, sync, repeats)

    methods = {
        "cbo": (CBO(n_particles=N, batch_size=S, sigma_squared=1.4, alpha=1e5), 1),
        "hybrid": (HybridCBOAdam(gamma=0.7, n_particles=N, batch_size=S, sigma_squared=1.2, alpha=1e4), 2),
        "adam": (Adam(lr=0.1, batch_size=S), None),
    }
    rows = []
    for name, (method, gemms) in methods.items():
        state = [method.init(net, gen)]

        def step(method=method, state=state):
            state[0] = method.step(state[0], net, x, y, 0, gen)

        seconds = best_time(step, sync, repeats)
        rows.append({"method": name, "step_ms": 1e3 * seconds,
                     "gemm_bound_ms": None if gemms is None else 1e3 * gemms * gemm,
                     "ratio": None if gemms is None else seconds / (gemms * gemm)})

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    meta = {"device": name, "dtype": args.dtype, "N": N, "M": M, "S": S, "d": d, "C": C,
            "gemm_ms": 1e3 * gemm, "gemm_tflops": 2 * S * (d + 1) * N * M / gemm / 1e12,
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32), "torch": torch.__version__, "quick": args.quick}
    title = (f"One iteration at N = {N}, M = {M}, S' = {S} on {name}, {args.dtype} "
             f"(GEMM (S', d + 1) @ (d + 1, N M): {meta['gemm_ms']:.3f} ms, {meta['gemm_tflops']:.1f} TFLOP/s)")
    lines = [title, "",
             "| method | step (ms) | GEMM bound (ms) | step / bound |", "|---|---|---|---|"]
    for row in rows:
        bound = "-" if row["ratio"] is None else f"{row['gemm_bound_ms']:.3f}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(f"| {row['method']} | {row['step_ms']:.3f} | {bound} | {ratio} |")
    print("\n".join(lines))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_step.json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
        (args.out / "gpu_step.md").write_text("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
