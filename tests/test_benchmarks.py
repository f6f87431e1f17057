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
    ("profile_sinkhorn_barycenter.py", "numpy", "share of the steps", []),
])
def test_benchmark_quick_run(script, peer, expected, extra, monkeypatch, capsys):
    pytest.importorskip(peer)
    monkeypatch.setattr(sys, "argv", [script, "--quick", *extra])
    runpy.run_path(str(BENCH / script), run_name="__main__")
    out = capsys.readouterr().out
    assert expected in out


def test_profile_restores_the_solver(monkeypatch, capsys):
    """The profile's timers wrap the solver's functions only while it runs."""
    from meanfield import otcbo
    from meanfield.transport import SinkhornBarycenter, entropic
    from meanfield.transport import barycenter as barycenter_module
    from meanfield.transport.entropic import EntropicPlans

    before = (entropic.newton, entropic.semi_dual, barycenter_module.barycenter_plans, EntropicPlans.solve,
              SinkhornBarycenter.solve, otcbo.w2_squared)
    monkeypatch.setattr(sys, "argv", ["profile_sinkhorn_barycenter.py", "--quick"])
    runpy.run_path(str(BENCH / "profile_sinkhorn_barycenter.py"), run_name="__main__")
    assert (entropic.newton, entropic.semi_dual, barycenter_module.barycenter_plans, EntropicPlans.solve,
            SinkhornBarycenter.solve, otcbo.w2_squared) == before
    assert "| initial (equal weights) |" in capsys.readouterr().out
