"""The named rewrites of the symbolic-K proofs: each a function from expression to expression.

A symbolic-K check (`GeneralK` in `derive.symbolic.steps`) runs a chain of these and must end in 0;
`canonical_sums` ends every chain, so that two sums that differ only in the name of their index
compare equal, without capturing an index bound or free around them. These rewrites know sums,
indices and logarithms, and nothing of stable kernels (`derive.symbolic.functions`) or checks.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import sympy as sp

from derive import notation as S

Transform = Callable[[sp.Expr], sp.Expr]


def canonical_sums(expr: sp.Basic) -> sp.Basic:
    """Rename every single-limit Sum's dummy canonically, so that equal sums compare equal.

    Capture-free: every bound variable is first made unique (a fresh `Dummy`), then each sum,
    outermost first, gets the first of `_s`, `_s2`, `_s3`, ... that does not occur free in its
    own body. A nested sum that uses an enclosing sum's index therefore gets a name of its own,
    so `sum_j v_j sum_k p_k v_j` and `sum_j v_j sum_k p_k v_k` stay different; sums that do not
    refer to an enclosing index all use `_s` (the name the stable kernels recognise).
    """
    return _name_sums(_fresh_dummies(expr))


def _fresh_dummies(expr: sp.Basic) -> sp.Basic:
    """Innermost first, every single-limit Sum binds a `Dummy` of its own."""
    if not expr.args or not expr.has(sp.Sum):
        return expr
    args = [_fresh_dummies(a) for a in expr.args]
    if isinstance(expr, sp.Sum) and len(expr.limits) == 1:
        body, (var, lo, hi) = args[0], args[1]
        fresh = sp.Dummy(var.name, **var.assumptions0)
        return sp.Sum(body.xreplace({var: fresh}), (fresh, lo, hi))
    return expr.func(*args) if tuple(args) != expr.args else expr


def _canonical_name(taken: set[sp.Basic]) -> sp.Symbol:
    names = {s.name for s in taken if isinstance(s, sp.Symbol)}
    for count in itertools.count(1):
        name = "_s" if count == 1 else f"_s{count}"
        if name not in names:
            return sp.Symbol(name, integer=True, positive=True)
    raise AssertionError("unreachable")


def _name_sums(expr: sp.Basic) -> sp.Basic:
    """Outermost first: each Sum's (unique) dummy becomes the first free canonical name."""
    if not expr.args or not expr.has(sp.Sum):
        return expr
    if isinstance(expr, sp.Sum) and len(expr.limits) == 1:
        (var, lo, hi) = expr.limits[0]
        body = expr.function
        name = _canonical_name(body.free_symbols - {var})
        return sp.Sum(_name_sums(body.xreplace({var: name})), (name, lo, hi))
    args = [_name_sums(a) for a in expr.args]
    return expr.func(*args) if tuple(args) != expr.args else expr


def refine_indices(*indices: sp.Symbol) -> Transform:
    """Evaluate delta sums (`doit`) and drop the Piecewise guards, given `1 <= index <= K`."""

    def apply(expr: sp.Expr) -> sp.Expr:
        # Two passes: a Derivative's doit yields delta sums that need a doit of their own.
        out: sp.Expr = sp.refine(expr.doit().doit(), S.class_index_range(*indices))
        return out

    apply.__name__ = f"refine_indices({', '.join(map(str, indices))})"
    return apply


def expand_logs(expr: sp.Expr) -> sp.Expr:
    """`log(a b) = log a + log b`, `log(exp(t)) = t`: valid as every log argument is positive."""
    out: sp.Expr = sp.expand_log(expr, force=True)
    return out


def split_sums(expr: sp.Expr, multinomial: bool = True) -> sp.Expr:
    """Linearity of Sum: distribute over +, pull out factors that do not depend on the index,
    and sum constants (`sum_{k=1}^K c = K c`). With `multinomial=False`, powers of sums stay
    as written (`(o - y)^2` is not multiplied out)."""
    expanded = sp.expand(
        canonical_sums(sp.expand(expr, multinomial=multinomial)), multinomial=multinomial
    )
    out: sp.Expr = sp.factor_terms(sp.expand(expanded, multinomial=multinomial))
    out = out.replace(
        lambda e: (
            isinstance(e, sp.Sum)
            and len(e.limits) == 1
            and e.limits[0][0] not in e.function.free_symbols
        ),
        lambda e: e.function * (e.limits[0][2] - e.limits[0][1] + 1),
    )
    return sp.expand(out, multinomial=multinomial)


def _sums_to_one(base: sp.IndexedBase, expr: sp.Expr) -> sp.Expr:
    canon = canonical_sums(expr)
    s = canonical_sums(sp.Sum(base[S.j], (S.j, 1, S.K)))
    out: sp.Expr = canon.subs(s, 1)
    return out


def targets_sum_to_one(expr: sp.Expr) -> sp.Expr:
    """Use the assumption `sum_j y_j = 1` (one-hot or any probability vector)."""
    return _sums_to_one(S.y, expr)


def probabilities_sum_to_one(expr: sp.Expr) -> sp.Expr:
    """Use `sum_j p_j = 1` for the probability vector p."""
    return _sums_to_one(S.p, expr)


def expand_in_sums(expr: sp.Expr) -> sp.Expr:
    """Multiply out each summand (squares of differences become sums of products)."""
    return expr.replace(
        lambda t: isinstance(t, sp.Sum), lambda t: sp.Sum(sp.expand(t.function), *t.limits)
    )


def factor_shift(expr: sp.Expr) -> sp.Expr:
    """`sum_m exp(o_m - c) = exp(-c) sum_m exp(o_m)`: expand each summand, then factor."""

    def fac(s: sp.Sum) -> sp.Expr:
        out: sp.Expr = sp.factor_terms(sp.Sum(sp.expand(s.function), *s.limits))
        return out

    return expr.replace(lambda e: isinstance(e, sp.Sum), fac)


def factor_exponentials(expr: sp.Expr) -> sp.Expr:
    """`log(sum_m exp(o_m - c))` = `-c + log(sum_m exp(o_m))` on explicit (concrete-K) sums."""
    return expand_logs(sp.factor_terms(sp.expand(expr)))


def run_transforms(expr: sp.Expr, transforms: Sequence[Transform]) -> sp.Expr:
    for t in transforms:
        expr = t(expr)
    return canonical_sums(expr)
