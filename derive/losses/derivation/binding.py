"""What every matrix symbol of the displayed formulas means, for explicit n, d and K.

Contract: `binding(model, forms)` maps each displayed symbol to explicit entries, from the loss
as *defined* (derivatives taken entry by entry) and the *derived* per-sample forms; the
elementwise checks of the shared steps compare displayed formulas under it. The `MEANING_*`
texts say in the notes what each check bound.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import sympy as sp

from derive import notation as S
from derive.errors import StepCheckError
from derive.losses.derivation.forms import Forms
from derive.losses.derivation.symbols import (
    BATCH_SUM_LHS,
    BATCH_SUM_RHS,
    LOSS,
    MEAN_LOSS,
    OBJECTIVE,
    PENALTY,
    YHAT,
    G_dot,
    O_dot,
    d2L_dW2_V,
    d2R_dW2_V,
    dJ_dW,
    dL_db,
    dl_db,
    dL_dO,
    dL_dW,
    dl_dW,
    dR_dW,
    ell_rows,
    grad_vec,
    ones_K,
    x_vec,
    y_vec,
    yhat_vec,
)
from derive.losses.model import LossModel
from derive.symbolic.explicit import (
    Batch,
    any_loss_gradient,
    gradient_matrix,
    jacobian,
    make_batch,
    row_instance,
)
from derive.symbolic.steps import (
    Binding,
    Definitions,
    Prose,
    explicit,
)

T = TypeVar("T")


def cache(thunk: Callable[[], T]) -> Callable[[], T]:
    """`thunk`, evaluated at most once."""
    box: list[T] = []

    def get() -> T:
        if not box:
            box.append(thunk())
        return box[0]

    return get


def _row_sums(batch: Batch) -> sp.Matrix:
    """`n L`, `n dL/dW` and `n dL/db` of a batch, flattened into one column."""
    L, _ = any_loss_gradient(batch)
    n = batch.n
    return sp.Matrix([n * L, *(n * jacobian(L, batch.W)), *(n * jacobian(L, batch.b))])


def batch_sum_binding(n: int, d: int, K: int, defs: Definitions) -> dict[sp.Basic, Any]:
    """The whole batch's row sums (`n L`, `n dL/dW`, `n dL/db`, stacked) for the displayed left
    side, and the sums of its first rows' and the rest's for the displayed sum over blocks."""
    batch = make_batch(n, d, K, simplex=False)
    split = n // 2

    def rows(lo: int, hi: int) -> Batch:
        return Batch(batch.X[lo:hi, :], batch.W, batch.b, batch.Y[lo:hi, :], batch.O[lo:hi, :])

    return {
        BATCH_SUM_LHS: lambda: _row_sums(batch),
        BATCH_SUM_RHS: lambda: _row_sums(rows(0, split)) + _row_sums(rows(split, n)),
    }


def _defined(defs: Definitions, name: sp.Basic, what: str) -> sp.Basic:
    value = defs.unfold(name)
    if value == name:
        raise StepCheckError(what, str(name), "?", f"{name} is used before its definition")
    return value


def _mean_loss(defs: Definitions, batch: Batch, name: sp.Symbol = MEAN_LOSS) -> sp.Expr:
    """`L` as *defined* (step `mean_loss`), or another defined scalar of the batch (the
    objective `J`); entry r of `ell_rows` is the defined loss at sample r, `W` the batch's."""
    loss = _defined(defs, LOSS, "mean loss")
    mean = _defined(defs, name, "mean loss" if name == MEAN_LOSS else str(name))
    rows = sp.Matrix([row_instance(loss, batch, r) for r in range(batch.n)])
    n, d, K = batch.n, batch.X.cols, batch.W.cols
    at = {ell_rows: rows, S.ones_n: sp.ones(n, 1), S.Wm: batch.W}
    terms = [explicit(t, at, n, d, K) for t in sp.Add.make_args(mean)]
    return sp.Add(*[t[0, 0] if isinstance(t, sp.MatrixBase) else t for t in terms])


