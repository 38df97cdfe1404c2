"""The only place an expression becomes a string: a LaTeX printer and a vectorised NumPy printer.

Both are SymPy printer subclasses (one dispatcher, `_print_<Class>` methods), as STYLE.md asks.

`VectorPrinter` prints a class-indexed expression as whole-array NumPy code: `o[j]` is the (n, K)
array `O`, a class sum is `np.sum(..., axis=-1, keepdims=True)`, and the stable functions print as
calls to max-shifted kernels. Per-class unrolled code (what `lambdify` of a concrete-K expression
gives) grows with K; this stays one line for any K. With `axes`, two free class indices map to two
axes (for the K x K Hessian of one sample). With `gather`, the label index `c` prints as a gather
of the true class's column (integer labels: no one-hot matrix).
"""

from __future__ import annotations

import ast
from typing import Any

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.numpy import JaxPrinter, NumPyPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.pycode import MpmathPrinter, PythonCodePrinter

from derive import notation as S
from derive.symbolic.decision import ArgMax, Exceeds
from derive.symbolic.functions import (
    CLASS_DUMMY,
    ROW,
    AtTop,
    ComplementPower,
    LogAddExp,
    LogCosh,
    LogRatio,
    LogSoftmax,
    LogSumExp,
    ProbabilityTimes,
    RowMax,
    Sigmoid,
    SigmoidComplement,
    Softmax,
    SoftmaxComplement,
    Softplus,
)

# --------------------------------------------------------------------------- LaTeX


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


# --------------------------------------------------------------------------- NumPy

#: The stable kernels a printed expression may call, by SymPy function.
KERNELS: dict[type, str] = {
    Softmax: "_softmax",
    LogSoftmax: "_log_softmax",
    LogSumExp: "_logsumexp",
    Sigmoid: "_sigmoid",
    Softplus: "_softplus",
    LogRatio: "_log_ratio",
    ComplementPower: "_complement_power",
}


