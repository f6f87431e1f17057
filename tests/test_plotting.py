"""Figures from small synthetic datasets that follow meanfield.schema."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Text

from meanfield import plotting
from meanfield.plotting import KIND_COLORS, method_colors, plot_dataset
from meanfield.results import summary_table
from meanfield.schema import METHOD_DIM, apply_schema, component_labels

OT_KINDS = ("otcbo", "multitask_otcbo")


def make_dataset(methods, seeds=2, epochs=4, problem="sine", tasks=None, sweep=None, figures=None):
    """A dataset as a study writes it. ``methods``: {label: {"method": kind, **effective parameters}};
    ``sweep``: {"M": widths}. OT-CBO variables are NaN (counters -1) for the other kinds."""
    rng = np.random.default_rng(0)
    labels = list(methods)
    n_in, n_out = (784, 10) if problem == "mnist" else (1, 1)
    n_neurons = max(sweep["M"]) if sweep and "M" in sweep else 3
    cell = {METHOD_DIM: labels, **(sweep or {}), "seed": np.arange(seeds)}
    run = {**cell, "epoch": np.arange(epochs + 1)}
    per_task = {**run, "task": np.arange(1, tasks + 1)} if tasks else run
    ds = xr.Dataset(coords={**per_task, "neuron": np.arange(n_neurons), "component": component_labels(n_in, n_out)})

    def decaying(dims):
        shape = [len(v) for v in dims.values()]
        decay = np.exp(-np.arange(epochs + 1) / 2.0).reshape([-1 if d == "epoch" else 1 for d in dims])
        return list(dims), rng.lognormal(sigma=0.3, size=shape) * decay

    for name in ("train_risk", "test_risk", "best_particle_risk"):
        ds[name] = decaying(per_task)
    for name in ("variance", "alpha", "wall_time"):
        ds[name] = decaying(run)
    if problem == "mnist":
        for name in ("train_accuracy", "test_accuracy"):
            ds[name] = 1 - ds.variance / 4
    ot = xr.DataArray([methods[lb]["method"] in OT_KINDS for lb in labels], dims=METHOD_DIM)
    if ot.any():
        for name in ("w_variance", "w_variance_weighted", "barycenter_time"):
            dims, values = decaying(run)
            ds[name] = xr.DataArray(values, dims=dims).where(ot)
        for name in ("barycenter_iterations", "barycenter_unconverged"):
            ds[name] = xr.where(ot, 3, -1).broadcast_like(ds.variance).astype(np.int64)
    shape = {**cell, **({"task": per_task["task"]} if tasks else {}), "neuron": ds.neuron, "component": ds.component}
    ds["final_params"] = (list(shape), rng.normal(size=[len(v) for v in shape.values()]))
    ds["diverged_epoch"] = (list(cell), np.full([len(v) for v in cell.values()], -1, np.int64))
    ds["state_bytes"] = (list(cell), np.full([len(v) for v in cell.values()], 1000, np.int64))
    apply_schema(ds)
    table = {"name": problem, "n_train": 40, "n_test": 10, **({"n_tasks": tasks} if tasks else {})}
    ds.attrs = {"study": "toy", "epochs": epochs, "seeds": seeds, "root_seed": 1, "iterations_per_epoch": 1,
                "problem.name": problem, "config_json": json.dumps({"problem": table, "network": {"n_neurons": 3}})}
    for label, params in methods.items():
        for key, value in {"dt": 0.1, "drift_rate": 1.0, **params}.items():
            ds.attrs[f"methods.{label}.{key}"] = value
    if figures is not None:
        ds.attrs["figures"] = json.dumps(figures)
    return ds


SINE = {"cbo": {"method": "cbo", "sigma_squared": 1.6}, "adam": {"method": "adam", "lr": 0.1}}
MNIST = {"adam": {"method": "adam", "lr": 0.1}, "cbo": {"method": "cbo", "alpha": 1e5},
         "hybrid": {"method": "hybrid", "gamma": 0.7, "alpha": 1e4}}
MIXED = {"cbo": {"method": "cbo"}, "exact": {"method": "otcbo", "barycenter": "exact"},
         "sinkhorn": {"method": "otcbo", "barycenter": "sinkhorn", "relative_reg": 0.01}}
# labels with dots as earlier result files have them ("gamma=0" begins "gamma=0.3"), out of order on purpose
GAMMA = {f"gamma={g:g}": {"method": "hybrid", "gamma": g, "alpha": '{"kind": "step"}'} for g in (0.5, 1.0, 0.0, 0.3)}

def make_convergence_dataset():
    """A coupled sweep over N that recorded the reported network per epoch, and a non-swept run with its cost."""
    ds = make_dataset({"cbo": {"method": "cbo"}, "ot": {"method": "otcbo"}}, seeds=3, sweep={"N": [4, 8, 16]})
    rng = np.random.default_rng(3)
    shape = [ds.sizes[d] for d in (METHOD_DIM, "N", "seed", "epoch", "neuron", "component")]
    limit = rng.normal(size=shape[-2:])
    limit[:, 1] = 2.0 + np.abs(limit[:, 1])  # biases > 0: every neuron active on [0, 1], outputs differ
    noise = rng.normal(size=shape) / np.sqrt(ds.N.values)[None, :, None, None, None, None]
    ds["reported_params"] = ((METHOD_DIM, "N", "seed", "epoch", "neuron", "component"), limit + noise)
    problem = {"name": "sine", "n_train": 40, "n_test": 10, "noise_std": 0.01, "seed": 0}
    ds.attrs["parameters_json"] = json.dumps({"problem": problem, "network": {},
                                              "methods": {"cbo": {"method": "cbo"}, "ot": {"method": "otcbo"}}})
    ds.attrs["network.activation"] = "relu"
    return apply_schema(ds)


def make_cost_dataset():
    ds = make_dataset(SINE)
    ds["evaluations"] = ds.epoch * xr.DataArray([1e3, 3e3], dims=METHOD_DIM, coords={METHOD_DIM: ds[METHOD_DIM]})
    ds["evaluations"] = ds.evaluations.broadcast_like(ds.variance)
    ds.attrs["parameters_json"] = json.dumps({"problem": {"name": "sine", "n_train": 40, "n_test": 10,
                                                          "noise_std": 0.01, "seed": 0}, "network": {},
                                              "methods": {label: {"method": label} for label in SINE}})
    return apply_schema(ds)


DATASETS = {
    "sine": (lambda: make_dataset(SINE), {"risk", "instability", "fits"}),
    "mnist": (lambda: make_dataset(MNIST, problem="mnist"), {"risk", "instability", "accuracy"}),
    "mixed": (lambda: make_dataset(MIXED, problem="square"), {"risk", "instability", "fits", "variance"}),
    "multitask": (lambda: make_dataset({"shared": {"method": "multitask", "shared": 1},
                                        "independent": {"method": "multitask", "shared": 0, "n_particles": 30}},
                                       problem="shifted_sines", tasks=3), {"risk", "fits"}),
    "sweep": (lambda: make_dataset({k: v for k, v in MIXED.items() if k != "cbo"}, problem="square",
                                   sweep={"M": [2, 4]}), {"risk_vs_M", "variance_vs_M", "rate_M"}),
    "convergence": (make_convergence_dataset, {"risk_vs_N", "variance_vs_N", "rate_N", "strong_error_N",
                                               "neuron_spread_N", "excess_risk_N"}),
    "cost": (make_cost_dataset, {"risk", "instability", "fits", "risk_vs_cost"}),
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig):
    """Every text the figure shows: titles, labels, legend entries and legend titles."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def line_colors(*figs):
    """{method label: colours of its lines} over the figures (lines carry the label as gid)."""
    out = {}
    for fig in figs:
        for ax in fig.axes:
            for line in ax.lines:
                if line.get_gid():
                    out.setdefault(line.get_gid(), set()).add(line.get_color())
    return out


