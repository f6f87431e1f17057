r"""The data sets of the paper's experiments, each with a held-out test set drawn from the same law.

Regression problems draw :math:`x \sim U[0, 1]` and :math:`y = f(x) + \text{noise\_std}\,\xi`.
"""

import os
from dataclasses import dataclass, field

import numpy as np

from meanfield._array import namespace
from meanfield._validate import check_class_indices, check_float, check_int

__all__ = ["Problem", "sine", "square", "shifted_sines", "mnist", "make_problem"]


@dataclass(frozen=True)
class Problem:
    """A supervised learning problem.

    Attributes
    ----------
    name : str
    x_train, x_test : ndarray, shape (S, d), float64
    y_train, y_test : ndarray, float64 of shape (S,) or (S, P) for P tasks sharing the inputs,
        or int64 class indices of shape (S,) in [0, n_outputs - 1] for classification.
    loss : {"mse", "cross_entropy"}
    n_outputs : int
        C: 1 for regression, the number of classes for classification.
    info : dict
        The settings that made the problem (for dataset attributes).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    loss: str
    n_outputs: int
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.loss not in ("mse", "cross_entropy"):
            raise ValueError(f"loss must be one of ['cross_entropy', 'mse'], got {self.loss!r}")
        check_int("n_outputs", self.n_outputs, low=1)
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 2:
                raise ValueError(f"x_{split} must have shape (n_samples, n_inputs), got {x.shape}")
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"y_{split} has {y.shape[0]} samples but x_{split} has {x.shape[0]}")
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                raise ValueError(f"x_{split} / y_{split} contain NaN or infinite values")
            if self.loss == "cross_entropy":
                check_class_indices(f"y_{split}", y, self.n_outputs)
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError("x_train and x_test must have the same number of inputs")

    @property
    def n_inputs(self):
        return self.x_train.shape[1]

    @property
    def n_train(self):
        return self.x_train.shape[0]

    @property
    def n_tasks(self):
        """P: the number of tasks sharing the inputs (targets (S, P), one output, squared loss), else 1."""
        return self.y_train.shape[1] if self.multitask else 1

    @property
    def multitask(self):
        """Whether the targets (S, P) are P regression tasks sharing the inputs."""
        return self.loss == "mse" and self.n_outputs == 1 and self.y_train.ndim == 2

    def particle_risks(self, network, theta, x, y):
        """Risk of every network on every task, (N, P) (P = 1 for a single task): theta (N, M, D)."""
        if self.multitask:
            return network.risk_matrix(theta, x, y)
        return network.risk(theta, x, y)[:, None]

    def task_risks(self, network, nets, x, y):
        """Risk of network p on task p: nets (P, M, D) -> (P,)."""
        if not self.multitask:
            return network.risk(nets, x, y)
        xp = namespace(nets)
        g = network.forward(nets, x)[..., 0]
        return xp.mean((g - xp.matrix_transpose(y)) ** 2, axis=1)


def _regression(name, f, n_train, n_test, noise_std, seed, info, n_tasks=None):
    """x ~ U[0, 1]; y = f(x) + noise, of shape (S,) for one target or (S, n_tasks) for a family."""
    n_train = check_int("n_train", n_train, low=1)
    n_test = check_int("n_test", n_test, low=1)
    noise_std = check_float("noise_std", noise_std, low=0)
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))

    def draw(rng, n):
        x = rng.uniform(0.0, 1.0, size=(n, 1))
        y = f(x) + noise_std * rng.standard_normal(size=(n, 1))
        return x, y[:, 0] if n_tasks is None else y

    (x_tr, y_tr), (x_te, y_te) = draw(train_rng, n_train), draw(test_rng, n_test)
    info = {"n_train": n_train, "n_test": n_test, "noise_std": noise_std, **info}
    return Problem(name, x_tr, y_tr, x_te, y_te, "mse", 1, info)


def sine(n_train: int = 8000, n_test: int = 2000, noise_std: float = 0.01, seed: int = 0,
         frequency: int = 1) -> Problem:
    r"""The paper's sine data (Fig. 2, 3): :math:`y = \sin(2\pi k x) + 0.01\,\xi` with k = ``frequency``
    (1 in the paper; larger k makes the risk landscape less convex, the paper's open question 3).

    >>> p = sine(n_train=10, n_test=5)
    >>> p.x_train.shape, p.y_train.shape, p.x_test.shape
    ((10, 1), (10,), (5, 1))
    """
    k = check_int("frequency", frequency, low=1)
    info = {} if k == 1 else {"frequency": k}  # k = 1 keeps the attributes of the paper's data sets
    return _regression("sine", lambda x: np.sin(2 * np.pi * k * x), n_train, n_test, noise_std, seed, info)


def square(n_train: int = 5000, n_test: int = 2000, noise_std: float = 0.01, seed: int = 0) -> Problem:
    r"""The OT-CBO data (Fig. 8): :math:`y = x^2 + 0.01\,\xi`."""
    return _regression("square", lambda x: x * x, n_train, n_test, noise_std, seed, {})


def shifted_sines(n_tasks: int = 100, n_train: int = 8000, n_test: int = 2000, noise_std: float = 0.0, seed: int = 0,
                  min_shift: float = 0.0, max_shift: float = 1.0) -> Problem:
    r"""Multi-task family (Fig. 5, 6): task p has :math:`y = \sin(2\pi x) + \Delta y_p`; the tasks share
    the inputs, y has shape (S, P).

    The paper's shifts (``min_shift = 0``) are :math:`\Delta y_p = m (-1 + 2 (p - 1) / (P - 1))` with
    m = ``max_shift`` = 1. With ``min_shift > 0`` the tasks are dissimilar: P/2 shifts evenly in
    [-max_shift, -min_shift] and P/2 in [min_shift, max_shift] (P even).

    >>> p = shifted_sines(n_tasks=3, n_train=4, n_test=2)
    >>> p.y_train.shape, p.info["shifts"]
    ((4, 3), [-1.0, 0.0, 1.0])
    >>> shifted_sines(n_tasks=4, n_train=4, n_test=2, min_shift=1.0, max_shift=2.0).info["shifts"]
    [-2.0, -1.0, 1.0, 2.0]
    """
    n_tasks = check_int("n_tasks", n_tasks, low=1)
    max_shift = check_float("max_shift", max_shift, low=0)
    min_shift = check_float("min_shift", min_shift, low=0, high=max_shift)
    if min_shift == 0:
        shifts = np.linspace(-max_shift, max_shift, n_tasks) if n_tasks > 1 else np.zeros(1)
    elif n_tasks % 2:
        raise ValueError(f"n_tasks must be even when min_shift > 0 (half the shifts on each side), got {n_tasks}")
    else:
        half = np.linspace(min_shift, max_shift, n_tasks // 2) if n_tasks > 2 else np.array([min_shift])
        shifts = np.concatenate([-half[::-1], half])
    f = lambda x: np.sin(2 * np.pi * x) + shifts  # noqa: E731  (x (S, 1) broadcasts to (S, P))
    info = {"n_tasks": n_tasks, "shifts": [float(s) for s in shifts]}
    if (min_shift, max_shift) != (0.0, 1.0):  # the paper's family keeps its attributes
        info.update(min_shift=min_shift, max_shift=max_shift)
    return _regression("shifted_sines", f, n_train, n_test, noise_std, seed, info, n_tasks)


def mnist(data_dir: str | os.PathLike, n_test: int = 2000, seed: int = 0) -> Problem:
    """MNIST from IDX files in ``data_dir`` (the 10,000-image test set suffices), pixels in [0, 1],
    split at random into ``10000 - n_test`` training and ``n_test`` held-out images."""
    from meanfield.idx import load_mnist

    images, labels = load_mnist(data_dir, split="test")
    n_test = check_int("n_test", n_test, low=1)
    if n_test >= len(labels):
        raise ValueError(f"n_test must be < {len(labels)} (the number of images), got {n_test}")
    order = np.random.default_rng(np.random.SeedSequence(seed)).permutation(len(labels))
    test, train = order[:n_test], order[n_test:]
    info = {"data_dir": str(data_dir), "n_train": len(train), "n_test": n_test}
    return Problem("mnist", images[train], labels[train], images[test], labels[test], "cross_entropy", 10, info)


PROBLEMS = {"sine": sine, "square": square, "shifted_sines": shifted_sines, "mnist": mnist}


def make_problem(name, **kwargs):
    """A problem by name with its keyword arguments (the ``[problem]`` table of a study)."""
    if name not in PROBLEMS:
        raise ValueError(f"problem.name must be one of {sorted(PROBLEMS)}, got {name!r}")
    return PROBLEMS[name](**kwargs)