class VectorPrinter(NumPyPrinter):
    """Whole-array NumPy code for class-indexed expressions (see the module docstring).

    The array library appears only in `ns` and the hooks below (`_class_sum`, `_at_label`,
    `_column_sums`, `_sum_of_squares`): the framework printers at the end of this file override
    those and nothing else.
    """

    printmethod = "_vectorcode"
    #: The name the emitted module imports its array library as.
    ns = "np"
    #: Whether the library's `square` refuses Python numbers (torch, the array API standard).
    arrays_only_square = False

    def __init__(
        self,
        arrays: dict[str, str],
        axes: dict[sp.Symbol, str] | None = None,
        gather: str | None = None,
        settings: dict[str, Any] | None = None,
        sum_dtype: str | None = None,
    ) -> None:
        super().__init__(settings or {})
        self.arrays = arrays
        self.axes = axes or {}
        self.gather = gather
        #: The dtype a vector's total accumulates in (`np.float64` for a mean loss: a float32
        #: batch's mean is then rounded once, at the end); None keeps the array's own.
        self.sum_dtype = sum_dtype
        self.kernels_used: set[str] = set()
        #: The symbols printed so far (parameters, `K`): what the emitted code must bind.
        self.symbols_printed: set[str] = set()
        #: The logits array in scope where the current block is printed (set by
        #: `print_assignments`): a one-hot of the labels takes its dtype and class count from it.
        self.logits_in_scope: str | None = None

    def _module_format(self, fqn: str, register: bool = True) -> str:
        # `numpy.exp` prints as `np.exp` (`jax.numpy.exp` as `jnp.exp`): the emitted module
        # imports its array library under the name `ns`.
        for module in ("jax.numpy.", "numpy."):
            if fqn.startswith(module):
                return f"{self.ns}.{fqn.removeprefix(module)}"
        return fqn

    # ------------------------------------------------------------------ hooks per array library

    def _class_sum(self, code: str) -> str:
        """A sum over the class axis that keeps it (an (n, 1) column)."""
        return f"{self.ns}.sum({code}, axis=-1, keepdims=True)"

    def _at_label(self, code: str) -> str:
        """Each row's entry at its label, as an (n, 1) column."""
        # Plain fancy indexing (with `_rows = np.arange(n)` in scope) is ~3x cheaper per call
        # than np.take_along_axis, which builds its index arrays each time.
        return f"{code}[_rows, {self.gather}][:, None]"

    def _column_sums(self, code: str) -> str:
        return f"{code}.sum(axis=0)"

    def _total(self, code: str) -> str:
        """The sum of a column vector's entries (`v^T 1`), a scalar."""
        dtype = "" if self.sum_dtype is None else f", dtype={self.sum_dtype}"
        return f"{self.ns}.sum({code}{dtype})"

    def _sum_of_squares(self, code: str) -> str:
        return f"{self.ns}.vdot({code}, {code})"

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        name = self.arrays[expr.base.label.name]
        (idx,) = expr.indices
        if idx == S.c:
            if self.gather is None:
                raise ValueError("the label index c needs a gather array")
            return self._at_label(name)
        return name + self.axes.get(idx, "")

    def _target_product(self, expr: sp.Expr) -> str:
        """`y * t` where t may be -inf (a masked logit): 0 * -inf must be 0, so use `where`."""
        factors = sp.Mul.make_args(expr)
        targets = [f for f in factors if isinstance(f, sp.Indexed) and f.base.label == S.y.label]
        rest = sp.Mul(*[f for f in factors if f not in targets])
        if len(targets) == 1 and rest.has(S.o.label, S.z.label):
            self.kernels_used.add("_target_mul")
            return f"_target_mul({self._print(targets[0])}, {self._print(rest)})"
        return str(self._print(expr))

    def _print_Mul(self, expr: sp.Mul) -> str:
        targets = [f for f in expr.args if isinstance(f, sp.Indexed) and f.base.label == S.y.label]
        rest = sp.Mul(*[f for f in expr.args if f not in targets])
        if len(targets) == 1 and rest.has(S.o.label, S.z.label):
            return self._target_product(expr)
        out: str = super()._print_Mul(expr)
        return out

    def doprint(self, expr: Any, assign_to: Any = None) -> Any:
        # The logits array this expression reads (shifted `z` first): a one-hot of the labels
        # takes its dtype and its number of classes from it.
        self._logits = next(
            (
                self.arrays[b.name]
                for b in (S.z, S.o)
                if b.name in self.arrays and expr.has(b.label)
            ),
            None,
        )
        return super().doprint(expr, assign_to)

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta) -> str:
        a, b = expr.args
        if S.c not in (a, b):
            self.symbols_printed.add(S.K.name)
            return f"{self.ns}.eye(K, dtype=dtype)"
        other = b if a == S.c else a
        if other == S.c:
            return "1"
        if self.gather is None or self.logits_in_scope is None:
            raise ValueError("a delta at the label needs the labels and the logits in scope")
        # `delta_kc` under a nonlinearity (the label's form of `(p_k - y_k)^2`, say) is the
        # labels' one-hot rows; the label split `A + delta_jc B` never reaches this.
        return self._label_one_hot(self.logits_in_scope) + self.axes.get(other, "")

    def _label_one_hot(self, logits: str) -> str:
        """The labels' one-hot rows, (n, K), in the dtype of `logits`."""
        mask = f"{self.ns}.arange({logits}.shape[-1]) == {self.gather}[:, None]"
        return f"({mask}).astype({logits}.dtype)"

    def _kernel(self, expr: sp.Function) -> str:
        name = KERNELS[type(expr)]
        self.kernels_used.add(name)
        if isinstance(expr, Sigmoid | Softplus | LogRatio | ComplementPower):  # elementwise:
            return f"{name}({', '.join(self._print(a) for a in expr.args)})"  # args carry axes
        if len(expr.args) > 1 and expr.args[1] == S.c and self.gather is not None:
            return self._at_label(f"{name}({self._print(expr.args[0])})")
        axis = self.axes.get(expr.args[1], "") if len(expr.args) > 1 else ""
        return f"{name}({self._print(expr.args[0])}){axis}"

    _print_Softmax = _kernel
    _print_LogSoftmax = _kernel
    _print_LogSumExp = _kernel
    _print_Sigmoid = _kernel
    _print_Softplus = _kernel
    _print_LogRatio = _kernel
    _print_ComplementPower = _kernel

    def _print_SigmoidComplement(self, expr: SigmoidComplement) -> str:
        # NOTE: sigmoid(-z) is the complement 1 - sigmoid(z) without the subtraction.
        self.kernels_used.add("_sigmoid")
        return f"_sigmoid(-{self.parenthesize(expr.args[0], 50)})"

    def _print_ProbabilityTimes(self, expr: ProbabilityTimes) -> str:
        # NOTE: p z with 0 where p == 0 (a masked class: p = 0, z = -inf; p log p -> 0).
        self.kernels_used.add("_target_mul")
        p, t = (self._print(x) for x in expr.args)
        return f"_target_mul({p}, {t})"

    def _print_LogAddExp(self, expr: LogAddExp) -> str:
        a, b = (self._print(x) for x in expr.args)
        return f"{self.ns}.logaddexp({a}, {b})"

    def _print_LogCosh(self, expr: LogCosh) -> str:
        # NOTE: log1p(2 sinh(x/2)^2) near 0 (where log(cosh) ~ x^2/2 would cancel against
        # log 2), |x| + log1p(expm1(-2|x|)/2) from 1 on; sinh only sees the small branch's x
        # (0 elsewhere), so nothing overflows in the branch `where` discards.
        ns = self.ns
        x = self._print(expr.args[0])
        a = f"{ns}.abs({x})"
        small = f"{ns}.where({a} < 1, {x}, 0 * ({x}))"
        near = f"{ns}.log1p(2 * {ns}.sinh({small} / 2) ** 2)"
        far = f"{a} + {ns}.log1p({ns}.expm1(-2 * {a}) / 2)"
        return f"{ns}.where({a} < 1, {near}, {far})"

    def _print_ArgMax(self, expr: ArgMax) -> str:
        f, _, lo, hi = expr.args
        if (lo, hi) != (1, S.K):
            raise NotImplementedError(f"only an argmax over the classes prints as code: {expr}")
        # The outcome t is the class axis: `yhat_t` prints as the whole (n, K) array.
        return f"{self.ns}.argmax({self._print(f)}, axis=-1)"

    def _print_Exceeds(self, expr: Exceeds) -> str:
        a, b = expr.args
        return self._as_index(f"{self._print(a)} > {self._print(b)}")

    def _as_index(self, mask: str) -> str:
        """A boolean array as the integer outcome it decides (0 or 1)."""
        return f"({mask}).astype({self.ns}.intp)"

    def _print_SoftmaxComplement(self, expr: SoftmaxComplement) -> str:
        f, idx = expr.args
        return self._complement(self._print(Softmax(f, ROW)), idx)

    def _print_SharedComplement(self, expr: sp.Function) -> str:
        p, idx = expr.args
        return self._complement(self._print(p), idx)

    def _complement(self, probabilities: str, idx: sp.Basic) -> str:
        """`1 - p` from the whole row of probabilities (exact at the row's largest entry)."""
        self.kernels_used.add("_complement")
        if idx == S.c and self.gather is not None:
            return self._at_label(f"_complement({probabilities})")
        return f"_complement({probabilities}){self.axes.get(idx, '')}"

    def _print_AtTop(self, expr: AtTop) -> str:
        f, logits = expr.args
        return self._at_row_max(f"({self._print(f)})", self._print(logits))

    def _at_row_max(self, values: str, logits: str) -> str:
        """Each row's entry of `values` at the row's largest logit, as an (n, 1) column."""
        top = f"{self.ns}.argmax({logits}, axis=-1, keepdims=True)"
        return f"{self.ns}.take_along_axis({values}, {top}, axis=-1)"

    def _print_RowMax(self, expr: RowMax) -> str:
        return f"np.max({self._print(expr.args[0])}, axis=-1, keepdims=True)"

    def _print_Symbol(self, expr: sp.Symbol) -> str:
        self.symbols_printed.add(expr.name)
        return S.checked_name(expr.name, "symbol")

    def _print_Sum(self, expr: sp.Sum) -> str:
        (_, lo, hi), *rest = expr.limits
        if rest or (lo, hi) != (1, S.K):
            raise NotImplementedError(f"only single class sums print as code: {expr}")
        # NOTE: a term constant along the row would sum to K times itself, but np.sum over the
        # class axis of an (n, 1) array does not multiply by K; `stabilize` rewrites such sums to
        # `K * term` before printing, and common subexpressions are only extracted afterwards.
        return self._class_sum(self._target_product(expr.function))

    # Matrix forms of the chain rule. `A.T @ B` prints as `(B.T @ A).T`: the same product, in the
    # layout OpenBLAS runs faster on the 2-core dev/CI machine (AMD EPYC, OpenBLAS 0.3.31,
    # 1 thread, float32, blocks of 4096 rows of n=60000, d=784, K=10: 49 ms vs 67 ms for the
    # second GEMM). On a Xeon (OpenBLAS 0.3.34) the two are within +-10 % (benchmarks/README.md).
    def _print_MatrixSymbol(self, expr: sp.MatrixSymbol) -> str:
        # A display name (`\dot{G}`) prints as the array the code holds it in; only a name
        # that reaches the code as itself must be an identifier.
        if expr.name in self.arrays:
            return self.arrays[expr.name]
        return S.checked_name(expr.name, "matrix")

    def _print_MatMul(self, expr: sp.MatMul) -> str:
        scalar, matrices = expr.as_coeff_matrices()
        if scalar != 1:
            # The matrix product first, then the scalar: `X.T @ G / n` scales the small result,
            # never an input block.
            product = self._print(sp.MatMul(*matrices))
            num, den = sp.fraction(scalar)
            out = product if num == 1 else f"{product} * {self._print(num)}"
            # The denominator is one operand of `/`: `X.T @ G / (2 * n)`, never `/ 2*n`.
            return out if den == 1 else f"{out} / {self.parenthesize(den, PRECEDENCE['Pow'])}"
        args = list(expr.args)
        if len(args) == 2 and args[1] == S.ones_n and isinstance(args[0], sp.Transpose):
            summed = args[0].arg
            if summed.shape[1] == 1:
                return self._total(self._print(summed))
            return self._column_sums(self._print(summed))
        if len(args) == 2 and isinstance(args[0], sp.Transpose):
            return f"({self._print(args[1])}.T @ {self._print(args[0].arg)}).T"
        if len(args) == 2 and args[0] == S.ones_n and isinstance(args[1], sp.Transpose):
            row: str = self._print(args[1].arg)  # 1 b^T: NumPy broadcasting adds b to every row
            return row
        scalars = [a for a in args if not getattr(a, "is_Matrix", False)]
        matrices = [a for a in args if getattr(a, "is_Matrix", False)]
        product = " @ ".join(self._print(a) for a in matrices)
        return " * ".join([*(self._print(a) for a in scalars), product])

    def _print_Trace(self, expr: sp.Trace) -> str:
        # tr(A^T A) is the squared Frobenius norm: a dot product, not a d x d GEMM.
        arg = expr.arg
        if isinstance(arg, sp.MatMul) and len(arg.args) == 2 and arg.args[0] == arg.args[1].T:
            return self._sum_of_squares(self._print(arg.args[1]))
        raise NotImplementedError(f"trace of {arg}")

    def _print_MatAdd(self, expr: sp.MatAdd) -> str:
        return " + ".join(self._print(a) for a in expr.args)

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        if expr.exp == 2:
            if self.arrays_only_square and not expr.base.has(sp.Indexed, sp.Function):
                # a squared parameter stays a Python float (torch.square takes tensors only)
                base = self.parenthesize(expr.base, 100)
                return f"({base} * {base})"
            return f"{self.ns}.square({self._print(expr.base)})"
        if expr.exp.is_Integer and expr.exp < 0:
            inv = expr.base if expr.exp == -1 else sp.Pow(expr.base, -expr.exp, evaluate=False)
            return f"(1 / {self.parenthesize(inv, 100)})"
        out: str = super()._print_Pow(expr, rational=rational)
        return out


