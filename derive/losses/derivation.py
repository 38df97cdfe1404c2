"""The steps every loss goes through, from its definition to its Hessian, each with its checks.

`core_steps(model)` is the shared middle of every derivation: the loss in logits, its gradient
w.r.t. the logits (derived for a symbolic K), the stable form the code prints, the chain rule to
`W` and `b` (per sample, then for the batch), the Hessian and its vector product, and the weight
decay term where the model has one. `loss_derivation(model)` wraps them for a catalogue or user
loss; the softmax-regression story (`derive.softmax_regression`) adds the notes' own steps around
them and tells the shared steps in the notes' words (`Wording`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sympy as sp

from derive import notation as S
from derive.errors import StepCheckError
from derive.losses.calculus import (
    hessian_vector_product,
    logit_gradient,
    logit_hessian,
    loss_in_logits,
)
from derive.losses.model import LossModel
from derive.symbolic.accurate import accurate_chain, labels_form, split_label_delta
from derive.symbolic.decision import OUTCOME, ArgMax, ArgMin, Exceeds, decide
from derive.symbolic.explicit import (
    Batch,
    any_loss_gradient,
    gradient_matrix,
    jacobian,
    make_batch,
    row_instance,
)
from derive.symbolic.functions import to_raw
from derive.symbolic.rewrites import (
    canonical_sums,
    expand_logs,
    factor_exponentials,
    factor_shift,
    refine_indices,
    split_sums,
    targets_sum_to_one,
)
from derive.symbolic.steps import (
    CONCRETE_KS,
    Binding,
    ConcreteK,
    Definitions,
    Derivation,
    Elementwise,
    FirstOf,
    GeneralK,
    Numeric,
    Prose,
    Result,
    Step,
    explicit,
)


@dataclass(frozen=True)
class Wording:
    """How a shared step is told: its title and its reason (never its formula: every displayed
    formula is the step's own, checked, lhs and rhs)."""

    title: Prose
    reason: Prose


def display(name: str) -> sp.Symbol:
    """A symbol that only names something in the notes (never reaches code)."""
    return sp.Symbol(name)


# --------------------------------------------------------------------------- matrix checks

#: The per-sample and batch loss, as named in the notes (defined by the loss's definition step).
LOSS = sp.Symbol(r"\ell")
#: The model's output `yhat_j`, defined by the prediction's definition step.
YHAT = S.yhat
#: The weight-decay penalty R(W), defined by its own step where the model has one.
PENALTY = sp.Symbol("R")

# Display names of derivatives: each is bound, in the elementwise checks, to a derivative taken
# of explicit entries (never typed as a result).
dl_dW = display(r"\frac{\partial \ell}{\partial W}")
dl_db = display(r"\frac{\partial \ell}{\partial b}")
dL_dW = display(r"\frac{\partial L}{\partial W}")
dL_db = display(r"\frac{\partial L}{\partial b}")
dR_dW = display(r"\frac{\partial R}{\partial W}")
#: The Hessian of the mean loss (of the penalty) w.r.t. W applied to a direction V: the
#: derivative of `dL/dW` (`dR/dW`) along V, bound to that derivative of explicit entries.
d2L_dW2_V = display(r"\frac{\partial^2 L}{\partial W^2} [V]")
d2R_dW2_V = display(r"\frac{\partial^2 R}{\partial W^2} [V]")
#: How the logits and the rows of G move when W moves along V (n x K).
O_dot = sp.MatrixSymbol(r"\dot{O}", S.n, S.K)
G_dot = sp.MatrixSymbol(r"\dot{G}", S.n, S.K)
#: One sample as column vectors (x: d, y and yhat: K) and the gradient w.r.t. the logits.
x_vec = sp.MatrixSymbol("x", S.d, 1)
y_vec = sp.MatrixSymbol("y", S.K, 1)
yhat_vec = sp.MatrixSymbol(r"\hat{y}", S.K, 1)
grad_vec = sp.MatrixSymbol(r"\frac{\partial \ell}{\partial o}", S.K, 1)
ones_K = sp.MatrixSymbol(r"\mathbf{1}", S.K, 1)


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


#: The displayed sides of step `batch_sum`: the whole batch's row sum and the sum over blocks.
BATCH_SUM_LHS = display(r"n \frac{\partial L}{\partial W}")
BATCH_SUM_RHS = sp.Sum(
    display(r"n_c \frac{\partial L_c}{\partial W}"), (display("c"), 1, display("C"))
)


def _batch_sum(n: int, d: int, K: int, defs: Definitions) -> dict[sp.Basic, Any]:
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


def _mean_loss(defs: Definitions, batch: Batch) -> sp.Expr:
    """`L = (1/n) sum_r ell(o_r, y_r)` for the loss as *defined* (not as derived)."""
    loss = _defined(defs, LOSS, "mean loss")
    return sp.Add(*[row_instance(loss, batch, r) for r in range(batch.n)]) / batch.n


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
            S.Om: lambda: _per_element(batch),
            S.ones_n: sp.ones(n, 1),
            ones_K: sp.ones(K, 1),
            S.Gm: G,
            dL_dW: lambda: jacobian(L(), batch.W),
            dL_db: lambda: jacobian(L(), batch.b),
            x_vec: batch.X[0, :].T,
            y_vec: batch.Y[0, :].T,
            grad_vec: lambda: G()[0, :].T,
            dl_dW: lambda: jacobian(row0(), batch.W),
            dl_db: lambda: jacobian(row0(), batch.b),
            S.Yhat: lambda: prediction(rows=True),
            yhat_vec: lambda: prediction(rows=False),
            dR_dW: penalty_gradient,
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


def as_vector(expr: sp.Expr, batch: bool = False) -> sp.MatrixExpr | None:
    """`expr` in `yhat_j`, `y_j` and constants as a column K-vector (`yhat - y`), or with
    `batch` as the n x K matrix whose rows are those vectors (`Yhat - Y`); None if `expr` is not
    such a linear combination."""
    vectors = (
        {YHAT: S.Yhat, S.y: S.Ym, None: S.ones_n * ones_K.T}
        if batch
        else {YHAT: yhat_vec, S.y: y_vec, None: ones_K}
    )
    terms: list[sp.MatrixExpr] = []
    for term in sp.Add.make_args(sp.expand(expr)):
        indexed = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.Indexed)]
        coeff = sp.Mul(*[f for f in sp.Mul.make_args(term) if not isinstance(f, sp.Indexed)])
        if coeff.has(S.j, sp.Indexed):
            return None
        if not indexed:
            terms.append(coeff * vectors[None])
        elif len(indexed) == 1 and indexed[0].base in vectors and indexed[0].indices == (S.j,):
            terms.append(coeff * vectors[indexed[0].base])
        else:
            return None
    return sp.MatAdd(*terms) if len(terms) > 1 else terms[0]


