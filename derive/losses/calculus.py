"""The calculus every loss goes through: simplify, differentiate to the logits, second order.

These are the *derived* final forms: the code generator prints what these functions return, and
the derivation's checks confirm them (the concrete-K checks differentiate explicit expressions
independently, so a wrong symbolic-K result cannot pass).
"""

from __future__ import annotations

import sympy as sp

from derive import notation as S
from derive.losses.model import LossModel
from derive.symbolic.functions import recognise_binary
from derive.symbolic.rewrites import (
    canonical_sums,
    expand_logs,
    refine_indices,
    split_sums,
    targets_sum_to_one,
)


def loss_in_logits(model: LossModel) -> sp.Expr:
    """The per-sample loss with logs expanded, sums split and `sum y = 1` used where it holds.

    NOTE: powers the user wrote factored stay factored (`(o - y)^2` is a square of a
    difference, accurate where the multiplied-out `o^2 - 2 o y + y^2` cancels every digit).
    """
    expr = split_sums(expand_logs(recognise_binary(model.loss)), multinomial=False)
    if model.simplex_targets:
        expr = targets_sum_to_one(expr)
    out: sp.Expr = canonical_sums(sp.expand(expr, multinomial=False))
    return out


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Canonical sums, expanded when that is shorter (`(s - 1) y - s y + s` becomes `s - y`)."""
    expr = canonical_sums(expr)
    expanded = canonical_sums(sp.expand(expr))
    out: sp.Expr = expanded if sp.count_ops(expanded) < sp.count_ops(expr) else expr
    return out


def logit_gradient(loss: sp.Expr) -> sp.Expr:
    """`d loss / d o_j` for symbolic K: differentiate, evaluate the delta sums, drop the guards."""
    return _tidy(refine_indices(S.j)(sp.diff(loss, S.o[S.j])))


def logit_hessian(gradient: sp.Expr) -> sp.Expr:
    """`d^2 loss / d o_j d o_k`, from the gradient."""
    return _tidy(refine_indices(S.j, S.k)(sp.diff(gradient, S.o[S.k])))


def hessian_vector_product(hessian: sp.Expr) -> sp.Expr:
    """`sum_k H_jk v_k`: the Hessian applied to a direction without forming the K x K matrix."""
    summed = sp.Sum(sp.expand(hessian) * S.v[S.k], (S.k, 1, S.K))
    out: sp.Expr = canonical_sums(split_sums(refine_indices(S.j)(summed)))
    return out
