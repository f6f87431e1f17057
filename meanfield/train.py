"""Run one method on one problem for one seed, recording per-epoch metrics in an xarray Dataset."""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import array_api_compat
import numpy as np

from meanfield._array import namespace, to_numpy
from meanfield._validate import check_float, check_int
from meanfield.backend import child_sequence, synchronize
from meanfield.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from meanfield.schema import apply_schema, component_labels

if TYPE_CHECKING:  # annotations only: importing them here would load xarray with the package
    import xarray as xr

    from meanfield.method import Method
    from meanfield.network import TwoLayerNetwork
    from meanfield.problems import Problem

__all__ = ["train", "random_streams", "METRICS"]

# per-epoch variables every run records (their long names, units and descriptions: meanfield.schema)
METRICS = ("train_risk", "test_risk", "best_particle_risk", "variance", "alpha", "wall_time", "evaluations")


def random_streams(seed: int | np.random.SeedSequence) -> list[np.random.Generator]:
    """Independent generators (init, minibatches, noise): the children 0, 1, 2 of one seed or SeedSequence.

    The children are built from the seed's entropy and spawn key, not with ``SeedSequence.spawn``, which
    counts the children already spawned: a second run from the same SeedSequence object would get other
    streams, so a study's results would depend on the order of its cells."""
    if isinstance(seed, np.random.SeedSequence):
        ss = seed
    else:
        ss = np.random.SeedSequence(check_int("seed", seed, low=0))
    return [np.random.default_rng(child_sequence(ss, k)) for k in range(3)]


def _accuracy(network, theta, x, labels):
    return float(np.mean(np.argmax(to_numpy(network.forward(theta, x))[0], axis=-1) == labels))


def _state_bytes(state):
    """Bytes of all arrays a method keeps per run (particles, moments, consensus)."""
    return int(sum(getattr(v, "nbytes", 0) for v in vars(state).values()))


def _settings(obj):
    """The public settings of a method or network, as text (objects without a repr by their type)."""
    out = {}
    for name, value in sorted(vars(obj).items()):
        if not name.startswith("_"):
            text = repr(value)
            out[name] = type(value).__qualname__ if " at 0x" in text else text
    return out


def _run_identity(method, network, problem, epochs, seed, record_params):
    """What a checkpoint must match to continue a run: the settings, the data and the seed."""
    data = hashlib.sha256()
    for array in (problem.x_train, problem.y_train, problem.x_test, problem.y_test):
        data.update(np.ascontiguousarray(array).tobytes())
    if isinstance(seed, np.random.SeedSequence):
        seed = (repr(seed.entropy), seed.spawn_key, seed.pool_size)
    return {"method": (type(method).__qualname__, _settings(method)), "network": _settings(network),
            "problem": (problem.name, data.hexdigest()), "epochs": epochs, "seed": seed,
            "record_params": record_params}


def check_schedule_range(method: Method, epochs: int, iterations_per_epoch: int | None = None) -> None:
    """Refuse an alpha schedule that leaves the finite numbers within ``epochs`` (schedules are monotone).

    A per-iteration schedule is checked when ``iterations_per_epoch`` is known (it needs the data)."""
    alpha = method.alpha
    if alpha is None or alpha.unit not in ("epoch", "iteration"):  # adaptive: bounded by its maximum
        return
    if alpha.unit == "epoch":
        last, where = epochs - 1, f"epoch {epochs - 1}"
    elif iterations_per_epoch is not None:
        last, where = epochs * iterations_per_epoch - 1, f"iteration {epochs * iterations_per_epoch - 1}"
    else:
        return
    if not math.isfinite(alpha(last)):
        raise ValueError(f"alpha reaches {alpha(last)} by {where}; give its schedule a limit")


