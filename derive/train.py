"""`derive train`: fit softmax regression using only the emitted module's gradient code.

The point of the command is to show the derived code doing real work: the model is evaluated
*only* through the emitted module's `loss_and_grad` (loss and fused gradient) and `predict`.
Nothing here computes a softmax, a cross-entropy or a gradient of its own, so a wrong derivation
shows up as a model that does not train, or as a gap to scikit-learn under `--compare-sklearn`.

Objective. Both optimizers minimise, over the n training samples,

    F(W, b) = (1/n) sum_i CE(y_i, softmax(x_i W + b)) + (l2 / 2) * ||W||_F^2

with W of shape (d, K), the bias b unpenalised (as scikit-learn does), `l2 = --l2`. The gradient
is the emitted `(dW, db)` plus `l2 * W` for W.

- `--optimizer sgd` is minibatch SGD with d2l's defaults (batch 256, lr 0.1, 10 epochs,
  W ~ N(0, 0.01^2), b = 0), the l2 term applied as weight decay on every step.
- `--optimizer lbfgs` hands F and its gradient to `scipy.optimize.minimize(method="L-BFGS-B")`
  on the full training set, starting from W = 0, b = 0, with the stopping rule scikit-learn uses
  (`gtol = --tol`, `ftol = 64 * eps`, `maxls = 50`).

scikit-learn's `LogisticRegression` minimises `C * sum_i CE_i + 1/2 ||W||^2` (multinomial loss,
bias unpenalised), which is `F / l2` when `C = 1 / (n * l2)`: the same minimiser. For two
classes scikit-learn fits one weight vector w = w_1 - w_0 instead of two; at F's minimum
w_0 = -w_1, so `||W||^2 = ||w||^2 / 2` and the equivalent is `C = 2 / (n * l2)`. `--compare-sklearn`
evaluates both objectives at both solutions so that this equivalence is checked numerically on
every run, not just asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, cast

import numpy as np
import numpy.typing as npt

from derive.datasets import Dataset, DatasetError, FloatArray, IntArray
from derive.errors import DeriveError, ModuleLoadError, OutputDirError

INSTALL_HINT: Final = 'pip install -e ".[train]"'

OBJECTIVE_TEXT: Final = "mean cross-entropy + l2/2 * ||W||_F^2 (bias unpenalised)"

# scikit-learn's L-BFGS stopping rule (sklearn/linear_model/_logistic.py), used for both sides of
# the comparison so that fit times compare like with like.
LBFGS_FTOL: Final = 64 * float(np.finfo(float).eps)
LBFGS_MAXLS: Final = 50


class SoftmaxModel(Protocol):
    """What `derive train` needs from an emitted module (see generated/softmax_regression.py)."""

    def loss_and_grad(
        self, X: FloatArray, y: IntArray, W: FloatArray, b: FloatArray, check: bool = True
    ) -> tuple[float, FloatArray, FloatArray]: ...

    def predict(self, X: FloatArray, W: FloatArray, b: FloatArray) -> npt.NDArray[np.integer]: ...


Monitor = Callable[[int, FloatArray, FloatArray], None]
"""Called as `monitor(step, W, b)` after each SGD epoch / L-BFGS iteration; its time is not
counted as fit time."""

BatchWrapper = Callable[[Iterable[int], int, str], Iterable[int]]
"""Wraps an epoch's batch iterator (`iterable, total, description`), e.g. in a progress bar."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a fit; two equal configs on the same data give equal results."""

    optimizer: str = "sgd"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.1
    l2: float = 1e-3
    seed: int = 0
    max_iter: int = 1000
    tol: float = 1e-8


@dataclass(frozen=True)
class EpochRecord:
    """Metrics after one SGD epoch or one L-BFGS iteration (`step`)."""

    step: int
    train_loss: float
    train_objective: float
    train_acc: float
    test_loss: float
    test_acc: float


@dataclass
class FitResult:
    """Fitted parameters and how the optimizer got there."""

    W: FloatArray
    b: FloatArray
    seconds: float
    n_iter: int
    converged: bool
    message: str
    history: list[EpochRecord] = field(default_factory=list)


