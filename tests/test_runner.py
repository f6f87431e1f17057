"""The study runner around the numerics: mixed studies, effective settings, the cell cache and its
failure modes, the output path, concurrent runs, the dataset schema and the command line."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr
from test_study import TINY

from meanfield import __version__
from meanfield.cli import main
from meanfield.schema import VARIABLES, open_dataset, write_dataset

# OT-CBO with every setting but the sizes left at its defaults
MIXED = TINY.replace("[quick]", textwrap.dedent("""
    [methods.ot]
    method = "otcbo"
    n_particles = 5
    batch_size = 40

    [quick]"""))


def run(path, out, *extra):
    return main(["run", str(path), "--out", str(out), "--no-progress", *extra])


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def mixed(tmp_path):
    path = tmp_path / "mixed.toml"
    path.write_text(MIXED)
    return path


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a cell was computed")

    monkeypatch.setattr("meanfield.runner.train", refuse)


def test_a_study_mixing_cbo_and_otcbo_runs_combines_plots_and_summarises(mixed, tmp_path, capsys):
    out = tmp_path / "mixed.nc"
    assert run(mixed, out) == 0
    ds = open_dataset(out)
    assert list(ds.method_label.values) == ["adam", "cbo", "ot"]
    # OT-CBO's variables: NaN (float) or -1 (integer counters) where a method does not record them
    assert np.isnan(ds.w_variance.sel(method_label=["cbo", "adam"])).all()
    assert np.isfinite(ds.w_variance.sel(method_label="ot")).all()
    assert ds.barycenter_iterations.dtype == np.int64
    assert (ds.barycenter_iterations.sel(method_label="cbo") == -1).all()
    assert (ds.barycenter_iterations.sel(method_label="ot") > 0).all()
    assert "| ot |" in capsys.readouterr().out
    assert main(["plot", str(out), "--out-dir", str(tmp_path / "figs")]) == 0
    assert "| ot |" in (tmp_path / "figs" / "mixed_summary.md").read_text()


def test_every_effective_parameter_is_recorded_defaults_included(mixed, tmp_path):
    import inspect
    import json

    from meanfield.otcbo import OTCBO

    out = tmp_path / "mixed.nc"
    assert run(mixed, out) == 0
    ds = open_dataset(out)
    for name, param in inspect.signature(OTCBO).parameters.items():
        value = ds.attrs[f"methods.ot.{name}"]
        if isinstance(param.default, (int, float)) and name != "n_particles" and name != "batch_size":
            assert value == param.default, name
    assert ds.attrs["methods.ot.dt"] == 0.1 and ds.attrs["methods.ot.drift_rate"] == 1.0
    assert ds.attrs["methods.ot.method"] == "otcbo"
    assert ds.attrs["network.activation"] == "relu" and ds.attrs["problem.noise_std"] == 0.01
    # a schedule is one JSON attribute, also under a label holding dots
    assert ds.attrs["methods.ot.alpha"] == 1e4 and json.loads(ds.attrs["methods.cbo.alpha"])["kind"] == "step"
    params = json.loads(ds.attrs["parameters_json"])
    assert params["methods"]["cbo"]["drift_rate"] == 1.0 and params["methods"]["adam"]["beta2"] == 0.999


def test_labels_with_dots_get_the_same_attributes(tiny, tmp_path):
    import json

    tiny.write_text(TINY.replace("[methods.cbo]", '[methods."gamma=0.3"]'))
    out = tmp_path / "dots.nc"
    assert run(tiny, out, "--seeds", "1") == 0
    attrs = open_dataset(out).attrs
    assert json.loads(attrs["methods.gamma=0.3.alpha"])["kind"] == "step"
    assert not any(key.startswith("methods.gamma=0.3.alpha.") for key in attrs)


def test_overflowing_otcbo_atoms_are_a_recorded_divergence(tmp_path):
    # the compiled assignment solver crashed the process on overflowing costs: run in a child process
    study = tmp_path / "huge.toml"
    study.write_text(MIXED.replace("batch_size = 40\n\n[quick]", "batch_size = 40\ninit_scale = 1e200\n\n[quick]"))
    out = tmp_path / "huge.nc"
    proc = subprocess.run([sys.executable, "-m", "meanfield.cli", "run", str(study), "--out", str(out),
                           "--no-progress", "--methods", "ot"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "diverged at initialisation" in proc.stderr
    ds = open_dataset(out)
    assert (ds.diverged_epoch == 0).all() and np.isnan(ds.train_risk).all()


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_a_damaged_cell_is_named_set_aside_and_recomputed(tiny, tmp_path, damage, capsys):
    out = tmp_path / "tiny.nc"
    assert run(tiny, out) == 0
    first = open_dataset(out)
    cell = tmp_path / "tiny.nc.cells" / "cbo-seed1.nc"
    data = cell.read_bytes()
    garbage = b"\x89HDF\r\n\x1a\nnonsense"
    cell.write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": garbage}[damage])
    capsys.readouterr()
    assert run(tiny, out) == 0
    err = capsys.readouterr().err
    assert f"{cell} is damaged" in err and "recomputing" in err
    assert (tmp_path / "tiny.nc.cells" / "cbo-seed1.nc.damaged").exists()
    xr.testing.assert_equal(first.drop_vars("wall_time"), open_dataset(out).drop_vars("wall_time"))


_WRITER = """
import sys, numpy as np, xarray as xr
from meanfield.schema import write_dataset
path, tag = sys.argv[1], int(sys.argv[2])
for i in range(25):
    write_dataset(xr.Dataset({"x": ("i", np.full(1000, 1000 * tag + i, float))}), path)
