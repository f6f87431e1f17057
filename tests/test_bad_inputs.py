"""Bad input is refused before any compute, with a message that names the parameter, and nothing is
written: through the API (ValueError or TypeError) and through the command line (exit status 2)."""

import math
import re

import numpy as np
import pytest

from meanfield import CBO, Adam, Problem, Step, TwoLayerNetwork, gibbs_weights, shifted_sines, sine, train
from meanfield.cli import main
from meanfield.hybrid import HybridCBOAdam
from meanfield.multitask import MultiTaskCBO
from meanfield.otcbo import OTCBO
from meanfield.schedules import make_schedule

INF, NAN = math.inf, math.nan


def _labels_problem(labels):
    x = np.zeros((len(labels), 2))
    return Problem("labels", x, np.asarray(labels), x, np.asarray(labels), "cross_entropy", 10)


def _train(**kwargs):
    args = {"method": CBO(n_particles=3, batch_size=10), "network": TwoLayerNetwork(1, 1, 2),
            "problem": sine(n_train=20, n_test=5), "epochs": 1, "seed": 0, **kwargs}
    return train(**args)


API = [
    ("n_particles", lambda: CBO(n_particles=0)),
    ("n_particles", lambda: CBO(n_particles=2.5)),
    ("dt", lambda: CBO(dt=0.0)),
    ("dt", lambda: CBO(dt=NAN)),
    ("drift_rate", lambda: CBO(drift_rate=-1.0)),
    ("sigma_squared", lambda: CBO(sigma_squared=-0.1)),
    ("alpha", lambda: CBO(alpha=-1.0)),
    ("alpha", lambda: CBO(alpha=INF)),
    ("alpha.factor", lambda: CBO(alpha={"kind": "step", "initial": 1.0, "factor": INF, "every": 1})),
    ("alpha.every", lambda: CBO(alpha={"kind": "step", "initial": 1.0, "factor": 10.0, "every": 0})),
    ("alpha.limit", lambda: CBO(alpha={"kind": "step", "initial": 1.0, "factor": 10.0, "every": 1, "limit": INF})),
    ("alpha.kind", lambda: CBO(alpha={"kind": "linear"})),
    ("noise_decay", lambda: make_schedule(-1.0, "noise_decay")),
    ("limit", lambda: Step(1e5, 10.0, 1, INF)),
    ("noise", lambda: CBO(noise="gaussian")),
    ("batch_size", lambda: CBO(batch_size=0)),
    ("init_scale", lambda: CBO(init_scale=0.0)),
    ("require_decay", lambda: CBO(require_decay="no")),
    ("shared", lambda: MultiTaskCBO(shared="no")),
    ("assignment", lambda: MultiTaskCBO(assignment="random")),
    ("gamma", lambda: HybridCBOAdam(gamma=1.5)),
    ("lr", lambda: Adam(lr=0.0)),
    ("beta1", lambda: Adam(beta1=1.0)),
    ("eps", lambda: Adam(eps=0.0)),
    ("drift_rate * dt", lambda: OTCBO(drift_rate=20.0, dt=0.1)),
    ("barycenter", lambda: OTCBO(barycenter="greedy")),
    ("relative_reg", lambda: OTCBO(barycenter="sinkhorn", relative_reg=0.0)),
    ("noise", lambda: OTCBO(noise="isotropic")),
    ("noise_decay", lambda: OTCBO(noise_decay=-1.0)),
    ("n_inputs", lambda: TwoLayerNetwork(0, 1, 2)),
    ("activation", lambda: TwoLayerNetwork(1, 1, 2, activation="gelu")),
    ("loss", lambda: TwoLayerNetwork(1, 1, 2, loss="hinge")),
    ("n_train", lambda: sine(n_train=0)),
    ("noise_std", lambda: sine(noise_std=-1.0)),
    ("n_tasks", lambda: shifted_sines(n_tasks=0)),
    ("y_train", lambda: _labels_problem([0, 12])),
    ("y_train", lambda: _labels_problem([0, -1])),
    ("y_train", lambda: _labels_problem([0, 0.5])),
    ("seed", lambda: _train(seed=-1)),
    ("seed", lambda: _train(seed="zero")),
    ("epochs", lambda: _train(epochs=0)),
    ("batch_size", lambda: _train(method=CBO(n_particles=3, batch_size=50))),
    ("alpha", lambda: gibbs_weights(np.ones(3), -1.0)),
]