@dataclass(frozen=True)
class SklearnFit:
    """scikit-learn's solution, converted to this project's (d, K) / (K,) layout."""

    W: FloatArray
    b: FloatArray
    C: float
    seconds: float
    n_iter: int
    converged: bool


# ---------------------------------------------------------------------------------------------
# Model access and the objective
# ---------------------------------------------------------------------------------------------


def load_model(path: str | Path | None = None) -> SoftmaxModel:
    """The emitted module: `generated/softmax_regression.py` unless `path` names another file."""
    from derive.loader import load_generated, load_module_from_path

    module = (
        load_generated("softmax_regression") if path is None else load_module_from_path(Path(path))
    )
    for name in ("loss_and_grad", "predict"):
        if not callable(getattr(module, name, None)):
            raise ModuleLoadError(
                f"module {module.__file__!r}: has no function {name!r} (is it an emitted "
                "softmax-regression module?)"
            )
    return cast(SoftmaxModel, module)


def objective_and_grad(
    model: SoftmaxModel,
    X: FloatArray,
    y: IntArray,
    W: FloatArray,
    b: FloatArray,
    l2: float,
    *,
    check: bool = False,
) -> tuple[float, FloatArray, FloatArray]:
    """F(W, b) and its gradient: the emitted loss and gradient plus the L2 term on W only."""
    loss, dW, db = model.loss_and_grad(X, y, W, b, check=check)
    if l2 == 0.0:
        return float(loss), dW, db
    return float(loss) + 0.5 * l2 * float(np.vdot(W, W)), dW + l2 * W, db


def accuracy(
    model: SoftmaxModel, X: FloatArray, y: IntArray, W: FloatArray, b: FloatArray
) -> float:
    """Fraction of rows whose predicted label equals `y`."""
    return float(np.mean(np.asarray(model.predict(X, W, b)) == y))