BATCH_SHAPES = ((2, 2, 2), (3, 2, 3))
HVP_W_SHAPES = ((2, 2, 2), (3, 1, 2))
#: Every log argument here is positive (probabilities, sums of exponentials): logs of products
#: and quotients may be expanded, as in the concrete-K checks.
LOGS = (expand_logs,)
FULL_KS = CONCRETE_KS

MEANING = Prose(
    "$O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$, the loss as defined above, and its derivatives "
    "taken entry by entry",
    "$O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$、上文定义的损失及其逐元素求得的导数",
)
MEANING_G = Prose(
    MEANING.en + "; row $r$ of $G$ is the gradient derived above at sample $r$",
    MEANING.zh + "；$G$ 的第 $r$ 行为上面推出的梯度在样本 $r$ 处的值",
)


def linear_model_step(title: Prose, reason: Prose) -> Step:
    """`O = X W + 1 b^T`, proved against `O_rj = sum_a X_ra W_aj + b_j`."""
    return Step(
        "linear_model",
        title,
        reason,
        S.Om,
        sp.MatAdd(S.Xm * S.Wm, S.ones_n * S.bm.T),
        (Elementwise(_linear_only, shapes=((2, 2, 2), (3, 2, 4)), meaning=MEANING_LINEAR),),
    )


MEANING_LINEAR = Prose(
    "$O$ given entry by entry as $O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$",
    "$O$ 逐元素给出 $O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$",
)


def _per_element(batch: Batch) -> sp.Matrix:
    """`O_rj = sum_a X_ra W_aj + b_j`, written out entry by entry."""
    n, d, K = batch.n, batch.X.cols, batch.W.cols
    return sp.Matrix(
        n, K, lambda r, j: sum(batch.X[r, a] * batch.W[a, j] for a in range(d)) + batch.b[j]
    )


def _linear_only(n: int, d: int, K: int, defs: Definitions) -> dict[sp.Basic, Any]:
    batch = make_batch(n, d, K, simplex=False)
    return {
        S.Xm: batch.X,
        S.Wm: batch.W,
        S.bm: batch.b,
        S.ones_n: sp.ones(n, 1),
        S.Om: _per_element(batch),
    }


# --------------------------------------------------------------------------- wording


