"""Convergence in N and M: the analysis against loops, and the quick studies' orders and Proposition 3.

CI runs the quick variants on small grids and asserts on them; the full grids are the committed
studies (docs/convergence.md).
"""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from meanfield import TwoLayerNetwork
from meanfield.cli import main
from meanfield.convergence import network_outputs, rate_rows, strong_errors
from meanfield.results import decay_factor, decay_violations
from meanfield.schema import open_dataset

STUDIES = Path(__file__).parents[1] / "studies"


def test_network_outputs_equal_the_forward_pass_and_skip_padding():
    rng = np.random.default_rng(0)
    theta = rng.uniform(-1, 1, size=(3, 7, 3))
    padded = np.concatenate([theta, np.full((3, 4, 3), np.nan)], axis=1)  # narrower networks are NaN-padded
    grid = np.linspace(0, 1, 11)
    params = xr.DataArray(padded, dims=("case", "neuron", "component"), coords={"component": ["w_1", "b", "c_1"]})
    got = network_outputs(params, grid).transpose("case", "x").values
    want = TwoLayerNetwork(1, 1, 7).forward(theta, grid[:, None])[..., 0]
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def _synthetic(sizes=(4, 8, 16), seeds=3, epochs=2, neurons=5):
    rng = np.random.default_rng(1)
    p = rng.normal(size=(1, len(sizes), seeds, epochs + 1, neurons, 3))
    ds = xr.Dataset({"reported_params": (("method_label", "N", "seed", "epoch", "neuron", "component"), p)},
                    coords={"method_label": ["cbo"], "N": list(sizes), "seed": range(seeds),
                            "epoch": range(epochs + 1), "component": ["w_1", "b", "c_1"]},
                    attrs={"methods.cbo.method": "cbo"})
    return ds, p


def test_strong_errors_equal_a_loop():
    ds, p = _synthetic()
    largest = strong_errors(ds, "N", "params", epochs=[1, 2])
    successive = strong_errors(ds, "N", "params", epochs=[1, 2], reference="successive")
    for i in range(2):
        for s in range(3):
            for e in (1, 2):
                want = np.sqrt(np.mean((p[0, i, s, e] - p[0, -1, s, e]) ** 2))
                assert np.isclose(float(largest.isel(method_label=0, N=i, seed=s).sel(epoch=e)), want, rtol=1e-13)
                want = np.sqrt(np.mean((p[0, i, s, e] - p[0, i + 1, s, e]) ** 2))
                assert np.isclose(float(successive.isel(method_label=0, N=i, seed=s).sel(epoch=e)), want,
                                  rtol=1e-13)
    assert list(largest.N.values) == [4, 8] and list(successive.N.values) == [4, 8]


def test_output_errors_equal_a_loop_over_the_grid():
    ds, p = _synthetic()
    grid = np.linspace(0, 1, 7)
    err = strong_errors(ds, "N", "output", epochs=[2], grid=grid)
    net = TwoLayerNetwork(1, 1, 5)
    g = net.forward(p[0, :, :, 2].reshape(-1, 5, 3), grid[:, None])[..., 0].reshape(3, 3, 7)
    want = np.sqrt(np.mean((g[0] - g[2]) ** 2, axis=-1))
    np.testing.assert_allclose(err.isel(method_label=0, N=0).sel(epoch=2).values, want, rtol=1e-12)


