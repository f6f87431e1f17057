"""The documentation builds with Sphinx without a single warning (the command .ci/run runs).

Skipped where Sphinx and the docs extras are not installed (``pip install '.[docs]'``); CI installs
them after the test suite and runs the same build as a step of its own.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_docs_build_without_warnings(tmp_path):
    for module in ("sphinx", "myst_parser", "numpydoc"):
        pytest.importorskip(module)
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(tmp_path / "html")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