def _generic_wording(model: LossModel) -> dict[str, Wording]:
    return {
        "loss_in_logits": Wording(
            Prose("The loss in the logits", "用输出 $o$ 表示的损失"),
            Prose(
                "Logs of products and quotients are expanded and sums are split"
                + (", and $\\sum_j y_j = 1$ is used." if model.simplex_targets else "."),
                "展开乘积与商的对数并拆分求和"
                + ("，并利用 $\\sum_j y_j = 1$。" if model.simplex_targets else "。"),
            ),
        ),
        "loss_stable": Wording(
            Prose("The stable form of the loss", "损失的数值稳定形式"),
            Prose(
                "Overflow-prone shapes are rewritten as stable kernels (log-sum-exp, softplus); "
                "the check proves the rewrite changes nothing.",
                "把容易溢出的形式改写为数值稳定的核函数（log-sum-exp、softplus）；检验证明改写前后相等。",
            ),
        ),
        "gradient_logits": Wording(
            Prose("The gradient with respect to the logits", "对 $o_j$ 求梯度"),
            Prose(
                "Differentiate for a symbolic number of classes: the sums over $k$ produce "
                "$\\delta_{jk}$, which pick out the $j$-th term.",
                "对任意类别数求导：对 $k$ 的求和产生 $\\delta_{jk}$，只留下第 $j$ 项。",
            ),
        ),
        "gradient_stable": Wording(
            Prose("The gradient in stable form", "梯度的数值稳定形式"),
            Prose(
                "The same gradient written with stable kernels: what the generated code computes.",
                "用数值稳定的核函数写出同一个梯度：生成的代码就计算这个式子。",
            ),
        ),
        "chain_rule_W": Wording(
            Prose("The chain rule to $W$", "链式法则到 $W$"),
            Prose(
                "The loss reaches $W$ only through $o = W^T x + b$, so "
                "$\\partial \\ell / \\partial W_{aj} = x_a \\, \\partial \\ell / \\partial o_j$.",
                "损失只通过 $o = W^T x + b$ 依赖于 $W$，所以 "
                "$\\partial \\ell / \\partial W_{aj} = x_a \\, \\partial \\ell / \\partial o_j$。",
            ),
        ),
        "chain_rule_b": Wording(
            Prose("The chain rule to $b$", "链式法则到 $b$"),
            Prose(
                "$\\partial o_k / \\partial b_j = \\delta_{kj}$: the bias gradient is "
                "$\\partial \\ell / \\partial o$ itself.",
                "$\\partial o_k / \\partial b_j = \\delta_{kj}$：偏置的梯度就是 "
                "$\\partial \\ell / \\partial o$ 本身。",
            ),
        ),
        "batch_gradient_W": Wording(
            Prose("The batch gradient for $W$", "批量上 $W$ 的梯度"),
            Prose(
                "For the mean loss over a batch, $L = \\frac{1}{n} \\sum_r \\ell(o^{(r)})$, "
                "with $G$ the $n \\times K$ matrix whose row $r$ is the gradient above at "
                "sample $r$.",
                "对批量平均损失 $L = \\frac{1}{n} \\sum_r \\ell(o^{(r)})$，记 $G$ 为 "
                "$n \\times K$ 矩阵，其第 $r$ 行是样本 $r$ 处的上述梯度。",
            ),
        ),
        "batch_gradient_b": Wording(
            Prose("The batch gradient for $b$", "批量上 $b$ 的梯度"),
            Prose("The column sums of $G$, divided by $n$.", "$G$ 的列和除以 $n$。"),
        ),
        "weight_decay_penalty": Wording(
            Prose("The weight-decay penalty", "权重衰减惩罚项"),
            Prose(
                "$R(W) = \\frac{\\lambda}{2} \\lVert W \\rVert^2$ is added to the mean loss "
                "(the bias is not penalised).",
                "把 $R(W) = \\frac{\\lambda}{2} \\lVert W \\rVert^2$ 加到平均损失上"
                "（偏置不受惩罚）。",
            ),
        ),
        "batch_sum": Wording(
            Prose("Sums over blocks of rows", "按行分块求和"),
            Prose(
                "$L$ is the mean of the per-sample losses, so $n L$, $n \\, \\partial L / "
                "\\partial W$ and $n \\, \\partial L / \\partial b$ are sums over the rows: "
                "for rows split into blocks $c$ of $n_c$ rows each, they are the sums of the "
                "blocks' own $n_c L_c$, $n_c \\, \\partial L_c / \\partial W$ and "
                "$n_c \\, \\partial L_c / \\partial b$. Proved for all three and an arbitrary "
                'differentiable per-sample loss. The code\'s `reduction="sum"` returns these '
                "sums (chunks of a data set too large for one machine add them up); the mean "
                "divides them by $n$.",
                "$L$ 是各样本损失的平均，所以 $n L$、$n \\, \\partial L / \\partial W$ 和 "
                "$n \\, \\partial L / \\partial b$ 都是对行的求和：把行分成若干块 $c$（每块 "
                "$n_c$ 行），它们等于各块自身的 $n_c L_c$、$n_c \\, \\partial L_c / \\partial W$ "
                "与 $n_c \\, \\partial L_c / \\partial b$ 之和。对这三者及任意可微的单样本损失"
                '证明。代码中的 `reduction="sum"` 返回这些和（一台机器放不下的数据集按块相加）；'
                "平均值再除以 $n$。",
            ),
        ),
        "weight_decay": Wording(
            Prose("Weight decay", "权重衰减"),
            Prose(
                "The penalty $\\frac{\\lambda}{2} \\lVert W \\rVert^2$ adds $\\lambda W$ to the "
                "gradient for $W$ (the bias is not penalised).",
                "惩罚项 $\\frac{\\lambda}{2} \\lVert W \\rVert^2$ 给 $W$ 的梯度加上 $\\lambda W$"
                "（偏置不受惩罚）。",
            ),
        ),
        "hessian_logits": Wording(
            Prose("The second derivative", "二阶导数"),
            Prose("Differentiate the gradient once more.", "对梯度再求一次导。"),
        ),
        "hessian_stable": Wording(
            Prose("The Hessian in stable form", "Hessian 的数值稳定形式"),
            Prose("What `hessian_logits` computes.", "`hessian_logits` 计算的就是这个式子。"),
        ),
        "hessian_vector_product": Wording(
            Prose("Hessian-vector product", "Hessian 与向量之积"),
            Prose(
                "Applying $H$ to a direction $v$ needs no $K \\times K$ matrix.",
                "把 $H$ 作用在方向 $v$ 上，不需要构造 $K \\times K$ 矩阵。",
            ),
        ),
        "weight_decay_hvp": Wording(
            Prose("The penalty's Hessian along a direction", "惩罚项的 Hessian 作用于方向"),
            Prose(
                "$\\partial R / \\partial W$ is linear in $W$, so moving $W$ along $V$ moves it "
                "by the same map applied to $V$.",
                "$\\partial R / \\partial W$ 对 $W$ 是线性的，所以 $W$ 沿 $V$ 移动时，"
                "它的变化就是同一个线性映射作用于 $V$。",
            ),
        ),
        "logit_direction": Wording(
            Prose("The logits along a direction in $W$", "$W$ 沿某方向移动时的输出"),
            Prose(
                "Moving $W$ along a direction $V$ ($d \\times K$) moves the logits $O = XW + "
                "\\mathbf{1} b^T$ along $\\dot{O}$.",
                "$W$ 沿方向 $V$（$d \\times K$）移动时，输出 $O = XW + \\mathbf{1} b^T$ 沿 "
                "$\\dot{O}$ 移动。",
            ),
        ),
        "hessian_vector_product_W": Wording(
            Prose("The Hessian in $W$ along a direction", "对 $W$ 的 Hessian 作用于方向"),
            Prose(
                "Differentiate the batch gradient along $V$: the logits move by $\\dot{O}$, so "
                "row $r$ of $G$ moves by the Hessian-vector product above at sample $r$ applied "
                "to row $r$ of $\\dot{O}$ (row $r$ of $\\dot{G}$), and the chain rule brings "
                "it back to $W$ as for the gradient. No $dK \\times dK$ matrix is formed.",
                "沿 $V$ 对批量梯度求导：输出移动 $\\dot{O}$，所以 $G$ 的第 $r$ 行移动的量是上面的 "
                "Hessian 与向量之积在样本 $r$ 处作用于 $\\dot{O}$ 的第 $r$ 行（即 $\\dot{G}$ 的"
                "第 $r$ 行），再像梯度那样用链式法则回到 $W$。不构造 $dK \\times dK$ 矩阵。",
            ),
        ),
    }


# --------------------------------------------------------------------------- steps


Chain = tuple[tuple[str, sp.Expr], ...]