def confusion_matrix(y_true: IntArray, y_pred: npt.ArrayLike, n_classes: int) -> IntArray:
    """`C[i, j]` = number of samples of true class i predicted as j."""
    pred = np.asarray(y_pred, dtype=np.int64)
    counts = np.bincount(y_true * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def evaluate(
    model: SoftmaxModel, data: Dataset, W: FloatArray, b: FloatArray, l2: float, step: int
) -> EpochRecord:
    """Losses and accuracies on both splits, through the emitted module only."""
    train_loss = float(model.loss_and_grad(data.X_train, data.y_train, W, b, check=False)[0])
    test_loss = float(model.loss_and_grad(data.X_test, data.y_test, W, b, check=False)[0])
    return EpochRecord(
        step=step,
        train_loss=train_loss,
        train_objective=train_loss + 0.5 * l2 * float(np.vdot(W, W)),
        train_acc=accuracy(model, data.X_train, data.y_train, W, b),
        test_loss=test_loss,
        test_acc=accuracy(model, data.X_test, data.y_test, W, b),
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
    lr, l2 = config.lr, config.l2
    seconds = 0.0
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(n)
        desc = f"epoch {epoch}/{config.epochs}"
        for i in wrap_batches(range(0, n, config.batch_size), n_batches, desc):
            batch = order[i : i + config.batch_size]
            _, dW, db = model.loss_and_grad(X[batch], y[batch], W, b, check=False)
            if l2 != 0.0:
                dW = dW + l2 * W
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
    from scipy.optimize import OptimizeResult, minimize

    d = X.shape[1]
    k = n_classes
    x0 = np.zeros(d * k + k)
    model.loss_and_grad(X, y, x0[: d * k].reshape(d, k), x0[d * k :], check=True)
    l2 = config.l2

    def fun(x: FloatArray) -> tuple[float, FloatArray]:
        f, dW, db = objective_and_grad(model, X, y, x[: d * k].reshape(d, k), x[d * k :], l2)
        return f, np.concatenate([np.ravel(dW), np.ravel(db)])

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
    return SklearnFit(W, b, C_used, seconds, int(np.max(clf.n_iter_)), converged)


def reference_ce_sum(X: FloatArray, y: IntArray, W: FloatArray, b: FloatArray) -> float:
    """Sum of cross-entropies by SciPy's log-softmax: an evaluation independent of the module."""
    from scipy.special import log_softmax

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
            "train_acc": accuracy(model, X, y, sk.W, sk.b),
            "test_acc": accuracy(model, data.X_test, data.y_test, sk.W, sk.b),
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0.0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if not (value >= 0.0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a fraction strictly between 0 and 1, got {text}"
        )
    return value


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `derive train` flags to `parser` (the CLI wires `run_train` to it)."""
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        choices=["digits", "mnist", "fashion-mnist"],
        default="digits",
        help="built-in dataset (default: digits, from scikit-learn; mnist and fashion-mnist are "
        "read from the IDX files in --data-dir)",
    )
    source.add_argument(
        "--data",
        nargs=2,
        metavar=("X.npy", "y.npy"),
        help="your own arrays: features (n, d) and labels (n,)",
    )
    data.add_argument("--data-dir", metavar="PATH", help="folder with the four IDX files")
    data.add_argument(
        "--test-size",
        type=_fraction,
        default=0.25,
        help="stratified test fraction for digits and --data (default: 0.25; IDX datasets use "
        "their official test set)",
    )
    opt = parser.add_argument_group("optimizer")
    opt.add_argument("--optimizer", choices=["sgd", "lbfgs"], default="sgd")
    opt.add_argument("--epochs", type=_positive_int, default=10, help="SGD epochs (default: 10)")
    opt.add_argument(
        "--batch-size", type=_positive_int, default=256, help="SGD minibatch (default: 256)"
    )
    opt.add_argument("--lr", type=_positive_float, default=0.1, help="SGD step (default: 0.1)")
    opt.add_argument(
        "--l2",
        type=_nonnegative_float,
        default=1e-3,
        help="L2 strength in the objective mean CE + l2/2 ||W||^2, bias unpenalised "
        "(default: 1e-3; 0 is d2l's plain SGD)",
    )
    opt.add_argument("--seed", type=int, default=0, help="split, init and shuffling (default: 0)")
    opt.add_argument(
        "--max-iter", type=_positive_int, default=1000, help="L-BFGS iterations (default: 1000)"
    )
    opt.add_argument(
        "--tol",
        type=_positive_float,
        default=1e-8,
        help="L-BFGS projected-gradient tolerance, also given to scikit-learn (default: 1e-8)",
    )
    opt.add_argument(
        "--blas-threads",
        type=_positive_int,
        default=1,
        help="BLAS/OpenMP threads while fitting, for both derive and scikit-learn (default: 1; "
        "pools of several libraries spinning at once slow small fits by 10-50x)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--compare-sklearn", action="store_true", help="fit LogisticRegression too")
    out.add_argument("--plot", metavar="PNG", help="loss/accuracy curves and confusion matrix")
    out.add_argument("--json", metavar="PATH", help="write a JSON summary")
    out.add_argument("--save", metavar="NPZ", help="write W, b and class names (.npz)")
    out.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    out.add_argument(
        "--module",
        metavar="PY",
        help="emitted module to train with (default: generated/softmax_regression.py)",
    )


def _missing_extras(args: argparse.Namespace) -> list[str]:
    """The optional packages this particular run needs but cannot import, with the reason."""
    needed: list[tuple[str, str, str]] = []
    if args.data is None and args.dataset == "digits":
        needed.append(("sklearn", "scikit-learn", "--dataset digits"))
    if args.compare_sklearn:
        needed.append(("sklearn", "scikit-learn", "--compare-sklearn"))
    if args.plot:
        needed.append(("matplotlib", "matplotlib", "--plot"))
    if not args.quiet:
        needed.append(("tqdm", "tqdm", "the progress bar; --quiet skips it"))
    missing: list[str] = []
    for module, package, why in needed:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(f"{package} (for {why})")
    return missing


def load_dataset(args: argparse.Namespace) -> Dataset:
    """The dataset the flags ask for."""
    from derive import datasets

    if args.data is not None:
        return datasets.load_npy_dataset(args.data[0], args.data[1], args.test_size, args.seed)
    if args.dataset == "digits":
        return datasets.load_digits_dataset(args.test_size, args.seed)
    if args.data_dir is None:
        files = ", ".join(datasets.IDX_FILES.values())
        raise DatasetError(
            f"--dataset {args.dataset} needs --data-dir, a folder holding {files} "
            f"(each optionally .gz), published at {datasets.IDX_SOURCES[args.dataset]}"
        )
    return datasets.load_idx_dataset(args.dataset, args.data_dir)


class _Reporter:
    """Progress bar and one line per epoch (or per 10 L-BFGS iterations) on the console."""

    def __init__(self, model: SoftmaxModel, data: Dataset, config: TrainConfig, quiet: bool):
        self.model, self.data, self.config, self.quiet = model, data, config, quiet
        self.history: list[EpochRecord] = []
        self.show_bar = not quiet and sys.stderr.isatty()
        self._bar: Any = None

    def _line(self, record: EpochRecord) -> str:
        if self.config.optimizer == "sgd":
            head = f"epoch {record.step:>3}/{self.config.epochs}"
        else:
            head = f"iter {record.step:>4}"
        return (
            f"{head}  train loss {record.train_loss:.4f}  objective "
            f"{record.train_objective:.6f}  train acc {record.train_acc:.4f}  test acc "
            f"{record.test_acc:.4f}"
        )

    def wrap_batches(self, iterable: Iterable[int], total: int, desc: str) -> Iterable[int]:
        if not self.show_bar:
            return iterable
        from tqdm import tqdm

        return cast(
            Iterable[int],
            tqdm(iterable, total=total, desc=desc, leave=False, unit="batch", file=sys.stderr),
        )

    def __call__(self, step: int, W: FloatArray, b: FloatArray) -> None:
        record = evaluate(self.model, self.data, W, b, self.config.l2, step)
        self.history.append(record)
        if self.config.optimizer == "lbfgs":
            if self.show_bar:
                self._lbfgs_bar().update(1)
            if step != 1 and step % 10 != 0:
                return
        self.print_line(record)

    def _lbfgs_bar(self) -> Any:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.config.max_iter, desc="L-BFGS", leave=False, unit="it", file=sys.stderr
            )
        return self._bar

    def print_line(self, record: EpochRecord) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(self._line(record), file=sys.stdout)
        else:
            print(self._line(record))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.config.optimizer == "lbfgs" and self.history:
            last = self.history[-1]
            if last.step != 1 and last.step % 10 != 0:
                self.print_line(last)


def _comparison_table(cmp: dict[str, Any]) -> str:
    ours, theirs = cmp["derive"], cmp["sklearn"]
    left = f"derive ({ours['optimizer']})"
    right = f"sklearn (lbfgs, C={cmp['C']:.6g})"

    def fmt(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    rows = [
        ("test accuracy", "test_acc", ".4f"),
        ("train accuracy", "train_acc", ".4f"),
        ("objective F (emitted module)", "objective_F", ".12g"),
        ("objective C*sum CE + |W|^2/2", "objective_sklearn", ".12g"),
        ("fit seconds", "fit_seconds", ".3f"),
        ("iterations (sgd: epochs)", "n_iter", "d"),
    ]
    lines = [f"{'':<30}{left:>22}{right:>32}"]
    for label, key, spec in rows:
        lines.append(f"{label:<30}{fmt(ours[key], spec):>22}{fmt(theirs[key], spec):>32}")
    lines.append(
        f"relative objective gap (F_derive - F_sklearn) / F_sklearn: "
        f"{cmp['relative_objective_gap']:.3g}"
    )
    if not theirs["converged"]:
        lines.append("note: scikit-learn stopped at --max-iter without converging")
    return "\n".join(lines)


def _prepare_output(path_text: str, what: str) -> Path:
    path = Path(path_text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"{what} {path_text!r}: cannot create folder ({exc})") from exc
    return path


def _write(path_text: str, what: str, writer: Callable[[Path], object]) -> None:
    path = _prepare_output(path_text, what)
    try:
        writer(path)
    except OSError as exc:
        raise OutputDirError(f"{what} {path_text!r}: cannot write ({exc})") from exc


def _save_npz(path: Path, result: FitResult, classes: Sequence[str]) -> None:
    # An open file keeps the name exactly as given (np.savez appends ".npz" to bare names).
    with path.open("wb") as fh:
        np.savez(fh, W=result.W, b=result.b, classes=np.array(classes, dtype=str))


def summary(
    data: Dataset,
    config: TrainConfig,
    result: FitResult,
    history: list[EpochRecord],
    confusion: IntArray,
    comparison: dict[str, Any] | None,
) -> dict[str, Any]:
    """The `--json` document (plain types only; keys sorted when written)."""
    final = history[-1] if history else None
    return {
        "dataset": {
            "name": data.name,
            "split": data.split,
            "n_train": int(data.X_train.shape[0]),
            "n_test": int(data.X_test.shape[0]),
            "n_features": data.n_features,
            "classes": list(data.classes),
        },
        "config": asdict(config),
        "objective": OBJECTIVE_TEXT,
        "fit": {
            "seconds": result.seconds,
            "n_iter": result.n_iter,
            "converged": result.converged,
            "message": result.message,
        },
        "final": None if final is None else asdict(final),
        "history": [asdict(r) for r in history],
        "confusion_matrix": confusion.tolist(),
        "sklearn_comparison": comparison,
    }


def run_train(args: argparse.Namespace) -> int:
    """Run `derive train` for parsed `args`; 0 on success, 1 on any error (message on stderr)."""
    missing = _missing_extras(args)
    if missing:
        print(
            "error: derive train needs optional packages that are not installed: "
            f"{'; '.join(missing)}\ninstall them with:\n    {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 1
    try:
        _run(args)
    except DeriveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> None:
    config = TrainConfig(
        optimizer=args.optimizer,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        l2=args.l2,
        seed=args.seed,
        max_iter=args.max_iter,
        tol=args.tol,
    )
    model = load_model(args.module)
    data = load_dataset(args)
    print(
        f"{data.name}: {data.X_train.shape[0]} train / {data.X_test.shape[0]} test, "
        f"{data.n_features} features, {data.n_classes} classes ({data.split})"
    )
    reporter = _Reporter(model, data, config, args.quiet)
    try:
        with blas_threads(args.blas_threads):
            result = fit(model, data, config, monitor=reporter, wrap_batches=reporter.wrap_batches)
    finally:
        reporter.close()
    history = reporter.history
    if not history or history[-1].step != result.n_iter:
        history.append(evaluate(model, data, result.W, result.b, config.l2, result.n_iter))
    final = history[-1]
    unit = "epochs" if config.optimizer == "sgd" else "iterations"
    status = "" if result.converged else "NOT converged: "
    print(
        f"{config.optimizer}: {result.n_iter} {unit} in {result.seconds:.3f} s "
        f"({status}{result.message})"
    )
    print(
        f"final: train loss {final.train_loss:.6f}  objective {final.train_objective:.10g}  "
        f"train acc {final.train_acc:.4f}  test acc {final.test_acc:.4f}"
    )
    confusion = confusion_matrix(
        data.y_test, model.predict(data.X_test, result.W, result.b), data.n_classes
    )
    comparison = None
    if args.compare_sklearn:
        with blas_threads(args.blas_threads):
            comparison = compare_with_sklearn(model, data, result, config)
        print(_comparison_table(comparison))
    if args.plot:
        from derive.plotting import plot_training

        title = f"{data.name}, {config.optimizer}, l2={config.l2:g}: test acc {final.test_acc:.2%}"
        xlabel = "epoch" if config.optimizer == "sgd" else "L-BFGS iteration"
        ref = None if comparison is None else float(comparison["sklearn"]["test_acc"])
        _write(
            args.plot,
            "--plot",
            lambda p: plot_training(p, history, confusion, data.classes, title, xlabel, ref),
        )
    if args.json:
        doc = summary(data, config, result, history, confusion, comparison)
        text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=True) + "\n"
        _write(args.json, "--json", lambda p: p.write_text(text, encoding="utf-8"))
    if args.save:
        _write(args.save, "--save", lambda p: _save_npz(p, result, data.classes))


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (`python -m derive.train`), same flags as `derive train`."""
    parser = argparse.ArgumentParser(prog="derive train", description=__doc__.split("\n")[0])
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