@pytest.mark.parametrize("name, make", API, ids=[f"{i}-{name}" for i, (name, _) in enumerate(API)])
def test_api_refuses_and_names_the_parameter(name, make, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ValueError, TypeError), match=re.escape(name)):
        make()
    assert list(tmp_path.iterdir()) == []


STUDY = """
name = "bad"
epochs = 2
seeds = 1
root_seed = 3

[problem]
name = "sine"
n_train = 60
n_test = 20

[network]
n_neurons = 3

[methods.cbo]
method = "cbo"
n_particles = 4
batch_size = 30
"""

# (study text change or None, extra command-line arguments, text the error must contain)
CLI = [
    (("epochs = 2", "epochs = 0"), [], "epochs must be >= 1"),
    (("seeds = 1", 'seeds = "ten"'), [], "seeds must be an integer"),
    (("root_seed = 3", "root_seed = -1"), [], "root_seed must be >= 0"),
    (("epochs = 2", "epochs = 2\nepoch = 3"), [], "unknown key(s) ['epoch']"),
    (('name = "sine"', 'name = "cifar"'), [], "problem.name must be one of"),
    (("n_neurons = 3", 'n_neurons = 3\nactivation = "gelu"'), [], "activation must be one of"),
    (("batch_size = 30", "batch_size = 30\ndt = -1.0"), [], "[methods.cbo]: dt must be in (0, inf]"),
    (('method = "cbo"', 'method = "sgd"'), [], "method must be one of"),
    (("batch_size = 30", 'batch_size = 30\nshared = "no"'), [], "unknown key(s) ['shared']"),
    (("batch_size = 30", "batch_size = 30\nalpha = { kind = \"step\", initial = 1e5, factor = inf, every = 1 }"),
     [], "alpha.factor"),
    (("batch_size = 30", "batch_size = 100"), [], "batch_size must be <= the training set size 60"),
    (("n_test = 20", "n_test = 20\n\n[sweep]\nn_neurons = [0, 2]"), [], "sweep.n_neurons"),
    (("root_seed = 3", 'root_seed = 3\nfigures = ["pie"]'), [], "figures must be a non-empty list"),
    (None, ["--workers", "0"], "--workers must be an integer >= 1"),
    (None, ["--seeds", "0"], "seeds must be >= 1"),
    (None, ["--methods", "sgd"], "--methods: unknown label(s) ['sgd']"),
    (None, ["--set", "methods.cbo.dt=nan"], "dt must be a finite number"),
    (None, ["--set", "methods.cbo.sigma_squared=-1"], "sigma_squared must be in [0, inf]"),
    (None, ["--set", "quick.epochs=1"], "[quick] cannot be set"),
    (None, ["--data-dir", "somewhere"], "--data-dir given, but problem 'sine' reads no files"),
    (None, ["--quick"], "has no [quick] table"),
]


@pytest.mark.parametrize("change, extra, message", CLI, ids=[f"{i}" for i in range(len(CLI))])
def test_command_line_exits_2_names_the_key_and_writes_nothing(change, extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = STUDY if change is None else STUDY.replace(*change, 1)
    assert change is None or change[0] in STUDY
    (tmp_path / "bad.toml").write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", "bad.toml", "--no-progress", *extra]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no results/, no .cells/


@pytest.mark.parametrize("argv, message", [
    (["run", "missing.toml"], "study file missing.toml not found"),
    (["run", "broken.toml"], "is not valid TOML"),
    (["plot", "missing.nc"], "cannot read missing.nc"),
    (["info", "broken.toml"], "is not a netCDF file written by meanfield"),
])
def test_command_line_refuses_missing_and_broken_files(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.toml").write_text("name = ")
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.toml"]


def test_an_alpha_schedule_that_overflows_within_the_run_is_refused():
    growing = CBO(n_particles=3, batch_size=10, alpha={"kind": "step", "initial": 1e5, "factor": 10.0, "every": 1})
    with pytest.raises(ValueError, match=r"alpha reaches inf by epoch 399; give its schedule a limit"):
        _train(method=growing, epochs=400)
