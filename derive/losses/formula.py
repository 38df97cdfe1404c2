"""A restricted parser for loss formulas given as strings (CLI flags, data files).

SymPy's `sympify`/`parse_expr` evaluate Python, so a formula string could run code. This parser
reads the string with `ast.parse` (which evaluates nothing), walks the tree, and builds the SymPy
expression itself from an allow-list: numbers, `+ - * / **`, the declared symbols, `o[k]` and
`y[k]` with a declared index, and the functions `exp`, `log`, `sqrt`, `sigmoid`, `softmax(k)`
and `sum(expr, k)` (a sum over the classes). Anything else is refused with a message that says
what was found and where.

Grammar (Python syntax):
    loss  := expr
    expr  := number | name | o[index] | y[index] | expr op expr | -expr | call
    call  := exp(expr) | log(expr) | sqrt(expr) | sigmoid(expr) | softmax(index) | sum(expr, index)
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping

import sympy as sp

from derive import notation as S
from derive.errors import FormulaParseError
from derive.losses.model import softmax_expr
from derive.symbolic.functions import sigmoid_expr

MAX_LENGTH = 2000
MAX_EXPONENT = 64
MAX_NUMBER = 1e12

INDICES: dict[str, sp.Symbol] = {"j": S.j, "k": S.k, "m": S.m}
ARRAYS: dict[str, sp.IndexedBase] = {"o": S.o, "y": S.y}

UNARY: dict[str, Callable[[sp.Expr], sp.Expr]] = {
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "sigmoid": sigmoid_expr,
}


FUNCTIONS = (
    "allowed functions: exp(x), log(x), sqrt(x), sigmoid(x), softmax(index), sum(expr, index)"
)
ALLOWED = (
    "allowed: numbers, K, declared parameters, o[index], y[index], + - * / **, "
    + FUNCTIONS.removeprefix("allowed functions: ")
)


def parse_formula(text: str, params: Mapping[str, sp.Symbol] | None = None) -> sp.Expr:
    """The SymPy expression for `text`, built without evaluating any Python."""
    if not isinstance(text, str):
        raise FormulaParseError(f"formula: expected a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FormulaParseError(
            f"formula: {len(text)} characters", f"at most {MAX_LENGTH} allowed", "shorten it"
        )
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        column = f" at column {exc.offset}" if exc.offset else ""
        raise FormulaParseError(
            f"formula: not valid syntax{column}",
            str(exc.msg),
            "write it in Python syntax, e.g. sum((o[k] - y[k])**2, k)",
        ) from None
    known = {"K": S.K, **(params or {})}
    for name in known:
        S.checked_name(name, "formula parameter")
    return _Builder(known).build(tree.body)


class _Builder:
    def __init__(self, names: Mapping[str, sp.Symbol]) -> None:
        self.names = names

    def refuse(
        self, node: ast.AST, what: str, allowed: str = ALLOWED, fix: str = ""
    ) -> FormulaParseError:
        where = f" at column {node.col_offset + 1}" if hasattr(node, "col_offset") else ""
        return FormulaParseError(f"formula: {what}{where} is not allowed", allowed, fix)

    def names_allowed(self) -> str:
        params = sorted(set(self.names) - {"K"})
        declared = ", ".join(params) if params else "none declared"
        return f"allowed names: K, the indices j k m inside o[...] y[...], parameters: {declared}"

    def build(self, node: ast.expr) -> sp.Expr:
        if isinstance(node, ast.Constant):
            return self.number(node)
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            raise self.refuse(
                node,
                f"the name {node.id!r}",
                self.names_allowed(),
                f"declare it: --param {node.id}=DEFAULT[:LOW:HIGH] (in a TOML model "
                f"[params.{node.id}])",
            )
        if isinstance(node, ast.Subscript):
            return self.indexed(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.build(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.refuse(node, f"a {type(node).__name__} expression")

    def number(self, node: ast.Constant) -> sp.Expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.refuse(node, f"the constant {value!r}", "allowed constants: numbers")
        if abs(value) > MAX_NUMBER:
            raise self.refuse(node, f"the number {value!r}", f"allowed: |x| <= {MAX_NUMBER:g}")
        return sp.Integer(value) if isinstance(value, int) else sp.Float(value)

    def index(self, node: ast.expr) -> sp.Symbol:
        if isinstance(node, ast.Name) and node.id in INDICES:
            return INDICES[node.id]
        raise self.refuse(node, "an index other than j, k or m", "allowed indices: j, k, m")

    def indexed(self, node: ast.Subscript) -> sp.Expr:
        if not (isinstance(node.value, ast.Name) and node.value.id in ARRAYS):
            raise self.refuse(
                node, "indexing anything but o[...] or y[...]", "allowed: o[index], y[index]"
            )
        return ARRAYS[node.value.id][self.index(node.slice)]

    def binop(self, node: ast.BinOp) -> sp.Expr:
        left, right = self.build(node.left), self.build(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            return left / right
        if isinstance(node.op, ast.Pow):
            if left.is_number and right.is_number and left != 0:
                # NOTE: estimate the size before SymPy computes a huge power exactly.
                digits = float(right) * math.log10(abs(float(left)))
                if digits > math.log10(MAX_NUMBER):
                    raise self.refuse(
                        node, f"a power of about 10^{digits:.0f}", f"allowed: up to {MAX_NUMBER:g}"
                    )
            if right.is_number and abs(float(right)) > MAX_EXPONENT:
                raise self.refuse(
                    node, f"the exponent {right}", f"allowed exponents: |e| <= {MAX_EXPONENT}"
                )
            if right.free_symbols - set(self.names.values()):
                raise self.refuse(
                    node,
                    "an exponent that is not a number or a parameter",
                    "allowed exponents: numbers and declared parameters",
                )
            return left**right
        raise self.refuse(
            node,
            f"the operator {type(node.op).__name__}",
            "allowed operators: + - * / ** and unary -",
        )

    def call(self, node: ast.Call) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node, "calling anything but a known function", FUNCTIONS)
        if node.keywords:
            raise self.refuse(node, "keyword arguments", FUNCTIONS)
        name, args = node.func.id, node.args
        if name in UNARY and len(args) == 1:
            return UNARY[name](self.build(args[0]))
        if name == "softmax" and len(args) == 1:
            return softmax_expr(self.index(args[0]))
        if name == "sum" and len(args) == 2:
            idx = self.index(args[1])
            return sp.Sum(self.build(args[0]), (idx, 1, S.K))
        raise self.refuse(node, f"the function {name!r} with {len(args)} argument(s)", FUNCTIONS)