@pytest.mark.parametrize("kind", DATASETS)
def test_each_figure_kind_is_written(kind, tmp_path):
    make, expected = DATASETS[kind]
    paths = plot_dataset(make(), tmp_path, name="x")
    assert sorted(p.name for p in paths) == sorted([f"x_{f}.png" for f in expected] + ["x_summary.md"])
    assert sorted(tmp_path.iterdir()) == sorted(paths)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths if p.suffix == ".png")


def test_declared_figures_are_made_and_no_others(tmp_path):
    # variance_decay declares its figures: no instability figure although the data would support one
    ds = make_dataset(MIXED, problem="square", figures=["variance", "risk"])
    assert [p.name for p in plot_dataset(ds, tmp_path)] == ["toy_variance.png", "toy_risk.png", "toy_summary.md"]
    ds = make_dataset(MIXED, problem="square", sweep={"M": [2, 4]}, figures=["rate"])
    assert [p.name for p in plot_dataset(ds, tmp_path)] == ["toy_rate_M.png", "toy_summary.md"]


@pytest.mark.parametrize("methods, problem, figures, message", [
    (SINE, "sine", ["risk", "colours"], r"unknown figure 'colours'"),
    (MNIST, "mnist", ["fits"], r"figure 'fits' declared, but it needs a regression problem with one input"),
    (SINE, "sine", ["variance"], r"figure 'variance' declared, but it needs an OT-CBO method"),
    (SINE, "sine", ["rate"], r"figure 'rate' declared, but it needs a \[sweep\]"),
    (SINE, "sine", ["task_risk"], r"figure 'task_risk' declared, but it needs a multi-task problem"),
])
def test_unknown_or_unsupported_figures_are_refused(methods, problem, figures, message, tmp_path):
    ds = make_dataset(methods, problem=problem, figures=figures)
    with pytest.raises(ValueError, match=message):
        plot_dataset(ds, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_each_method_keeps_its_own_colour_in_every_figure():
    ds = make_dataset(MNIST, problem="mnist")
    colors = method_colors(ds)
    assert colors == {"adam": KIND_COLORS["adam"], "cbo": KIND_COLORS["cbo"], "hybrid": KIND_COLORS["hybrid"]}
    assert len(set(colors.values())) == 3  # Adam and the hybrid are no longer both red
    drawn = line_colors(plotting.plot_risk(ds), plotting.plot_instability(ds), plotting.plot_accuracy(ds))
    assert drawn == {label: {color} for label, color in colors.items()}


def test_labels_sharing_a_kind_get_distinct_colours():
    many = {f"ot{i}": {"method": "otcbo", "alpha": float(i), "noise": "additive" if i % 2 else "none"}
            for i in range(12)}
    ds = make_dataset({"cbo": {"method": "cbo"}, **many}, problem="square")
    colors = method_colors(ds)
    assert len(set(colors.values())) == len(colors) == 13
    assert colors["cbo"] == KIND_COLORS["cbo"] and colors["ot0"] == KIND_COLORS["otcbo"]
    drawn = line_colors(plotting.plot_risk(ds), plotting.plot_fits(ds), plotting.plot_variance_decay(ds))
    assert drawn == {label: {color} for label, color in colors.items()}


def test_one_numeric_parameter_orders_the_colours_on_a_sequential_map():
    ds = make_dataset(GAMMA)
    colors = method_colors(ds)
    by_gamma = sorted(GAMMA, key=lambda label: GAMMA[label]["gamma"])
    assert [colors[label] for label in by_gamma] == [to_hex(plt.cm.viridis(x)) for x in np.linspace(0, 0.85, 4)]
    fig = plotting.plot_risk(ds)
    legend = fig.legends[0]
    assert "gamma" in legend.get_title().get_text()
    assert [t.get_text() for t in legend.get_texts()] == ["gamma = 0", "gamma = 0.3", "gamma = 0.5", "gamma = 1"]
    assert line_colors(fig) == {label: {color} for label, color in colors.items()}
    # two parameters differ: colours by kind again, each label its own
    ds.attrs["methods.gamma=0.5.alpha"] = "other"
    colors = method_colors(ds)
    assert colors["gamma=0.5"] == KIND_COLORS["hybrid"] and len(set(colors.values())) == 4


@pytest.mark.parametrize("kind", DATASETS)
def test_one_seed_is_said_in_the_singular(kind):
    ds = DATASETS[kind][0]().isel(seed=[0])
    words = " ".join(t for _, plot in plotting.dataset_figures(ds) for t in texts(plot()))
    assert "one seed" in words or "1 seed" in words
    for wrong in ("1 seeds", "median of 1", "(of 1)", "over 1 "):
        assert wrong not in words
    table = summary_table(ds)
    assert "one seed" in table.splitlines()[0] and "1 seeds" not in table
    assert "[" not in table.split("|---|")[-1]  # no quartiles of one value


def test_functions_draw_on_given_axes_and_return_their_figure(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a plotting function saved a file")

    monkeypatch.setattr(Figure, "savefig", refuse)
    mnist, mixed = make_dataset(MNIST, problem="mnist"), make_dataset(MIXED, problem="square")
    tasks = DATASETS["multitask"][0]()
    sweep = DATASETS["sweep"][0]()
    single = [(plotting.plot_instability, mnist), (plotting.plot_accuracy, mnist), (plotting.plot_fits, mixed),
              (lambda ds, ax: plotting.plot_rate(ds, "M", ax=ax), sweep)]
    for plot, ds in single:
        fig, ax = plt.subplots()
        assert plot(ds, ax=ax) is fig and ax.lines
        assert isinstance(plot(ds, ax=None), Figure)
    panels = [(plotting.plot_risk, mnist, 2), (plotting.plot_task_risk, tasks, 2), (plotting.plot_task_fits, tasks, 2),
              (plotting.plot_variance_decay, mixed, 2),
              (lambda ds, axes: plotting.plot_sweep(ds, "M", "w_variance", axes=axes), sweep, 2)]
    for plot, ds, n in panels:
        fig, axes = plt.subplots(1, n)
        assert plot(ds, axes=axes) is fig and all(ax.lines for ax in axes)
        assert isinstance(plot(ds, axes=None), Figure)
    with pytest.raises(ValueError, match="axes must hold 2 axes, got 1"):
        plotting.plot_risk(mnist, axes=plt.subplots()[1])


def test_legends_lie_outside_the_axes():
    ds = make_dataset(MNIST, problem="mnist")
    for fig in (plotting.plot_instability(ds), plotting.plot_accuracy(ds), plotting.plot_risk(ds)):
        fig.canvas.draw()
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends
        for legend in legends:
            box = legend.get_window_extent()
            assert all(not box.overlaps(ax.get_window_extent()) for ax in fig.axes)


def test_labels_come_from_the_schema():
    ds = make_dataset(MNIST, problem="mnist")
    ds.test_accuracy.attrs["long_name"] = "accuracy on held-out images"
    fig = plotting.plot_accuracy(ds)
    assert fig.axes[0].get_ylabel() == "accuracy on held-out images [%]"
    assert [ax.get_title() for ax in plotting.plot_risk(ds).axes] == ["training risk", "test risk"]
    assert plotting.plot_risk(ds).axes[0].get_yscale() == "log"


def test_figures_asked_for_replace_the_declared_ones(tmp_path):
    ds = make_dataset(SINE, figures=["risk"])
    paths = plot_dataset(ds, tmp_path, name="x", figures=["instability"])
    assert sorted(p.name for p in paths) == ["x_instability.png", "x_summary.md"]
    with pytest.raises(ValueError, match="unknown figure 'nope' asked for"):
        plot_dataset(ds, tmp_path, name="x", figures=["nope"])
    with pytest.raises(ValueError, match="figure 'accuracy' asked for, but it needs a classification problem"):
        plot_dataset(ds, tmp_path, name="x", figures=["accuracy"])


def test_variance_factor_is_measured_exactly_without_noise_and_drawn(tmp_path):
    """Without noise every step maps theta_n to V + (1 - lambda dt)(theta_n - V): the ensemble variance
    shrinks by exactly (1 - lambda dt)^2 per iteration, whatever alpha does to V; the analysis must find
    that factor, and the prediction of a noisy setting, and the figure and summary must show them."""
    from meanfield.results import variance_factors
    from meanfield.runner import run_study
    from meanfield.study import Study

    config = {"name": "vf", "epochs": 6, "seeds": 3, "root_seed": 5, "figures": ["variance_factor"],
              "problem": {"name": "sine", "n_train": 60, "n_test": 10},
              "network": {"n_neurons": 4},
              "method_defaults": {"method": "cbo", "n_particles": 8, "dt": 0.2, "batch_size": 20, "alpha": 1e3},
              "methods": {"quiet": {"sigma_squared": 0.0}, "noisy": {"sigma_squared": 1.5, "noise": "isotropic"}}}
    ds = run_study(Study(config), tmp_path / "vf.nc", progress=False, log=lambda *a: None)
    rows = {r["label"]: r for r in variance_factors(ds)}
    assert abs(rows["quiet"]["measured"] - 0.8 ** 2) < 1e-12
    assert (rows["quiet"]["predicted"], rows["quiet"]["discrete"]) == (0.8 ** 2, "holds")
    assert rows["noisy"]["predicted"] == 0.8 ** 2 + 1.5 * 0.2 * 4 * 3  # isotropic: D = M x 3 components
    assert rows["noisy"]["continuous"] == "fails" and rows["noisy"]["discrete"] == "fails"
    plot_dataset(ds, tmp_path)
    assert (tmp_path / "vf_variance_factor.png").exists()
    assert "| quiet | anisotropic | 0 | 0.64 | holds | holds | 0.64" in (tmp_path / "vf_summary.md").read_text()


def test_a_blown_up_run_is_clipped_not_fatal(tmp_path):
    """A run whose variance overflows and whose test risk reaches 1e80 must not break the figures: the
    variance figure keeps the measured range, the risk figure clips at 1e3 x the initial risk."""
    methods = {"calm": {"method": "cbo", "sigma_squared": 1.0, "noise": "anisotropic"},
               "wild": {"method": "cbo", "sigma_squared": 1.6, "noise": "isotropic"}}
    ds = make_dataset(methods, epochs=6)
    ds["variance"].loc[{METHOD_DIM: "wild"}] = np.array([1.0, 1e100, 1e250, np.inf, np.inf, np.inf, np.inf])
    ds["test_risk"].loc[{METHOD_DIM: "wild"}] = 1e80
    paths = plot_dataset(ds, tmp_path, figures=["variance_factor", "risk"])
    assert all(p.stat().st_size > 0 for p in paths)
    fig = plotting.plot_risk(ds)
    assert fig.axes[0].get_ylim()[1] <= 1e3 * float(ds.train_risk.isel(epoch=0).median("seed").max()) * (1 + 1e-9)
    assert "clipped at 1e3 x the initial risk" in texts(fig)


def test_a_result_written_under_another_name_says_its_study(tmp_path):
    ds = make_dataset(SINE)
    plot_dataset(ds, tmp_path, name="renamed", figures=["risk"])
    assert (tmp_path / "renamed_summary.md").read_text().startswith("renamed (study toy): after 4 epochs")
    plot_dataset(ds, tmp_path, figures=["risk"])
    assert (tmp_path / "toy_summary.md").read_text().startswith("toy: after 4 epochs")
