"""Optimizers over the objective: minibatch SGD and full-batch L-BFGS (SciPy).

Contract: each takes an emitted module and a data set, and returns a `FitResult`; the only
gradients used are the module's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import cast

import numpy as np
from scipy.optimize import OptimizeResult, minimize

from derive.errors import DeriveError
from derive.train.data import Dataset, FloatArray, IntArray
from derive.train.objective import (
    LBFGS_FTOL,
    LBFGS_MAXLS,
    BatchWrapper,
    FitResult,
    Monitor,
    SoftmaxModel,
    TrainConfig,
    objective_and_grad,
    weight_decay,
)


def blas_threads(n: int | None) -> AbstractContextManager[object]:
    """Limit BLAS (and OpenMP) to `n` threads inside the block; `None` leaves them alone.

    NOTE: why this exists. NumPy and SciPy each ship their own OpenBLAS, and scikit-learn brings
    OpenMP; their idle worker threads spin for a while after each call. When an optimizer
    alternates between them (SciPy's L-BFGS-B, NumPy's GEMMs, scikit-learn's OpenMP loss) on a
    machine with few cores, the spinning pools starve each other. Measured here (2 cores, other
    jobs running): the digits L-BFGS fit took 11-15 s with default threads and 0.23-0.36 s with
    one thread; scikit-learn's fit 1.6-7 s against 0.065 s. Without threadpoolctl (it comes with
    scikit-learn) this does nothing.
    """
    if n is None:
        return nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return cast(AbstractContextManager[object], threadpool_limits(limits=n))


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------


def _identity_wrapper(iterable: Iterable[int], total: int, desc: str) -> Iterable[int]:
    return iterable


def fit_sgd(
    model: SoftmaxModel,
    X: FloatArray,
    y: IntArray,
    n_classes: int,
    config: TrainConfig,
    *,
    monitor: Monitor | None = None,
    wrap_batches: BatchWrapper = _identity_wrapper,
) -> FitResult:
    """Minibatch SGD on F, reshuffling every epoch; reproducible from `config.seed`.

    The last batch of an epoch may be smaller; it is kept (as d2l's data iterator does) so that
    every sample is seen once per epoch.
    """
    n, d = X.shape
    rng = np.random.default_rng(config.seed)
    W = rng.normal(0.0, 0.01, size=(d, n_classes))
    b = np.zeros(n_classes)
    # Validate shapes, dtypes and labels once with the emitted checks, then skip them per batch.
    model.loss_and_grad(X[: config.batch_size], y[: config.batch_size], W, b, check=True)
    n_batches = math.ceil(n / config.batch_size)
    lr = config.lr
    decay = weight_decay(model, config.l2)  # the module's own L2 term and gradient
    seconds = 0.0
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(n)
        desc = f"epoch {epoch}/{config.epochs}"
        for i in wrap_batches(range(0, n, config.batch_size), n_batches, desc):
            batch = order[i : i + config.batch_size]
            _, dW, db = model.loss_and_grad(X[batch], y[batch], W, b, check=False, **decay)
            W -= lr * dW
            b -= lr * db
        seconds += time.perf_counter() - start
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
            return FitResult(W, b, seconds, epoch, False, f"diverged in epoch {epoch}: lower --lr")
        if monitor is not None:
            monitor(epoch, W, b)
    return FitResult(W, b, seconds, config.epochs, True, "all epochs done")


def fit_lbfgs(
    model: SoftmaxModel,
    X: FloatArray,
    y: IntArray,
    n_classes: int,
    config: TrainConfig,
    *,
    monitor: Monitor | None = None,
) -> FitResult:
    """Full-batch L-BFGS-B on F from W = 0, b = 0 (deterministic: `seed` plays no part).

    Starting at zero keeps W's rows and b summing to zero across classes (every gradient does),
    which picks the same representative as scikit-learn among the solutions that differ by a
    constant added to all logits, so parameters can be compared, not only predictions.
    """
    d = X.shape[1]
    k = n_classes
    x0 = np.zeros(d * k + k)
    model.loss_and_grad(X, y, x0[: d * k].reshape(d, k), x0[d * k :], check=True)
    l2 = config.l2

    def fun(x: FloatArray) -> tuple[float, FloatArray]:
        f, dW, db = objective_and_grad(model, X, y, x[: d * k].reshape(d, k), x[d * k :], l2)
        return f, np.concatenate([np.ravel(dW), np.ravel(db)])

    return run_lbfgs(fun, x0, d, k, config, monitor)


def run_lbfgs(
    fun: Callable[[FloatArray], tuple[float, FloatArray]],
    x0: FloatArray,
    d: int,
    k: int,
    config: TrainConfig,
    monitor: Monitor | None = None,
) -> FitResult:
    """SciPy's L-BFGS-B on `fun` (value and flat gradient of `[W.ravel(), b]`), timed without
    the monitor; shared by the in-memory and the Dask engines so that both stop alike."""

    callback: Callable[[OptimizeResult], None] | None = None
    monitor_seconds = 0.0
    n_calls = 0
    if monitor is not None:
        watched = monitor

        def callback(intermediate_result: OptimizeResult) -> None:
            nonlocal monitor_seconds, n_calls
            start = time.perf_counter()
            n_calls += 1
            x = np.asarray(intermediate_result.x)
            watched(n_calls, x[: d * k].reshape(d, k).copy(), x[d * k :].copy())
            monitor_seconds += time.perf_counter() - start

    start = time.perf_counter()
    result = minimize(
        fun,
        x0,
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={
            "maxiter": config.max_iter,
            "gtol": config.tol,
            "ftol": LBFGS_FTOL,
            "maxls": LBFGS_MAXLS,
        },
    )
    seconds = time.perf_counter() - start - monitor_seconds
    x = np.asarray(result.x)
    W = x[: d * k].reshape(d, k).copy()
    b = x[d * k :].copy()
    return FitResult(W, b, seconds, int(result.nit), bool(result.success), str(result.message))


def fit(
    model: SoftmaxModel,
    data: Dataset,
    config: TrainConfig,
    *,
    monitor: Monitor | None = None,
    wrap_batches: BatchWrapper = _identity_wrapper,
) -> FitResult:
    """Dispatch on `config.optimizer`."""
    if config.optimizer == "sgd":
        return fit_sgd(
            model,
            data.X_train,
            data.y_train,
            data.n_classes,
            config,
            monitor=monitor,
            wrap_batches=wrap_batches,
        )
    if config.optimizer == "lbfgs":
        return fit_lbfgs(model, data.X_train, data.y_train, data.n_classes, config, monitor=monitor)
    raise DeriveError(f"--optimizer {config.optimizer!r}: expected 'sgd' or 'lbfgs'")


# ---------------------------------------------------------------------------------------------
# scikit-learn comparison
# ---------------------------------------------------------------------------------------------