def names_class_count(expr: sp.Basic) -> bool:
    """Whether `VectorPrinter`'s code for `expr` names the class count `K`: where `K` is free
    outside the limits of class sums (a class sum prints as a reduction over the class axis), or
    a delta of two class indices prints as `eye(K)`."""
    if isinstance(expr, sp.Sum):
        return names_class_count(expr.function)
    if isinstance(expr, sp.KroneckerDelta) and S.c not in expr.args:
        return True
    return expr == S.K or any(names_class_count(a) for a in expr.args)


def vectorised(expr: sp.Expr) -> sp.Expr:
    """Map every free class index to the class dummy: in whole-array code they are the same axis.

    Only valid for expressions with at most one free class index (all but the Hessian).
    """
    free = [idx for idx in (S.j, S.k) if idx in expr.free_symbols]
    if len(free) > 1:
        raise ValueError(f"more than one free class index in {expr}")
    return expr.xreplace({idx: CLASS_DUMMY for idx in free})


def print_assignments(
    printer: VectorPrinter,
    outputs: list[tuple[str, sp.Expr]],
    prefix: str = "_t",
    logits_are_scratch: bool = False,
) -> list[str]:
    """Print `name = expr` lines with common subexpressions computed once (SymPy's `cse`).

    With `logits_are_scratch` (the logits are a temporary the block owns), the shared
    softmax/log-sum-exp kernel may overwrite them, once every other use of the logits has been
    computed first: one n x K array per block instead of two.
    """
    names = [name for name, _ in outputs]
    exprs = [vectorised(e) for _, e in outputs]
    shift, exprs = _shifted_logits(exprs, printer, logits_are_scratch)
    shift += _centred_direction(exprs, printer)
    shared = _print_shared(printer, names, exprs, prefix, logits_are_scratch)
    return [formatted(line) for line in shift] + shared


