"""The dataset schema: every dimension and variable a study writes, defined once.

A study's result is one ``xarray.Dataset``. This module names its dimensions, gives every
variable its ``long_name``, ``units`` (CF/UDUNITS spelling: ``"1"`` for dimensionless, ``"s"``,
``"byte"``) and description, stores counters as integers (-1 where nothing was recorded), sets the
global attributes of the CF conventions, and reads and writes the files:

- :func:`write_dataset` writes netCDF4 through h5netcdf, compressed, atomically (a unique temporary
  name in the same folder, then ``os.replace``);
- :func:`open_dataset` reads those files and the netCDF3 files of earlier versions (whose method
  dimension was called ``method``, a name that ``Dataset.sel`` takes as its own keyword).

Examples
--------
>>> VARIABLES["wall_time"].units
's'
>>> component_labels(n_inputs=2, n_outputs=1)
['w_1', 'w_2', 'b', 'c_1']
"""

import datetime
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DIMENSIONS", "VARIABLES", "Variable", "METHOD_DIM", "component_labels", "apply_schema",
           "global_attrs", "environment", "processor", "FIGURES", "open_dataset", "write_dataset", "ResultFileError"]

METHOD_DIM = "method_label"
LEGACY_METHOD_DIM = "method"
REFERENCES = "arXiv:2511.21466"

DIMENSIONS = {
    METHOD_DIM: "label of the study's [methods.<label>] table",
    "seed": "seed index i: the run's streams come from SeedSequence(root_seed).spawn(seeds)[i]",
    "epoch": "epochs of training completed (0: the initial state)",
    "task": "task p = 1..P of a multi-task problem",
    "neuron": "neuron m of the reported network (an atom of its measure)",
    "component": "coordinate of a neuron (w_1..w_d, b, c_1..c_C)",
    "M": "network width: neurons per network",
    "N": "number of particles (networks) in the ensemble",
}


@dataclass(frozen=True)
class Variable:
    """How one variable is stored: ``dtype`` is "float64" (NaN where missing) or "int64" (-1)."""

    long_name: str
    units: str
    description: str
    dtype: str = "float64"

    @property
    def fill(self):
        return -1 if self.dtype == "int64" else float("nan")


VARIABLES = {
    "train_risk": Variable(
        "training risk", "1",
        "risk of the reported network on the full training set (CBO and hybrid: the consensus of the "
        "last step; multi-task: one consensus per task; Adam: its network; OT-CBO: the barycenter)"),
    "test_risk": Variable("test risk", "1", "risk of the reported network on the held-out test set"),
    "best_particle_risk": Variable(
        "best particle's training risk", "1",
        "full training risk of the particle with the lowest risk on the last minibatch "
        "(at epoch 0: the exactly best particle)"),
    "variance": Variable(
        "ensemble variance", "1",
        "(1/N) sum_n |theta_n - mean|^2 over all M D components (0 for one network)"),
    "alpha": Variable("inverse temperature alpha", "1",
                      "alpha used in the epoch (NaN for methods without Gibbs weights)"),
    "wall_time": Variable("training time", "s",
                          "seconds spent in training steps since the start (evaluation excluded)"),
    "evaluations": Variable(
        "neuron-sample evaluations", "1",
        "evaluations of one neuron on one training sample in training steps since the start: "
        "N S' M per step for a risk, three times that with a gradient (hybrid, Adam)"),
    "train_accuracy": Variable("training accuracy", "1", "fraction of training images classified correctly"),
    "test_accuracy": Variable("test accuracy", "1", "fraction of held-out images classified correctly"),
    "effective_sample_size": Variable(
        "effective sample size", "1",
        "1 / sum_n beta_n^2 of the Gibbs weights of the epoch's last step (per task for multi-task methods)"),
    "reported_params": Variable(
        "parameters of the reported network per epoch", "1",
        "the reported network (consensus, barycenter support or Adam's network) at every epoch, one row "
        "per neuron (NaN-padded to the widest); recorded when the study sets record_params = true"),
    "w_variance": Variable(
        "W-over-W variance", "1",
        "OT-CBO: (1/(2N)) sum_n W2^2(mu_n, barycenter) of the particles entering the epoch's last step (eq. 64)"),
    "w_variance_weighted": Variable(
        "Gibbs-weighted W-over-W variance", "1",
        "OT-CBO: (1/2) sum_n beta_n W2^2(mu_n, barycenter), the barycenter objective"),
    "barycenter_iterations": Variable(
        "barycenter fixed-point iterations", "1",
        "OT-CBO: fixed-point iterations of all barycenters so far (-1: not recorded)", "int64"),
    "barycenter_time": Variable("time in barycenters", "s", "OT-CBO: seconds spent in barycenters so far"),
    "barycenter_unconverged": Variable(
        "unconverged barycenter solves", "1",
        "OT-CBO: barycenter solves so far that stopped at barycenter_max_iter or whose Sinkhorn plans "
        "missed their marginal tolerance (-1: not recorded)", "int64"),
    "final_params": Variable(
        "parameters of the reported network", "1",
        "the reported network at the last good epoch, one row per neuron (NaN-padded to the widest)"),
    "diverged_epoch": Variable("divergence epoch", "1",
                               "first epoch with a non-finite training risk (-1: none)", "int64"),
    "state_bytes": Variable("memory of the method's state", "byte",
                            "bytes of the arrays a method keeps: particles, Adam moments, consensus", "int64"),
}


