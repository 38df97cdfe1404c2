"""Stable kernels as SymPy functions: what the unstable shapes of a derivation are rewritten to.

After differentiation a loss contains `exp(f_j) / sum_s exp(f_s)` and `log(sum_s exp(f_s))`,
which overflow in floating point at logits of ~710 (float64) or ~89 (float32). `stabilize`
rewrites them to `Softmax`, `LogSoftmax` and `LogSumExp`, whose printers emit max-shifted kernels,
and whose `doit()` returns the raw form, so that the rewrite itself is a checkable identity
(`stabilize(e).doit() - e == 0`). Each function also knows how it looks in LaTeX.

`f` is a *row expression*: written in the canonical class dummy `_s` (e.g. `o[_s]` or `o[_s]/T`),
so that `f` stands for the whole vector of classes.
"""

from __future__ import annotations

import itertools
from typing import Any

import sympy as sp

from derive import symbols as S

CLASS_DUMMY = sp.Symbol("_s", integer=True, positive=True)


def _row_latex(printer: Any, f: sp.Expr) -> str:
    """`o[_s] / T` prints as `\\mathbf{o} / T`: the row expression as a vector."""
    vec = f.replace(
        lambda e: isinstance(e, sp.Indexed) and e.indices == (CLASS_DUMMY,),
        lambda e: sp.Symbol(r"\mathbf{" + e.base.label.name + "}"),
    )
    out: str = printer._print(vec)
    return out


class LogSumExp(sp.Function):
    """`log sum_s exp(f_s)` over the classes, printed as a max-shifted kernel."""

    nargs = 1

    def doit(self, **hints: Any) -> sp.Expr:
        (f,) = self.args
        out: sp.Expr = sp.log(sp.Sum(sp.exp(f), (CLASS_DUMMY, 1, S.K)))
        return out

    def _latex(self, printer: Any) -> str:
        return r"\operatorname{LSE}\left(" + _row_latex(printer, self.args[0]) + r"\right)"


class Softmax(sp.Function):
    """`exp(f_idx) / sum_s exp(f_s)`: component `idx` of the softmax of the row `f`."""

    nargs = 2

    @property
    def is_positive(self) -> bool:
        return True

    def doit(self, **hints: Any) -> sp.Expr:
        f, idx = self.args
        out: sp.Expr = sp.exp(f.xreplace({CLASS_DUMMY: idx})) / sp.Sum(
            sp.exp(f), (CLASS_DUMMY, 1, S.K)
        )
        return out

    def _latex(self, printer: Any) -> str:
        f, idx = self.args
        index: str = printer._print(idx)
        return r"\operatorname{softmax}\left(" + _row_latex(printer, f) + r"\right)_{" + index + "}"


class LogSoftmax(sp.Function):
    """`f_idx - log sum_s exp(f_s)`: the log of `Softmax`, without taking a log of a rounded 0."""

    nargs = 2

    def doit(self, **hints: Any) -> sp.Expr:
        f, idx = self.args
        out: sp.Expr = f.xreplace({CLASS_DUMMY: idx}) - LogSumExp(f).doit()
        return out

    def _latex(self, printer: Any) -> str:
        f, idx = self.args
        index: str = printer._print(idx)
        return (
            r"\log \operatorname{softmax}\left("
            + _row_latex(printer, f)
            + r"\right)_{"
            + index
            + "}"
        )


def _is_class_sum(e: sp.Basic) -> bool:
    return (
        isinstance(e, sp.Sum)
        and len(e.limits) == 1
        and e.limits[0][0] == CLASS_DUMMY
        and e.limits[0][1:] == (1, S.K)
    )


def _exp_sum_row(e: sp.Basic) -> sp.Expr | None:
    """For `sum_s exp(f_s)` return `f`, else None."""
    if _is_class_sum(e) and isinstance(e.function, sp.exp):
        arg: sp.Expr = e.function.args[0]
        return arg
    return None


def stabilize(expr: sp.Expr) -> sp.Expr:
    """Rewrite the overflow-prone shapes into stable kernels; the value is unchanged.

    1. `log(sum exp(f))` becomes `LogSumExp(f)`;
    2. any other `sum exp(f)` becomes `exp(LogSumExp(f))`, factors outside a class sum move in,
       and exponentials are merged, so every `exp` has `- LogSumExp(f)` in its argument;
    3. `exp(f_idx - LogSumExp(f))` becomes `Softmax(f, idx)` and a remaining
       `f_idx - LogSumExp(f)` inside a log becomes `LogSoftmax(f, idx)`.
    Callers confirm the result with `stabilize(e).doit() - e == 0` (a derivation step does).
    """
    from derive.steps import canonical_sums

    e = canonical_sums(expr)
    e = e.replace(
        lambda t: isinstance(t, sp.log) and _exp_sum_row(t.args[0]) is not None,
        lambda t: LogSumExp(_exp_sum_row(t.args[0])),
    )
    e = e.replace(
        lambda t: _exp_sum_row(t) is not None, lambda t: sp.exp(LogSumExp(_exp_sum_row(t)))
    )
    e = e.replace(lambda t: _is_class_sum(t) and t.has(sp.exp), _normalise_sum)
    e = sp.expand_log(sp.expand(e), force=True)
    e = sp.powsimp(sp.expand(e), combine="exp")
    e = e.replace(lambda t: isinstance(t, sp.exp), _as_softmax)
    out: sp.Expr = sp.factor_terms(e)
    return out


def _normalise_sum(s: sp.Sum) -> sp.Expr:
    """`sum_s exp(h_s) g_s = exp(LSE(h)) sum_s softmax(h)_s g_s`: an identity that puts each
    exponential inside a class sum next to the normaliser that keeps it <= 1."""
    body = sp.powsimp(s.function, combine="exp")
    exps = [f for f in sp.Mul.make_args(body) if isinstance(f, sp.exp) and f.has(CLASS_DUMMY)]
    if len(exps) != 1:
        return s
    (ex,) = exps
    h = ex.args[0]
    lse = LogSumExp(h)
    inner = sp.Mul(*[f for f in sp.Mul.make_args(body) if f is not ex]) * Softmax(h, CLASS_DUMMY)
    return sp.exp(lse) * sp.Sum(inner, *s.limits)


def _as_softmax(t: sp.exp) -> sp.Expr:
    """`exp(f_j + f_k - 2 LSE(f))` becomes `Softmax(f, j) Softmax(f, k)` (any count of indices)."""
    arg = sp.expand(t.args[0])
    for lse in arg.atoms(LogSumExp):
        count = -arg.coeff(lse)
        if not (count.is_Integer and count > 0):
            continue
        rest = sp.expand(arg + count * lse)
        if rest.has(LogSumExp):
            continue
        (f,) = lse.args
        candidates = sorted(rest.free_symbols & {S.j, S.k, S.c, CLASS_DUMMY}, key=str)
        for combo in itertools.combinations_with_replacement(candidates, int(count)):
            if sp.expand(rest - sum(f.xreplace({CLASS_DUMMY: idx}) for idx in combo)) == 0:
                return sp.Mul(*[Softmax(f, idx) for idx in combo])
    return t
