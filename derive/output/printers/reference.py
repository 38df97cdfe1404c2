"""The high-precision reference functions `derive verify` evaluates, printed for mpmath.

An emitted module carries the loss, its derivatives and the prediction *as defined* (before any
rewrite into stable kernels), printed here by SymPy's mpmath printer; `derive.verify` evaluates
them to 50 digits or more and compares the module's float64 and float32 results with them. Arrays
are indexed from 1, as in the derivation. `print_reference` prints a factory that computes what
does not depend on the entry (the row's sums) once, so a K x K reference costs O(1) per entry;
`PowerLog` keeps `x**e * log(x)` at its limit 0 where `x` is 0, not `0 * -inf`.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.pycode import MpmathPrinter

from derive import notation as S
from derive.symbolic.functions import CLASS_DUMMY, LogRatio


class ReferencePrinter(MpmathPrinter):
    """SymPy's mpmath printer for the high-precision reference `derive verify` evaluates.

    Arrays are indexed from 1, as in the derivation (`o[j]`, sums over `range(1, K + 1)`).
    """

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        return S.checked_name(expr.name.lstrip("_"), "symbol")

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta) -> str:
        a, b = (self._print(t) for t in expr.args)
        return f"(1 if {a} == {b} else 0)"

    def _print_Sum(self, expr: sp.Sum) -> str:
        # A call needs no brackets of its own (SymPy adds them; ruff's UP034 removes them).
        out: str = super()._print_Sum(expr)
        return out[1:-1] if out.startswith("(builtins.sum(") else out

    def _print_LogRatio(self, expr: LogRatio) -> str:
        """`-p l / q`, and its limit 1 where `q = 1 - p` is exactly 0 (one class: K = 1)."""
        p, lg, q = (self.parenthesize(a, PRECEDENCE["Mul"]) for a in expr.args)
        return f"(1 if {q} == 0 else -{p}*{lg}/{q})"

    def _print_PowerLog(self, expr: sp.Function) -> str:
        x, e = (self.parenthesize(a, PRECEDENCE["Pow"]) for a in expr.args)
        log = self._print(sp.log(expr.args[0]))
        return f"(0 if {x} == 0 and {e} > 0 else {x}**{e}*{log})"


class PowerLog(sp.Function):
    """`x**e * log(x)` for the reference printer (printing only): its limit 0 where x is 0 and
    e > 0, not `0 * -inf` (`(1 - p)^g log(1 - p)`, a power's derivative in its exponent, at
    K = 1 where `1 - p` is exactly 0)."""

    nargs = 2


def _power_logs(expr: sp.Expr) -> sp.Expr:
    """Each product `x**e * log(x)` in `expr` as `PowerLog(x, e)` (one factor, kept whole)."""

    def pair(t: sp.Mul) -> sp.Expr:
        factors = sp.Mul.make_args(t)
        for f in factors:
            if isinstance(f, sp.Pow) and sp.log(f.base) in factors:
                rest = [g for g in factors if g not in (f, sp.log(f.base))]
                return sp.Mul(*rest) * PowerLog(f.base, f.exp)
        return t

    out: sp.Expr = expr.replace(lambda t: isinstance(t, sp.Mul), pair)
    return out


#: The free class indices of a reference function's entries (the arrays' dummies are bound).
_ENTRY_INDICES = (S.j, S.k, S.m)


def print_reference(name: str, expr: sp.Expr, params: list[str]) -> list[str]:
    """A factory `name(o, y, v, K, **params)` returning `at(j, k, m)`, the entry of `expr`.

    What does not depend on the entry (the row's sums) is computed once, in the factory: the
    entries of a K x K reference then cost O(1) each, not O(K).
    """
    printer = ReferencePrinter({"fully_qualified_modules": True})
    bound = {CLASS_DUMMY, *_ENTRY_INDICES}
    expr = _power_logs(expr.replace(lambda e: isinstance(e, sp.Sum), _distribute_sum))
    # Sums over the classes that do not depend on the entry are the row's: computed once.
    # Innermost first, each printed in terms of the ones before it: a row sum nested in another
    # (`sum_s (1 - exp(o_s) / sum_t exp(o_t))^g`) is then O(K), not O(K^2).
    row_sums = sorted(
        (t for t in expr.atoms(sp.Sum) if not t.free_symbols & bound),
        key=lambda t: (len(t.atoms(sp.Sum)), sp.default_sort_key(t)),
    )
    hoisted: dict[sp.Basic, sp.Symbol] = {}
    outer: list[tuple[sp.Symbol, sp.Expr]] = []
    for t in row_sums:
        sym = sp.Symbol(f"r{len(hoisted)}")
        outer.append((sym, t.xreplace(hoisted)))
        hoisted[t] = sym
    expr = expr.xreplace(hoisted)
    temps, (reduced,) = sp.cse([expr], symbols=sp.numbered_symbols("x"), optimizations=None)
    # Temporaries of the row go to the factory, those of the entry to `at`; one that holds the
    # summation dummy is put back where it came from (inside its sum).
    in_sum: dict[sp.Symbol, sp.Expr] = {}
    entry: list[tuple[sp.Symbol, sp.Expr]] = []
    for sym, val in temps:
        val = val.xreplace(in_sum)
        if CLASS_DUMMY in val.free_symbols:
            in_sum[sym] = val
        elif val.free_symbols & (bound | {s for s, _ in entry}):
            entry.append((sym, val))
        else:
            outer.append((sym, val))
    body = reduced.xreplace(in_sum)
    args = ", ".join(["o: Any", "y: Any", "v: Any", "K: int", *(f"{p}: Any" for p in params)])
    lines = [f"def {name}({args}) -> Any:"]
    lines += [f"    {printer.doprint(sym)} = {printer.doprint(val)}" for sym, val in outer]
    lines += ["    def at(j: int, k: int, m: int) -> Any:"]
    lines += [f"        {printer.doprint(sym)} = {printer.doprint(val)}" for sym, val in entry]
    lines += [f"        return {printer.doprint(body)}", "    return at"]
    return lines


def _distribute_sum(term: sp.Sum) -> sp.Expr:
    """`sum_s (a f_s + g_s)` as `a sum_s f_s + sum_s g_s`: what does not depend on the dummy leaves
    the sum (exact for a finite sum), so a sum times an entry's factor becomes a row sum, hoisted.
    """
    if len(term.limits) != 1:
        return term
    (dummy, *_), summand = term.limits[0], term.function
    terms = sp.Add.make_args(summand)
    out: list[sp.Expr] = []
    for t in terms:
        factors = sp.Mul.make_args(t)
        inside = [f for f in factors if dummy in f.free_symbols]
        outside = [f for f in factors if dummy not in f.free_symbols]
        out.append(sp.Mul(*outside) * sp.Sum(sp.Mul(*inside), term.limits[0]))
    return sp.Add(*out)