def print_matrix(printer: VectorPrinter, name: str, expr: sp.Expr) -> list[str]:
    """`name = expr` for an expression in two free class indices (on two axes)."""
    shift, exprs = _shifted_logits([expr], printer, logits_are_scratch=False)
    return [formatted(line) for line in shift] + _print_shared(
        printer, [name], exprs, "_t", logits_are_scratch=False
    )


def _print_shared(
    printer: VectorPrinter,
    names: list[str],
    exprs: list[sp.Expr],
    prefix: str,
    logits_are_scratch: bool,
) -> list[str]:
    printer.logits_in_scope = next(
        (
            printer.arrays[b.name]
            for b in (S.z, S.o)
            if b.name in printer.arrays and any(e.has(b.label) for e in exprs)
        ),
        None,
    )
    shared, exprs = _share_softmax_and_lse(exprs, printer, logits_are_scratch)
    temps, reduced = sp.cse(
        exprs,
        symbols=sp.numbered_symbols(prefix),
        optimizations=None,
    )
    lines = list(shared)
    lines += [f"{printer._print(sym)} = {printer.doprint(val)}" for sym, val in temps]
    lines += [f"{name} = {printer.doprint(e)}" for name, e in zip(names, reduced, strict=True)]
    return [formatted(line) for line in lines]


