"""Run one method on one problem for one seed, recording per-epoch metrics in an xarray Dataset."""

import time
import warnings

import numpy as np
import xarray as xr

from meanfield._array import namespace, to_numpy
from meanfield._validate import check_int

__all__ = ["train", "random_streams", "METRICS"]

METRICS = {
    "train_risk": "risk of the reported network (CBO: consensus; Adam: the network) on the full training set",
    "test_risk": "risk of the reported network on the held-out test set",
    "best_particle_risk": "full training risk of the particle with the lowest risk on the last minibatch",
    "variance": "ensemble variance (1/N) sum_n |theta_n - mean|^2 over all M*D components",
    "alpha": "inverse temperature used in the epoch (NaN for methods without one)",
    "wall_time": "seconds spent in training steps since the start (evaluation excluded)",
}


def random_streams(seed):
    """Independent generators (init, minibatches, noise) spawned from one seed or SeedSequence."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return [np.random.default_rng(child) for child in ss.spawn(3)]


def _accuracy(network, theta, x, labels):
    return float(np.mean(np.argmax(to_numpy(network.forward(theta, x))[0], axis=-1) == labels))


def train(method, network, problem, epochs, seed=0, progress=None):
    """Train ``method`` for ``epochs`` epochs of ``S // batch_size`` iterations.

    Epoch 0 holds the initial state; epoch e >= 1 the state after e epochs. A non-finite training
    risk (or NaN particle risk) stops the run: the epochs recorded so far are kept, later ones stay
    NaN, and ``attrs["diverged_epoch"]`` names the first bad epoch (-1 if none).

    Parameters
    ----------
    method : CBO, Adam or any object with ``init``, ``step``, ``report`` and ``batch_size``
    network : TwoLayerNetwork
    problem : Problem
    epochs : int
    seed : int or numpy.random.SeedSequence
        Root of the independent init, minibatch and noise streams.
    progress : callable, optional
        Called with no argument after each epoch.

    Returns
    -------
    xarray.Dataset with dim ``epoch`` (epochs + 1), the variables of ``METRICS`` (plus
    ``train_accuracy`` / ``test_accuracy`` for classification) and ``final_params`` (neuron, component),
    the reported network at the last recorded epoch.
    """
    epochs = check_int("epochs", epochs, low=1)
    n_batches = problem.n_train // method.batch_size
    if n_batches < 1:
        raise ValueError(f"batch_size must be <= the training set size {problem.n_train}, got {method.batch_size}")
    init_rng, batch_rng, noise_rng = random_streams(seed)
    state = method.init(network, init_rng)
    xp = namespace(state.theta)
    x_tr, y_tr = xp.asarray(problem.x_train), xp.asarray(problem.y_train)
    x_te, y_te = xp.asarray(problem.x_test), xp.asarray(problem.y_test)
    classify = problem.loss == "cross_entropy"
    names = list(METRICS) + (["train_accuracy", "test_accuracy"] if classify else [])
    record = {name: np.full(epochs + 1, np.nan) for name in names}
    diverged, elapsed = -1, 0.0

    def evaluate(epoch, alpha):
        v = method.report(state)[None]
        if state.risks is None:  # before the first step: the exactly best particle
            best = int(xp.argmin(network.risk(state.theta, x_tr, y_tr)))
        else:
            best = int(xp.argmin(xp.where(xp.isnan(state.risks), xp.inf, state.risks)))
        mean = xp.mean(state.theta, axis=0)
        values = {
            "train_risk": network.risk(v, x_tr, y_tr)[0],
            "test_risk": network.risk(v, x_te, y_te)[0],
            "best_particle_risk": network.risk(state.theta[best : best + 1], x_tr, y_tr)[0],
            "variance": xp.sum((state.theta - mean) ** 2) / state.theta.shape[0],
            "alpha": alpha,
            "wall_time": elapsed,
        }
        if classify:
            values["train_accuracy"] = _accuracy(network, v, x_tr, problem.y_train)
            values["test_accuracy"] = _accuracy(network, v, x_te, problem.y_test)
        for name, value in values.items():
            record[name][epoch] = float(value)
        return np.isfinite(record["train_risk"][epoch])

    final = to_numpy(method.report(state))
    alpha_of = getattr(method, "alpha", lambda epoch: np.nan)
    evaluate(0, alpha_of(0))
    for epoch in range(epochs):
        alpha = alpha_of(epoch)
        order = batch_rng.permutation(problem.n_train)
        start = time.perf_counter()
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                for b in range(n_batches):
                    idx = xp.asarray(order[b * method.batch_size : (b + 1) * method.batch_size])
                    state = method.step(state, network, xp.take(x_tr, idx, axis=0),
                                        xp.take(y_tr, idx, axis=0), epoch, noise_rng)
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
        final = to_numpy(method.report(state))
        if progress is not None:
            progress()

    data = {name: ("epoch", values, {"description": METRICS.get(name, name.replace("_", " "))})
            for name, values in record.items()}
    data["final_params"] = (("neuron", "component"), final, {"description": "reported network at the last good epoch"})
    return xr.Dataset(data, coords={"epoch": np.arange(epochs + 1)},
                      attrs={"diverged_epoch": diverged, "iterations_per_epoch": n_batches})