# Figures a study may declare in its top-level `figures` list; each becomes `<name>_<file>.png`, where
# "{dim}" stands for every swept dimension (M, N) of the dataset.
FIGURES = {
    "risk": "risk",                      # train and test risk vs epoch, median and quartile band over seeds
    "instability": "instability",        # fraction of runs whose risk rose > 10x above its running minimum
    "fits": "fits",                      # 1-D regression: the median seed's network over the data
    "accuracy": "accuracy",              # classification: held-out accuracy vs epoch
    "task_risk": "risk",                 # multi-task: median and minimum over tasks vs epoch
    "task_fits": "fits",                 # multi-task: five tasks' networks over their data
    "variance": "variance",              # OT-CBO: W-over-W variance vs step, with Proposition 3's rate
    "sweep_risk": "risk_vs_{dim}",       # a sweep: risk vs epoch for every swept value
    "sweep_variance": "variance_vs_{dim}",  # a sweep of OT-CBO: W-over-W variance vs epoch per swept value
    "rate": "rate_{dim}",                # a sweep: final risk vs the swept value, fitted log-log slope
    "strong_error": "strong_error_{dim}",    # coupled sweep: reported network vs the largest run, fitted order
    "neuron_spread": "neuron_spread_{dim}",  # sweep with record_params: variance over the reported neurons
    "excess_risk": "excess_risk_{dim}",      # 1-D regression sweep: risk against the noise-free target, fitted order
    "risk_vs_cost": "risk_vs_cost",          # risk against neuron-sample evaluations and wall time
    "variance_factor": "variance_factor",    # finite CBO: ensemble variance vs iteration, and its fitted rate
                                             # against the per-step variance factor of the noise
}


def component_labels(n_inputs, n_outputs):
    """Names of a neuron's coordinates in the order of ``theta``'s last axis: w_1..w_d, b, c_1..c_C."""
    return ([f"w_{i}" for i in range(1, n_inputs + 1)] + ["b"]
            + [f"c_{i}" for i in range(1, n_outputs + 1)])


def apply_schema(ds):
    """Attributes of every known variable and dimension, integer counters as int64 (in place; returns ``ds``)."""
    for name, spec in VARIABLES.items():
        if name not in ds:
            continue
        if spec.dtype == "int64" and ds[name].dtype.kind == "f":
            ds[name] = ds[name].fillna(spec.fill).astype("int64")
        ds[name].attrs = {"long_name": spec.long_name, "units": spec.units, "description": spec.description}
    for dim, text in DIMENSIONS.items():
        if dim in ds.coords:
            ds[dim].attrs = {"long_name": text}
    return ds