def _centred_direction(exprs: list[sp.Expr], printer: VectorPrinter) -> list[str]:
    """`w = v - v_top`, the direction minus its entry at the row's largest logit, if used."""
    if not any(a.base == S.w for e in exprs for a in e.atoms(sp.Indexed)):
        return []
    v, o, w = (printer.doprint(b[ROW]) for b in (S.v, S.o, S.w))
    return [f"{w} = {v} - {printer._at_row_max(v, o)}"]


def _shifted_logits(
    exprs: list[sp.Expr], printer: VectorPrinter, logits_are_scratch: bool
) -> tuple[list[str], list[sp.Expr]]:
    """The statement that computes the shifted logits `z = o - max(o)`, where a form uses them.

    With scratch logits and no other use of `o` left, the block's logits are shifted in place
    (`O -= max`) and `z` prints as `O`: one n x K array per block, as before the shift.
    """

    def uses(base: sp.IndexedBase) -> bool:
        return any(a.base == base for e in exprs for a in e.atoms(sp.Indexed))

    if not uses(S.z):
        return [], exprs
    o_row, z_row = S.o[ROW], S.z[ROW]
    shift = printer.doprint(RowMax(o_row))
    if logits_are_scratch and not uses(S.o):
        table = {a: S.o[a.indices[0]] for e in exprs for a in e.atoms(sp.Indexed) if a.base == S.z}
        return [f"{printer.doprint(o_row)} -= {shift}"], [e.xreplace(table) for e in exprs]
    return [f"{printer.doprint(z_row)} = {printer.doprint(o_row)} - {shift}"], exprs