"""


def test_concurrent_writers_never_tear_a_file(tmp_path):
    path = tmp_path / "shared.nc"
    write_dataset(xr.Dataset({"x": ("i", np.zeros(1000))}), path)
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(tag)]) for tag in (1, 2)]
    reads = 0
    while any(w.poll() is None for w in writers):
        x = open_dataset(path).x.values  # a reader never sees a partial or empty file
        assert np.all(x == x[0])
        reads += 1
    assert [w.returncode for w in writers] == [0, 0]
    assert open_dataset(path).x.values[0] in (24.0 + 1000, 24.0 + 2000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.nc"]  # no temporary file left behind
    assert reads > 0


def test_a_second_run_on_the_same_output_refuses(tiny, tmp_path, capsys, no_training):
    import fcntl

    out = tmp_path / "tiny.nc"
    (tmp_path / "tiny.nc.cells").mkdir()
    with open(tmp_path / "tiny.nc.cells" / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run(tiny, out) == 2
    assert "another `meanfield run` is writing" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["directory", "fifo", "parent_is_file", "device", "link", "suffix"])
def test_the_output_path_is_checked_before_any_compute(tiny, tmp_path, kind, capsys, no_training):
    out = {"directory": tmp_path / "dir.nc", "fifo": tmp_path / "fifo.nc", "parent_is_file": tmp_path / "f" / "x.nc",
           "device": "/dev/null", "link": tmp_path / "link.nc", "suffix": tmp_path / "x.txt"}[kind]
    if kind == "directory":
        out.mkdir()
    elif kind == "fifo":
        os.mkfifo(out)
    elif kind == "parent_is_file":
        (tmp_path / "f").write_text("a file")
    elif kind == "link":
        (tmp_path / "target.nc").write_text("")
        out.symlink_to(tmp_path / "target.nc")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run(tiny, out) == 2
    assert "--out" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no empty .cells/
    if kind == "device":
        assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_validation_errors_leave_nothing_behind(tiny, tmp_path, capsys):
    tiny.write_text(TINY.replace("n_particles = 6", "n_particles = 0"))
    assert run(tiny, tmp_path / "out" / "x.nc") == 2
    assert not (tmp_path / "out").exists()


def test_a_typo_inside_quick_is_found_without_quick(tiny, tmp_path, capsys):
    tiny.write_text(TINY.replace("[quick]\nepochs = 2", "[quick]\nepochs = 2\n[quick.methods.cbo]\nsigma_squard = 1.0"))
    assert run(tiny, tmp_path / "x.nc") == 2
    assert "[quick]: unknown key(s) ['sigma_squard'] in [methods.cbo]" in capsys.readouterr().err


def _multitask_study(path, n_tasks, particles):
    """A tiny multi-task study with one method per {label: n_particles}."""
    text = textwrap.dedent(f"""
        name = "mt"
        epochs = 2
        seeds = 1
        root_seed = 0
        [problem]
        name = "shifted_sines"
        n_tasks = {n_tasks}
        n_train = 60
        n_test = 20
        [network]
        n_neurons = 3
        """)
    for label, n in particles.items():
        text += f'[methods.{label}]\nmethod = "multitask"\nn_particles = {n}\nbatch_size = 30\n'
    path.write_text(text)
    return path


def test_multitask_with_fewer_particles_than_tasks_fails_before_any_cell(tmp_path, capsys, no_training):
    study = _multitask_study(tmp_path / "mt.toml", 5, {"shared": 10, "few": 4})
    assert run(study, tmp_path / "mt.nc") == 2
    err = capsys.readouterr().err
    assert "[methods.few]: n_particles must be >= the number of tasks 5, got 4" in err
    assert not (tmp_path / "mt.nc.cells").exists()


def test_a_single_task_method_on_a_multitask_problem_is_refused(tmp_path):
    from meanfield.study import Study, StudyError

    config = {"name": "x", "epochs": 1, "seeds": 1, "root_seed": 0,
              "problem": {"name": "shifted_sines", "n_tasks": 2}, "network": {"n_neurons": 2},
              "methods": {"cbo": {"method": "cbo"}}}
    with pytest.raises(StudyError, match=r"\[methods.cbo\]: method 'cbo' cannot train the multi-task problem"):
        Study(config)


def test_multitask_progress_counts_epochs_not_tasks(tmp_path, capsys):
    study = _multitask_study(tmp_path / "mt.toml", 3, {"shared": 6})
    assert main(["run", str(study), "--out", str(tmp_path / "mt.nc")]) == 0
    err = capsys.readouterr().err
    assert "mt shared-seed0: 100%" in err and not re.search(r"-\d+%", err)  # it counted tasks, down to -655%


def test_ctrl_c_keeps_finished_cells_and_says_how_to_resume(tiny, tmp_path, monkeypatch, capsys):
    from meanfield import runner as study_module

    real_train, calls = study_module.train, []

    def interrupted_after_one_cell(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(study_module, "train", interrupted_after_one_cell)
    out = tmp_path / "tiny.nc"
    assert run(tiny, out) == 130
    err = capsys.readouterr().err
    assert "1 of 4 cells are kept" in err and "run the same command again" in err and "Traceback" not in err
    monkeypatch.setattr(study_module, "train", real_train)
    assert run(tiny, out) == 0
    assert "1 already computed" in capsys.readouterr().err


def test_plotting_a_study_file_says_what_it_is(tiny, capsys):
    assert main(["plot", str(tiny)]) == 2
    assert "is not a netCDF file written by meanfield (a study file: run it with `meanfield run`)" in \
        capsys.readouterr().err


def test_plotting_a_dataset_no_study_wrote_says_so(tmp_path, capsys):
    path = tmp_path / "other.nc"
    write_dataset(xr.Dataset({"risk": ("epoch", np.zeros(3))}, attrs={"command": "python other.py"}), path)
    assert main(["plot", str(path), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a study result of `meanfield run`" in err and "written by python other.py" in err
    assert list(tmp_path.iterdir()) == [path]


def test_compare_says_which_numbers_moved_and_ignores_timings(tmp_path, capsys):
    """meanfield compare: bit-identical datasets (timings aside) exit 0, a moved number exits 1 and is
    named with its largest relative change; directories are compared file by file."""
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir(), after.mkdir()
    ds = xr.Dataset({"train_risk": ("epoch", [1.0, 0.5, np.nan]), "wall_time": ("epoch", [0.0, 1.0, 2.0])},
                    coords={"epoch": [0, 1, 2]}, attrs={"source_fingerprint": "a"})
    write_dataset(ds, before / "s.nc")
    again = ds.copy(deep=True)
    again["wall_time"][2] = 5.0
    again.attrs["source_fingerprint"] = "b"
    write_dataset(again, after / "s.nc")
    assert main(["compare", str(before), str(after)]) == 0
    out = capsys.readouterr().out
    assert "s.nc: 1 variables bit-identical; attributes that differ: source_fingerprint" in out
    again["train_risk"][1] = 0.5 * (1 + 1e-15)
    write_dataset(again, after / "s.nc")
    assert main(["compare", str(before / "s.nc"), str(after / "s.nc")]) == 1
    assert "MOVED: train_risk (1.1e-15 relative)" in capsys.readouterr().out


def test_a_code_change_recomputes_cells(tiny, tmp_path, monkeypatch):
    out = tmp_path / "tiny.nc"
    assert run(tiny, out) == 0
    monkeypatch.setattr("meanfield.study.source_fingerprint", lambda: "edited-source")

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr("meanfield.runner.train", refuse)
    with pytest.raises(AssertionError, match="recomputed"):
        run(tiny, out)


def test_the_dataset_follows_the_schema(mixed, tmp_path):
    out = tmp_path / "mixed.nc"
    assert run(mixed, out) == 0
    assert out.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # netCDF4 (HDF5), written through h5netcdf
    ds = open_dataset(out)
    for name, var in ds.data_vars.items():
        assert var.attrs["long_name"] == VARIABLES[name].long_name and var.attrs["units"] == VARIABLES[name].units
        assert var.dtype == np.dtype(VARIABLES[name].dtype), name
    assert list(ds.component.values) == ["w_1", "b", "c_1"]
    assert ds.wall_time.attrs["units"] == "s" and ds.state_bytes.attrs["units"] == "byte"
    for key in ("Conventions", "title", "history", "source", "references", "meanfield_version", "python_version",
                "numpy_version", "scipy_version", "xarray_version", "numba_version", "blas", "source_fingerprint"):
        assert ds.attrs[key], key
    assert ds.attrs["references"] == "arXiv:2511.21466" and ds.attrs["meanfield_version"] == __version__
    assert ds.attrs["Conventions"].startswith("CF-")
    # the dimension's name no longer collides with Dataset.sel's own `method` keyword
    assert list(ds.sel(method_label="cbo").train_risk.dims) == ["seed", "epoch"]


def test_netcdf3_files_of_earlier_versions_are_still_read(tmp_path):
    legacy = xr.Dataset({"train_risk": (("method", "seed", "epoch"), np.ones((2, 1, 3)))},
                        coords={"method": ["adam", "cbo"], "seed": [0], "epoch": [0, 1, 2]})
    legacy.to_netcdf(tmp_path / "old.nc", engine="scipy")
    ds = open_dataset(tmp_path / "old.nc")
    assert ds.train_risk.dims == ("method_label", "seed", "epoch")
    assert list(ds.method_label.values) == ["adam", "cbo"]


def test_version_info_and_dry_run(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"meanfield {__version__}"
    out = tmp_path / "tiny.nc"
    assert run(tiny, out, "--dry-run") == 0
    text = capsys.readouterr().out
    assert "4 cells (4 to compute)" in text and "estimated compute" in text and "cbo-seed1: to compute" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]  # a dry run writes nothing
    assert run(tiny, out, "--methods", "adam") == 0
    capsys.readouterr()
    assert run(tiny, out, "--dry-run") == 0
    assert "4 cells (2 computed, 2 to compute)" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "methods: adam" in text and "seeds: 2" in text and re.search(r"\[methods.adam\] .*lr = 0.05", text)
    assert "numpy_version" in text and "| adam |" in text


def test_set_overrides_a_setting_and_is_validated_like_the_file(tiny, tmp_path, capsys):
    out = tmp_path / "set.nc"
    assert run(tiny, out, "--set", "methods.cbo.dt=0.05", "--set", "epochs=2", "--methods", "cbo") == 0
    ds = open_dataset(out)
    assert ds.attrs["methods.cbo.dt"] == 0.05 and ds.sizes["epoch"] == 3
    for bad, message in [("methods.cbo.dt=-1", "[methods.cbo]: dt must be in (0, inf], got -1"),
                         ("methods.cbo.dtt=1", "unknown key(s) ['dtt'] in [methods.cbo]"),
                         ("methods.sgd.lr=1", "the study has no [methods.sgd]"),
                         ("epochs", "--set needs section.key=value"),
                         ("network.n_neurons=many", "n_neurons must be an integer >= 1, got 'many'")]:
        assert run(tiny, tmp_path / "bad.nc", "--set", bad) == 2
        assert message in capsys.readouterr().err, bad
    assert not (tmp_path / "bad.nc.cells").exists()


def test_the_command_line_starts_without_the_numerical_stack():
    # `meanfield --help` must answer at once: no xarray, matplotlib, numba, scipy or dask at import
    code = "import sys, meanfield.cli; print(sorted(m for m in ('xarray', 'matplotlib', 'numba', 'scipy', " \
           "'dask', 'ot') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_a_float32_study_runs_and_records_its_dtype_and_evaluation(tiny, tmp_path):
    out32, out64 = tmp_path / "f32.nc", tmp_path / "f64.nc"
    assert run(tiny, out32, "--seeds", "1", "--set", "network.dtype=float32") == 0
    assert run(tiny, out64, "--seeds", "1") == 0
    ds32, ds64 = open_dataset(out32), open_dataset(out64)
    assert ds32.attrs["network.dtype"] == "float32" and ds64.attrs["network.dtype"] == "float64"
    assert ds32.attrs["network.evaluation"] == "auto"
    assert ds32.final_params.dtype == np.float64
    np.testing.assert_allclose(ds32.train_risk, ds64.train_risk, rtol=1e-4)


def test_a_bad_dtype_or_evaluation_is_refused_before_any_compute(tiny, tmp_path, capsys, no_training):
    for setting, message in [("network.dtype=float16", "dtype must be one of ['float64', 'float32']"),
                             ("network.evaluation=fast", "evaluation must be one of")]:
        out = tmp_path / "bad.nc"
        assert run(tiny, out, "--set", setting) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_cells_run_in_process_use_one_blas_thread_as_the_workers_do(tiny, tmp_path, monkeypatch):
    # a threaded BLAS product sums in another order: a cell must not depend on where it ran
    from threadpoolctl import threadpool_info

    from meanfield import runner as study

    seen, train_cell = [], study._train_cell

    def recording(*args, **kwargs):
        seen.append({info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"})
        return train_cell(*args, **kwargs)

    monkeypatch.setattr(study, "_train_cell", recording)
    assert run(tiny, tmp_path / "out.nc", "--seeds", "1") == 0
    assert seen and all(threads == {1} for threads in seen)
