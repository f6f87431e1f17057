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


def test_the_public_entry_points_are_annotated():
    """Every parameter of the methods' constructors, of the problems and of train has a type hint (the
    package ships py.typed), and the hints resolve."""
    import inspect
    import typing

    from meanfield import runner, study
    entry_points = [getattr(meanfield, name) for name in ("CBO", "Adam", "HybridCBOAdam", "MultiTaskCBO", "OTCBO",
                                                          "MultiTaskOTCBO", "sine", "square", "shifted_sines",
                                                          "mnist", "train")]
    entry_points += [study.load_study, runner.run_study]
    for func in entry_points:
        target = func.__init__ if inspect.isclass(func) else func
        missing = [name for name, p in inspect.signature(target).parameters.items()
                   if name != "self" and p.annotation is inspect.Parameter.empty]
        assert missing == [], f"{func.__name__}: {missing}"
        if not inspect.isclass(func):
            assert inspect.signature(func).return_annotation is not inspect.Signature.empty, func.__name__
        if func not in (meanfield.train, runner.run_study):  # their hints name xarray, imported on use
            typing.get_type_hints(target)


def test_every_consensus_method_runs_the_one_step():
    """CBO, the hybrid, multi-task CBO and both OT-CBOs share ConsensusMethod.step (risks -> weights ->
    targets -> noise -> move): none overrides it, so the noise is drawn in one place."""
    from meanfield.method import ConsensusMethod

    kinds = [meanfield.CBO, meanfield.HybridCBOAdam, meanfield.MultiTaskCBO, meanfield.OTCBO, meanfield.MultiTaskOTCBO]
    assert all(issubclass(kind, ConsensusMethod) and kind.step is ConsensusMethod.step for kind in kinds)