@dataclass(frozen=True)
class Forms:
    """The derived expressions of a model (what the checks confirm), and for each expression the
    code prints, its chain of accurate rewrites (`derive.symbolic.accurate`): `(rule, result)`
    pairs from the derived form to the printed one, every link a checked step."""

    loss: sp.Expr
    gradient: sp.Expr
    hessian: sp.Expr | None
    hvp: sp.Expr | None
    chains: dict[str, Chain] = field(default_factory=dict)


def derive_forms(model: LossModel) -> Forms:
    loss = loss_in_logits(model)
    gradient = logit_gradient(loss)
    hessian = hvp = None
    if model.second_order:
        hessian = logit_hessian(gradient)
        # NOTE: `hessian_logits(o)` takes the logits only; a Hessian that depends on the targets
        # (a quartic, log-cosh) is not emitted: the module is first-order, and `derive emit`
        # says so, rather than failing in the printer.
        if any(a.base == S.y for a in hessian.atoms(sp.Indexed)):
            hessian = None
        else:
            hvp = hessian_vector_product(hessian)
    return Forms(loss, gradient, hessian, hvp, _chains(model, loss, gradient, hessian, hvp))


def _chains(
    model: LossModel,
    loss: sp.Expr,
    gradient: sp.Expr,
    hessian: sp.Expr | None,
    hvp: sp.Expr | None,
) -> dict[str, Chain]:
    """The accurate rewrites of every printed expression.

    The loss and the gradient are computed together in the fused loop: when the loss is
    evaluated at the shifted logits, so is the gradient (one shifted array for both).
    """
    t = model.targets
    chains = {"loss": tuple(accurate_chain(loss, t))}
    pair = True if chains["loss"][-1][0] == "shifted" else None
    chains["gradient"] = tuple(accurate_chain(gradient, t, shift=pair))
    chains["prediction"] = tuple(accurate_chain(model.prediction, t, shift=False))
    if hessian is not None and hvp is not None:
        chains["hessian"] = tuple(accurate_chain(hessian, t))
        chains["hvp"] = tuple(accurate_chain(hvp, t))
    if model.simplex_targets:
        rest, at_label = split_label_delta(labels_form(gradient))
        chains["loss_labels"] = tuple(accurate_chain(labels_form(loss), t, shift=pair))
        chains["gradient_labels"] = tuple(accurate_chain(rest, t, shift=pair))
        # The column of the label is assigned its own value (A + B at j = c), so that the
        # complement rule sees `p_c - 1` whole (adding B to a rounded p_c would lose it).
        at_c = rest.xreplace({S.j: S.c}) + at_label
        chains["gradient_at_label"] = tuple(accurate_chain(at_c, t, shift=pair))
    return chains


def final_forms(
    model: LossModel,
    derived: Forms,
    steps: dict[str, Step],
    prediction: str = "prediction_definition",
) -> tuple[dict[str, sp.Basic], dict[str, str]]:
    """The forms the code generator prints, each the right-hand side of a named step, and the
    name of that step (`Derivation.check` confirms every pair)."""
    sources = {
        "loss": "loss_in_logits" if "loss_in_logits" in steps else "loss_definition",
        "gradient": "gradient_logits",
        "prediction": prediction,
        "logits": "linear_model",
        # The chain rule through the linear layer, with G = dL/dO: what the fused code computes
        # per block of rows.
        "dW": "batch_gradient_W",
        "db": "batch_gradient_b",
        "hessian": "hessian_logits",
        "hvp": "hessian_vector_product",
        "decay_loss": "weight_decay_penalty",
        "decay_grad": "weight_decay",
        "decay_hvp": "weight_decay_hvp",
        "hvp_direction": "logit_direction",
        "hvp_W": "hessian_vector_product_W",
        "decision": "decision_rule" if "decision_rule" in steps else "decision_definition",
    }
    present = {name: src for name, src in sources.items() if src in steps}
    forms = {name: steps[src].rhs for name, src in present.items()}
    # The code computes the rows of G (the per-sample gradient, whatever the notes show for
    # it) and prints the chain rule in G: checked equal to the batch steps' displayed rhs.
    forms["dW"] = sp.MatMul(1 / S.n, S.Xm.T, S.Gm)
    forms["db"] = sp.MatMul(1 / S.n, S.Gm.T, S.ones_n)
    # A size, not a formula: the code's sums over rows are divided by it (step "batch_sum").
    forms["batch_rows"] = S.n
    # What the code prints: the last link of each accurate chain (all of them checked steps).
    for name, chain in derived.chains.items():
        form = forms[f"code_{name}"] = chain[-1][1]
        # Its source: the step whose rhs it is; the labels' parts A and B come from the step
        # whose rhs is their composition (`LABEL_GRADIENT`, checked by `Derivation.check`).
        exact = [n for n, st in steps.items() if st.rhs == form]
        if name in LABEL_PARTS and "gradient_labels" in steps:
            present[f"code_{name}"] = "gradient_labels"
        elif exact:
            present[f"code_{name}"] = exact[-1]
    # References for verify (raw forms and their derivatives, evaluated in high precision):
    # not printed as code, so they need no source step.
    forms |= {f"reference_{name}": e for name, e in reference_forms(model, derived).items()}
    return forms, present


def reference_forms(model: LossModel, forms: Forms) -> dict[str, sp.Expr]:
    """The derived forms as raw formulas (exp/log only) and their first partial derivatives.

    What `derive verify` evaluates in high precision: the value of each emitted function as
    derived (before any accurate rewrite, so the rewrites are checked numerically too), and the
    sensitivities its error bound is scaled by. The derivatives only size a bound (a factor of
    two would not matter), so they are differentiated here without a step of their own.
    """
    exprs: dict[str, sp.Expr] = {"loss": forms.loss, "gradient": forms.gradient}
    if forms.hessian is not None and forms.hvp is not None:
        exprs |= {"hessian": forms.hessian, "hvp": forms.hvp}
    params = [p.symbol for p in model.params if p.symbol != S.lam]
    out: dict[str, sp.Expr] = {}
    for name, expr in exprs.items():
        raw = to_raw(expr)
        out[name] = raw
        variables = [("o", S.o[S.m]), ("y", S.y[S.m])] + (
            [("v", S.v[S.m])] if name == "hvp" else []
        )
        for label, var in variables:
            out[f"{name}_d{label}"] = refine_indices(S.m)(sp.diff(raw, var))
        for prm in params:
            out[f"{name}_d{prm.name}"] = sp.diff(raw, prm)
    return out


