"""The cross-check against CBXpy (studies/crosscheck_cbxpy.py) runs in its quick form: the step-for-step
agreement holds, the dataset, figure and summary are written, and a rerun reuses the saved runs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

SCRIPT = Path(__file__).parents[1] / "studies" / "crosscheck_cbxpy.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], check=False, capture_output=True, text=True,
                          timeout=600)


def test_crosscheck_quick(tmp_path):
    pytest.importorskip("cbx")
    result = run("--quick", "--output", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "training loop check: ok" in result.stdout
    assert "step-for-step check: ok" in result.stdout
    with xr.open_dataset(tmp_path / "crosscheck_cbxpy-quick.nc", engine="h5netcdf") as ds:
        assert dict(ds["train_risk"].sizes) == {"implementation": 4, "seed": 2, "epoch": 6}
        assert list(ds["implementation"].values) == ["meanfield", "cbx", "numpy", "adam"]
        diff = ds["lockstep_diff"]
        assert float(diff.sel(lockstep_epoch=0).max()) == 0.0  # the same initial particles
        assert float(diff.sel(peer=["cbx_shifted", "numpy"]).max()) <= 1e-12
        assert float(diff.sel(peer="cbx").max()) <= 1e-9   # cbx's own consensus rounding, see the script
        assert np.all(np.isfinite(ds["train_risk"].values))
        assert ds.attrs["cbx_version"] and ds.attrs["source_fingerprint"]
    assert (tmp_path / "crosscheck_cbxpy-quick.png").stat().st_size > 0
    assert "Mann-Whitney" in (tmp_path / "crosscheck_cbxpy-quick_summary.md").read_text()

    rerun = run("--quick", "--output", str(tmp_path))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "computed in" not in rerun.stdout and rerun.stdout.count(": cached") == 9


def test_crosscheck_refuses_bad_arguments(tmp_path):
    pytest.importorskip("cbx")
    result = run("--quick", "--seeds", "0", "--output", str(tmp_path))
    assert result.returncode == 2 and "--seeds must be >= 1" in result.stderr
