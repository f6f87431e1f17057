"""Study files and the command line, end to end on a tiny study."""

import json
import os
import textwrap
import warnings

import numpy as np
import pytest
import xarray as xr

from meanfield import __version__
from meanfield.cli import main
from meanfield.schema import open_dataset, processor, write_dataset
from meanfield.study import Study, StudyError, load_study

TINY = textwrap.dedent("""
    name = "tiny"
    epochs = 3
    seeds = 2
    root_seed = 11

    [problem]
    name = "sine"
    n_train = 120
    n_test = 30

    [network]
    n_neurons = 4

    [methods.cbo]
    method = "cbo"
    n_particles = 6
    dt = 0.1
    sigma_squared = 1.0
    batch_size = 40
    alpha = { kind = "step", initial = 10.0, factor = 10.0, every = 1, limit = 1000.0 }

    [methods.adam]
    method = "adam"
    lr = 0.05
    batch_size = 40

    [quick]
    epochs = 2
    """)


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_cli_run_and_plot_end_to_end(study_file, tmp_path, capsys):
    out = tmp_path / "tiny.nc"
    assert main(["run", str(study_file), "--out", str(out), "--no-progress"]) == 0
    ds = open_dataset(out)
    assert dict(ds.sizes) == {"method_label": 2, "seed": 2, "epoch": 4, "neuron": 4, "component": 3}
    assert "w_variance" not in ds  # OT-CBO diagnostics only where OT-CBO ran
    for var in ("train_risk", "test_risk", "best_particle_risk", "variance", "alpha", "wall_time"):
        assert ds[var].dims == ("method_label", "seed", "epoch"), var
        assert np.all(np.isfinite(ds[var].sel({"method_label": "cbo"}))), var
    assert list(ds.alpha.sel({"method_label": "cbo"}).isel(seed=0).values[1:]) == [10.0, 100.0, 1000.0]
    assert np.all(np.isnan(ds.alpha.sel({"method_label": "adam"})))
    assert np.all(ds.variance.sel({"method_label": "adam"}) == 0)  # one network
    assert np.all(np.diff(ds.wall_time.values, axis=-1) >= 0)
    assert ds.attrs["meanfield_version"] == __version__
    assert ds.attrs["root_seed"] == 11
    assert ds.attrs["methods.cbo.sigma_squared"] == 1.0 and ds.attrs["methods.adam.lr"] == 0.05
    assert np.all(ds.diverged_epoch == -1)
    assert "| cbo | " in capsys.readouterr().out

    figs = tmp_path / "figs"
    assert main(["plot", str(out), "--out-dir", str(figs)]) == 0
    assert sorted(p.name for p in figs.iterdir()) == [
        "tiny_fits.png", "tiny_instability.png", "tiny_risk.png", "tiny_risk_vs_cost.png", "tiny_summary.md",
        "tiny_variance_factor.png"]


def test_finished_cells_are_not_recomputed(study_file, tmp_path, monkeypatch):
    out = tmp_path / "tiny.nc"
    assert main(["run", str(study_file), "--out", str(out), "--no-progress"]) == 0
    first = open_dataset(out)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr("meanfield.runner.train", refuse)
    assert main(["run", str(study_file), "--out", str(out), "--no-progress"]) == 0
    second = open_dataset(out)
    assert first.attrs.pop("history") != "" and second.attrs.pop("history") != ""  # when and how it was run
    xr.testing.assert_identical(first, second)
    # a changed setting invalidates exactly the cells that depend on it
    (tmp_path / "tiny.toml").write_text(TINY.replace("lr = 0.05", "lr = 0.04"))
    with pytest.raises(AssertionError, match="recomputed"):
        main(["run", str(study_file), "--out", str(out), "--no-progress"])


def test_quick_applies_overrides(study_file):
    assert load_study(study_file, quick=True).epochs == 2
    assert load_study(study_file, quick=True).name == "tiny-quick"
    assert load_study(study_file).epochs == 3