def core_steps(
    model: LossModel,
    forms: Forms,
    wording: dict[str, Wording] | None = None,
    per_sample: sp.MatrixExpr | None = None,
    batch_gradient: sp.MatrixExpr | None = None,
) -> dict[str, Step]:
    """The shared steps, by name, in order; `wording` tells some of them in other words.

    `per_sample` (a K-vector) and `batch_gradient` (n x K) are `dl/do` and `n dL/dO` as a
    derivation displays them (the story: `yhat - y` and `Yhat - Y`, from its step that proves
    the substitution); by default they are shown as `dl/do` and `G = dL/dO`. Either way the
    elementwise checks prove the displayed formula against the loss as defined.
    """
    words = _generic_wording(model) | (wording or {})
    j, k, o = S.j, S.k, S.o
    Ks = model.concrete_Ks
    # A model that asks for fewer concrete proofs (a large user loss) gets fewer numeric points.
    points = 20 if Ks == FULL_KS else 6
    concrete = ConcreteK(Ks=Ks, targets_simplex=model.simplex_targets, prepare=(expand_logs,))
    bind = binding(model, forms)
    K_max = 3 if model.concrete_Ks == FULL_KS else 2
    sample_shapes = ((1, 2, 2), (1, 3, 3)) if K_max >= 3 else ((1, 2, 2),)
    # A model that asks for fewer concrete proofs gets the smallest batch with two samples.
    batch_shapes = BATCH_SHAPES if K_max >= 3 else ((2, 2, 2),)

    def step(name: str, lhs: sp.Basic, rhs: sp.Basic, checks: tuple[object, ...]) -> Step:
        w = words[name]
        return Step(name, w.title, w.reason, lhs, rhs, checks)  # type: ignore[arg-type]

    steps: dict[str, Step] = {}

    def accurate_steps(name: str) -> None:
        """One step per link of the chain of `name` (its rewrites into the printed form)."""
        chain = forms.chains.get(name, ())
        for (_, before), (rule, after) in itertools.pairwise(chain):
            label = f"{name}_{rule}"
            words.setdefault(label, _rule_wording(name, rule))
            steps[label] = step(label, before, after, (_rule_proof(rule, model),))

    if forms.loss != model.loss:
        simplex = (targets_sum_to_one,) if model.simplex_targets else ()
        rewrites = (expand_logs, split_sums, *simplex)
        # The rhs was produced by these rewrites (`loss_in_logits`): the concrete-K proof, on
        # explicit sums, is the independent one.
        steps["loss_in_logits"] = step(
            "loss_in_logits", LOSS, forms.loss, (GeneralK(rewrites, replays=True), concrete)
        )
    accurate_steps("loss")
    loss_shown = forms.loss if "loss_in_logits" in steps else LOSS
    steps["gradient_logits"] = step(
        "gradient_logits",
        sp.Derivative(loss_shown, o[j]),
        forms.gradient,
        (
            GeneralK((refine_indices(j),), replays=True),
            ConcreteK(Ks=Ks, prepare=(expand_logs,)),
            Numeric(points=points, targets_simplex=model.simplex_targets),
        ),
    )
    accurate_steps("gradient")
    sample = per_sample if per_sample is not None else grad_vec
    steps["chain_rule_W"] = step(
        "chain_rule_W",
        dl_dW,
        x_vec * sample.T,
        (Elementwise(bind, shapes=sample_shapes, meaning=MEANING, prepare=LOGS),),
    )
    steps["chain_rule_b"] = step(
        "chain_rule_b",
        dl_db,
        sample,
        (Elementwise(bind, shapes=sample_shapes, meaning=MEANING, prepare=LOGS),),
    )
    if batch_gradient is not None:
        dW, db, meaning = (
            sp.MatMul(1 / S.n, S.Xm.T, batch_gradient),
            sp.MatMul(1 / S.n, batch_gradient.T, S.ones_n),
            MEANING,
        )
    else:
        dW, db, meaning = (
            sp.MatMul(1 / S.n, S.Xm.T, S.Gm),
            sp.MatMul(1 / S.n, S.Gm.T, S.ones_n),
            MEANING_G,
        )
    steps["batch_gradient_W"] = step(
        "batch_gradient_W",
        dL_dW,
        dW,
        (Elementwise(bind, shapes=batch_shapes, meaning=meaning, prepare=LOGS),),
    )
    steps["batch_gradient_b"] = step(
        "batch_gradient_b",
        dL_db,
        db,
        (Elementwise(bind, shapes=batch_shapes, meaning=meaning, prepare=LOGS),),
    )
    steps["batch_sum"] = step(
        "batch_sum",
        BATCH_SUM_LHS,
        BATCH_SUM_RHS,
        (Elementwise(_batch_sum, shapes=((2, 2, 2), (3, 2, 3)), meaning=MEANING_SUM),),
    )
    decay = model.decay_symbol
    if decay is not None:
        w = words["weight_decay_penalty"]
        steps["weight_decay_penalty"] = Step(
            "weight_decay_penalty",
            w.title,
            w.reason,
            PENALTY,
            decay / 2 * sp.Trace(S.Wm.T * S.Wm),
            definition=True,
        )
        steps["weight_decay"] = step(
            "weight_decay",
            dR_dW,
            decay * S.Wm,
            (Elementwise(bind, shapes=((1, 2, 2), (1, 3, 2)), meaning=MEANING_R),),
        )
        steps["weight_decay_hvp"] = step(
            "weight_decay_hvp",
            d2R_dW2_V,
            decay * S.Vm,
            (Elementwise(bind, shapes=((1, 2, 2), (1, 3, 2)), meaning=MEANING_R_V),),
        )
    accurate_steps("prediction")
    _decision_steps(model, steps)
    if model.simplex_targets:
        _label_steps(model, forms, steps)
    if forms.hessian is None or forms.hvp is None:
        return steps
    steps["hessian_logits"] = step(
        "hessian_logits",
        sp.Derivative(forms.gradient, o[k]),
        forms.hessian,
        (
            GeneralK((refine_indices(j, k),), replays=True),
            ConcreteK(Ks=Ks),
            Numeric(points=points),
        ),
    )
    accurate_steps("hessian")
    steps["hessian_vector_product"] = step(
        "hessian_vector_product",
        sp.Sum(forms.hessian * S.v[k], (k, 1, S.K)),
        forms.hvp,
        (GeneralK((refine_indices(j),), replays=True), ConcreteK(Ks=Ks)),
    )
    accurate_steps("hvp")
    steps["logit_direction"] = step(
        "logit_direction",
        O_dot,
        S.Xm * S.Vm,
        (Elementwise(bind, shapes=batch_shapes, meaning=MEANING_DIRECTION),),
    )
    steps["hessian_vector_product_W"] = step(
        "hessian_vector_product_W",
        d2L_dW2_V,
        sp.MatMul(1 / S.n, S.Xm.T, G_dot),
        # NOTE: second derivatives of explicit entries grow fast with n, d and K (n=3, d=2,
        # K=3 takes ~30 s for softmax regression): a square and a non-square shape suffice for
        # the chain rule; the Hessian-vector product itself is proved for symbolic K above.
        (Elementwise(bind, shapes=HVP_W_SHAPES, meaning=MEANING_HVP_W, prepare=LOGS),),
    )
    return steps


