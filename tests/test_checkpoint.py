"""Checkpoints: a run stopped after some epochs and continued from its checkpoint gives bit for bit
the result of a run never stopped, for every method; a checkpoint of another run is refused; the
study runner continues an interrupted cell from its checkpoint and deletes stale ones."""

import pickle

import numpy as np
import pytest
from test_study import TINY

from meanfield import CBO, Adam, HybridCBOAdam, MultiTaskCBO, TwoLayerNetwork, train
from meanfield.checkpoint import CheckpointMismatch, save_checkpoint
from meanfield.cli import main
from meanfield.otcbo import OTCBO, MultiTaskOTCBO
from meanfield.problems import shifted_sines, square
from meanfield.schema import open_dataset

SQUARE = square(n_train=120, n_test=30, seed=0)
TASKS = shifted_sines(n_tasks=3, n_train=120, n_test=30, noise_std=0.01)
EPOCHS = 5

RUNS = {
    "cbo": lambda: CBO(n_particles=6, sigma_squared=0.8, alpha=1e3, batch_size=40),
    "adam": lambda: Adam(lr=0.05, batch_size=40),
    "hybrid": lambda: HybridCBOAdam(n_particles=5, gamma=0.5, sigma_squared=0.5, batch_size=40),
    "multitask_cbo": lambda: MultiTaskCBO(n_particles=6, sigma_squared=0.5, alpha=100.0, batch_size=40),
    "otcbo_exact": lambda: OTCBO(n_particles=5, sigma_squared=1.2, noise="additive", alpha=1e3, batch_size=40),
    "otcbo_sinkhorn": lambda: OTCBO(n_particles=5, sigma_squared=1.2, noise="additive", alpha=1e3, batch_size=40,
                                    barycenter="sinkhorn", relative_reg=0.05),
    "multitask_otcbo": lambda: MultiTaskOTCBO(n_particles=6, sigma_squared=0.5, noise="additive", alpha=30.0,
                                              batch_size=40),
}


def network(**kwargs):
    return TwoLayerNetwork(n_inputs=1, n_outputs=1, n_neurons=4, **kwargs)


def stop_after(epochs):
    """A progress callback that interrupts the run after ``epochs`` epochs."""
    done = []

    def progress():
        done.append(1)
        if len(done) == epochs:
            raise KeyboardInterrupt

    return progress


def assert_same_numbers(a, b):
    """Every variable equal bit for bit (NaN equal to NaN) but the timings, whose units are seconds."""
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        if a[name].attrs.get("units") != "s":
            assert np.array_equal(a[name].values, b[name].values, equal_nan=True), name


@pytest.mark.parametrize("kind", RUNS)
def test_a_run_continued_from_its_checkpoint_is_the_run_never_stopped(kind, tmp_path):
    problem = TASKS if kind.startswith("multitask") else SQUARE
    whole = train(RUNS[kind](), network(), problem, EPOCHS, seed=4)
    path = tmp_path / "run.partial"
    with pytest.raises(KeyboardInterrupt):
        train(RUNS[kind](), network(), problem, EPOCHS, seed=4, progress=stop_after(2), checkpoint=path,
              checkpoint_every=0)
    assert path.exists()
    epochs_run = []
    continued = train(RUNS[kind](), network(), problem, EPOCHS, seed=4, checkpoint=path, checkpoint_every=0,
                      progress=lambda: epochs_run.append(1))
    assert len(epochs_run) == EPOCHS - 2  # it did not start over
    assert_same_numbers(whole, continued)
    assert not path.exists()  # removed once the run returned


def test_coupled_draws_float32_and_recorded_params_continue_too(tmp_path):
    net = network(draws="coupled", dtype="float32")
    method = lambda: CBO(n_particles=6, sigma_squared=0.8, alpha=1e3, batch_size=40)  # noqa: E731
    whole = train(method(), net, SQUARE, EPOCHS, seed=np.random.SeedSequence(7), record_params=True)
    path = tmp_path / "run.partial"
    with pytest.raises(KeyboardInterrupt):
        train(method(), net, SQUARE, EPOCHS, seed=np.random.SeedSequence(7), record_params=True,
              progress=stop_after(3), checkpoint=path, checkpoint_every=0)
    continued = train(method(), net, SQUARE, EPOCHS, seed=np.random.SeedSequence(7), record_params=True,
                      checkpoint=path, checkpoint_every=0)
    assert "reported_params" in continued
    assert_same_numbers(whole, continued)


