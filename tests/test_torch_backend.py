"""The torch backend: whole runs of every method give numpy's numbers, and device draws its statistics.

Skipped where torch is missing. On the CPU every test runs with torch's default device set to
"meta", so a tensor the code creates without naming its device cannot take part in the arithmetic
(what would put it on the wrong side of the bus on a GPU). ``MEANFIELD_TEST_DEVICE=cuda`` runs the
same tests on a GPU (``benchmarks/gpu_check.sh`` does).
"""

import os

import numpy as np
import pytest
from scipy import stats

from meanfield import CBO, Adam, TwoLayerNetwork, gibbs_weights, train
from meanfield.backend import DeviceGenerator, resolve
from meanfield.hybrid import HybridCBOAdam
from meanfield.multitask import MultiTaskCBO
from meanfield.otcbo import OTCBO, MultiTaskOTCBO
from meanfield.problems import Problem, shifted_sines, sine

torch = pytest.importorskip("torch", reason="the torch backend tests need PyTorch (pip install torch==2.13.0)")

DEVICE = os.environ.get("MEANFIELD_TEST_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def tensors_need_a_device():
    if DEVICE != "cpu":
        yield
        return
    previous = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(previous)


def _classes(n=60, seed=0):
    """Three Gaussian blobs in 4 dimensions, class indices as labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=2 * n)
    x = rng.normal(size=(2 * n, 4)) + np.eye(4)[y] * 2.0
    return Problem("blobs", x[:n], y[:n], x[n:], y[n:], "cross_entropy", 3)


METHODS = {
    "cbo": (lambda: CBO(n_particles=12, batch_size=20, alpha=1e3, sigma_squared=0.8), sine(60, 30)),
    "cbo_isotropic": (lambda: CBO(n_particles=12, batch_size=20, alpha=30.0, noise="isotropic", sigma_squared=0.01),
                      sine(60, 30)),
    "adam": (lambda: Adam(lr=0.01, batch_size=20, n_particles=3), sine(60, 30)),
    "hybrid": (lambda: HybridCBOAdam(gamma=0.7, n_particles=12, batch_size=20, alpha=1e3), sine(60, 30)),
    "multitask": (lambda: MultiTaskCBO(n_particles=12, batch_size=20, alpha=1e3), shifted_sines(3, 60, 30)),
    "multitask_independent": (lambda: MultiTaskCBO(shared=False, n_particles=12, batch_size=20, alpha=1e3),
                              shifted_sines(3, 60, 30)),
    "otcbo_exact": (lambda: OTCBO(n_particles=8, batch_size=20, alpha=1e3, sigma_squared=0.5,
                                  barycenter="exact"), sine(60, 30)),
    "otcbo_sinkhorn": (lambda: OTCBO(n_particles=8, batch_size=20, alpha=1e3, sigma_squared=0.5,
                                     barycenter="sinkhorn", relative_reg=0.05), sine(60, 30)),
    "multitask_otcbo": (lambda: MultiTaskOTCBO(n_particles=8, batch_size=20, alpha=1e3, sigma_squared=0.5),
                        shifted_sines(2, 60, 30)),
    "cbo_classes": (lambda: CBO(n_particles=10, batch_size=20, alpha=1e2, sigma_squared=0.5), _classes()),
    "hybrid_classes": (lambda: HybridCBOAdam(n_particles=10, batch_size=20, alpha=1e2), _classes()),
}


def _network(problem, n_neurons=6, **kwargs):
    return TwoLayerNetwork(problem.x_train.shape[1], problem.n_outputs, n_neurons, loss=problem.loss, **kwargs)


def _numbers(ds):
    """Every recorded number of a run except the wall times, by name."""
    skip = {"wall_time", "barycenter_time"}
    return {name: ds[name].values for name in ds.data_vars if name not in skip}


def _assert_runs_match(ds, reference, rtol, atol):
    got, want = _numbers(ds), _numbers(reference)
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("label", list(METHODS))
def test_every_method_on_torch_gives_numpys_numbers_in_float64(label):
    make, problem = METHODS[label]
    reference = train(make(), _network(problem), problem, epochs=3, seed=7)
    ds = train(make(), _network(problem, backend="torch", device=DEVICE, draws="host", dtype="float64"),
               problem, epochs=3, seed=7)
    assert int(ds.diverged_epoch) == -1
    # torch's and numpy's products sum in other orders: agreement to rounding, amplified over 3 epochs
    _assert_runs_match(ds, reference, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("label", ["cbo", "adam", "hybrid", "multitask", "otcbo_exact", "cbo_classes"])
def test_float32_on_torch_follows_numpy_float32(label):
    make, problem = METHODS[label]
    reference = train(make(), _network(problem, dtype="float32"), problem, epochs=3, seed=7)
    ds = train(make(), _network(problem, backend="torch", device=DEVICE, draws="host", dtype="float32"),
               problem, epochs=3, seed=7)
    # float32 rounding (6e-8) in other summation orders, amplified over 9 steps: about 1e3 ulps of O(1) values
    _assert_runs_match(ds, reference, rtol=1e-4, atol=5e-5)


def test_device_draws_are_seeded_by_the_stream_and_rounded_for_float32():
    a, b = DeviceGenerator(np.random.default_rng(3), DEVICE), DeviceGenerator(np.random.default_rng(3), DEVICE)
    other = DeviceGenerator(np.random.default_rng(4), DEVICE)
    x64, y64 = a.standard_normal((1000,)), b.standard_normal((1000,))
    assert x64.device.type == torch.device(DEVICE).type and x64.dtype == torch.float64
    assert torch.equal(x64, y64) and not torch.equal(x64, other.standard_normal((1000,)))
    x32 = a.standard_normal((1000,), dtype=torch.float32)
    assert torch.equal(x32, b.standard_normal((1000,)).to(torch.float32))
    u = a.uniform(-2.0, 2.0, (1000,))
    assert bool(torch.all((u >= -2.0) & (u < 2.0)))


def test_device_draws_are_standard_normal_and_uniform():
    gen = DeviceGenerator(np.random.default_rng(11), DEVICE)
    n = 100_000
    z = gen.standard_normal((n,)).cpu().numpy()
    # a fixed seed makes these deterministic; the bounds are 5 standard errors
    assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    u = gen.uniform(-1.0, 1.0, (n,)).cpu().numpy()
    assert stats.kstest(u, "uniform", args=(-1.0, 2.0)).pvalue > 1e-3


def test_runs_with_device_draws_have_the_statistics_of_host_draws():
    """Eight seeds of CBO on the sine with host and with device draws: the final risks of the two
    samples are indistinguishable (Mann-Whitney), and device-draw runs repeat exactly."""
    problem = sine(200, 100)

    def final(draws, seed):
        kwargs = {} if draws == "numpy" else dict(backend="torch", device=DEVICE, draws=draws, dtype="float32")
        method = CBO(n_particles=30, batch_size=50, alpha=1e3, sigma_squared=0.8)
        return train(method, _network(problem, 10, **kwargs), problem, epochs=15, seed=seed)

    host = [float(final("numpy", s).train_risk[-1]) for s in range(8)]
    device = [float(final("device", s).train_risk[-1]) for s in range(8)]
    assert stats.mannwhitneyu(host, device).pvalue > 0.01
    assert float(final("device", 3).train_risk[-1]) == device[3]
    assert device != host


def test_a_nan_risk_gives_nan_weights_on_a_device_and_the_run_records_its_divergence():
    w = gibbs_weights(torch.asarray([1.0, float("nan"), 2.0], device=DEVICE), 10.0)
    assert bool(torch.all(torch.isnan(w)))
    assert bool(torch.all(torch.isnan(gibbs_weights(torch.full((3,), float("inf"), device=DEVICE), 1.0))))
    problem = sine(60, 30)
    method = CBO(n_particles=8, batch_size=20, alpha=1.0, dt=1.0, drift_rate=1.0, sigma_squared=1e6, noise="isotropic")
    with pytest.warns(RuntimeWarning, match="diverged"):
        ds = train(method, _network(problem, backend="torch", device=DEVICE, draws="host"), problem, epochs=200,
                   seed=0)
    assert 1 <= int(ds.diverged_epoch) < 200
    assert np.all(np.isfinite(ds.train_risk.values[: int(ds.diverged_epoch)]))


def test_backend_settings_are_checked_before_any_compute():
    with pytest.raises(ValueError, match="backend must be one of"):
        TwoLayerNetwork(1, 1, 3, backend="jax")
    with pytest.raises(ValueError, match="draws must be one of"):
        TwoLayerNetwork(1, 1, 3, backend="torch", draws="gpu")
    with pytest.raises(ValueError, match="device must be 'cpu' with backend='numpy'"):
        TwoLayerNetwork(1, 1, 3, device="cuda")
    with pytest.raises(ValueError, match="needs backend='numpy'"):
        TwoLayerNetwork(1, 1, 3, backend="torch", evaluation="relu_1d")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            TwoLayerNetwork(1, 1, 3, backend="torch", device="cuda")
    assert resolve("torch", None, None, None) == ("cpu", "host", "float64")


def test_a_study_on_the_torch_backend_records_it_and_matches_the_numpy_study(tmp_path):
    from test_study import TINY

    from meanfield.cli import main
    from meanfield.schema import open_dataset

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    numpy_out, torch_out = tmp_path / "numpy.nc", tmp_path / "torch.nc"
    assert main(["run", str(path), "--out", str(numpy_out), "--no-progress", "--seeds", "1"]) == 0
    assert main(["run", str(path), "--out", str(torch_out), "--no-progress", "--seeds", "1",
                 "--set", "network.backend=torch", "--set", f"network.device={DEVICE}",
                 "--set", "network.draws=host", "--set", "network.dtype=float64"]) == 0
    ds, reference = open_dataset(torch_out), open_dataset(numpy_out)
    assert ds.attrs["network.backend"] == "torch" and ds.attrs["network.device"] == DEVICE
    assert ds.attrs["network.draws"] == "host" and ds.attrs["torch_version"] == torch.__version__
    assert reference.attrs["network.backend"] == "numpy" and reference.attrs["network.dtype"] == "float64"
    np.testing.assert_allclose(ds.train_risk.values, reference.train_risk.values, rtol=1e-9)


def test_a_study_refuses_an_unknown_backend_before_any_compute(tmp_path):
    from test_study import TINY

    from meanfield.cli import main

    path, out = tmp_path / "tiny.toml", tmp_path / "out.nc"
    path.write_text(TINY)
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--set", "network.backend=jax"]) != 0
    assert not out.exists() and not (tmp_path / "out.nc.cells").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_script_stops_with_a_diagnosis_without_cuda(tmp_path):
    import subprocess
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"
    env = {**os.environ, "OUT": str(tmp_path)}
    env.pop("WHEELS", None)
    done = subprocess.run(["bash", str(script), "tests"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and "sees no CUDA device" in done.stderr + done.stdout
