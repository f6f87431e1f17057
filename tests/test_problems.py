import re

import numpy as np
import pytest
from numpy.testing import assert_allclose

from meanfield import Problem, make_problem, shifted_sines, sine, square
from meanfield.schedules import Step, make_schedule


def test_regression_problems_follow_their_law():
    p = sine(n_train=4000, n_test=1000, noise_std=0.01, seed=3)
    assert p.x_train.shape == (4000, 1) and p.y_test.shape == (1000,)
    assert 0 <= p.x_train.min() and p.x_train.max() <= 1
    resid = p.y_train - np.sin(2 * np.pi * p.x_train[:, 0])
    # the noise std estimated from 4000 samples: relative standard error 1/sqrt(2 * 4000) ~ 1.1%
    assert resid.std() == pytest.approx(0.01, rel=4 / np.sqrt(2 * 4000))
    q = square(n_train=100, noise_std=0.0)
    assert_allclose(q.y_train, q.x_train[:, 0] ** 2)
    assert not np.allclose(sine(n_train=50, seed=1).x_train, sine(n_train=50, seed=2).x_train)


def test_shifted_sines_family():
    p = shifted_sines(n_tasks=100, n_train=50, n_test=10)
    shifts = p.y_train - np.sin(2 * np.pi * p.x_train)
    assert_allclose(shifts[0], -1 + 2 * np.arange(100) / 99, atol=1e-12)


def test_bad_data_is_rejected():
    x = np.zeros((4, 1))
    with pytest.raises(ValueError, match="NaN"):
        Problem("p", x, np.array([0, np.nan, 0, 0]), x, np.zeros(4), "mse", 1)
    with pytest.raises(ValueError, match="y_train has 3 samples but x_train has 4"):
        Problem("p", x, np.zeros(3), x, np.zeros(4), "mse", 1)
    with pytest.raises(ValueError, match="problem.name must be one of"):
        make_problem("cosine")
    with pytest.raises(ValueError, match="n_train must be >= 1"):
        sine(n_train=0)


def test_schedules():
    s = make_schedule({"kind": "step", "initial": 1.0, "factor": 0.9, "every": 100, "limit": 0.5})
    assert s(0) == 1.0 and s(100) == pytest.approx(0.9) and s(10**6) == 0.5
    assert make_schedule(3.0)(7) == 3.0
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['evry'\] in alpha"):
        make_schedule({"kind": "step", "initial": 1.0, "factor": 2.0, "evry": 3}, "alpha")
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        Step(1.0, 2.0, 0)


@pytest.mark.parametrize("bad, shown", [(12, "12"), (-1, "-1"), (0.5, "0.5"), (10, "10")])
@pytest.mark.parametrize("split", ["train", "test"])
def test_classification_labels_must_be_class_indices(bad, shown, split):
    """Labels outside [0, C - 1] or not integers would make all-zero one-hot rows."""
    x = np.zeros((4, 2))
    good = np.array([0, 9, 3, 3])
    wrong = np.array([0, 9, bad, 3])
    y_train, y_test = (wrong, good) if split == "train" else (good, wrong)
    message = f"y_{split} must hold class indices, integers in [0, 9], got {shown}"
    with pytest.raises(ValueError, match=re.escape(message)):
        Problem("p", x, y_train, x, y_test, "cross_entropy", 10)
    Problem("p", x, good, x, good.astype(float), "cross_entropy", 10)  # integer-valued floats pass


def test_problem_loss_and_outputs_are_checked():
    x = np.zeros((4, 1))
    with pytest.raises(ValueError, match=re.escape("loss must be one of ['cross_entropy', 'mse'], got 'hinge'")):
        Problem("p", x, np.zeros(4), x, np.zeros(4), "hinge", 1)
    for n_outputs in (0, True, 1.0):
        with pytest.raises(ValueError, match="n_outputs must be"):
            Problem("p", x, np.zeros(4), x, np.zeros(4), "mse", n_outputs)


def test_sine_frequency_k():
    from meanfield.problems import sine

    p = sine(n_train=50, n_test=10, noise_std=0.0, frequency=4)
    np.testing.assert_allclose(p.y_train, np.sin(8 * np.pi * p.x_train[:, 0]), rtol=0, atol=1e-15)
    assert p.info["frequency"] == 4 and "frequency" not in sine(n_train=5, n_test=2).info
    with pytest.raises(ValueError, match="^frequency must be >= 1, got 0$"):
        sine(frequency=0)