def test_checkpoints_are_saved_only_as_often_as_asked(tmp_path):
    path = tmp_path / "run.partial"
    with pytest.raises(KeyboardInterrupt):
        train(RUNS["cbo"](), network(), SQUARE, EPOCHS, seed=1, progress=stop_after(3), checkpoint=path,
              checkpoint_every=1e9)
    assert not path.exists()  # none was due: a rerun starts afresh


@pytest.mark.parametrize("change, differs", [
    ({"epochs": EPOCHS + 1}, "epochs"),
    ({"seed": 2}, "seed"),
    ({"method": lambda: CBO(n_particles=6, sigma_squared=0.9, alpha=1e3, batch_size=40)}, "method"),
    ({"problem": square(n_train=120, n_test=30, seed=1)}, "problem"),
])
def test_a_checkpoint_of_another_run_is_refused(change, differs, tmp_path):
    path = tmp_path / "run.partial"
    with pytest.raises(KeyboardInterrupt):
        train(RUNS["cbo"](), network(), SQUARE, EPOCHS, seed=1, progress=stop_after(2), checkpoint=path,
              checkpoint_every=0)
    args = {"method": RUNS["cbo"], "problem": SQUARE, "epochs": EPOCHS, "seed": 1, **change}
    with pytest.raises(CheckpointMismatch, match=f"belongs to another run \\(it differs in {differs}\\)"):
        train(args["method"](), network(), args["problem"], args["epochs"], seed=args["seed"], checkpoint=path)
    assert path.exists()  # left for the user to delete


def test_a_file_of_another_format_is_refused(tmp_path):
    path = tmp_path / "run.partial"
    path.write_bytes(pickle.dumps({"something": "else"}))
    with pytest.raises(CheckpointMismatch, match="not written by this version of meanfield"):
        train(RUNS["cbo"](), network(), SQUARE, EPOCHS, seed=1, checkpoint=path)


def test_save_is_atomic(tmp_path):
    path = tmp_path / "c"
    save_checkpoint(path, {"a": 1}, {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary left


def test_checkpoint_every_must_be_a_non_negative_number(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every"):
        train(RUNS["cbo"](), network(), SQUARE, EPOCHS, checkpoint=tmp_path / "c", checkpoint_every=-1)


def test_device_generator_pickles_its_state():
    torch = pytest.importorskip("torch")
    from meanfield.backend import DeviceGenerator

    gen = DeviceGenerator(np.random.default_rng(3), "cpu")
    gen.standard_normal((4,))
    copy = pickle.loads(pickle.dumps(gen))
    assert torch.equal(gen.standard_normal((5,)), copy.standard_normal((5,)))


# -- the study runner -------------------------------------------------------------------------------


def test_an_interrupted_cell_continues_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    from meanfield import runner

    study = tmp_path / "tiny.toml"
    study.write_text(TINY.replace("epochs = 3", "epochs = 4"))
    fresh = tmp_path / "fresh.nc"
    assert main(["run", str(study), "--out", str(fresh), "--no-progress"]) == 0

    real_train, calls = runner.train, []

    def interrupt_the_first_cell(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            kwargs["progress"] = stop_after(2)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runner, "train", interrupt_the_first_cell)
    out = tmp_path / "tiny.nc"
    assert main(["run", str(study), "--out", str(out), "--no-progress", "--checkpoint-every", "0"]) == 130
    cells = tmp_path / "tiny.nc.cells"
    (partial,) = cells.glob("*.partial")
    stem = partial.name.split(".")[0]
    # a checkpoint of the same cell under another fingerprint (older code or settings) goes
    stale = cells / f"{stem}.0123456789abcdef.partial"
    stale.write_bytes(b"old")
    capsys.readouterr()
    monkeypatch.setattr(runner, "train", real_train)
    assert main(["run", str(study), "--out", str(out), "--no-progress"]) == 0
    assert "(1 of them continue from a checkpoint)" in capsys.readouterr().err
    assert not stale.exists() and not list(cells.glob("*.partial*"))
    a, b = open_dataset(fresh), open_dataset(out)
    assert_same_numbers(a, b)


def test_checkpoint_every_is_checked_before_anything_is_written(tmp_path, capsys):
    study = tmp_path / "tiny.toml"
    study.write_text(TINY)
    assert main(["run", str(study), "--out", str(tmp_path / "t.nc"), "--checkpoint-every", "-5"]) == 2
    assert "--checkpoint-every must be a number of seconds >= 0, got -5.0" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]