#: The decision's outcome (a class, or 0/1 for a binary output) and its display names.
_C_HAT = sp.Symbol(r"\hat{c}")
_T_HAT = sp.IndexedBase(r"\hat{t}")


def _decision_steps(model: LossModel, steps: dict[str, Step]) -> None:
    """What `predict` returns: defined as the outcome with the least expected 0-1 loss under the
    model's probabilities (for real targets: the output itself), and the rule the code prints,
    proved from that definition (`decide`)."""
    t, m = OUTCOME, S.m
    if model.targets == "distribution":
        lhs: sp.Basic = _C_HAT
        risk = sp.Sum(YHAT[m] * (1 - sp.KroneckerDelta(m, t)), (m, 1, S.K))
        defined: sp.Basic = ArgMin(risk, t, sp.Integer(1), S.K)
        rule: sp.Basic = ArgMax(YHAT[t], t, sp.Integer(1), S.K)
        words = DECISION_WORDS["distribution"]
    elif model.targets == "binary":
        lhs = _T_HAT[S.j]
        p = YHAT[S.j]
        defined = ArgMin(p * (1 - t) + (1 - p) * t, t, sp.Integer(0), sp.Integer(1))
        rule = Exceeds(p, sp.Rational(1, 2))
        words = DECISION_WORDS["binary"]
    else:
        lhs, defined, rule = _T_HAT[S.j], YHAT[S.j], None
        words = DECISION_WORDS["real"]
    title, reason = words[0]
    steps["decision_definition"] = Step(
        "decision_definition", title, reason, lhs, defined, definition=True
    )
    if rule is None:
        return
    title, reason = words[1]
    steps["decision_rule"] = Step(
        "decision_rule", title, reason, lhs, rule, (GeneralK((decide,), size="K"),)
    )


DECISION_WORDS: dict[str, tuple[tuple[Prose, Prose], ...]] = {
    "distribution": (
        (
            Prose("The predicted class", "预测的类别"),
            Prose(
                "`predict` returns the class with the least expected 0-1 loss under the model's "
                "probabilities: the probability that any other class is the true one.",
                "`predict` 返回在模型概率下期望 0-1 损失最小的类别：即真实类别是其他类别的概率"
                "最小。",
            ),
        ),
        (
            Prose("The predicted class is the most probable one", "预测的类别是概率最大的类别"),
            Prose(
                "The delta picks out $\\hat{y}_t$ from the sum, and a term or a positive factor "
                "that does not depend on $t$ does not move an argmax: this is what the code "
                "computes.",
                "$\\delta$ 从求和中取出 $\\hat{y}_t$，与 $t$ 无关的项和正因子不改变 argmax 的位置："
                "代码计算的就是这个式子。",
            ),
        ),
    ),
    "binary": (
        (
            Prose("The predicted outcome", "预测的结果"),
            Prose(
                "For each output, `predict` returns the outcome $t \\in \\{0, 1\\}$ with the least "
                "expected 0-1 loss when the model gives 1 the probability $\\hat{y}_j$.",
                "对每个输出，`predict` 返回期望 0-1 损失最小的结果 $t \\in \\{0, 1\\}$，其中模型给 "
                "1 的概率为 $\\hat{y}_j$。",
            ),
        ),
        (
            Prose("A probability above one half", "概率大于二分之一"),
            Prose(
                "The expected loss is affine in $t$, so the smaller one is at $t = 1$ exactly "
                "when its slope $1 - 2 \\hat{y}_j$ is negative (a tie predicts 0): this is what "
                "the code computes.",
                "期望损失对 $t$ 是仿射的，所以当且仅当斜率 $1 - 2 \\hat{y}_j$ 为负时 $t = 1$ 更小"
                "（相等时预测 0）：代码计算的就是这个式子。",
            ),
        ),
    ),
    "real": (
        (
            Prose("The prediction", "预测值"),
            Prose(
                "For real-valued targets `predict` returns the model's output itself.",
                "对实数目标，`predict` 返回模型的输出本身。",
            ),
        ),
    ),
}


