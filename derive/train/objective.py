"""The training objective, evaluated only through an emitted module, and its records.

Contract: nothing here computes a softmax, a cross-entropy or a gradient of its own; the
module's `loss_and_grad` and `predict` do all of it (see the package docstring).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, cast

import numpy as np
import numpy.typing as npt

from derive.errors import ModuleLoadError
from derive.output.loader import load_generated, load_module_from_path
from derive.train.data import Dataset, FloatArray, IntArray

INSTALL_HINT: Final = 'pip install -e ".[train]"'

OBJECTIVE_TEXT: Final = "mean cross-entropy + l2/2 * ||W||_F^2 (bias unpenalised)"

# scikit-learn's L-BFGS stopping rule (sklearn/linear_model/_logistic.py), used for both sides of
# the comparison so that fit times compare like with like.
LBFGS_FTOL: Final = 64 * float(np.finfo(float).eps)
LBFGS_MAXLS: Final = 50


class SoftmaxModel(Protocol):
    """What `derive train` needs from an emitted module (see generated/softmax_regression.py)."""

    def loss_and_grad(
        self,
        X: FloatArray,
        y: IntArray,
        W: FloatArray,
        b: FloatArray,
        check: bool = True,
        **params: float,
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
    #: The fitted classifier's own `predict` (scikit-learn is scored with it, never with the
    #: emitted module's, so a wrong `predict` in the module cannot flatter both sides).
    predict: Callable[[FloatArray], npt.ArrayLike] | None = None


# ---------------------------------------------------------------------------------------------
# Model access and the objective
# ---------------------------------------------------------------------------------------------


#: The module `derive train` uses by default: softmax regression with the weight decay derived
#: (`lam`), so that the L2 term and its gradient come from the derivation, not from this package.
DEFAULT_MODULE: Final = "softmax_regression_l2"
#: The emitted keyword for the weight decay strength (the `lam` parameter of with_weight_decay).
L2_KEYWORD: Final = "lam"


def load_model(path: str | Path | None = None) -> SoftmaxModel:
    """The emitted module: `generated/softmax_regression_l2.py` unless `path` names another."""

    module = load_generated(DEFAULT_MODULE) if path is None else load_module_from_path(Path(path))
    for name in ("loss_and_grad", "predict"):
        if not callable(getattr(module, name, None)):
            raise ModuleLoadError(
                f"module {str(path)!r} is not an emitted module",
                f"it has no function {name}",
                "pass a .py file written by `derive emit`",
            )
    return cast(SoftmaxModel, module)


def weight_decay(model: object, l2: float, shown: str | None = None) -> dict[str, float]:
    """The keyword arguments that make the emitted `loss_and_grad` include the weight decay `l2`
    (mean CE + l2/2 ||W||^2 and its gradient, as derived): `{lam: l2}`, always passed, since the
    module's own default is not 0. A module without weight decay gets none, and only `l2 = 0`:
    nothing here adds an L2 term by hand, so any other `l2` is refused, never dropped."""
    params = inspect.signature(model.loss_and_grad).parameters  # type: ignore[attr-defined]
    if L2_KEYWORD in params:
        return {L2_KEYWORD: l2}
    if l2 != 0.0:
        raise ModuleLoadError(
            f"--l2 {shown or format(l2, 'g')}: the module {getattr(model, '__file__', '?')!r} "
            "has no weight decay",
            f"its loss_and_grad takes no {L2_KEYWORD}; the L2 term comes from the emitted module",
            "train with the default module (softmax_regression_l2) or pass --l2 0",
        )
    return {}


def check_weight_decay(model: object, l2: float, shown: str | None = None) -> None:
    """Refuse `l2 > 0` with a module that has no derived weight decay, before any work."""
    weight_decay(model, l2, shown)


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
    """F(W, b) and its gradient, both from the emitted module: its loss and gradient with its
    weight decay `lam = l2` (the L2 term on W only, as derived in softmax_regression_l2)."""
    loss, dW, db = model.loss_and_grad(X, y, W, b, check=check, **weight_decay(model, l2))
    return float(loss), dW, db


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
    none = weight_decay(model, 0.0)
    train_loss = float(model.loss_and_grad(data.X_train, data.y_train, W, b, False, **none)[0])
    test_loss = float(model.loss_and_grad(data.X_test, data.y_test, W, b, False, **none)[0])
    objective = (
        objective_and_grad(model, data.X_train, data.y_train, W, b, l2)[0] if l2 else train_loss
    )
    return EpochRecord(
        step=step,
        train_loss=train_loss,
        train_objective=objective,
        train_acc=accuracy(model, data.X_train, data.y_train, W, b),
        test_loss=test_loss,
        test_acc=accuracy(model, data.X_test, data.y_test, W, b),
    )
