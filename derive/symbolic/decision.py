"""Decisions: what `predict` returns, as SymPy objects a step can prove and a printer can print.

A model's output `yhat` is a probability (of each class, or of each binary outcome) or a value;
its decision is the outcome with the least expected 0-1 loss under those probabilities (Bayes'
rule): `argmin_t sum_m yhat_m (1 - delta_{mt})` over the classes, `argmin_{t in {0, 1}}` of
`yhat (1 - t) + (1 - yhat) t` for a binary output. The derivation defines the decision that way
and proves, with the rewrite `decide` below, the form the code prints (`argmax_t yhat_t`,
`[yhat_j > 1/2]`); a wrong rule (argmin, `< 1/2`, another threshold) does not reduce to it.

- `ArgMax(f, t, lo, hi)` / `ArgMin(...)`: the first `t` in `lo..hi` where `f` is largest /
  smallest; `t` is bound (not among the free symbols).
- `Exceeds(a, b)`: 1 where `a > b`, else 0 (an Iverson bracket; ties give 0, as the first
  maximiser of an argmax over {0, 1} does).
"""

from __future__ import annotations

from typing import Any

import sympy as sp

from derive.symbolic.rewrites import refine_indices, split_sums

#: The bound variable of a decision: an outcome (a class 1..K, or a binary outcome 0/1).
OUTCOME = sp.Symbol("t", integer=True, nonnegative=True)


class _Arg(sp.Function):
    """`(f, t, lo, hi)`: an extremum's position over `t = lo..hi`; `t` is bound."""

    nargs = 4
    _word = ""

    @property
    def free_symbols(self) -> set[sp.Basic]:
        f, t, lo, hi = self.args
        out: set[sp.Basic] = (f.free_symbols - {t}) | lo.free_symbols | hi.free_symbols
        return out

    def _latex(self, printer: Any) -> str:
        f, t, lo, hi = self.args
        var = printer._print(t)
        where = (
            rf"{var} \in \{{{printer._print(lo)}, {printer._print(hi)}\}}"
            if hi - lo == 1
            else rf"{printer._print(lo)} \le {var} \le {printer._print(hi)}"
        )
        body = printer._print(f)
        if isinstance(f, sp.Add):
            body = rf"\left({body}\right)"
        return rf"\operatorname{{{self._word}}}_{{{where}}} {body}"


class ArgMax(_Arg):
    _word = "argmax"


class ArgMin(_Arg):
    _word = "argmin"


class Exceeds(sp.Function):
    """`[a > b]`: 1 where `a > b`, else 0."""

    nargs = 2

    def _latex(self, printer: Any) -> str:
        a, b = self.args
        return rf"\left[{printer._print(a)} > {printer._print(b)}\right]"


def _maximised(f: sp.Expr, t: sp.Symbol) -> sp.Expr:
    """`f` up to what does not change where it is largest: terms free of `t` dropped, a
    positive factor free of `t` divided out (repeated until nothing changes)."""
    while True:
        f = sp.expand(f)
        _, dependent = f.as_independent(t, as_Add=True)
        factor, rest = sp.expand(dependent).as_independent(t, as_Add=False)
        new = rest if factor.is_positive else dependent
        if new == f:
            return f
        f = new


def _normal_exceeds(a: sp.Expr, b: sp.Expr) -> sp.Expr:
    """`[a > b]` as `[g > 0]`, with `g` the numerator of `a - b` over a positive denominator,
    expanded and without a positive constant factor."""
    num, den = sp.fraction(sp.together(a - b))
    if den.is_positive:
        content, primitive = sp.expand(num).as_content_primitive()
        g = primitive if content.is_positive else sp.expand(num)
    else:
        g = sp.expand(a - b)
    return Exceeds(g, sp.Integer(0))


def decide(expr: sp.Basic) -> sp.Basic:
    """The rewrite that proves a decision rule: `argmin f = argmax (-f)`; a delta sum over
    the outcomes evaluated; `argmax` unchanged by terms free of the outcome and by positive
    factors; over {0, 1} an `argmax` of an affine `f0 + t f1` is `[f1 > 0]`; every `[a > b]`
    in one normal form (`_normal_exceeds`)."""

    def to_max(e: ArgMin) -> ArgMax:
        f, t, lo, hi = e.args
        return ArgMax(-f, t, lo, hi)

    def normal(e: ArgMax) -> sp.Expr:
        f, t, lo, hi = e.args
        f = refine_indices(t)(split_sums(f)) if f.has(sp.Sum) else f
        f = _maximised(f, t)
        if (lo, hi) == (0, 1) and sp.expand(f - t * f.coeff(t)) == 0 and not f.coeff(t).has(t):
            return _normal_exceeds(f.coeff(t), sp.Integer(0))
        return ArgMax(f, t, lo, hi)

    out = expr.replace(lambda e: isinstance(e, ArgMin), to_max)
    out = out.replace(lambda e: isinstance(e, ArgMax), normal)
    out = out.replace(lambda e: isinstance(e, Exceeds), lambda e: _normal_exceeds(*e.args))
    return out