class SharedComplement(sp.Function):
    """`1 - p_idx` from probabilities a fused block already computed (printing only)."""

    nargs = 2


def _hoist_logit_terms(
    exprs: list[sp.Expr], printer: VectorPrinter
) -> tuple[list[str], list[sp.Expr]] | None:
    """Compute every remaining use of the logits (gathers, class sums) into temporaries.

    Returns None when a bare use of the whole logits row would remain (then the logits are still
    needed after the kernel and it must not overwrite them).
    """

    def uses_logits(t: sp.Basic) -> bool:
        return any(i.base == S.o for i in t.atoms(sp.Indexed))

    hoisted: dict[sp.Basic, sp.Symbol] = {}

    def hoist(t: sp.Basic) -> sp.Basic:
        return hoisted.setdefault(t, sp.Symbol(f"_h{len(hoisted)}"))

    out = [
        e.replace(
            lambda t: (
                (isinstance(t, sp.Indexed) and t.base == S.o and S.c in t.indices)
                or (isinstance(t, sp.Sum) and uses_logits(t) and not t.has(Softmax, LogSumExp))
            ),
            hoist,
        )
        for e in exprs
    ]
    if any(uses_logits(e) for e in out):
        return None
    return [f"{sym} = {printer.doprint(t)}" for t, sym in hoisted.items()], out


def _share_softmax_and_lse(
    exprs: list[sp.Expr], printer: VectorPrinter, logits_are_scratch: bool = False
) -> tuple[list[str], list[sp.Expr]]:
    """Where a block needs both `softmax(f)` and `logsumexp(f)`, compute them in one pass.

    Both start from `exp(f - max f)`; the fused kernel exponentiates once (the exp over the
    n x K logits is the costliest elementwise step of a fused loss and gradient).
    """
    lines: list[str] = []
    for number, lse in enumerate(sorted({a for e in exprs for a in e.atoms(LogSumExp)}, key=str)):
        (row,) = lse.args
        # (a softmax at the label, index c, is a gather of the row, not the row itself)
        softmaxes = {
            a for e in exprs for a in e.atoms(Softmax) if a.args[0] == row and a.args[1] != S.c
        }
        if not softmaxes:
            continue
        p_name, l_name = sp.Symbol(f"_p{number}"), sp.Symbol(f"_l{number}")
        swap = {lse: l_name, **dict.fromkeys(softmaxes, p_name)}
        complements = {a for e in exprs for a in e.atoms(SoftmaxComplement) if a.args[0] == row}
        swap |= {a: SharedComplement(p_name, a.args[1]) for a in complements}
        exprs = [e.xreplace(swap) for e in exprs]
        kernel = "_softmax_and_logsumexp"
        if logits_are_scratch and row == S.o[ROW]:
            hoisted = _hoist_logit_terms(exprs, printer)
            if hoisted is not None:
                before, exprs = hoisted
                lines += before
                kernel = "_softmax_and_logsumexp_inplace"
        printer.kernels_used.add(kernel)
        lines.append(f"{p_name}, {l_name} = {kernel}({printer.doprint(row)})")
    return lines, exprs


def formatted(code: str) -> str:
    """One statement in the layout `ruff format` keeps (spaces around operators), via `ast`."""
    return ast.unparse(ast.parse(code))


LINE_LENGTH = 100


def _operand(node: ast.expr, level: tuple[type, ...]) -> str:
    """An operand as written in the split layout: lower-precedence sums keep their brackets."""
    text = ast.unparse(node)
    lower = (
        level == (ast.Mult, ast.Div)
        and isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Add | ast.Sub)
    )
    return f"({text})" if lower else text


def code_block(statements: list[str], indent: str) -> str:
    """Statements indented, each laid out as `ruff format` would at `LINE_LENGTH`.

    A long `name = a + b - c` becomes a parenthesised block with one operand per line, leading
    operators: ruff's own layout, so the emitted file is stable under `ruff format`.
    """
    out = []
    for stmt in statements:
        line = indent + formatted(stmt)
        if len(line) > LINE_LENGTH:
            line = _split_sum(stmt, indent) or line
        out.append(line)
    return "\n".join(out)