def train(method: Method, network: TwoLayerNetwork, problem: Problem, epochs: int,
          seed: int | np.random.SeedSequence = 0, progress: Callable[[], object] | None = None,
          record_params: bool = False, checkpoint: str | os.PathLike | None = None,
          checkpoint_every: float = 600.0) -> xr.Dataset:
    """Train ``method`` for ``epochs`` epochs of ``S // batch_size`` iterations.

    Epoch 0 holds the initial state; epoch e >= 1 the state after e epochs. A non-finite training
    risk (or NaN particle risk) stops the run: the epochs recorded so far are kept, later ones stay
    NaN, and the variable ``diverged_epoch`` names the first bad epoch (-1 if none; 0 if the initial
    state is already non-finite or the initialisation raised a FloatingPointError).

    A problem whose targets have shape (S, P) with one output is P tasks sharing the inputs: it
    needs a multi-task method, and the risks then have a ``task`` dimension (tasks numbered 1..P).

    Parameters
    ----------
    method : Method
        CBO, Adam, HybridCBOAdam, MultiTaskCBO, OTCBO, MultiTaskOTCBO or any object with the
        attributes and methods of :class:`meanfield.method.Method`.
    network : TwoLayerNetwork
    problem : Problem
    epochs : int
    seed : int or numpy.random.SeedSequence
        Root of the independent init, minibatch and noise streams.
    progress : callable, optional
        Called with no argument after each epoch.
    record_params : bool
        Also record the reported network at every epoch, ``reported_params`` (epoch, [task,] neuron,
        component): what convergence studies compare across N and M.
    checkpoint : path, optional
        A file in which the unfinished run is saved at the end of an epoch, at most every
        ``checkpoint_every`` seconds (:mod:`meanfield.checkpoint`). If the file exists when the
        run starts, the run continues from it: the result is bit for bit that of a run never
        stopped (the wall times aside). The file is removed when the run returns. A file saved by
        a run with other settings, data, epochs or seed raises
        :class:`~meanfield.checkpoint.CheckpointMismatch`.
    checkpoint_every : float
        Seconds >= 0 of wall time between two saves; 0 saves after every epoch.

    Returns
    -------
    xarray.Dataset with dim ``epoch`` (epochs + 1), the variables of ``METRICS`` (plus
    ``train_accuracy`` / ``test_accuracy`` for classification) and ``final_params`` (neuron,
    component), the reported network at the last recorded epoch; ``diverged_epoch`` and
    ``state_bytes`` (the memory of the method's state). Names, units and dtypes follow
    :mod:`meanfield.schema`.
    """
    epochs = check_int("epochs", epochs, low=1)
    n_batches = problem.n_train // method.batch_size
    if n_batches < 1:
        raise ValueError(f"batch_size must be <= the training set size {problem.n_train}, got {method.batch_size}")
    check_schedule_range(method, epochs, n_batches)
    multi, n_tasks = problem.multitask, problem.n_tasks
    if method.multitask != multi:
        raise ValueError(f"method {method.name!r} cannot train a {'multi' if multi else 'single'}-task problem")
    if multi:
        method.check_tasks(n_tasks)
    checkpoint_every = check_float("checkpoint_every", checkpoint_every, low=0)
    identity = _run_identity(method, network, problem, epochs, seed, record_params) if checkpoint is not None else None
    saved = load_checkpoint(checkpoint, identity) if checkpoint is not None else None
    init_rng, batch_rng, noise_rng = random_streams(seed)
    init_rng, noise_rng = network.generator(init_rng), network.generator(noise_rng)
    if saved is not None:
        state, batch_rng, noise_rng = saved["state"], saved["batch_rng"], saved["noise_rng"]
    else:
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                state = method.init(network, init_rng)
        except FloatingPointError as err:  # e.g. an initial barycenter of overflowing atoms
            warnings.warn(f"{method.name} (seed {seed}) diverged at initialisation: {err}; nothing to record",
                          RuntimeWarning, stacklevel=2)
            return _dataset(network, problem, epochs, n_batches, n_tasks, record=None, final=None,
                            diverged=0, state_bytes=0, params=_no_params(network, epochs, n_tasks, record_params))
    xp = namespace(state.theta)
    classify = problem.loss == "cross_entropy"
    # the data moves to the particles' device once, inputs and regression targets in their floating type
    on = {"dtype": state.theta.dtype, "device": array_api_compat.device(state.theta)}
    x_tr, x_te = xp.asarray(problem.x_train, **on), xp.asarray(problem.x_test, **on)
    y_tr, y_te = ((xp.asarray(problem.y_train, device=on["device"]), xp.asarray(problem.y_test, device=on["device"]))
                  if classify else (xp.asarray(problem.y_train, **on), xp.asarray(problem.y_test, **on)))

    # The evaluation sets are the same every epoch. Where the risks are sums over the samples sorted by
    # input, sorted copies give the same risks bit for bit and spare the sort at every evaluation.
    eval_tr, eval_te = (x_tr, y_tr), (x_te, y_te)
    if not classify and not problem.multitask and network.sorts_inputs(state.theta):
        eval_tr, eval_te = _sorted_by_input(x_tr, y_tr), _sorted_by_input(x_te, y_te)

    names = list(METRICS) + (["train_accuracy", "test_accuracy"] if classify else [])
    record = {name: np.full((epochs + 1, n_tasks), np.nan) for name in names}
    params = _no_params(network, epochs, n_tasks, record_params)
    diverged, elapsed = -1, 0.0
    # neuron-sample evaluations of one epoch: what methods are compared at (the passes of a gradient counted)
    per_epoch = n_batches * method.batch_size * network.n_neurons * method.n_particles * method.passes

    def per_task(nets):
        """The reported network of every task, (P, M, D); one network (M, D) serves every task."""
        nets = xp.reshape(nets, (-1, *nets.shape[-2:]))
        return nets if nets.shape[0] == n_tasks else xp.concat([nets] * n_tasks, axis=0)

    def evaluate(epoch, alpha):
        nets = per_task(method.reported_params(state))
        if state.risks is None:  # before the first step: the exactly best particle
            risks = problem.particle_risks(network, state.theta, *eval_tr)
        else:
            risks = xp.reshape(state.risks, (state.theta.shape[0], n_tasks))
        risks = xp.where(xp.isnan(risks), xp.inf, risks)
        best = xp.argmin(risks, axis=0)
        mean = xp.mean(state.theta, axis=0)
        values = {
            "train_risk": problem.task_risks(network, nets, *eval_tr),
            "test_risk": problem.task_risks(network, nets, *eval_te),
            "best_particle_risk": problem.task_risks(network, xp.take(state.theta, best, axis=0), *eval_tr),
            "variance": xp.sum((state.theta - mean) ** 2) / state.theta.shape[0],
            "alpha": alpha,
            "wall_time": elapsed,
            "evaluations": float(epoch * per_epoch),
        }
        if classify:
            values["train_accuracy"] = _accuracy(network, nets, x_tr, problem.y_train)
            values["test_accuracy"] = _accuracy(network, nets, x_te, problem.y_test)
        values.update(method.diagnostics(state))
        for name, value in values.items():
            record.setdefault(name, np.full((epochs + 1, n_tasks), np.nan))[epoch] = to_numpy(value)
        if params is not None:
            params[epoch] = to_numpy(nets)
        return bool(np.all(np.isfinite(record["train_risk"][epoch])))

    def reported():
        return to_numpy(per_task(method.reported_params(state)))

    alpha_of = method.alpha if method.alpha is not None else (lambda epoch: np.nan)
    first = 0
    if saved is not None:
        first, record, params, final, elapsed = (saved[k] for k in ("epoch", "record", "params", "final", "elapsed"))
    else:
        final = reported()
        with np.errstate(over="ignore", invalid="ignore"):
            if not evaluate(0, alpha_of(0)):
                diverged = 0
                warnings.warn(f"{method.name} (seed {seed}) diverged at initialisation: training risk "
                              f"{record['train_risk'][0]}; not trained", RuntimeWarning, stacklevel=2)
    last_save = time.monotonic()
    for epoch in range(first, epochs if diverged < 0 else first):
        alpha = alpha_of(epoch)
        order = xp.asarray(batch_rng.permutation(problem.n_train), device=on["device"])
        start = time.perf_counter()
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                for b in range(n_batches):
                    idx = order[b * method.batch_size : (b + 1) * method.batch_size]
                    state = method.step(state, network, xp.take(x_tr, idx, axis=0),
                                        xp.take(y_tr, idx, axis=0), epoch, noise_rng)
            synchronize(state.theta)  # the epoch's wall time includes the device's queued work
            ok = True
        except FloatingPointError as err:
            ok, reason = False, str(err)
        elapsed += time.perf_counter() - start
        if ok:
            with np.errstate(over="ignore", invalid="ignore"):
                ok = evaluate(epoch + 1, alpha)
            reason = f"training risk {record['train_risk'][epoch + 1]}"
        if not ok:
            diverged = epoch + 1
            warnings.warn(f"{method.name} (seed {seed}) diverged in epoch {diverged}: {reason}; "
                          f"stopped, epochs 0..{epoch} are kept", RuntimeWarning, stacklevel=2)
            break
        final = reported()
        if checkpoint is not None and epoch + 1 < epochs and time.monotonic() - last_save >= checkpoint_every:
            save_checkpoint(checkpoint, identity, {"epoch": epoch + 1, "state": state, "batch_rng": batch_rng,
                                                   "noise_rng": noise_rng, "record": record, "params": params,
                                                   "final": final, "elapsed": elapsed})
            last_save = time.monotonic()
        if progress is not None:
            progress()

    ds = _dataset(network, problem, epochs, n_batches, n_tasks, record, final, diverged, _state_bytes(state), params)
    if checkpoint is not None:
        remove_checkpoint(checkpoint)
    return ds


