"""Index hygiene: no bound index prints with the name of a free or an enclosing bound one.

Checked over every equation of every catalogue loss and of the examples (their derivations are
built, not checked: printing does not need the proofs). The test records, for each sum or product
the printer prints, the name it gave the bound index (read back from the printed LaTeX) and the
names bound around it; it computes the free names of the equation on its own, from SymPy's
`free_symbols` plus the variables of derivatives (which `free_symbols` leaves out).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import sympy as sp

from derive import notation as S
from derive.losses import catalogue
from derive.losses.derivation import loss_derivation
from derive.losses.user_model import load_user_model
from derive.output.printers import latex
from derive.output.printers.latex import NotesLatexPrinter, latex_sides
from derive.symbolic.functions import CLASS_DUMMY
from derive.symbolic.steps import Derivation

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
_HEAD = re.compile(r"\\(?:sum|prod)_\{([^=]+)=")


class Recording(NotesLatexPrinter):
    """Records (bound name, names bound around it) for every sum/product it prints."""

    def __init__(self, log: list[tuple[str, tuple[str, ...]]], **kw: Any) -> None:
        super().__init__(**kw)
        self.log = log
        self.stack: list[str] = []

    def _bound(self, expr: Any, print_it: Any) -> str:
        def inner(e: Any) -> str:
            # the head (with the name given to the bound index) is printed before the body
            head = _HEAD.match(print_it(e))
            assert head is not None
            around = tuple(self.stack)
            self.stack.append(head.group(1))
            try:
                out: str = print_it(e)
            finally:
                self.stack.pop()
            self.log.append((head.group(1), around))
            return out

        return super()._bound(expr, inner)


def _free_names(expr: sp.Basic) -> set[str]:
    plain = NotesLatexPrinter()
    syms = set(expr.free_symbols)
    for der in expr.atoms(sp.Derivative):
        for var in der.variables:
            syms |= var.free_symbols
    return {plain._print(s) for s in syms if isinstance(s, sp.Symbol)}


#: Every derivation whose steps the notes print: the catalogue (the story's loss in the default
#: run, the rest slow, see conftest.py) and the focal examples (slow: seconds each to derive).
DERIVATIONS = [
    *catalogue.names(),
    *(pytest.param(p.name, marks=pytest.mark.slow) for p in sorted(EXAMPLES.glob("focal_loss.*"))),
]


def _derivation(name: str) -> Derivation:
    if name in catalogue.CATALOGUE:
        return catalogue.CATALOGUE[name]()
    return loss_derivation(load_user_model(EXAMPLES / name))


def _clashes(sides: tuple[sp.Basic, ...], share_names: bool = True) -> list[str]:
    log: list[tuple[str, tuple[str, ...]]] = []
    plain = NotesLatexPrinter()
    taken = set().union(*(latex._names(plain, e) for e in sides)) if share_names else set()
    for side in sides:
        Recording(log, taken=taken).doprint(side)
    free = set().union(*(_free_names(e) for e in sides))
    return [
        f"{name} (free: {sorted(free)}, enclosing: {list(around)})"
        for name, around in log
        if name in free or name in around
    ]


@pytest.mark.parametrize("name", DERIVATIONS)
def test_no_bound_index_shares_a_name_with_a_free_or_enclosing_one(name: str) -> None:
    clashes = [
        f"{step.name}: {clash}"
        for step in _derivation(name).steps
        for clash in _clashes((step.lhs, step.rhs))
    ]
    assert clashes == []


def test_the_test_sees_a_clash_when_free_names_are_ignored() -> None:
    """The issue's example, d/do_k (e^{o_j} / sum_k e^{o_k}): caught when the printer is not told
    the equation's free names."""
    k = S.k
    expr = sp.Derivative(sp.exp(S.o[S.j]) / sp.Sum(sp.exp(S.o[k]), (k, 1, S.K)), S.o[k])
    assert _clashes((expr,)) == []
    assert _clashes((expr,), share_names=False) != []


def test_nested_sums_over_the_class_dummy_get_distinct_names() -> None:
    dummy = CLASS_DUMMY
    inner = sp.Sum(sp.exp(S.o[dummy]), (dummy, 1, S.K))
    outer = sp.Sum(S.y[dummy] * sp.log(sp.exp(S.o[dummy]) / inner), (dummy, 1, S.K))
    (tex,) = latex_sides(outer)
    assert tex == (
        r"\sum_{k=1}^{K} y_{k} \log{\left(\frac{e^{o_{k}}}{\sum_{m=1}^{K} e^{o_{m}}} \right)}"
    )


def test_one_meaning_per_letter_in_the_notation() -> None:
    """No two scalar symbols of the notation print alike (`c` was once both class and shift)."""
    printer = NotesLatexPrinter()
    scalars = {name: value for name, value in vars(S).items() if isinstance(value, sp.Symbol)}
    printed = [printer._print(value) for value in scalars.values()]
    assert len(printed) == len(set(printed)), sorted(printed)
