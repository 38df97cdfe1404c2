"""The names the shared steps display, and a per-sample formula shown as a vector.

Contract: only symbols. `LOSS`, `YHAT` and `PENALTY` are defined by definition steps; the
derivative names (`dL_dW`, `dl_db`, ...) and the vectors (`x_vec`, `yhat_vec`, ...) are bound to
explicit entries by `derive.losses.derivation.binding`, so a displayed formula in them is checked,
never typed. `as_vector` writes an expression in `yhat_j`, `y_j` as `yhat - y` (or `Yhat - Y`).
Nothing here checks anything.
"""

from __future__ import annotations

import sympy as sp

from derive import notation as S


def display(name: str) -> sp.Symbol:
    """A symbol that only names something in the notes (never reaches code)."""
    return sp.Symbol(name)


#: The per-sample and batch loss, as named in the notes (defined by the loss's definition step).
LOSS = sp.Symbol(r"\ell")
#: The model's output `yhat_j`, defined by the prediction's definition step.
YHAT = S.yhat
#: The weight-decay penalty R(W), defined by its own step where the model has one.
PENALTY = sp.Symbol("R")
#: The mean loss over a batch, defined by step `mean_loss` in the per-sample losses `ell_rows`
#: (entry r: the loss at sample r); the batch gradients' checks differentiate that definition.
MEAN_LOSS = sp.Symbol("L")
ell_rows = sp.MatrixSymbol(r"\boldsymbol{\ell}", S.n, 1)
#: The mean as step `mean_loss` defines it: `L = (1/n) ell^T 1`. Its factor (`mean_factor`) is
#: the one every batch gradient carries (`dL/dO = (1/n) G`, ...), so it is written here once.
MEAN_DEFINITION = sp.MatMul(1 / S.n, ell_rows.T, S.ones_n)


def mean_factor(mean: sp.MatrixExpr) -> sp.Expr:
    """`c` of a mean `c ell^T 1` (the rhs of step `mean_loss`): by the chain rule through it,
    `dL/dO = c G`, `dL/dW = c X^T G`, `dL/db = c G^T 1`. Refuses a mean of another shape."""
    coeff, matrices = mean.as_coeff_matrices()
    if tuple(matrices) != (ell_rows.T, S.ones_n):
        raise NotImplementedError(f"{mean}: expected a mean c * ell^T 1 of the per-sample losses")
    factor: sp.Expr = coeff
    return factor


#: The training objective where the model has a weight decay: defined by step `objective` as the
#: mean loss plus the penalty; its gradient's check differentiates that definition.
OBJECTIVE = sp.Symbol("J")

# Display names of derivatives: each is bound, in the elementwise checks, to a derivative taken
# of explicit entries (never typed as a result).
dl_dW = display(r"\frac{\partial \ell}{\partial W}")
dl_db = display(r"\frac{\partial \ell}{\partial b}")
dL_dW = display(r"\frac{\partial L}{\partial W}")
dL_db = display(r"\frac{\partial L}{\partial b}")
dL_dO = display(r"\frac{\partial L}{\partial O}")
dR_dW = display(r"\frac{\partial R}{\partial W}")
dJ_dW = display(r"\frac{\partial J}{\partial W}")
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


#: The displayed sides of step `batch_sum`: the whole batch's row sum and the sum over blocks.
BATCH_SUM_LHS = display(r"n \frac{\partial L}{\partial W}")
BATCH_SUM_RHS = sp.Sum(
    display(r"n_c \frac{\partial L_c}{\partial W}"), (display("c"), 1, display("C"))
)


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
