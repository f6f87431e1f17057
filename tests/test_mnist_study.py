"""The MNIST path end to end (IDX files -> study -> dataset -> figures) on a tiny synthetic data set."""

import textwrap

import numpy as np
from test_idx import mnist_dir

from meanfield.cli import main
from meanfield.schema import open_dataset

STUDY = textwrap.dedent("""
    name = "tiny_mnist"
    epochs = 15
    seeds = 1
    root_seed = 3

    [problem]
    name = "mnist"
    data_dir = "DIR"
    n_test = 40

    [network]
    n_neurons = 8

    [methods.cbo]
    method = "cbo"
    n_particles = 100
    sigma_squared = 0.1
    alpha = 1e3
    batch_size = 40
    init_scale = 3.0

    [methods.hybrid]
    method = "hybrid"
    gamma = 0.7
    n_particles = 30
    sigma_squared = 0.5
    alpha = 1e3
    batch_size = 40

    [methods.adam]
    method = "adam"
    lr = 0.05
    batch_size = 40
    """)


def synthetic_digits(n=200, side=5, seed=0):
    """Class k lights up pixel k of a noisy side x side image: learnable by a tiny network."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, side, side)).astype(np.uint8)
    images.reshape(n, -1)[np.arange(n), labels] = 255
    return images, labels


def test_mnist_study_end_to_end(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    data = mnist_dir(tmp_path / "data", *synthetic_digits())
    study = tmp_path / "study.toml"
    study.write_text(STUDY.replace("DIR", "nowhere"))
    out = tmp_path / "tiny_mnist.nc"
    # the study's own data_dir does not exist: a clear error naming the expected files
    assert main(["run", str(study), "--out", str(out), "--no-progress"]) == 2
    assert "t10k-images-idx3-ubyte" in capsys.readouterr().err
    assert main(["run", str(study), "--out", str(out), "--no-progress", "--data-dir", str(data)]) == 0
    ds = open_dataset(out)
    assert dict(ds.sizes) == {"method_label": 3, "seed": 1, "epoch": 16, "neuron": 8, "component": 25 + 1 + 10}
    assert ds.attrs["problem.data_dir"] == str(data)
    for label in ("cbo", "hybrid", "adam"):
        sub = ds.sel({"method_label": label}).isel(seed=0)
        assert sub.train_risk[-1] < sub.train_risk[0], label
        assert 0 <= float(sub.test_accuracy.min()) and float(sub.test_accuracy.max()) <= 1
    for label in ("hybrid", "adam"):  # 60 iterations are too few for CBO alone on this toy set
        # chance is 0.1; 0.25 is 3 binomial standard errors above it on 40 held-out images
        assert ds.test_accuracy.sel({"method_label": label})[0, -1] > 0.25, label
    assert main(["plot", str(out), "--out-dir", str(tmp_path / "figs")]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "tiny_mnist_accuracy.png", "tiny_mnist_instability.png", "tiny_mnist_risk.png",
        "tiny_mnist_risk_vs_cost.png", "tiny_mnist_summary.md", "tiny_mnist_variance_factor.png"]