def _split_sum(stmt: str, indent: str) -> str | None:
    tree = ast.parse(stmt).body[0]
    if not isinstance(tree, ast.Assign | ast.AugAssign):
        return None
    operands: list[tuple[str, ast.expr]] = []
    symbols = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
    top = tree.value
    if isinstance(top, ast.Call):
        return _split_call(tree, top, indent)
    if not (isinstance(top, ast.BinOp) and type(top.op) in symbols):
        return None
    # Split at the operators of the lowest precedence at the top (ruff's layout).
    level = (ast.Add, ast.Sub) if isinstance(top.op, ast.Add | ast.Sub) else (ast.Mult, ast.Div)

    def flatten(node: ast.expr, op: str) -> None:
        if isinstance(node, ast.BinOp) and isinstance(node.op, level):
            flatten(node.left, op)
            flatten(node.right, symbols[type(node.op)])
        else:
            operands.append((op, node))

    flatten(top, "")
    if len(operands) < 2:
        return None
    target = ast.unparse(tree.targets[0] if isinstance(tree, ast.Assign) else tree.target)
    assign = "=" if isinstance(tree, ast.Assign) else ast.unparse(tree).split()[1]
    inner = indent + "    "
    body = [inner + (f"{op} " if op else "") + _operand(node, level) for op, node in operands]
    return f"{indent}{target} {assign} (\n" + "\n".join(body) + f"\n{indent})"


# --------------------------------------------------------------------------- framework targets
#
# The same whole-array code for PyTorch, JAX and the array API standard. Each printer changes the
# library's name and the few calls whose spelling differs; the stable kernels (`_softmax`, ...)
# print as the same private names, which each target's template binds to its library's own
# max-shifted kernel (torch.logsumexp, jax.nn.logsumexp, ...).


class TorchVectorPrinter(VectorPrinter):
    """PyTorch: `torch.sum(x, dim=-1, keepdim=True)`, labels gathered with `Tensor.gather`.

    SymPy's `TorchPrinter` prints elementwise functions as `torch.<name>`; the NumPy names that
    reach these printers (log, exp, log1p, sqrt, square) are spelled the same in torch, so the
    namespace is all that changes (a wrong name would fail the emitted module's tests).
    """

    ns = "torch"
    arrays_only_square = True

    def _class_sum(self, code: str) -> str:
        return f"torch.sum({code}, dim=-1, keepdim=True)"

    def _at_label(self, code: str) -> str:
        return f"{code}.gather(-1, {self.gather}[:, None])"

    def _column_sums(self, code: str) -> str:
        return f"torch.sum({code}, dim=0)"

    def _sum_of_squares(self, code: str) -> str:
        return f"torch.sum({code} * {code})"

    def _label_one_hot(self, logits: str) -> str:
        return f"torch.nn.functional.one_hot({self.gather}, {logits}.shape[-1]).to({logits}.dtype)"

    def _print_RowMax(self, expr: RowMax) -> str:
        return f"torch.amax({self._print(expr.args[0])}, dim=-1, keepdim=True)"

    def _at_row_max(self, values: str, logits: str) -> str:
        return f"{values}.gather(-1, torch.argmax({logits}, dim=-1, keepdim=True))"

    def _complement(self, probabilities: str, idx: sp.Basic) -> str:
        # At the label only: the same values as `_complement`'s column there, without forming
        # the whole n x K complement (the template's `_complement_at`).
        if idx == S.c and self.gather is not None:
            self.kernels_used.add("_complement_at")
            return f"_complement_at({probabilities}, {self.gather})"
        return super()._complement(probabilities, idx)

    def _as_index(self, mask: str) -> str:
        return f"({mask}).to(torch.int64)"


