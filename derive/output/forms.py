"""The derivation's final forms as every code target prints them: stable, and for integer labels.

One place for what the NumPy module and the framework targets (torch, JAX, the array API) print,
so that they all print the same checked expressions:

- `stable(expr)`: the final form rewritten into stable kernels (`stabilize`; the derivation's
  `*_stable` steps check that this rewrite is an identity);
- `labels_form(expr)`: the form for a one-hot target at class c (`y_k = delta_{kc}`, sums over k
  evaluated), which the code computes from integer labels without building a one-hot matrix;
- `split_label_delta(g)`: `g_j = A_j + delta_{jc} B`, so the code computes `A` for every class and
  adds `B` at the label's column.

Both label rewrites are exact substitutions; the tests compare the label path with the
probability path at one-hot targets, for every target.
"""

from __future__ import annotations

import sympy as sp

from derive import notation as S
from derive.symbolic.functions import stabilize
from derive.symbolic.rewrites import refine_indices


def stable(expr: sp.Expr) -> sp.Expr:
    """`expr` in stable kernels (value unchanged)."""
    return stabilize(expr)


def labels_form(expr: sp.Expr) -> sp.Expr:
    """`expr` for a one-hot target at class c: substitute `y_k = delta_{kc}` and evaluate sums."""
    onehot = expr.replace(
        lambda e: isinstance(e, sp.Indexed) and e.base == S.y,
        lambda e: sp.KroneckerDelta(e.indices[0], S.c),
    )
    out: sp.Expr = refine_indices(S.c)(onehot)
    return out


def split_label_delta(gradient: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """`g_j = A_j + delta_{jc} B`: return (A, B with j = c)."""
    delta = sp.KroneckerDelta(S.j, S.c)
    expanded = sp.expand(gradient.xreplace({sp.KroneckerDelta(S.c, S.j): delta}))
    coeff = expanded.coeff(delta)
    rest = sp.expand(expanded - coeff * delta)
    if rest.has(sp.KroneckerDelta):
        raise NotImplementedError(f"gradient is not affine in the one-hot label: {gradient}")
    return rest, coeff.xreplace({S.j: S.c})
