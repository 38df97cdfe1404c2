"""The notes' LaTeX: SymPy's LaTeX printer with the notation and habits of a textbook.

`NotesLatexPrinter` prints every formula the notes display (`derive.output.notes` puts the
strings into the templates; `derive.output.codegen` into the emitted docstrings): `o_j` rather
than `{o}_{j}`, `\\delta_{jc}` with the true class last, positive terms first, and index hygiene (a
bound index never prints with the name of an index free in the same equation). `latex_sides`
prints the sides of one equation with one set of names in use, `latex_terms` the signed terms
where a long equation may break, `to_latex` one expression.
"""

from __future__ import annotations

from typing import Any

import sympy as sp
from sympy.printing.latex import LatexPrinter

from derive import notation as S
from derive.symbolic.functions import CLASS_DUMMY, ROW, LogSoftmax, Softmax


class NotesLatexPrinter(LatexPrinter):
    """SymPy's LaTeX with the notes' notation and a textbook's habits.

    - `o_j`, not `{o}_{j}`; `\\delta_{jc}` with the true class last; the class dummy shown as k.
    - Index hygiene: a bound variable (of a sum or product) never prints with the name of a symbol
      that is free in the same equation, or bound by an enclosing sum; it is renamed to the first
      free name of `m`, `l`, `k'`, ... (`taken` holds the names free in the whole equation, since
      one side's bound index must not read as the other side's free one).
    - Term order: in a sum the positive terms come first (prediction minus label, `a - b` rather
      than `-b + a`); in a product, plain factors (`y_k`, `x_a`) before functions, and
      parenthesised sums last (`y_k \\log \\hat{y}_k`, `x_a (\\hat{y}_j - y_j)`).
    """

    dummy_name = "k"

    def __init__(
        self,
        settings: dict[str, Any] | None = None,
        taken: set[str] | None = None,
        softmax_as: sp.IndexedBase | None = None,
    ):
        super().__init__({"mul_symbol": None, **(settings or {})})
        self._taken: set[str] = set(taken or ())
        self._renamed: dict[sp.Symbol, str] = {}
        #: Once a derivation has defined `yhat_j = softmax(o)_j`, the stable softmax of the logits
        #: prints as that name (`\\hat{y}_j`, `\\log \\hat{y}_j`): the results read in the
        #: prediction, as a textbook writes them.
        self.softmax_as = softmax_as

    def _print(self, expr: Any, **kwargs: Any) -> str:
        # The stable functions print themselves (`_latex`); the softmax of the logits is
        # intercepted here when the derivation has named it.
        if (
            self.softmax_as is not None
            and isinstance(expr, Softmax | LogSoftmax)
            and expr.args[0] == S.o[ROW]
        ):
            exp = kwargs.get("exp")
            tex = self._print(self.softmax_as[expr.args[1]])
            if isinstance(expr, LogSoftmax):
                tex = r"\log " + tex
                return tex if exp is None else rf"\left({tex}\right)^{{{exp}}}"
            return tex if exp is None else f"{tex}^{{{exp}}}"
        out: str = super()._print(expr, **kwargs)
        return out

    def _print_Derivative(self, expr: sp.Derivative) -> str:
        """`\\frac{\\partial \\ell}{\\partial o_j}` for a named function (a display symbol)."""
        if not isinstance(expr.expr, sp.Symbol):
            out: str = super()._print_Derivative(expr)
            return out
        order = sum(count for _, count in expr.variable_count)
        top = r"\partial" if order == 1 else rf"\partial^{{{order}}}"
        below = " ".join(
            r"\partial " + self._print(v) + ("" if c == 1 else f"^{{{c}}}")
            for v, c in expr.variable_count
        )
        return rf"\frac{{{top} {self._print(expr.expr)}}}{{{below}}}"

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        base = self._print(expr.base.label)
        parts = [self._print(i) for i in expr.indices]
        # `W_{aj}` for single-letter indices (as textbooks write it), `W_{a,j+1}` otherwise.
        sep = "" if len(parts) > 1 and all(len(p) == 1 for p in parts) else ","
        return f"{base}_{{{sep.join(parts)}}}"

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        if expr in self._renamed:
            return self._renamed[expr]
        if expr == CLASS_DUMMY:
            return self.dummy_name
        if expr.name in S.LATEX_NAMES:
            return S.LATEX_NAMES[expr.name]
        out: str = super()._print_Symbol(expr, style=style)
        return out

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta, exp: str | None = None) -> str:
        # The true class c last (`\\delta_{jc}`), otherwise the indices in alphabetical order.
        first, second = sorted(expr.args, key=lambda t: (t == S.c, self._print(t)))
        i, j = self._print(first), self._print(second)
        sep = "" if len(i) == 1 and len(j) == 1 else ", "
        tex = rf"\delta_{{{i}{sep}{j}}}"
        return tex if exp is None else rf"\left({tex}\right)^{{{exp}}}"

    # -- index hygiene

    def _bound(self, expr: sp.Sum | sp.Product, print_it: Any) -> str:
        """Print a sum or product with its (outermost) index renamed where it would clash."""
        saved_taken, saved_renamed = set(self._taken), dict(self._renamed)
        try:
            var = expr.limits[-1][0]
            name = self._print(var)
            if name in self._taken:
                name = next(c for c in _fresh_names(name) if c not in self._taken)
                self._renamed[var] = name
            self._taken.add(name)
            out: str = print_it(expr)
            return out
        finally:
            self._taken, self._renamed = saved_taken, saved_renamed

    def _big_operator(self, command: str, expr: sp.Sum | sp.Product) -> str:
        """`\\sum_{i=1}^{n} \\sum_{j=1}^{K} f`: several limits print as nested operators (the
        last limit outermost), a sum or negative body in brackets."""
        var, lo, hi = expr.limits[-1]
        rest = expr.limits[:-1]
        body = type(expr)(expr.function, *rest) if rest else expr.function
        tex = self._print(body)
        if isinstance(body, sp.Add) or (not rest and body.could_extract_minus_sign()):
            tex = rf"\left({tex}\right)"
        head = rf"\{command}_{{{self._print(var)}={self._print(lo)}}}^{{{self._print(hi)}}}"
        return f"{head} {tex}"

    def _print_Sum(self, expr: sp.Sum) -> str:
        return self._bound(expr, lambda e: self._big_operator("sum", e))

    def _print_Product(self, expr: sp.Product) -> str:
        return self._bound(expr, lambda e: self._big_operator("prod", e))

    def _print_expm1(self, expr: sp.Function, exp: str | None = None) -> str:
        # SymPy prints `\operatorname{expm}_{1}`; the notes use the library's name.
        tex = r"\operatorname{expm1}\left(" + str(self._print(expr.args[0])) + r"\right)"
        return tex if exp is None else rf"\left({tex}\right)^{{{exp}}}"

    def _print_log(self, expr: sp.log, exp: str | None = None) -> str:
        """`\\log \\hat{y}_j` for a plain argument, `\\log{\\left(...\\right)}` otherwise."""
        (arg,) = expr.args
        if not isinstance(arg, sp.Symbol | sp.Indexed):
            out: str = super()._print_log(expr, exp)
            return out
        tex = r"\log " + self._print(arg)
        return tex if exp is None else rf"\left({tex}\right)^{{{exp}}}"

    # -- term order

    def _as_ordered_terms(self, expr: sp.Basic, order: Any = None) -> list[sp.Basic]:
        terms = list(super()._as_ordered_terms(expr, order=order))
        return sorted(terms, key=lambda t: bool(t.could_extract_minus_sign()))

    def _print_Mul(self, expr: sp.Mul) -> str:
        if expr.could_extract_minus_sign():
            inner = -expr
            body = self._print(inner)
            return "- " + (rf"\left({body}\right)" if inner.is_Add else body)
        factors = sorted(expr.as_ordered_factors(), key=_factor_rank)
        saved = self._settings["order"]
        self._settings["order"] = "none"
        try:
            out: str = super()._print_Mul(sp.Mul(*factors, evaluate=False))
        finally:
            self._settings["order"] = saved
        return out