def _batch_logit_gradient(defs: Definitions, batch: Batch) -> sp.Matrix:
    """`dL/dO` entry by entry: the defined mean loss differentiated w.r.t. free logits, then
    evaluated at the layer's `O = X W + 1 b^T`."""
    n, K = batch.n, batch.O.cols
    free = sp.Matrix(n, K, lambda r, j: sp.Symbol(f"o_{r}_{j}", real=True))
    L = _mean_loss(defs, Batch(batch.X, batch.W, batch.b, batch.Y, free))
    at = {free[r, j]: batch.O[r, j] for r in range(n) for j in range(K)}
    return jacobian(L, free).xreplace(at)


def _prediction_matrix(defs: Definitions, batch: Batch) -> sp.Matrix | None:
    """Row r, column j: the defined `yhat_j` at sample r (None where yhat is not defined)."""
    value = defs.unfold(YHAT[S.j])
    if value == YHAT[S.j]:
        return None
    return sp.Matrix(batch.n, batch.O.cols, lambda r, j: row_instance(value, batch, r, index=j))


def binding(model: LossModel, forms: Forms) -> Binding:
    """What every matrix symbol of the displayed formulas means, for explicit n, d, K.

    Inputs (X, W, b, Y, 1) are fresh symbols; `O` is given entry by entry,
    `O_rj = sum_a X_ra W_aj + b_j`; `Yhat` is the defined prediction at each row; `G = dL/dO`
    is the *derived* per-sample gradient at each row, divided by n; the derivatives on the
    left-hand sides (`dL/dW`, `dl/dW`, ...) are differentiated from the *defined* loss, entry
    by entry. The per-sample symbols (x, y, yhat, dl/do) are sample 0 of the batch.
    """

    # Cached: the mutation tests check many variants of a step against the same meanings.
    @functools.lru_cache(maxsize=32)
    def bind(n: int, d: int, K: int, defs: Definitions) -> dict[sp.Basic, Any]:
        batch = make_batch(n, d, K, model.simplex_targets)
        G = cache(lambda: gradient_matrix(forms.gradient, batch))
        L = cache(lambda: _mean_loss(defs, batch))
        row0 = cache(lambda: row_instance(_defined(defs, LOSS, "loss"), batch, 0))
        P = cache(lambda: _prediction_matrix(defs, batch))

        def penalty_gradient() -> sp.Matrix:
            R = explicit(_defined(defs, PENALTY, "weight decay"), {S.Wm: batch.W}, n, d, K)
            return jacobian(R, batch.W)

        def objective_gradient() -> sp.Matrix:
            """`dJ/dW` of the *defined* objective, with `L` and `R` as defined."""
            return jacobian(_mean_loss(defs, batch, OBJECTIVE), batch.W)

        V = sp.Matrix(d, K, lambda a, j: sp.Symbol(f"v_{a}_{j}", real=True))
        along = sp.Symbol("_t", real=True)

        def along_V(matrix: sp.Matrix) -> sp.Matrix:
            """The derivative of `matrix` (entries in W) when W moves along V, at V = 0."""
            moved = {
                batch.W[a, col]: batch.W[a, col] + along * V[a, col]
                for a in range(d)
                for col in range(K)
            }
            return matrix.xreplace(moved).diff(along).subs(along, 0)

        O_moves = cache(lambda: along_V(batch.O))

        def hvp_rows() -> sp.Matrix:
            """Row r: the derived Hessian-vector product at sample r, along row r of O-dot."""
            assert forms.hvp is not None
            return sp.Matrix(
                n, K, lambda r, j: _row_with_direction(forms.hvp, batch, r, j, O_moves()[r, :])
            )

        def penalty_gradient_along() -> sp.Matrix:
            return along_V(penalty_gradient())

        def prediction(rows: bool) -> sp.Basic:
            value = P()
            if value is None:
                raise StepCheckError(
                    "prediction", "yhat", "?", "yhat is used before its definition"
                )
            return value if rows else value[0, :].T

        return {
            S.Xm: batch.X,
            S.Wm: batch.W,
            S.bm: batch.b,
            S.Ym: batch.Y,
            S.Om: lambda: per_element(batch),
            S.ones_n: sp.ones(n, 1),
            ones_K: sp.ones(K, 1),
            S.Gm: G,
            dL_dW: lambda: jacobian(L(), batch.W),
            dL_db: lambda: jacobian(L(), batch.b),
            dL_dO: lambda: _batch_logit_gradient(defs, batch),
            x_vec: batch.X[0, :].T,
            y_vec: batch.Y[0, :].T,
            grad_vec: lambda: G()[0, :].T,
            dl_dW: lambda: jacobian(row0(), batch.W),
            dl_db: lambda: jacobian(row0(), batch.b),
            S.Yhat: lambda: prediction(rows=True),
            yhat_vec: lambda: prediction(rows=False),
            dR_dW: penalty_gradient,
            dJ_dW: objective_gradient,
            S.Vm: V,
            O_dot: O_moves,
            G_dot: hvp_rows,
            d2L_dW2_V: lambda: along_V(jacobian(L(), batch.W)),
            d2R_dW2_V: penalty_gradient_along,
        }

    return bind


