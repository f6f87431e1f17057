"""The public API: every exported name resolves, OT-CBO loads its compiled solver only when used, and
the installed version is the package's."""

import importlib.metadata
import subprocess
import sys

import meanfield


def test_every_exported_name_resolves():
    assert [name for name in meanfield.__all__ if not hasattr(meanfield, name)] == []
    from meanfield import OTCBO, HybridCBOAdam, MultiTaskCBO, MultiTaskOTCBO  # noqa: F401


def test_importing_the_package_does_not_load_numba_xarray_or_matplotlib():
    code = ("import sys, meanfield; print(sorted(m for m in ('numba', 'xarray', 'matplotlib') if m in sys.modules)); "
            "meanfield.OTCBO; print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True"]


def test_the_version_is_written_once():
    assert importlib.metadata.version("meanfield") == meanfield.__version__