def _fresh_names(name: str) -> list[str]:
    """Names for a renamed bound index, in the order a textbook would reach for them."""
    base = ["m", "l", "r", "s", "t"]
    return [b for b in base if b != name] + [name + "'" * p for p in range(1, 4)]


def _factor_rank(f: sp.Basic) -> float:
    """Numbers, the targets (`y_k o_k`, `Y_{ij} \\log \\hat{Y}_{ij}`), other plain factors,
    functions and sums, and parenthesised sums last."""
    if f.is_Number:
        return 0
    base = f.base if isinstance(f, sp.Pow) else f
    if isinstance(base, sp.Indexed) and base.base.label.name in ("y", "Y"):
        return 1
    if isinstance(base, sp.Symbol | sp.Indexed | sp.KroneckerDelta):
        return 1.5
    if isinstance(base, sp.Add):
        return 3
    return 2


def _names(printer: NotesLatexPrinter, expr: sp.Basic) -> set[str]:
    """The printed names of the symbols free in `expr` (derivative variables included: SymPy's
    `free_symbols` of a `Derivative` leaves them out)."""
    if isinstance(expr, sp.Symbol):
        return {printer._print(expr)}
    if isinstance(expr, sp.Sum | sp.Product):
        inner = _names(printer, expr.function)
        bound = {printer._print(var) for var, *_ in expr.limits}
        limits = set().union(*(_names(printer, t) for _, *ends in expr.limits for t in ends))
        return (inner - bound) | limits
    if isinstance(expr, sp.Indexed):
        return set().union(*(_names(printer, i) for i in expr.indices))
    if isinstance(expr, sp.Derivative):
        wrt = set().union(*(_names(printer, v) for v, _ in expr.variable_count))
        return _names(printer, expr.expr) | wrt
    if not isinstance(expr, sp.Basic):
        return set()
    return set().union(set(), *(_names(printer, a) for a in expr.args))