def results(steps: dict[str, Step]) -> tuple[Result, ...]:
    """The closing summary: the gradient (in its stable form where there is one), the batch
    gradients and the Hessian, each the right side of the step that proved it."""
    o, j, k = S.o, S.j, S.k
    wanted = (
        (Prose("Gradient w.r.t. the logits", "对输出 $o$ 的梯度"), sp.Derivative(LOSS, o[j]),
         ("gradient_stable", "gradient_logits")),
        (Prose("Batch gradient for $W$", "批量上 $W$ 的梯度"), None, ("batch_gradient_W",)),
        (Prose("Batch gradient for $b$", "批量上 $b$ 的梯度"), None, ("batch_gradient_b",)),
        (Prose("Hessian w.r.t. the logits", "对输出 $o$ 的 Hessian"),
         sp.Derivative(LOSS, o[j], o[k]), ("hessian_stable", "hessian_logits")),
    )  # fmt: skip
    out = []
    for label, lhs, names in wanted:
        name = next((n for n in names if n in steps), None)
        if name is not None:
            out.append(Result(label, steps[name].lhs if lhs is None else lhs, name))
    return tuple(out)


_WHAT = {
    "loss": Prose("the loss", "损失"),
    "gradient": Prose("the gradient", "梯度"),
    "hessian": Prose("the Hessian", "Hessian"),
    "hvp": Prose("the Hessian-vector product", "Hessian 与向量之积"),
    "prediction": Prose("the prediction", "预测"),
    "gradient_at_label": Prose("the gradient at the label", "标签处的梯度"),
}

_RULES: dict[str, tuple[Prose, Prose]] = {
    "stable": (
        Prose("in stable form", "的数值稳定形式"),
        Prose(
            "Overflow-prone shapes are rewritten as stable kernels (log-sum-exp, softmax, "
            "sigmoid, softplus); the check proves the rewrite changes nothing.",
            "把容易溢出的形式改写为数值稳定的核函数（log-sum-exp、softmax、sigmoid、softplus）；"
            "检验证明改写前后相等。",
        ),
    ),
    "endpoints": (
        Prose("split at the targets' endpoints", "按目标的端点拆分"),
        Prose(
            "Affine in each target $y \\in [0, 1]$, so $F = (1 - y) F|_{y=0} + y F|_{y=1}$: "
            "for a target of exactly 0 or 1 one term vanishes, and the other is computed "
            "without subtracting two nearly equal numbers.",
            "对每个目标 $y \\in [0, 1]$ 是仿射的，所以 $F = (1 - y) F|_{y=0} + y F|_{y=1}$："
            "目标恰为 0 或 1 时一项为零，另一项的计算不再相减两个几乎相等的数。",
        ),
    ),
    "complements": (
        Prose("with complements", "用补数表示"),
        Prose(
            "$1 - \\sigma(z) = \\sigma(-z)$ and $1 - p_j = \\sum_{m \\ne j} p_m$: the complement "
            "is computed directly, never as a difference from 1 (which rounds to 0 once "
            "$\\sigma(z)$ or $p_j$ rounds to 1).",
            "$1 - \\sigma(z) = \\sigma(-z)$：直接计算补数，而不是用 1 去减"
            "（$\\sigma(z)$ 舍入为 1 后差就成了 0）。",
        ),
    ),
    "diagonal": (
        Prose("with its diagonal apart", "对角线单独写出"),
        Prose(
            "$\\delta$ is 0 or 1, so $F = (1 - \\delta) F|_{\\delta=0} + \\delta F|_{\\delta=1}$; "
            "on the diagonal $1 - p$ is then the other classes' probability, computed without "
            "subtracting from 1.",
            "$\\delta$ 只取 0 或 1，所以 "
            "$F = (1 - \\delta) F|_{\\delta=0} + \\delta F|_{\\delta=1}$；"
            "对角线上的 $1 - p$ 于是是其余类别的概率之和，不用从 1 中减去。",
        ),
    ),
    "rationalised": (
        Prose("without a cancelling square root", "消去平方根的相减"),
        Prose(
            "$\\sqrt{A} - B = (A - B^2) / (\\sqrt{A} + B)$ for $B > 0$: where $A - B^2$ drops a "
            "constant (as $\\sqrt{1 + x^2} - 1$ does), the code no longer subtracts two nearly "
            "equal numbers, which for small $x$ loses every digit.",
            "$B > 0$ 时 $\\sqrt{A} - B = (A - B^2) / (\\sqrt{A} + B)$：当 $A - B^2$ 消去一个常数"
            "（如 $\\sqrt{1 + x^2} - 1$）时，代码不再相减两个几乎相等的数"
            "（$x$ 很小时会丢掉全部有效数字）。",
        ),
    ),
    "centred": (
        Prose("with the direction centred", "方向向量居中"),
        Prose(
            "Adding one constant to every entry of $v$ changes nothing ($H$ annihilates "
            "$\\mathbf{1}$; the check proves it for any constant), so the code uses "
            "$w_k = v_k - v_t$ with $t$ the class of the largest logit: the term "
            "$\\sum_k p_k w_k$ is then small where $p_t$ is close to 1, instead of cancelling "
            "$v_t$ against itself.",
            "给 $v$ 的每个分量加同一个常数不改变结果（$H$ 把 $\\mathbf{1}$ 映为 0；检验对任意常数"
            "证明），所以代码使用 $w_k = v_k - v_t$，$t$ 为最大 logit 的类别：$p_t$ 接近 1 时 "
            "$\\sum_k p_k w_k$ 很小，而不是 $v_t$ 与自身相消。",
        ),
    ),
    "shifted": (
        Prose("at the shifted logits", "在平移后的 logits 上"),
        Prose(
            "Adding one constant to every logit changes nothing here (the check proves it for "
            "any constant), so the code uses $z_k = o_k - \\max_m o_m$: the differences of "
            "large logits are then exact before anything is combined (the loss as "
            "$-\\log \\operatorname{softmax}$).",
            "给所有 logits 加同一个常数不改变这里的值（检验对任意常数证明），所以代码使用 "
            "$z_k = o_k - \\max_m o_m$：大 logits 之差在参与运算之前就是精确的"
            "（损失即 $-\\log \\operatorname{softmax}$）。",
        ),
    ),
}


