"""The benchmark scripts run and their built-in equivalence checks pass (tiny sizes, no timing claims)."""

import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.parametrize("script", ["bench_cbo.py"])
def test_benchmark_quick_run(script, monkeypatch, capsys):
    pytest.importorskip("cbx")
    monkeypatch.setattr(sys, "argv", [script, "--quick"])
    runpy.run_path(str(BENCH / script), run_name="__main__")
    out = capsys.readouterr().out
    assert "objective check: ok" in out and "ratio" in out
