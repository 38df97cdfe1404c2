"""Explicit, concrete-size instances of a loss on the linear layer, for elementwise proofs.

Matrix identities (`dL/dW = X^T (Yhat - Y) / n`, ...) are proved entry by entry on explicit
symbols for small n, d, K: plain symbols everywhere, never `MatrixSymbol` element calculus (whose
derivatives of `[0, 0]` elements can silently come out 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derive import notation as S
from derive.symbolic.steps import instantiate


@dataclass(frozen=True)
class Batch:
    X: sp.Matrix
    W: sp.Matrix
    b: sp.Matrix  # K x 1
    Y: sp.Matrix
    O: sp.Matrix

    @property
    def n(self) -> int:
        return int(self.X.rows)


def make_batch(n: int, d: int, K: int, simplex: bool) -> Batch:
    """Symbols for X (n x d), W (d x K), b (K), Y (n x K) and O = X W + 1 b^T."""
    X = sp.Matrix(n, d, lambda r, a: sp.Symbol(f"x_{r}_{a}", real=True))
    W = sp.Matrix(d, K, lambda a, j: sp.Symbol(f"w_{a}_{j}", real=True))
    b = sp.Matrix(K, 1, lambda j, _: sp.Symbol(f"b_{j}", real=True))
    Y = sp.Matrix(n, K, lambda r, j: sp.Symbol(f"y_{r}_{j}", real=True))
    if simplex:
        for r in range(n):
            Y[r, K - 1] = 1 - sum(Y[r, t] for t in range(K - 1))
    O = X * W + sp.ones(n, 1) * b.T
    return Batch(X, W, b, Y, O)


def row_instance(expr: sp.Expr, batch: Batch, r: int, index: int | None = None) -> sp.Expr:
    """`expr` (in o[k], y[k], maybe a free j) at sample r of the batch, j = index (0-based)."""
    K = batch.O.cols
    e = instantiate(expr, K, targets_simplex=False)
    if index is not None:
        e = e.subs(S.j, index + 1).doit()
    return e.xreplace(
        {S.o[t + 1]: batch.O[r, t] for t in range(K)}
        | {S.y[t + 1]: batch.Y[r, t] for t in range(K)}
    )


def gradient_matrix(gradient: sp.Expr, batch: Batch) -> sp.Matrix:
    """The n x K matrix whose row r is the per-sample gradient `dl/do` at sample r."""
    return sp.Matrix(batch.n, batch.O.cols, lambda r, j: row_instance(gradient, batch, r, index=j))


def jacobian(scalar: sp.Expr, params: sp.Matrix) -> sp.Matrix:
    """`d scalar / d params[i, j]` entry by entry, by ordinary differentiation."""
    return params.applyfunc(lambda w: sp.diff(scalar, w))


def any_loss_gradient(batch: Batch) -> tuple[sp.Expr, sp.Matrix]:
    """`L = (1/n) sum_r f(O_r)` for an *undefined* per-sample loss f, and its `dL/dO` (n x K).

    Proving a matrix identity with f unspecified proves it for every differentiable loss on the
    linear layer: the chain rule through `O = X W + 1 b^T` does not depend on the loss.
    """
    f = sp.Function("f")
    K = batch.O.cols
    u = sp.symbols(f"u1:{K + 1}", real=True)
    L = sp.Add(*[f(*batch.O.row(r)) for r in range(batch.n)]) / batch.n
    G = sp.Matrix(
        batch.n,
        K,
        lambda r, k: sp.diff(f(*u), u[k]).subs(dict(zip(u, batch.O.row(r), strict=True))),
    )
    return L, G / batch.n