def _rule_wording(name: str, rule: str) -> Wording:
    what = _WHAT[name]
    how, why = _RULES[rule]
    return Wording(Prose(f"{what.en[0].upper()}{what.en[1:]} {how.en}", f"{what.zh}{how.zh}"), why)


def _rule_proof(rule: str, model: LossModel) -> FirstOf:
    """How a rewrite is proved: raw forms, then the identities the rule relies on."""
    Ks = model.concrete_Ks
    simplex = model.simplex_targets
    if rule == "shifted":
        sums_to_one = (targets_sum_to_one,) if simplex else ()
        general = (to_raw, factor_shift, expand_logs, split_sums, *sums_to_one, canonical_sums)
        concrete = ConcreteK(Ks=Ks, targets_simplex=simplex, prepare=(factor_exponentials,))
        return FirstOf((GeneralK(general), concrete))
    if rule == "stable":
        return FirstOf((GeneralK((to_raw, canonical_sums)), ConcreteK(Ks=Ks)))
    return FirstOf((GeneralK((to_raw, split_sums, canonical_sums)), ConcreteK(Ks=Ks)))


#: The forms the code prints for the gradient at integer labels: `A` for every class and `B`
#: assigned at the label's column, and how they make up the rhs of step `gradient_labels`:
#: `(1 - delta_jc) A + delta_jc B`, in placeholders named after the printed forms. The step
#: is built from it and `Derivation.check` confirms that its rhs is exactly that composition of
#: the printed forms (not only that it contains them).
LABEL_PARTS = ("gradient_labels", "gradient_at_label")
LABEL_GRADIENT = (1 - sp.KroneckerDelta(S.j, S.c)) * sp.Symbol("code_gradient_labels") + (
    sp.KroneckerDelta(S.j, S.c) * sp.Symbol("code_gradient_at_label")
)


def compose(composition: sp.Basic, forms: dict[str, sp.Basic]) -> sp.Basic:
    """`composition` with each placeholder replaced by the form of that name."""
    return composition.xreplace(
        {s: forms[s.name] for s in composition.free_symbols if s.name in forms}
    )


def _label_steps(model: LossModel, forms: Forms, steps: dict[str, Step]) -> None:
    """The printed forms for integer labels: the target one-hot at the label c."""
    onehot = {
        a: sp.KroneckerDelta(a.indices[0], S.c)
        for a in (forms.loss.atoms(sp.Indexed) | forms.gradient.atoms(sp.Indexed))
        if a.base == S.y
    }
    general = (
        refine_indices(S.c),
        to_raw,
        factor_shift,
        expand_logs,
        split_sums,
        canonical_sums,
    )
    proof = FirstOf(
        (GeneralK(general), ConcreteK(Ks=model.concrete_Ks, prepare=(factor_exponentials,)))
    )
    chains = forms.chains
    printed = {f"code_{name}": chains[name][-1][1] for name in LABEL_PARTS}
    for name, lhs, rhs, title in (
        (
            "loss_labels",
            forms.loss.xreplace(onehot),
            chains["loss_labels"][-1][1],
            Prose("The loss for an integer label", "整数标签下的损失"),
        ),
        (
            "gradient_labels",
            forms.gradient.xreplace(onehot),
            compose(LABEL_GRADIENT, printed),
            Prose("The gradient for an integer label", "整数标签下的梯度"),
        ),
    ):
        steps[name] = Step(
            name,
            title,
            Prose(
                "With a one-hot target $y_k = \\delta_{kc}$ the sums over the targets pick out "
                "the label's term, so labels need no one-hot matrix; the printed form is the "
                "accurate one above.",
                "目标为独热向量 $y_k = \\delta_{kc}$ 时，对目标的求和只留下标签那一项，"
                "所以整数标签不需要独热矩阵；打印的是上面的精确形式。",
            ),
            lhs,
            rhs,
            (proof,),
        )


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


def loss_derivation(model: LossModel) -> Derivation:
    """The derivation of any loss model: its definitions, the linear layer, the shared steps."""
    forms = derive_forms(model)
    definition = Step(
        "loss_definition",
        Prose("The loss", "损失函数"),
        model.description,
        LOSS,
        model.loss,
        definition=True,
    )
    prediction = Step(
        "prediction_definition",
        Prose("The model's output", "模型的输出"),
        Prose(
            "What `predict_proba` returns for each class.",
            "`predict_proba` 对每个类别返回的值。",
        ),
        S.yhat[S.j],
        model.prediction,
        definition=True,
    )
    linear = linear_model_step(
        Prose("The linear layer", "线性层"),
        Prose(
            "Each sample's logits are $o = W^T x + b$; a batch $X$ ($n \\times d$) stacks them "
            "into rows.",
            "每个样本的输出为 $o = W^T x + b$；一个批量 $X$（$n \\times d$）把它们按行堆叠。",
        ),
    )
    shared = core_steps(model, forms)
    by_name = {"loss_definition": definition, "prediction_definition": prediction, **shared}
    by_name["linear_model"] = linear
    steps = (definition, prediction, linear, *shared.values())
    forms_out, sources = final_forms(model, forms, by_name)
    compositions = {"gradient_labels": LABEL_GRADIENT} if "gradient_labels" in by_name else {}
    return Derivation(
        name=model.name,
        title=model.title,
        intro=Prose(
            f"A machine-checked derivation of the gradient of the {model.title.en} loss.",
            f"{model.title.zh}损失梯度的机器验证推导。",
        ),
        steps=steps,
        final_forms=forms_out,
        model=model,
        results=results(shared),
        final_sources=sources,
        final_compositions=compositions,
    )