@pytest.mark.parametrize("change, message", [
    (("epochs = 3", "epochs = 3\nepoch = 4"), r"unknown key\(s\) \['epoch'\] in .*allowed"),
    (("seeds = 2\n", ""), r"missing required key\(s\) \['seeds'\]"),
    (("n_particles = 6", "n_particles = -6"), r"\[methods.cbo\]: n_particles must be >= 1, got -6"),
    (("dt = 0.1", "dt = 0.0"), r"\[methods.cbo\]: dt must be in \(0, inf\], got 0"),
    (("dt = 0.1", "step = 0.1"), r"unknown key\(s\) \['step'\] in \[methods.cbo\]; allowed: .*'dt'"),
    (('method = "adam"', 'method = "sgd"'),
     r"method must be one of \['adam', 'cbo', 'hybrid', 'multitask', 'multitask_otcbo', 'otcbo'\]"),
    (("n_neurons = 4", "n_neurons = 0"), r"\[network\]: n_neurons must be an integer >= 1"),
    (("n_test = 30", "n_tests = 30"), r"unknown key\(s\) \['n_tests'\] in \[problem\]"),
    (("epochs = 3", "epochs = -1"), r"epochs must be >= 1, got -1"),
    (("n_train = 120", "n_train = 30"), r"\[methods.cbo\]: batch_size must be <= the training set size 30"),
])
def test_bad_study_files_name_the_key(study_file, tmp_path, change, message, capsys):
    assert change[0] in TINY
    study_file.write_text(TINY.replace(*change, 1))
    code = main(["run", str(study_file), "--out", str(tmp_path / "x.nc"), "--no-progress"])
    assert code == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_quick_without_quick_table_is_an_error():
    with pytest.raises(StudyError, match=r"no \[quick\] table"):
        Study({"name": "a"}, quick=True)


def test_shipped_studies_are_valid():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].glob("studies/*.toml")):
        for quick in (False, True):
            needs_gpu = 'device = "cuda"' in path.read_text() and not quick
            if needs_gpu and not _cuda_available():  # refused before any compute, saying why
                with pytest.raises(StudyError, match="needs PyTorch|sees no CUDA device"):
                    load_study(path, quick=quick)
            else:
                load_study(path, quick=quick)


def _cuda_available():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def test_sweep_over_width_and_particles(study_file, tmp_path):
    text = TINY.replace("[quick]", "[sweep]\nn_neurons = [2, 4]\nn_particles = [3, 5]\n\n[quick]")
    text = text.replace("[methods.adam]\nmethod = \"adam\"\nlr = 0.05\nbatch_size = 40\n", "")
    study_file.write_text(text)
    out = tmp_path / "sweep.nc"
    assert main(["run", str(study_file), "--out", str(out), "--no-progress"]) == 0
    ds = open_dataset(out)
    assert ds.train_risk.dims == ("method_label", "M", "N", "seed", "epoch")
    assert list(ds.M.values) == [2, 4] and list(ds.N.values) == [3, 5]
    # the narrow network's parameters are NaN-padded to the widest
    assert np.isnan(ds.final_params.sel({"method_label": "cbo", "M": 2})[..., 2:, :]).all()
    assert np.isfinite(ds.final_params.sel({"method_label": "cbo", "M": 4})).all()
    assert int(ds.state_bytes.sel({"method_label": "cbo", "M": 2, "N": 3, "seed": 0})) < int(
        ds.state_bytes.sel({"method_label": "cbo", "M": 4, "N": 5, "seed": 0}))
    figs = tmp_path / "figs"
    assert main(["plot", str(out), "--out-dir", str(figs)]) == 0
    names = sorted(p.name for p in figs.iterdir())
    assert names == ["sweep_excess_risk_M.png", "sweep_excess_risk_N.png", "sweep_rate_M.png", "sweep_rate_N.png",
                     "sweep_risk_vs_M.png", "sweep_risk_vs_N.png", "sweep_summary.md"]  # named after the result file
    assert "cbo M=4 N=5" in (figs / "sweep_summary.md").read_text()