def processor():
    """What of the processor changes the rounding, as string attributes: its name, the SIMD loops numpy
    dispatches to, the kernels OpenBLAS chose and the CPU numba compiles for.

    The same versions round differently on processors with and without AVX-512 (numpy's ``exp`` and
    ``log``, OpenBLAS's matrix kernels, numba's code), so a run is reproducible bit for bit only on
    the same kind of processor, and cells computed on different kinds should be known as such.
    """
    out = {"cpu": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as fh:
            out["cpu"] = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
        out["numpy_simd"] = " ".join(f for f in __cpu_dispatch__ if __cpu_features__.get(f)) or "baseline"
    except ImportError:  # numpy's private module; where it moves, the rest is still worth recording
        out["numpy_simd"] = "unknown"
    from threadpoolctl import threadpool_info

    cores = sorted({str(lib.get("architecture")) for lib in threadpool_info() if lib.get("user_api") == "blas"})
    out["blas_core"] = " ".join(cores) or "unknown"
    try:
        import llvmlite.binding
        from numba.core import config
        out["numba_cpu"] = config.CPU_NAME or llvmlite.binding.get_host_cpu_name()
    except ImportError:
        out["numba_cpu"] = "not installed"
    return out


def environment():
    """Versions of Python, the numerical libraries and the BLAS that numpy uses, and the
    :func:`processor`, as string attributes (and the GPU's name where a run used torch with CUDA)."""
    import importlib.metadata

    import numpy as np

    out = {"python_version": platform.python_version(), "platform": platform.platform(), **processor()}
    for package in ("numpy", "scipy", "xarray", "numba", "pot", "h5netcdf", "h5py", "torch"):
        try:
            out[f"{package}_version"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[f"{package}_version"] = "not installed"
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["blas"] = f"{blas.get('name')} {blas.get('version')}"
        if blas.get("openblas configuration"):
            out["blas"] += f" ({blas['openblas configuration']})"
    except Exception:  # noqa: BLE001 - the config layout is numpy's; a missing key must not stop a run
        out["blas"] = "unknown"
    torch = sys.modules.get("torch")  # imported only by runs of the torch backend
    if torch is not None and torch.cuda.is_available():
        out["cuda_device"] = torch.cuda.get_device_name()
    return out


def global_attrs(title, history, source):
    """Global attributes of the CF conventions plus the environment that made the data."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"Conventions": "CF-1.10", "title": title, "history": f"{stamp}: {history}", "source": source,
            "references": REFERENCES, **environment()}


class ResultFileError(ValueError):
    """A file that is not a readable meanfield dataset."""


_NETCDF3, _HDF5 = b"CDF", b"\x89HDF\r\n\x1a\n"


def open_dataset(path):
    """Read a dataset written by meanfield (netCDF4, or netCDF3 of earlier versions) into memory.

    The engine is chosen from the file's signature; a legacy ``method`` dimension is renamed to
    ``method_label``. Raises :class:`ResultFileError`, naming the file, for anything unreadable.
    """
    import xarray as xr

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except IsADirectoryError:
        raise ResultFileError(f"{path} is a directory, not a netCDF file") from None
    except OSError as err:
        raise ResultFileError(f"cannot read {path}: {err.strerror or err}") from None
    if head.startswith(_HDF5):
        engine = "h5netcdf"
    elif head.startswith(_NETCDF3):
        engine = "scipy"
    else:
        hint = " (a study file: run it with `meanfield run`)" if path.suffix == ".toml" else ""
        raise ResultFileError(f"{path} is not a netCDF file written by meanfield{hint}")
    try:
        with xr.open_dataset(path, engine=engine) as ds:
            ds = ds.load()
    except Exception as err:  # noqa: BLE001 - truncated or damaged files fail inside the engines in many ways
        raise ResultFileError(f"{path} is damaged or truncated ({type(err).__name__}: {err})") from None
    if LEGACY_METHOD_DIM in ds.dims and METHOD_DIM not in ds.dims:
        ds = ds.rename({LEGACY_METHOD_DIM: METHOD_DIM})
    return ds


def _encoding(ds):
    enc = {}
    for name, var in ds.variables.items():
        if var.dtype.kind in "fiu":
            enc[name] = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
        if var.dtype.kind == "f":
            enc[name]["_FillValue"] = None if name in ds.coords else float("nan")
    return enc


def write_dataset(ds, path):
    """Write ``ds`` as compressed netCDF4 to ``path`` atomically: a killed run or a concurrent reader
    never sees a half-written file, and two writers never share a temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results private to their writer
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=_encoding(ds), invalid_netcdf=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