def _row_with_direction(
    expr: sp.Expr, batch: Batch, r: int, j: int, direction: sp.Matrix
) -> sp.Expr:
    """`expr` (in o, y, v and a free j) at sample r, class j (0-based), with `v = direction`."""
    at = row_instance(expr, batch, r, index=j)
    return at.xreplace({S.v[t + 1]: direction[t] for t in range(batch.O.cols)})


MEANING = Prose(
    "$O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$, the loss as defined above, and its derivatives "
    "taken entry by entry",
    "$O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$、上文定义的损失及其逐元素求得的导数",
)
MEANING_G = Prose(
    MEANING.en + "; row $r$ of $G$ is the gradient derived above at sample $r$",
    MEANING.zh + "；$G$ 的第 $r$ 行为上面推出的梯度在样本 $r$ 处的值",
)


MEANING_LINEAR = Prose(
    "$O$ given entry by entry as $O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$",
    "$O$ 逐元素给出 $O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$",
)


def per_element(batch: Batch) -> sp.Matrix:
    """`O_rj = sum_a X_ra W_aj + b_j`, written out entry by entry."""
    n, d, K = batch.n, batch.X.cols, batch.W.cols
    return sp.Matrix(
        n, K, lambda r, j: sum(batch.X[r, a] * batch.W[a, j] for a in range(d)) + batch.b[j]
    )


def linear_only(n: int, d: int, K: int, defs: Definitions) -> dict[sp.Basic, Any]:
    batch = make_batch(n, d, K, simplex=False)
    return {
        S.Xm: batch.X,
        S.Wm: batch.W,
        S.bm: batch.b,
        S.ones_n: sp.ones(n, 1),
        S.Om: per_element(batch),
    }


MEANING_SUM = Prose(
    "the three row sums $n L$, $n \\, \\partial L / \\partial W$, $n \\, \\partial L / "
    "\\partial b$ of an arbitrary differentiable per-sample loss, for the batch and for its "
    "two blocks of rows",
    "任意可微单样本损失的三个行和 $n L$、$n \\, \\partial L / \\partial W$、"
    "$n \\, \\partial L / \\partial b$，对整个批量与其两个行块分别计算",
)
MEANING_R_V = Prose(
    "$R$ as defined above, its gradient differentiated entry by entry along $V$",
    "上文定义的 $R$，其梯度沿 $V$ 逐元素求导",
)
MEANING_DIRECTION = Prose(
    "$O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$ differentiated entry by entry along $V$",
    "$O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$ 沿 $V$ 逐元素求导",
)
MEANING_HVP_W = Prose(
    MEANING.en + "; row $r$ of $\\dot{G}$ is the Hessian-vector product derived above at sample "
    "$r$, along row $r$ of $\\dot{O}$",
    MEANING.zh + "；$\\dot{G}$ 的第 $r$ 行为上面推出的 Hessian 与向量之积在样本 $r$ 处、沿 "
    "$\\dot{O}$ 第 $r$ 行的值",
)
MEANING_R = Prose(
    "$R$ as defined above, differentiated entry by entry",
    "上文定义的 $R$，逐元素求导",
)