def test_cells_of_a_narrower_sweep_combine_with_those_of_the_full_sweep(study_file, tmp_path):
    text = TINY.replace("[quick]", "[sweep]\nn_neurons = [2, 4, 6]\n\n[quick]")
    study_file.write_text(text.replace("[methods.adam]\nmethod = \"adam\"\nlr = 0.05\nbatch_size = 40\n", ""))
    out = tmp_path / "sweep.nc"
    assert main(["run", str(study_file), "--out", str(out), "--no-progress", "--set", "sweep.n_neurons=[2, 4]"]) == 0
    assert main(["run", str(study_file), "--out", str(out), "--no-progress"]) == 0
    ds = open_dataset(out)
    assert list(ds.M.values) == [2, 4, 6] and ds.sizes["neuron"] == 6
    assert np.isnan(ds.final_params.sel({"method_label": "cbo", "M": 2})[..., 2:, :]).all()


def test_the_dataset_records_the_processor_that_trained_its_cells(study_file, tmp_path):
    out = tmp_path / "run.nc"
    assert main(["run", str(study_file), "--out", str(out), "--no-progress"]) == 0
    ds = open_dataset(out)
    assert {key: ds.attrs[key] for key in processor()} == processor()
    assert "cell_processors" not in ds.attrs
    assert all(ds.attrs[key] not in ("", "unknown") for key in ("cpu", "numpy_simd", "blas_core", "numba_cpu"))


def test_cells_trained_on_another_processor_are_combined_and_said(study_file, tmp_path, capsys):
    out = tmp_path / "run.nc"
    assert main(["run", str(study_file), "--out", str(out), "--no-progress"]) == 0
    cells = sorted((tmp_path / "run.nc.cells").glob("*.nc"))
    elsewhere = open_dataset(cells[0])  # as if resumed on a machine without AVX-512
    elsewhere.attrs["processor"] = json.dumps({**processor(), "numpy_simd": "X86_V3"}, sort_keys=True)
    write_dataset(elsewhere, cells[0])
    capsys.readouterr()
    assert main(["run", str(study_file), "--out", str(out), "--no-progress"]) == 0
    said = "".join(capsys.readouterr())
    assert "0 to compute" in said and "trained on 2 kinds of processor" in said and "1 on" in said
    ds = open_dataset(out)
    mixed = json.loads(ds.attrs["cell_processors"])
    assert sorted(entry["cells"] for entry in mixed) == [1, len(cells) - 1]
    assert {entry["processor"]["numpy_simd"] for entry in mixed} == {"X86_V3", processor()["numpy_simd"]}
    assert ds.attrs["numpy_simd"] == "several; see cell_processors"


def test_bad_sweep_is_rejected(study_file):
    study_file.write_text(TINY.replace("[quick]", "[sweep]\nn_neurons = [2, 0]\n\n[quick]"))
    with pytest.raises(StudyError, match=r"sweep.n_neurons must be a non-empty list of integers >= 1"):
        load_study(study_file)
    study_file.write_text(TINY.replace("[quick]", "[sweep]\nwidth = [2]\n\n[quick]"))
    with pytest.raises(StudyError, match=r"unknown key\(s\) \['width'\] in \[sweep\]"):
        load_study(study_file)


def test_method_subset_and_seed_count_from_the_command_line(study_file, tmp_path):
    out = tmp_path / "sub.nc"
    assert main(["run", str(study_file), "--out", str(out), "--no-progress", "--methods", "adam", "--seeds", "1"]) == 0
    ds = open_dataset(out)
    assert list(ds.method_label.values) == ["adam"] and ds.sizes["seed"] == 1
    assert ds.attrs["seeds"] == 1
    # figures are named after the result file, so a subset's never overwrite the full study's
    assert main(["plot", str(out), "--out-dir", str(tmp_path / "figs")]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir())[-1] == "sub_summary.md"
    with pytest.raises(StudyError, match=r"--methods: unknown label\(s\) \['sgd'\]"):
        load_study(study_file, only_methods=["sgd"])
    with pytest.raises(StudyError, match="seeds must be >= 1"):
        load_study(study_file, seeds=0)