def names_in_use(*sides: sp.Basic) -> set[str]:
    """The printed names free in the sides of one equation."""
    plain = NotesLatexPrinter()
    return set().union(*(_names(plain, e) for e in sides))


def latex_sides(*sides: sp.Basic, softmax_as: sp.IndexedBase | None = None) -> list[str]:
    """LaTeX of the sides of one equation, sharing one set of names in use.

    A bound index on one side never takes the name of an index free on either side.
    """
    taken = names_in_use(*sides)
    printer = NotesLatexPrinter(taken=taken, softmax_as=softmax_as)
    return [str(printer.doprint(e)) for e in sides]


def latex_terms(expr: sp.Basic, taken: set[str], softmax_as: sp.IndexedBase | None) -> list[str]:
    """The top-level terms of a sum, each with its sign (`"- a"`, `"+ b"`; the first unsigned):
    where a long equation may break."""
    printer = NotesLatexPrinter(taken=taken, softmax_as=softmax_as)
    if not isinstance(expr, sp.Add):
        return [str(printer.doprint(expr))]
    out = []
    for number, term in enumerate(printer._as_ordered_terms(expr)):
        negative = bool(term.could_extract_minus_sign())
        body = -term if negative and number > 0 else term
        tex = str(printer.doprint(body))
        if printer._needs_add_brackets(body):
            tex = rf"\left({tex}\right)"
        sign = "- " if negative and number > 0 else ("+ " if number > 0 else "")
        out.append(sign + tex)
    return out


def to_latex(expr: sp.Basic) -> str:
    """LaTeX of one expression (bound indices renamed where they would clash)."""
    return latex_sides(expr)[0]