class JaxVectorPrinter(VectorPrinter, JaxPrinter):
    """JAX: SymPy's `JaxPrinter` (`jax.numpy` functions, printed as `jnp.`), whole-array."""

    ns = "jnp"

    def _at_label(self, code: str) -> str:
        return f"jnp.take_along_axis({code}, {self.gather}[:, None], axis=-1)"

    def _column_sums(self, code: str) -> str:
        return f"jnp.sum({code}, axis=0)"

    def _sum_of_squares(self, code: str) -> str:
        return f"jnp.vdot({code}, {code})"

    def _print_RowMax(self, expr: RowMax) -> str:
        return f"jnp.max({self._print(expr.args[0])}, axis=-1, keepdims=True)"

    def _as_index(self, mask: str) -> str:
        return f"({mask}).astype(jnp.int_)"


class ArrayApiVectorPrinter(VectorPrinter):
    """The array API standard: every call through `xp = array_namespace(...)`, no methods.

    The standard has no integer-array indexing: a label's entry is picked with a boolean mask
    (`_pick`, a sum with one nonzero term, so exact).
    """

    ns = "xp"
    arrays_only_square = True

    def _at_label(self, code: str) -> str:
        # `gather` names a boolean one-hot mask: the row's entry at its label, as a masked sum.
        return f"_pick({code}, {self.gather})"

    def _column_sums(self, code: str) -> str:
        return f"xp.sum({code}, axis=0)"

    def _sum_of_squares(self, code: str) -> str:
        return f"xp.sum({code} * {code})"

    def _label_one_hot(self, logits: str) -> str:
        # `gather` is already the labels' boolean one-hot mask here.
        return f"xp.astype({self.gather}, {logits}.dtype)"

    def _print_RowMax(self, expr: RowMax) -> str:
        return f"xp.max({self._print(expr.args[0])}, axis=-1, keepdims=True)"

    def _at_row_max(self, values: str, logits: str) -> str:
        return f"_pick({values}, _top_mask({logits}))"

    def _as_index(self, mask: str) -> str:
        return f"xp.astype({mask}, xp.int64)"


#: The printer of each emit target.
PRINTERS: dict[str, type[VectorPrinter]] = {
    "numpy": VectorPrinter,
    "torch": TorchVectorPrinter,
    "jax": JaxVectorPrinter,
    "array-api": ArrayApiVectorPrinter,
}


# --------------------------------------------------------------------------- mpmath reference


class RangePrinter(PythonCodePrinter):
    """Plain Python for a parameter's range check; a float end prints as the float itself
    (`repr`), never rounded to 15 digits."""

    def _print_Float(self, expr: sp.Float) -> str:
        return repr(float(expr))


def print_range_check(interval: sp.Interval, name: str) -> str:
    """`interval` as a Python condition on the finite real `name`: a chained comparison
    (`0.0 <= eps < 1.0`), the name first where only one end is finite (`lam >= 0.0`), `True` for
    the whole line."""
    value = S.checked_name(name, "parameter name")
    ends = RangePrinter()
    low = None if interval.start.is_infinite else ends.doprint(interval.start)
    high = None if interval.end.is_infinite else ends.doprint(interval.end)
    below = "<" if interval.left_open else "<="
    above = "<" if interval.right_open else "<="
    if low is not None and high is not None:
        return f"{low} {below} {value} {above} {high}"
    if low is not None:
        return f"{value} {'>' if interval.left_open else '>='} {low}"
    if high is not None:
        return f"{value} {above} {high}"
    return "True"


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


def _split_call(tree: ast.Assign | ast.AugAssign, call: ast.Call, indent: str) -> str:
    """`name = f(args)` too long for one line, in ruff's layout: the arguments on one indented
    line when they fit, else one per line with a trailing comma."""
    target = ast.unparse(tree.targets[0] if isinstance(tree, ast.Assign) else tree.target)
    assign = "=" if isinstance(tree, ast.Assign) else ast.unparse(tree).split()[1]
    args = [ast.unparse(a) for a in call.args] + [ast.unparse(k) for k in call.keywords]
    head = f"{indent}{target} {assign} {ast.unparse(call.func)}("
    inner = indent + "    "
    one_line = inner + ", ".join(args)
    if len(one_line) <= LINE_LENGTH:
        return f"{head}\n{one_line}\n{indent})"
    body = "\n".join(f"{inner}{a}," for a in args)
    return f"{head}\n{body}\n{indent})"