def _sorted_by_input(x, y):
    """The samples (x (S, 1), y) in the stable order of x."""
    order = np.argsort(x[:, 0], kind="stable")
    return x[order], y[order]


def _no_params(network, epochs, n_tasks, record_params):
    """The per-epoch record of the reported network, all NaN (None when not recorded)."""
    return np.full((epochs + 1, n_tasks, network.n_neurons, network.dim), np.nan) if record_params else None


def _dataset(network, problem, epochs, n_batches, n_tasks, record, final, diverged, state_bytes, params):
    """The run's Dataset; ``record`` None (a failed initialisation) gives every variable missing.

    Built over (epoch, task); a single-task problem's dataset has no ``task`` dimension."""
    import xarray as xr

    if record is None:
        names = list(METRICS) + (["train_accuracy", "test_accuracy"] if problem.loss == "cross_entropy" else [])
        record = {name: np.full((epochs + 1, n_tasks), np.nan) for name in names}
        final = np.full((n_tasks, network.n_neurons, network.dim), np.nan)
    data = {name: (("epoch", "task"), values) for name, values in record.items()}
    for name in ("variance", "alpha", "wall_time", "evaluations"):  # one value per ensemble, not per task
        data[name] = ("epoch", record[name][:, 0])
    data["final_params"] = (("task", "neuron", "component"), np.asarray(final, dtype=np.float64))
    if params is not None:
        data["reported_params"] = (("epoch", "task", "neuron", "component"), params)
    data["diverged_epoch"] = ((), np.int64(diverged))
    data["state_bytes"] = ((), np.int64(state_bytes))
    coords = {"epoch": np.arange(epochs + 1), "task": np.arange(1, n_tasks + 1),
              "component": component_labels(network.n_inputs, network.n_outputs)}
    ds = xr.Dataset(data, coords=coords, attrs={"iterations_per_epoch": n_batches})
    return apply_schema(ds if problem.multitask else ds.isel(task=0, drop=True))