def test_cells_run_on_dask_workers_give_the_same_dataset(study_file, tmp_path):
    pytest.importorskip("dask.distributed")
    serial, parallel = tmp_path / "serial.nc", tmp_path / "parallel.nc"
    assert main(["run", str(study_file), "--out", str(serial), "--no-progress"]) == 0
    assert main(["run", str(study_file), "--out", str(parallel), "--no-progress", "--workers", "2"]) == 0
    a = open_dataset(serial)
    b = open_dataset(parallel)
    assert sorted(p.name for p in (tmp_path / "parallel.nc.cells").glob("*.nc")) == [
        "adam-seed0.nc", "adam-seed1.nc", "cbo-seed0.nc", "cbo-seed1.nc"]
    for ds in (a, b):  # timings differ, and the history's time stamp
        del ds.attrs["history"]
    xr.testing.assert_identical(a.drop_vars("wall_time"), b.drop_vars("wall_time"))


def test_dask_workers_keep_freed_memory(monkeypatch):
    # dask's nannies set MALLOC_TRIM_THRESHOLD_ to their own value, which made every large temporary
    # a fresh mmap, page-faulted anew: the workers get the settings of keep_freed_memory instead
    pytest.importorskip("dask.distributed")
    from meanfield._array import MALLOC_SETTINGS
    from meanfield.runner import _dask_client

    for name in MALLOC_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    with _dask_client(1, None) as client:
        env = client.run(lambda: {name: os.environ.get(name) for name in MALLOC_SETTINGS})
    assert list(env.values()) == [{name: str(value) for name, value in MALLOC_SETTINGS.items()}]


def test_keep_freed_memory_reports_whether_it_applied():
    import platform

    from meanfield._array import keep_freed_memory

    applied = keep_freed_memory()
    assert isinstance(applied, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert applied


def test_bad_worker_count_is_rejected(study_file, tmp_path, capsys):
    assert main(["run", str(study_file), "--out", str(tmp_path / "x.nc"), "--workers", "0"]) == 2
    assert "--workers must be an integer >= 1, got 0" in capsys.readouterr().err


def test_a_cell_does_not_depend_on_the_cells_run_before_it(study_file, tmp_path):
    # Seed i is one SeedSequence shared by every method; training from it must not consume it, or the
    # second method (and any cell run after a resume) would get other streams than a run of it alone.
    full, alone = tmp_path / "full.nc", tmp_path / "alone.nc"
    assert main(["run", str(study_file), "--out", str(full), "--no-progress"]) == 0
    assert main(["run", str(study_file), "--out", str(alone), "--no-progress", "--methods", "adam"]) == 0
    a = open_dataset(full).sel({"method_label": ["adam"]})
    b = open_dataset(alone)
    others = [name for name in a.data_vars if name not in b]  # what only the other methods record: NaN here
    assert all(bool(a[name].isnull().all()) for name in others)
    xr.testing.assert_equal(a.drop_vars(["wall_time", *others]), b.drop_vars("wall_time"))  # attrs name the methods


def test_cells_read_back_do_not_carry_their_encoding(tmp_path):
    # A cell read from disk remembers its label's width ("adam": 4 characters); writing the combined
    # dataset with that encoding would truncate or warn about the longer "cbo_long".
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace("[methods.cbo]", "[methods.cbo_long]"))
    out = tmp_path / "tiny.nc"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    assert list(open_dataset(out).method_label.values) == ["adam", "cbo_long"]
