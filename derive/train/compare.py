"""`--compare-sklearn`: scikit-learn's `LogisticRegression` on the same objective.

Contract: maps `l2` to scikit-learn's `C`, fits, and evaluates both objectives at both
solutions, so the equivalence is checked numerically on every run.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any, cast

import numpy as np
from scipy.special import log_softmax

from derive.train.data import Dataset, FloatArray, IntArray
from derive.train.objective import (
    FitResult,
    SklearnFit,
    SoftmaxModel,
    TrainConfig,
    accuracy,
    objective_and_grad,
)


def l2_for_C(C: float, n_samples: int, n_classes: int) -> float:
    """The `l2` whose objective F has scikit-learn's minimiser for `C` (`sklearn_C` inverted)."""
    return (2.0 if n_classes == 2 else 1.0) / (n_samples * C)


def sklearn_C(l2: float, n_samples: int, n_classes: int) -> float:
    """scikit-learn's `C` whose `LogisticRegression` minimiser is the minimiser of F.

    See the module docstring: `1 / (n * l2)` for K > 2 (multinomial), `2 / (n * l2)` for K = 2
    (scikit-learn's binary parameterisation); `inf` (no penalty) when `l2 == 0`.
    """
    if l2 == 0.0:
        return math.inf
    return (2.0 if n_classes == 2 else 1.0) / (n_samples * l2)


def fit_sklearn(
    X: FloatArray,
    y: IntArray,
    n_classes: int,
    l2: float,
    *,
    tol: float = 1e-8,
    max_iter: int = 1000,
    C: float | None = None,
) -> SklearnFit:
    """Fit `LogisticRegression(lbfgs)` with the C equivalent to `l2` (or the `C` given).

    `tol` and `max_iter` are passed through so that both solvers stop by the same rule. A
    ConvergenceWarning is recorded in `converged` rather than raised: the comparison should
    report it, not crash.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    n = X.shape[0]
    C_used = sklearn_C(l2, n, n_classes) if C is None else C
    clf = LogisticRegression(C=C_used, tol=tol, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - start
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    coef = np.asarray(clf.coef_, dtype=np.float64)
    intercept = np.asarray(clf.intercept_, dtype=np.float64)
    if n_classes == 2:
        # Binary fit: logit difference w.x + c; split it symmetrically (the minimiser of F).
        W = np.stack([-coef[0] / 2, coef[0] / 2], axis=1)
        b = np.array([-intercept[0] / 2, intercept[0] / 2])
    else:
        W, b = coef.T.copy(), intercept.copy()
    return SklearnFit(W, b, C_used, seconds, int(np.max(clf.n_iter_)), converged, clf.predict)


def _sklearn_accuracy(sk: SklearnFit, X: FloatArray, y: IntArray) -> float:
    """scikit-learn's accuracy by its own `predict`."""
    assert sk.predict is not None
    return float(np.mean(np.asarray(sk.predict(X)) == y))


def reference_ce_sum(X: FloatArray, y: IntArray, W: FloatArray, b: FloatArray) -> float:
    """Sum of cross-entropies by SciPy's log-softmax: an evaluation independent of the module."""

    log_p = log_softmax(X @ W + b, axis=1)
    return -float(np.sum(log_p[np.arange(X.shape[0]), y]))


def compare_with_sklearn(
    model: SoftmaxModel, data: Dataset, result: FitResult, config: TrainConfig
) -> dict[str, Any]:
    """Fit scikit-learn on the same split and evaluate both objectives at both solutions.

    `objective_F` uses the emitted module; `objective_sklearn` is scikit-learn's own form
    `C * sum CE + 1/2 ||W||^2` evaluated with SciPy. When C is the right equivalent, each
    solution is (to solver tolerance) optimal for *both* objectives; a wrong C shows up as one
    solution being clearly better under each objective.
    """
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    sk = fit_sklearn(X, y, data.n_classes, config.l2, tol=config.tol, max_iter=config.max_iter)

    def objectives(W: FloatArray, b: FloatArray) -> dict[str, float | None]:
        f = objective_and_grad(model, X, y, W, b, config.l2)[0]
        penalty_sk = 0.5 * float(np.vdot(W, W))
        if data.n_classes == 2:
            # scikit-learn penalises w = w_1 - w_0; with W's columns summing to zero that is
            # ||w||^2 = 2 ||W||^2 (F's own minimiser has that property).
            w = W[:, 1] - W[:, 0]
            penalty_sk = 0.5 * float(np.vdot(w, w))
        g = None if math.isinf(sk.C) else sk.C * reference_ce_sum(X, y, W, b) + penalty_sk
        return {"objective_F": f, "objective_sklearn": g}

    ours = objectives(result.W, result.b)
    theirs = objectives(sk.W, sk.b)
    f_ours, f_sk = cast(float, ours["objective_F"]), cast(float, theirs["objective_F"])
    return {
        "C": sk.C,
        "n_train": n,
        "derive": {
            "optimizer": config.optimizer,
            "train_acc": accuracy(model, X, y, result.W, result.b),
            "test_acc": accuracy(model, data.X_test, data.y_test, result.W, result.b),
            **ours,
            "fit_seconds": result.seconds,
            "n_iter": result.n_iter,
        },
        "sklearn": {
            "optimizer": "lbfgs",
            "train_acc": _sklearn_accuracy(sk, X, y),
            "test_acc": _sklearn_accuracy(sk, data.X_test, data.y_test),
            **theirs,
            "fit_seconds": sk.seconds,
            "n_iter": sk.n_iter,
            "converged": sk.converged,
        },
        "relative_objective_gap": (f_ours - f_sk) / abs(f_sk) if f_sk != 0.0 else f_ours - f_sk,
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
