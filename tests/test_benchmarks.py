"""The benchmark scripts run and their built-in equivalence checks pass (tiny sizes, no timing claims)."""

import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.parametrize("script, peer, expected, extra", [
    ("bench_cbo.py", "cbx", "objective check: ok", []),
    ("bench_barycenter.py", "ot", "obj ours/POT", []),
    ("bench_mnist_step.py", "numpy", "CBO / gemm", []),
    ("bench_otcbo_step.py", "numpy", "OT-CBO / CBO", []),
    ("bench_gpu_step.py", "torch", "step / bound", ["--device", "cpu"]),
])
def test_benchmark_quick_run(script, peer, expected, extra, monkeypatch, capsys):
    pytest.importorskip(peer)
    monkeypatch.setattr(sys, "argv", [script, "--quick", *extra])
    runpy.run_path(str(BENCH / script), run_name="__main__")
    out = capsys.readouterr().out
    assert expected in out