@pytest.fixture(scope="module")
def quick_convergence_n(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "convergence_N-quick.nc"
    assert main(["run", str(STUDIES / "convergence_N.toml"), "--quick", "--methods", "cbo_alpha0,cbo_alpha1000",
                 "--out", str(out), "--no-progress"]) == 0
    return open_dataset(out)


@pytest.mark.parametrize("reference", ["largest", "successive"])
def test_coupled_cbo_at_alpha_0_converges_in_n_at_order_one_half(quick_convergence_n, reference):
    rows = rate_rows(quick_convergence_n, "N", ["params"], reference=reference)
    last = int(quick_convergence_n.epoch[-1])
    row = next(r for r in rows if r["method"] == "cbo_alpha0" and r["epoch"] == last)
    # N^(-1/2) for nested runs: the expected order is that of (1/N - 1/N')^(1/2) over the fitted sizes
    # (-0.5 against the largest run up to a small correction; 64 -> 400 bends the successive one)
    assert row["fit"].contains(row["expected"])
    if reference == "largest":
        assert abs(row["expected"] + 0.5) < 0.06 and row["fit"].contains(-0.5)


def test_at_large_alpha_the_effective_sample_size_and_not_n_sets_the_error(quick_convergence_n):
    ds = quick_convergence_n
    rows = rate_rows(ds, "N", ["params"], reference="successive")
    row = next(r for r in rows if r["method"] == "cbo_alpha1000" and r["epoch"] == int(ds.epoch[-1]))
    assert row["fit"].high > -0.25  # no N^(-1/2): the consensus is the best particle
    ess = ds.effective_sample_size.sel(method_label="cbo_alpha1000").isel(epoch=slice(1, None))
    assert float(ess.median()) < 5.0


def test_proposition_3_holds_at_every_point_of_the_quick_grid(tmp_path):
    out = tmp_path / "proposition3-quick.nc"
    assert main(["run", str(STUDIES / "proposition3.toml"), "--quick", "--methods", "alpha0_exact",
                 "--out", str(out), "--no-progress"]) == 0
    ds = open_dataset(out)
    factor = decay_factor(ds, "alpha0_exact")
    for n in ds.N.values:
        for m in ds.M.values:
            cell = ds.sel(method_label="alpha0_exact", N=n, M=m)
            for var in ("w_variance", "w_variance_weighted"):
                share, worst = decay_violations(cell[var].transpose("seed", "epoch"), factor)
                assert share == 0.0, (n, m, var, worst)


def test_quick_width_sweep_starts_nested_and_fits_an_order(tmp_path):
    out = tmp_path / "convergence_M-quick.nc"
    assert main(["run", str(STUDIES / "convergence_M.toml"), "--quick", "--methods", "cbo,otcbo",
                 "--out", str(out), "--no-progress"]) == 0
    ds = open_dataset(out)
    # coupled neurons: before the first step CBO reports the particles' mean, and the first M neurons
    # of every wider run's mean are the narrow run's, bit for bit
    start = ds.reported_params.sel(method_label="cbo", epoch=0)
    for m in ds.M.values[:-1]:
        wide = start.sel(M=ds.M.values[-1]).isel(neuron=slice(0, int(m)))
        np.testing.assert_array_equal(start.sel(M=m).isel(neuron=slice(0, int(m))).values, wide.values)
    rows = rate_rows(ds, "M")
    assert {r["method"] for r in rows} == {"cbo", "otcbo"} and {r["observable"] for r in rows} == {"output"}
    assert all(np.isfinite(r["fit"].slope) and np.isfinite(r["fit"].low) for r in rows)


def test_quick_baselines_record_the_cost_of_every_method(tmp_path):
    out = tmp_path / "baselines_sine-quick.nc"
    assert main(["run", str(STUDIES / "baselines_sine.toml"), "--quick", "--methods", "cbo,hybrid,adam",
                 "--out", str(out), "--no-progress"]) == 0
    ds = open_dataset(out)
    cost = ds.evaluations.isel(seed=0)
    per_epoch = 4 * 500 * 50  # iterations per epoch x S' x M
    np.testing.assert_array_equal(cost.sel(method_label="cbo").values, ds.epoch.values * per_epoch * 100)
    np.testing.assert_array_equal(cost.sel(method_label="hybrid").values, 3 * cost.sel(method_label="cbo").values)
    np.testing.assert_array_equal(cost.sel(method_label="adam").values, ds.epoch.values * per_epoch * 3)
    assert main(["plot", str(out), "--out-dir", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "baselines_sine-quick_risk_vs_cost.png").exists()


def test_quick_multitask_sweep_records_per_task_effective_sample_sizes_and_fits(tmp_path):
    out = tmp_path / "convergence_N_multitask-quick.nc"
    assert main(["run", str(STUDIES / "convergence_N_multitask.toml"), "--quick", "--methods", "multitask_alpha3",
                 "--out", str(out), "--no-progress"]) == 0
    ds = open_dataset(out)
    ess = ds.effective_sample_size.sel(method_label="multitask_alpha3").isel(epoch=-1)
    assert "task" in ess.dims and float(ess.min()) > 0 and bool((ess <= ess.N).all())
    rows = rate_rows(ds, "N", ["params"], reference="successive")
    assert rows and all(np.isfinite(r["fit"].slope) for r in rows)


def test_excess_risk_uses_the_problems_frequency(tmp_path):
    """The noise-free target of sin(2 pi k x) is that of the study's k, checked against the network's own
    forward pass on inputs drawn as excess_risk draws them."""
    from meanfield import TwoLayerNetwork
    from meanfield.convergence import excess_risk
    from meanfield.problems import sine
    from meanfield.runner import run_study
    from meanfield.study import Study

    config = {"name": "k3", "epochs": 2, "seeds": 2, "root_seed": 1,
              "problem": {"name": "sine", "n_train": 40, "n_test": 10, "frequency": 3},
              "network": {"n_neurons": 5},
              "methods": {"cbo": {"method": "cbo", "n_particles": 6, "batch_size": 20, "alpha": 10.0}}}
    ds = run_study(Study(config), tmp_path / "k3.nc", progress=False, log=lambda *a: None)
    got = excess_risk(ds, n_samples=500, seed=7)
    clean = sine(n_train=1, n_test=500, noise_std=0.0, seed=7, frequency=3)
    net = TwoLayerNetwork(1, 1, 5)
    for seed in range(2):
        theta = ds.final_params.sel(method_label="cbo", seed=seed).values[None]
        g = net.forward(theta, clean.x_test)[0, :, 0]
        want = np.mean((g - np.sin(6 * np.pi * clean.x_test[:, 0])) ** 2)
        assert abs(float(got.sel(method_label="cbo", seed=seed)) - want) < 1e-12 * want
