r"""Cross-check meanfield's finite CBO on the sine study against CBXpy and a plain numpy CBO.

What it shows: that the finite CBO of ``meanfield`` on the paper's sine study (Fig. 2, 3 of
arXiv 2511.21466; ``studies/sine.toml``: N = 200 networks of M = 100 relu neurons, dt = 0.1,
lambda = 1, sigma^2 = 1.6, anisotropic noise, minibatches of S' = 800 of S = 8000 samples, alpha
1e5 x10 every 100 epochs up to 1e7, 1000 epochs, 10 seeds) is the same algorithm as CBXpy's
(``cbx``) and as a ~30-line numpy CBO written here from the paper's formulas: first step for step,
then as a distribution over seeds.

Same random draws. For seed i (the study's seed: ``SeedSequence(root_seed).spawn(seeds)[i]``) every
implementation gets its own fresh copy of the three streams of ``meanfield.train.random_streams``:
it starts from the particles ``CBO.init`` draws from the init stream, takes one permutation of the
training set per epoch from the minibatch stream (S // S' steps an epoch) and its normal draws from
the noise stream (cbx through ``sampler=noise_rng.standard_normal``, the numpy CBO as
``noise_rng.standard_normal((N, M, 3))``, the same numbers in the same order). The implementations:

* meanfield  ``CBO.step`` of the study's ``cbo`` method, driven by this script's loop; the script
  first checks that this loop reproduces ``meanfield.train.train`` bit for bit (training risk,
  variance and alpha of the first epochs, seed 0), so that the loop *is* the study's run;
* cbx        ``cbx.dynamics.CBO`` on particles of shape (1, N, M*3) (a network's neurons row by
  row), ``.step()`` called by the loop on the current minibatch (the objective reads it from a
  closure), alpha set every epoch from the study's schedule (``dyn.alpha[:] = alpha``); its
  post-processing (NaN replacement, clipping at 1e8), its objective check (it would consume draws)
  and its tracking are off;
* numpy      ``NumpyCBO`` below: risks, Gibbs weights exp(-alpha (R - min R)) / sum, consensus,
  move (eq. 21-24), nothing from either package.

Phase 1, step for step (seed 0, ``--lockstep-epochs`` epochs, default 20). The peers evaluate the
risks with a dense numpy pass of their own (``dense_risk``, broadcasting over networks, samples and
neurons), not with meanfield's exact running sums. After every epoch the script records, for each
peer, max |theta_peer - theta_meanfield| / max |theta_meanfield| over all particles. There are two
cbx peers: ``cbx`` with that objective as it is, and ``cbx_shifted`` with the objective minus its
minimum over the ensemble at each step (the Gibbs weights are the same in exact arithmetic). The
shift matters for rounding only: cbx computes its weights as exp(-alpha R - logsumexp(-alpha R)),
whose rounding is that of alpha R ~ 4e4 (a spacing of 7e-12), so whenever a second particle
carries weight its weights sum to 1 +- ~4e-12 and its consensus is off by that factor. The script
fails (exit status 1, with the numbers) if, over the first ``--assert-epochs`` epochs (default 5),
``cbx_shifted`` or ``numpy`` differ by more than 1e-12 or ``cbx`` by more than 1e-9. Later the
trajectories separate: a near tie between the two best particles turns a rounding difference into
a different consensus, and the dynamics amplify it by orders of magnitude per epoch (seed 0: 1e-8
is passed after 16 to 19 epochs), so that the comparison over seeds is one of distributions.

Phase 2, over seeds (seeds 0 .. ``--seeds`` - 1, default the study's 10, ``--epochs`` epochs,
default the study's 1000). For speed cbx and numpy use meanfield's ``TwoLayerNetwork.risk`` as
objective here (exact; it agrees with the dense pass to 1e-12 in meanfield's tests). Per epoch and
implementation the script records the training risk of the reported network (the consensus of the
epoch's last step; the mean of the particles at epoch 0) on the full training set, evaluated with
``TwoLayerNetwork.risk`` for all, the ensemble variance (sum over components of the variance over
particles) and alpha, as ``train`` records them. The study's ``adam`` method, run by ``train`` on
the same seeds, is the reference line. The summary gives median [quartiles] of the training risk at
epochs 100, 300 and 1000 and two-sided Mann-Whitney p-values (meanfield vs cbx, meanfield vs
numpy; meanfield vs adam as a control the test must tell apart).

Outputs: ``results/crosscheck_cbxpy.nc`` (an xarray Dataset over implementation, seed and epoch,
with the step-for-step differences over peer and lockstep_epoch; versions, settings and the command
in its attributes), ``figures/crosscheck_cbxpy.png`` (a: step-for-step differences, b: training
risk, c: ensemble variance, with alpha's increases marked) and
``figures/crosscheck_cbxpy_summary.md``. Every (phase, implementation, seed) run is saved to
``results/crosscheck_cbxpy.nc.cells/`` as it finishes, keyed by the settings, the versions of cbx
and numpy, meanfield's source fingerprint and the source of this script's computing functions: a
rerun reuses matching runs and recomputes stale ones. BLAS runs on one thread unless
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS say otherwise.

How to run it (from the repository root):

    python studies/crosscheck_cbxpy.py                 # full size, about 25 min on one core
    python studies/crosscheck_cbxpy.py --quick         # tiny sizes, seconds (the CI test)
    python studies/crosscheck_cbxpy.py --epochs 300 --seeds 5 --output /tmp/cc

``--quick`` runs N = 20 networks of M = 10 neurons on S = 400 samples (S' = 100), 3 epochs step for
step and 2 seeds x 5 epochs, still asserting the step-for-step agreement; its files are named
``crosscheck_cbxpy-quick.*``. ``--output DIR`` writes the dataset, its cells, the figure and the
summary into DIR instead of ``results/`` and ``figures/``.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported, see the docstring

import argparse
import datetime
import functools
import hashlib
import importlib.metadata
import inspect
import json
import math
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from cbx.dynamics import CBO as CbxCBO

import meanfield
from meanfield.study import StudyError, load_study, source_fingerprint
from meanfield.train import random_streams, train

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "sine.toml"
NAME = "crosscheck_cbxpy"
CBOS = ("meanfield", "cbx", "numpy")
IMPLEMENTATIONS = (*CBOS, "adam")
PEERS = ("cbx", "cbx_shifted", "numpy")
TOL = 1e-12      # step-for-step bound for peers whose consensus rounds like meanfield's
TOL_CBX = 1e-9   # cbx as it is: its consensus rounds at alpha R eps ~ 4e-12 a step, see the docstring
TOLERANCES = {"cbx": TOL_CBX, "cbx_shifted": TOL, "numpy": TOL}
SEPARATED = 1e-8  # reported: the first epoch a peer's trajectory is this far from meanfield's
REPORT_EPOCHS = (100, 300, 1000)
TRAIN_CHECK_EPOCHS = 3
LOCKSTEP_SEED = 0
FULL = {"lockstep_epochs": 20, "assert_epochs": 5, "overrides": []}
QUICK = {"epochs": 5, "seeds": 2, "lockstep_epochs": 3, "assert_epochs": 3,
         "overrides": ["problem.n_train=400", "problem.n_test=100", "network.n_neurons=10",
                       "methods.cbo.n_particles=20", "methods.cbo.batch_size=100", "methods.adam.batch_size=100"]}
COLORS = {"meanfield": "#1f77b4", "cbx": "#ff7f0e", "cbx_shifted": "#9467bd", "numpy": "#2ca02c",
          "adam": "#d62728"}
STYLES = {"meanfield": "-", "cbx": "--", "cbx_shifted": "-.", "numpy": ":", "adam": "-"}


class CrossCheckFailed(RuntimeError):
    """The implementations disagree where they must agree."""


# ------------------------------------------------------------------------------ the computation

def dense_risk(theta, x, y, block=25):
    """Mean squared error of every network, by plain broadcasting (independent of meanfield's evaluation).

    theta (N, M, 3) holds (w, b, a) per neuron, g(x) = mean_m a_m relu(w_m x + b_m); x (S, 1), y (S,)
    -> (N,). Blocks of ``block`` networks keep the (block, S, M) temporaries small.
    """
    x = x[:, 0]
    out = np.empty(theta.shape[0])
    for i in range(0, theta.shape[0], block):
        w, b, a = (theta[i:i + block, None, :, k] for k in range(3))   # (B, 1, M)
        h = np.maximum(x[None, :, None] * w + b, 0.0)                   # (B, S, M)
        g = (h * a).mean(axis=-1)                                       # (B, S)
        out[i:i + block] = ((g - y) ** 2).mean(axis=-1)
    return out


class NumpyCBO:
    """Finite CBO in plain numpy from eq. 21-24 of the paper (anisotropic noise), for the cross-check.

    One step on a minibatch: risks R_n, Gibbs weights beta = exp(-alpha (R - min R)) / sum (the shift
    keeps the exponentials finite and changes no weight), consensus V = sum_n beta_n theta_n, and
    theta_n <- theta_n - lambda dt (theta_n - V) + sigma sqrt(dt) (theta_n - V) * xi_n, xi ~ N(0, I).
    """

    def __init__(self, theta, risk, dt, drift_rate, sigma, rng):
        self.theta, self.risk, self.rng = np.array(theta, dtype=np.float64), risk, rng
        self.dt, self.drift_rate, self.sigma = dt, drift_rate, sigma
        self.alpha, self.consensus = None, None

    def step(self, x, y):
        risks = self.risk(self.theta, x, y)
        weights = np.exp(-self.alpha * (risks - risks.min()))
        weights /= weights.sum()
        v = np.tensordot(weights, self.theta, axes=1)
        diff = self.theta - v
        xi = self.rng.standard_normal(self.theta.shape)
        self.theta = self.theta - self.drift_rate * self.dt * diff + self.sigma * math.sqrt(self.dt) * diff * xi
        self.consensus = v


def streams(network, seed):
    """Fresh (init, minibatch, noise) generators of ``seed``, exactly as ``train`` makes them."""
    init_rng, batch_rng, noise_rng = random_streams(seed)
    return network.generator(init_rng), batch_rng, network.generator(noise_rng)


class MeanfieldDriver:
    """meanfield's ``CBO.step``, as ``train`` calls it."""

    def __init__(self, method, network, init_rng, noise_rng):
        self.method, self.network, self.rng = method, network, noise_rng
        self.state = method.init(network, init_rng)

    theta = property(lambda self: self.state.theta)
    consensus = property(lambda self: self.state.consensus)

    def set_alpha(self, alpha):
        pass  # the method reads its own schedule at every step

    def step(self, x, y, epoch):
        self.state = self.method.step(self.state, self.network, x, y, epoch, self.rng)


class CbxDriver:
    """CBXpy's CBO on meanfield's initial particles; ``shift`` subtracts the minimum from the objective."""

    def __init__(self, method, network, init_rng, noise_rng, risk, shift=False):
        theta = method.init(network, init_rng).theta
        n, m, d = self.shape = theta.shape
        self.batch = None

        def objective(p):  # (1, N, M*D) -> (1, N) on the current minibatch
            r = risk(p.reshape(n, m, d), *self.batch)
            return (r - r.min() if shift else r)[None]

        self.dyn = CbxCBO(objective, f_dim="3D", check_f_dims=False, x=theta.reshape(1, n, m * d).copy(),
                          noise=method.noise.name, alpha=float(method.alpha(0)), dt=method.dt,
                          lamda=method.drift_rate, sigma=math.sqrt(method.sigma_squared), batch_args={"size": n},
                          sampler=noise_rng.standard_normal, post_process=lambda dyn: None,
                          track_args={"names": []}, verbosity=0)

    theta = property(lambda self: self.dyn.x.reshape(self.shape))
    consensus = property(lambda self: None if self.dyn.consensus is None
                         else self.dyn.consensus.reshape(self.shape[1:]))

    def set_alpha(self, alpha):
        self.dyn.alpha[:] = alpha

    def step(self, x, y, epoch):
        self.batch = (x, y)
        self.dyn.step()


class NumpyDriver:
    """``NumpyCBO`` on meanfield's initial particles."""

    def __init__(self, method, network, init_rng, noise_rng, risk):
        self.cbo = NumpyCBO(method.init(network, init_rng).theta, risk, method.dt, method.drift_rate,
                            math.sqrt(method.sigma_squared), noise_rng)

    theta = property(lambda self: self.cbo.theta)
    consensus = property(lambda self: self.cbo.consensus)

    def set_alpha(self, alpha):
        self.cbo.alpha = alpha

    def step(self, x, y, epoch):
        self.cbo.step(x, y)


def make_driver(name, method, network, seed, risk):
    """(driver, minibatch generator) of implementation ``name`` with its own fresh streams of ``seed``."""
    init_rng, batch_rng, noise_rng = streams(network, seed)
    if name == "meanfield":
        return MeanfieldDriver(method, network, init_rng, noise_rng), batch_rng
    if name in ("cbx", "cbx_shifted"):
        return CbxDriver(method, network, init_rng, noise_rng, risk, shift=name == "cbx_shifted"), batch_rng
    if name == "numpy":
        return NumpyDriver(method, network, init_rng, noise_rng, risk), batch_rng
    raise ValueError(f"unknown implementation {name!r}")


def run_epoch(driver, batch_rng, method, x_tr, y_tr, epoch):
    """One epoch as ``train`` runs it: a permutation of the training set, S // S' steps."""
    driver.set_alpha(method.alpha(epoch))
    order = batch_rng.permutation(x_tr.shape[0])
    size = method.batch_size
    for b in range(x_tr.shape[0] // size):
        idx = order[b * size:(b + 1) * size]
        driver.step(x_tr[idx], y_tr[idx], epoch)


def run_cbo(name, method, network, problem, seed, epochs):
    """One CBO run of ``epochs`` epochs: {train_risk, variance, alpha} (epochs + 1,), diverged epoch (-1 if none)."""
    driver, batch_rng = make_driver(name, method, network, seed, network.risk)
    theta = driver.theta
    x_tr, y_tr = np.asarray(problem.x_train, dtype=theta.dtype), np.asarray(problem.y_train, dtype=theta.dtype)
    record = {key: np.full(epochs + 1, np.nan) for key in ("train_risk", "variance", "alpha")}

    def evaluate(epoch, alpha):  # as train(): the reported network and the spread of the particles
        theta, v = driver.theta, driver.consensus
        nets = np.mean(theta, axis=0) if v is None else v
        record["train_risk"][epoch] = network.risk(nets[None], x_tr, y_tr)[0]
        mean = np.mean(theta, axis=0)
        record["variance"][epoch] = np.sum((theta - mean) ** 2) / theta.shape[0]
        record["alpha"][epoch] = alpha
        return bool(np.isfinite(record["train_risk"][epoch]))

    diverged = -1
    with np.errstate(over="ignore", invalid="ignore"):
        evaluate(0, method.alpha(0))
        for epoch in range(epochs):
            try:
                run_epoch(driver, batch_rng, method, x_tr, y_tr, epoch)
            except FloatingPointError:  # meanfield refuses NaN risks
                diverged = epoch + 1
                break
            if not evaluate(epoch + 1, method.alpha(epoch)):
                diverged = epoch + 1
                break
    return record, diverged


def run_adam(method, network, problem, seed, epochs):
    """The study's Adam by ``train``: the same record (variance and alpha NaN: one network, no alpha)."""
    ds = train(method, network, problem, epochs, seed=seed)
    nan = np.full(epochs + 1, np.nan)
    return {"train_risk": ds["train_risk"].values, "variance": nan, "alpha": nan.copy()}, int(ds["diverged_epoch"])


def run_lockstep(method, network, problem, seed, epochs):
    """Relative particle difference of each peer to meanfield after each epoch, (len(PEERS), epochs + 1)."""
    mf, mf_batches = make_driver("meanfield", method, network, seed, None)
    peers = {name: make_driver(name, method, network, seed, dense_risk) for name in PEERS}
    x_tr = np.asarray(problem.x_train, dtype=mf.theta.dtype)
    y_tr = np.asarray(problem.y_train, dtype=mf.theta.dtype)
    diff = np.full((len(PEERS), epochs + 1), np.nan)

    def compare(epoch):
        scale = np.max(np.abs(mf.theta))
        for k, (driver, _) in enumerate(peers.values()):
            diff[k, epoch] = np.max(np.abs(driver.theta - mf.theta)) / scale

    with np.errstate(over="ignore", invalid="ignore"):
        compare(0)
        for epoch in range(epochs):
            run_epoch(mf, mf_batches, method, x_tr, y_tr, epoch)
            for driver, batch_rng in peers.values():
                run_epoch(driver, batch_rng, method, x_tr, y_tr, epoch)
            compare(epoch + 1)
    return diff


_COMPUTE = (dense_risk, NumpyCBO, streams, MeanfieldDriver, CbxDriver, NumpyDriver, make_driver, run_epoch,
            run_cbo, run_adam, run_lockstep)


@functools.cache
def script_fingerprint():
    """Hash of the source of the functions above: editing them invalidates the cached runs (plots do not).

    Computed once, at import (below): ``inspect`` reads the file on disk, which may be edited while a run goes on.
    """
    source = "\n".join(inspect.getsource(obj) for obj in _COMPUTE)
    source += repr((PEERS, CBOS, IMPLEMENTATIONS))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


script_fingerprint()


def check_train_loop(study, problem, network, seed, epochs):
    """This script's meanfield loop reproduces ``train`` bit for bit (else CrossCheckFailed)."""
    ours, _ = run_cbo("meanfield", study.methods["cbo"], network, problem, seed, epochs)
    ds = train(study.methods["cbo"], network, problem, epochs, seed=seed)
    for name, values in ours.items():
        if not np.array_equal(ds[name].values, values, equal_nan=True):
            raise CrossCheckFailed(f"the script's meanfield loop differs from meanfield.train.train in {name}: "
                                   f"{values} vs {ds[name].values}")
    return f"bit for bit over epochs 0..{epochs} (train_risk, variance, alpha; seed {LOCKSTEP_SEED})"


# ------------------------------------------------------------------------------------ the cells

def versions():
    return {"meanfield": meanfield.__version__, "cbx": importlib.metadata.version("cbx"),
            "numpy": np.__version__, "scipy": importlib.metadata.version("scipy"), "xarray": xr.__version__,
            "python": platform.python_version()}


def cell_key(phase, label, seed_index, study, epochs):
    """What a cached run depends on: its settings, the versions, meanfield's source and this script's."""
    params = study.parameters()
    method = "adam" if label == "adam" else "cbo"
    v = versions()
    parts = {"phase": phase, "label": label, "seed": seed_index, "root_seed": study.root_seed, "epochs": epochs,
             "problem": params["problem"], "network": params["network"], "method": params["methods"][method],
             "cbx": v["cbx"], "numpy": v["numpy"], "meanfield": v["meanfield"],
             "source_fingerprint": source_fingerprint(), "script": script_fingerprint()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_cell(path, key):
    """(dataset or None, "cached" | "missing" | "stale" | "damaged")."""
    if not path.exists():
        return None, "missing"
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except (OSError, ValueError, KeyError):
        return None, "damaged"
    return (ds, "cached") if ds.attrs.get("key") == key else (None, "stale")


def write_cell(path, ds, key):
    ds.attrs["key"] = key
    part = path.with_name(path.name + ".part")
    ds.to_netcdf(part, engine="h5netcdf")
    os.replace(part, path)


def cell(path, key, compute, log):
    """The cached dataset at ``path`` if its key matches, else ``compute()`` saved there."""
    ds, status = read_cell(path, key)
    if ds is not None:
        log(f"{path.stem}: cached")
        return ds
    start = time.perf_counter()
    ds = compute()
    ds.attrs["seconds"] = time.perf_counter() - start
    write_cell(path, ds, key)
    log(f"{path.stem}: {'re' if status == 'stale' else ''}computed in {ds.attrs['seconds']:.1f} s"
        + (" (its cached file was damaged)" if status == "damaged" else ""))
    return ds


# ------------------------------------------------------------------------------------- outputs

def lock(cells_dir):
    """An exclusive lock on the output folder for the whole run: a second run on it refuses at once."""
    import fcntl

    fh = open(cells_dir / ".lock", "a")  # noqa: SIM115 - held until the process ends
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"crosscheck_cbxpy: another run is writing {cells_dir}; wait for it or choose another --output")
    return fh


def check_lockstep(diff, assert_epochs):
    """CrossCheckFailed if a peer is beyond its bound within the first ``assert_epochs`` epochs."""
    bad = []
    for k, peer in enumerate(PEERS):
        worst = diff[k, :assert_epochs + 1]
        if not np.all(worst <= TOLERANCES[peer]):  # NaN fails too
            bad.append(f"{peer}: {np.array2string(worst, precision=2)} exceeds {TOLERANCES[peer]:g}")
    if bad:
        raise CrossCheckFailed(f"step-for-step disagreement over epochs 0..{assert_epochs} "
                               f"(relative particle difference to meanfield): " + "; ".join(bad))


def first_above(values, level):
    above = np.flatnonzero(~(values <= level))
    return int(above[0]) if above.size else None


def _epoch_or_none(epoch, last):
    return f"none within {last} epochs" if epoch is None else str(epoch)


def alpha_increases(method, epochs):
    return [e for e in range(1, epochs) if method.alpha(e) != method.alpha(e - 1)]


def report_epochs(epochs):
    picked = [e for e in REPORT_EPOCHS if e <= epochs]
    return picked if epochs in picked else picked + [epochs]


def quartiles(values):
    """25 %, 50 % and 75 % quantiles over seeds (the last axis), ignoring runs that stopped (NaN)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All-NaN slice")
        return np.nanquantile(values, [0.25, 0.5, 0.75], axis=-1)


def mannwhitney(a, b):
    from scipy.stats import mannwhitneyu

    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 1 or b.size < 1:
        return math.nan
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def compare_with_stored(ds, path):
    """A sentence on how this run's meanfield and adam lines compare with the study's own result file."""
    from meanfield.schema import ResultFileError, open_dataset

    try:
        stored = open_dataset(path)
    except ResultFileError as err:
        return f"The stored study result {path.name} could not be read: {err}"
    seeds = [s for s in ds["seed"].values if s in stored["seed"].values]
    epochs = min(ds.sizes["epoch"], stored.sizes["epoch"])
    if not seeds or "method_label" not in stored.dims:
        return None
    parts = []
    for ours, label in (("meanfield", "cbo"), ("adam", "adam")):
        if label not in stored["method_label"].values:
            continue
        a = ds["train_risk"].sel(implementation=ours, seed=seeds).values[:, :epochs]
        b = stored["train_risk"].sel(method_label=label, seed=seeds).values[:, :epochs]
        if np.array_equal(a, b, equal_nan=True):
            parts.append(f"{ours} equals its `{label}` training risk bit for bit")
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                worst = np.nanmax(np.abs(a - b) / np.abs(b))
            parts.append(f"{ours} differs from its `{label}` (largest relative difference {worst:.1e})")
    return (f"The study's own result file `results/{path.name}` (meanfield {stored.attrs.get('meanfield_version')}, "
            f"seeds {seeds[0]}..{seeds[-1]}, epochs 0..{epochs - 1}): " + "; ".join(parts) + ".")


def plot(ds, method, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from meanfield.plotting import STYLE

    epochs, seeds = ds.sizes["epoch"] - 1, ds.sizes["seed"]
    ep = ds["epoch"].values
    increases = alpha_increases(method, epochs)
    with plt.style.context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
        ax = axes[0]
        lep = ds["lockstep_epoch"].values
        assert_epochs = int(ds.attrs["assert_epochs"])
        for peer in PEERS:
            d = ds["lockstep_diff"].sel(peer=peer).values
            ax.plot(lep[1:], np.where(d[1:] > 0, d[1:], np.nan), STYLES[peer], marker="o", color=COLORS[peer],
                    label=f"{peer} - meanfield")
        for tol in sorted(set(TOLERANCES.values())):
            ax.axhline(tol, color="0.5", lw=0.8, ls="--")
            ax.text(lep[-1], tol, f" {tol:g}", va="bottom", ha="right", fontsize=7, color="0.4")
        ax.axvspan(0.5, assert_epochs + 0.5, color="0.85", alpha=0.5, lw=0, label="asserted epochs")
        ax.set(yscale="log", xlabel="epoch",
               ylabel=r"max $|\theta - \theta_{\rm meanfield}|$ / max $|\theta_{\rm meanfield}|$",
               title=f"(a) step for step, seed {LOCKSTEP_SEED}, same draws")
        ax.legend(loc="upper left", fontsize=7)

        def bands(ax, var, names):
            for name in names:
                q1, med, q3 = quartiles(ds[var].sel(implementation=name).values.T)
                ax.fill_between(ep, q1, q3, color=COLORS[name], alpha=0.15, lw=0)
                ax.plot(ep, med, STYLES[name], color=COLORS[name],
                        label=name if name != "adam" else "adam (reference)")

        ax = axes[1]
        bands(ax, "train_risk", IMPLEMENTATIONS)
        ax.set(yscale="log", xlabel="epoch", ylabel="training risk of the consensus",
               title=f"(b) median and quartiles over {seeds} seed{'s' * (seeds > 1)}")
        ax.legend(loc="upper right", fontsize=7)

        ax = axes[2]
        bands(ax, "variance", CBOS)
        ax.set(yscale="log", xlabel="epoch", ylabel="ensemble variance (sum over components)",
               title="(c) median and quartiles over seeds")
        ax.legend(loc="upper right", fontsize=7)
        for ax in axes[1:]:
            for e in increases:
                ax.axvline(e, color="0.5", lw=0.8, ls=":")
                ax.text(e, 0.99, r"$\alpha$ = " + f"{method.alpha(e):.0e}".replace("e+0", "e"), rotation=90,
                        transform=ax.get_xaxis_transform(), va="top", ha="right", fontsize=7, color="0.4")
        fig.suptitle("Finite CBO on the sine study: meanfield vs CBXpy vs plain numpy, fed the same random draws")
        fig.savefig(path)
        plt.close(fig)


def fmt(x):
    return "-" if not np.isfinite(x) else f"{x:.3g}"


def summary(ds, method, train_check):
    a = ds.attrs
    epochs, seeds = ds.sizes["epoch"] - 1, ds.sizes["seed"]
    settings = (f"Settings: N = {a['N']} networks of M = {a['M']} relu neurons, S = {a['S']} training samples, "
                f"minibatch S' = {a['batch_size']}, dt = {a['dt']}, "
                f"lambda = {a.get('drift_rate', a.get('drift'))}, sigma^2 = "
                f"{a['sigma_squared']}, {a['noise']} noise, alpha = {a['alpha_schedule']} (set per epoch), "
                f"{epochs} epochs, {seeds} seed{'s' * (seeds > 1)} (root seed {a['root_seed']}); Adam: lr = "
                f"{a['adam_lr']}, S' = {a['adam_batch_size']}.")
    versions_ = (f"Versions: meanfield {a['meanfield_version']} (source fingerprint {a['source_fingerprint']}), "
                 f"cbx {a['cbx_version']}, numpy {a['numpy_version']}, scipy {a['scipy_version']}, "
                 f"python {a['python_version']}.")
    measure = ("max |theta_peer - theta_meanfield| / max |theta_meanfield| over all particles after each epoch "
               "(peers: dense numpy objective; `cbx_shifted`: cbx with the objective minus its minimum):")
    lines = [f"# Cross-check: meanfield's finite CBO vs CBXpy vs a plain numpy CBO ({a['study']})", "",
             f"`{a['command']}`, {a['created']}. See the docstring of `studies/crosscheck_cbxpy.py` for what is run.",
             "", settings, "", versions_, "",
             f"Training loop check: the script's meanfield loop reproduces `meanfield.train.train` {train_check}.",
             "", f"## Step for step (seed {LOCKSTEP_SEED}, same particles, minibatches and normal draws)", "",
             measure, "", "| epoch | " + " | ".join(PEERS) + " |", "|---:|" + "---:|" * len(PEERS)]
    diff = ds["lockstep_diff"].values
    for e in ds["lockstep_epoch"].values:
        lines.append(f"| {e} | " + " | ".join(f"{diff[k, e]:.2e}" for k in range(len(PEERS))) + " |")
    assert_epochs = int(a["assert_epochs"])
    lines += ["", f"Asserted over epochs 1..{assert_epochs}: "
              + ", ".join(f"{p} <= {TOLERANCES[p]:g} (largest {np.max(diff[k, :assert_epochs + 1]):.2e})"
                          for k, p in enumerate(PEERS)) + ": passed.",
              f"First epoch with a difference above {SEPARATED:g}: "
              + ", ".join(f"{p} {_epoch_or_none(first_above(diff[k], SEPARATED), diff.shape[1] - 1)}"
                          for k, p in enumerate(PEERS)) + ".", ""]
    picked = report_epochs(epochs)
    risk = ds["train_risk"]
    lines += [f"## Over {seeds} seed{'s' * (seeds > 1)} (each implementation fed the seed's draws)", "",
              "Training risk of the consensus on the full training set, median [25 %, 75 %] over seeds:", "",
              "| implementation | " + " | ".join(f"epoch {e}" for e in picked) + " | median s / run |",
              "|---|" + "---:|" * (len(picked) + 1)]
    for name in IMPLEMENTATIONS:
        cells = []
        for e in picked:
            q1, med, q3 = quartiles(risk.sel(implementation=name, epoch=e).values)
            cells.append(f"{fmt(med)} [{fmt(q1)}, {fmt(q3)}]")
        wall = np.median(ds["wall_time"].sel(implementation=name).values)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall:.1f} |")
    lines += ["", "Ensemble variance, median over seeds:", "",
              "| implementation | " + " | ".join(f"epoch {e}" for e in picked) + " |",
              "|---|" + "---:|" * len(picked)]
    for name in CBOS:
        lines.append(f"| {name} | " + " | ".join(
            fmt(quartiles(ds["variance"].sel(implementation=name, epoch=e).values)[1]) for e in picked) + " |")
    lines += ["", ("Mann-Whitney U test, two-sided p-value, seeds as samples (the implementations share each "
                   "seed's draws, so the samples are paired rather than independent: the test errs on the side "
                   "of agreement; meanfield vs adam is a control it must tell apart):"), "",
              "| comparison | " + " | ".join(f"epoch {e}" for e in picked) + " |", "|---|" + "---:|" * len(picked)]
    for var, others in (("train_risk", ("cbx", "numpy", "adam")), ("variance", ("cbx", "numpy"))):
        for other in others:
            ps = [mannwhitney(ds[var].sel(implementation="meanfield", epoch=e).values,
                              ds[var].sel(implementation=other, epoch=e).values) for e in picked]
            lines.append(f"| {var.replace('_', ' ')}: meanfield vs {other} | " + " | ".join(fmt(p) for p in ps) + " |")
    diverged = {name: [int(s) for s in ds["seed"].values if ds["diverged_epoch"].sel(implementation=name, seed=s) >= 0]
                for name in IMPLEMENTATIONS}
    stopped = [f"{name} seeds {seeds_}" for name, seeds_ in diverged.items() if seeds_]
    lines += ["", "Runs stopped by a non-finite risk: " + ("; ".join(stopped) if stopped else "none") + "."]
    if "stored_study_check" in a:
        lines += ["", a["stored_study_check"]]
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- driver

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (N = 20, M = 10, S = 400, S' = 100), 3 + 2 x 5 epochs: seconds")
    parser.add_argument("--epochs", type=int, help="epochs of every run over seeds (default: the study's, 1000)")
    parser.add_argument("--seeds", type=int, help="seeds 0 .. SEEDS-1 (default: the study's, 10)")
    parser.add_argument("--lockstep-epochs", type=int, help="epochs step for step (default 20)")
    parser.add_argument("--assert-epochs", type=int,
                        help="epochs over which the step-for-step agreement is asserted (default 5)")
    parser.add_argument("--output", type=Path, help="directory for the dataset, figure and summary "
                        "(default: results/ and figures/ of the repository)")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    for name in ("epochs", "seeds", "lockstep_epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    args.lockstep_epochs = args.lockstep_epochs or mode["lockstep_epochs"]
    if args.assert_epochs is None:
        args.assert_epochs = min(mode["assert_epochs"], args.lockstep_epochs)
    if not 0 <= args.assert_epochs <= args.lockstep_epochs:
        parser.error(f"--assert-epochs must be between 0 and --lockstep-epochs ({args.lockstep_epochs}), "
                     f"got {args.assert_epochs}")
    if args.output is not None and args.output.exists() and not args.output.is_dir():
        parser.error(f"--output {args.output} exists and is not a directory")
    overrides = list(mode["overrides"])
    epochs = args.epochs or mode.get("epochs")
    if epochs is not None:
        overrides.append(f"epochs={epochs}")
    try:
        study = load_study(STUDY, seeds=args.seeds or mode.get("seeds"), overrides=overrides)
    except StudyError as err:
        parser.error(str(err))
    for label in ("cbo", "adam"):
        if label not in study.methods:
            parser.error(f"{STUDY} has no [methods.{label}]")
    if getattr(study.methods["cbo"].alpha, "unit", "epoch") != "epoch":
        parser.error("the cross-check sets alpha once per epoch: the study's alpha schedule must count epochs")
    return args, study


def main(argv=None):
    args, study = parse_args(argv)
    quick = "-quick" if args.quick else ""
    out = args.output
    nc = (out or ROOT / "results") / f"{NAME}{quick}.nc"
    png = (out or ROOT / "figures") / f"{NAME}{quick}.png"
    md = (out or ROOT / "figures") / f"{NAME}{quick}_summary.md"
    cells_dir = Path(f"{nc}.cells")
    cells_dir.mkdir(parents=True, exist_ok=True)
    held = lock(cells_dir)  # noqa: F841 - released when the process ends
    png.parent.mkdir(parents=True, exist_ok=True)

    def log(text):
        print(text, flush=True)

    problem = study.problem()
    study.check_problem(problem)
    network = study.network(problem)
    method = study.methods["cbo"]
    seeds = np.random.SeedSequence(study.root_seed).spawn(study.seeds)
    v = versions()
    log(f"cross-check on {STUDY.name}{' (quick sizes)' if args.quick else ''}: N = {method.n_particles}, "
        f"M = {network.n_neurons}, S = {problem.n_train}, S' = {method.batch_size}, {study.epochs} epochs x "
        f"{study.seeds} seeds, {args.lockstep_epochs} epochs step for step; meanfield {v['meanfield']}, "
        f"cbx {v['cbx']}, numpy {v['numpy']}")

    try:
        # phase 0: the loop is the study's run
        train_check = check_train_loop(study, problem, network, seeds[LOCKSTEP_SEED],
                                       min(TRAIN_CHECK_EPOCHS, study.epochs))
        log(f"training loop check: ok, {train_check}")

        # phase 1: step for step
        def lockstep():
            diff = run_lockstep(method, network, problem, seeds[LOCKSTEP_SEED], args.lockstep_epochs)
            return xr.Dataset({"lockstep_diff": (("peer", "lockstep_epoch"), diff)},
                              coords={"peer": list(PEERS), "lockstep_epoch": np.arange(args.lockstep_epochs + 1)})

        key = cell_key("lockstep", "all", LOCKSTEP_SEED, study, args.lockstep_epochs)
        locked = cell(cells_dir / f"lockstep-seed{LOCKSTEP_SEED}.nc", key, lockstep, log)
        diff = locked["lockstep_diff"].values
        for k, peer in enumerate(PEERS):
            log(f"  {peer:12s}" + " ".join(f"{d:.1e}" for d in diff[k]))
        check_lockstep(diff, args.assert_epochs)
        log(f"step-for-step check: ok (epochs 1..{args.assert_epochs}: "
            + ", ".join(f"{p} <= {TOLERANCES[p]:g}" for p in PEERS) + ")")

        # phase 2: over seeds
        shape = (len(IMPLEMENTATIONS), study.seeds, study.epochs + 1)
        data = {name: np.full(shape, np.nan) for name in ("train_risk", "variance", "alpha")}
        wall = np.full(shape[:2], np.nan)
        diverged = np.full(shape[:2], -1, dtype=np.int64)
        for i, seed in enumerate(seeds):
            for j, name in enumerate(IMPLEMENTATIONS):
                def compute(name=name, seed=seed):
                    if name == "adam":
                        record, div = run_adam(study.methods["adam"], network, problem, seed, study.epochs)
                    else:
                        record, div = run_cbo(name, method, network, problem, seed, study.epochs)
                    return xr.Dataset({k: ("epoch", r) for k, r in record.items()}
                                      | {"diverged_epoch": ((), np.int64(div))},
                                      coords={"epoch": np.arange(study.epochs + 1)})

                ds = cell(cells_dir / f"{name}-seed{i}.nc", cell_key("ensemble", name, i, study, study.epochs),
                          compute, log)
                for var, values in data.items():
                    values[j, i] = ds[var].values
                wall[j, i], diverged[j, i] = ds.attrs["seconds"], int(ds["diverged_epoch"])
    except CrossCheckFailed as err:
        sys.exit(f"crosscheck_cbxpy: FAILED: {err}")

    params = study.parameters()
    adam = params["methods"]["adam"]
    attrs = {
        "title": "meanfield finite CBO cross-checked against CBXpy and a plain numpy CBO",
        "study": study.name, "study_file": str(STUDY.relative_to(ROOT)),
        "command": shlex.join(["python", *(sys.argv if argv is None else ["studies/crosscheck_cbxpy.py", *argv])]),
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **{f"{k}_version": value for k, value in v.items()},
        "source_fingerprint": source_fingerprint(), "script_fingerprint": script_fingerprint(),
        "quick": int(args.quick), "root_seed": study.root_seed, "epochs": study.epochs, "seeds": study.seeds,
        "lockstep_epochs": args.lockstep_epochs, "lockstep_seed": LOCKSTEP_SEED,
        "assert_epochs": args.assert_epochs, "tolerances_json": json.dumps(TOLERANCES),
        "N": method.n_particles, "M": network.n_neurons, "S": problem.n_train, "batch_size": method.batch_size,
        "dt": method.dt, "drift_rate": method.drift_rate, "sigma_squared": method.sigma_squared,
        "noise": method.noise.name,
        "alpha_schedule": repr(method.alpha), "adam_lr": adam.get("lr", math.nan),
        "adam_batch_size": adam["batch_size"], "train_check": train_check,
        "parameters_json": json.dumps(params, sort_keys=True, default=str),
    }
    dims = ("implementation", "seed", "epoch")
    ds = xr.Dataset(
        {"train_risk": (dims, data["train_risk"], {
            "long_name": "training risk of the reported network",
            "description": "mean squared error on the full training set of the consensus of the epoch's last "
                           "step (epoch 0: the mean of the initial particles; adam: its network), evaluated "
                           "with meanfield's TwoLayerNetwork.risk for every implementation"}),
         "variance": (dims, data["variance"], {
             "long_name": "ensemble variance",
             "description": "sum over components of the variance over particles (NaN for adam)"}),
         "alpha": (dims, data["alpha"], {"long_name": "alpha used in the epoch (epoch 0: alpha of epoch 0)"}),
         "wall_time": (dims[:2], wall, {"long_name": "wall time of the run, evaluation included", "units": "s"}),
         "diverged_epoch": (dims[:2], diverged, {"long_name": "first epoch with a non-finite risk (-1: none)"}),
         "lockstep_diff": (("peer", "lockstep_epoch"), diff, {
             "long_name": "relative particle difference to meanfield, step for step",
             "description": f"max |theta_peer - theta_meanfield| / max |theta_meanfield| after each epoch, seed "
                            f"{LOCKSTEP_SEED}, peers with a dense numpy objective (cbx_shifted: minus its minimum)"}),
         "lockstep_tolerance": (("peer",), [TOLERANCES[p] for p in PEERS], {
             "long_name": "bound asserted over the first assert_epochs epochs"})},
        coords={"implementation": list(IMPLEMENTATIONS), "seed": np.arange(study.seeds),
                "epoch": np.arange(study.epochs + 1), "peer": list(PEERS),
                "lockstep_epoch": np.arange(args.lockstep_epochs + 1)},
        attrs=attrs)
    stored = ROOT / "results" / f"{study.name}.nc"
    if not args.quick and stored.exists():  # the study's own run of the same seeds, if it was made
        check = compare_with_stored(ds, stored)
        if check:
            ds.attrs["stored_study_check"] = check
    part = nc.with_name(nc.name + ".part")
    ds.to_netcdf(part, engine="h5netcdf")
    os.replace(part, nc)
    plot(ds, method, png)
    text = summary(ds, method, train_check)
    md.write_text(text)
    log(text)
    log(f"wrote {nc}, {png}, {md}")


if __name__ == "__main__":
    main()
