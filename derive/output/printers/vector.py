"""Whole-array NumPy code for the emitted module's formulas: `VectorPrinter` and its helpers.

`VectorPrinter` prints a class-indexed expression as whole-array NumPy code: `o[j]` is the (n, K)
array `O`, a class sum is `np.sum(..., axis=-1, keepdims=True)`, and the stable functions print as
calls to max-shifted kernels (`KERNELS`). Per-class unrolled code (what `lambdify` of a
concrete-K expression gives) grows with K; this stays one line for any K. With `axes`, two free
class indices map to two axes (for the K x K Hessian of one sample). With `gather`, the label
index `c` prints as a gather of the true class's column (integer labels: no one-hot matrix).

`print_assignments` and `print_matrix` print a block of `name = expr` lines for the code
generator: common subexpressions once (SymPy's `cse`), the shifted logits `z = o - max(o)` where a
form uses them, and one fused pass where a block needs both the softmax and the log-sum-exp of
the same row. The framework targets' printers (`framework_vectors`) override only the hooks that
name the array library.
"""

from __future__ import annotations

from typing import Any

import sympy as sp
from sympy.codegen.cfunctions import expm1
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE

from derive import notation as S
from derive.output.printers.code_format import formatted
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
    `_column_sums`, `_sum_of_squares`): the framework printers (`framework_vectors`) override
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
        # The kernel, not `.sum(axis=0)`: NumPy's reduction over the rows of a block with few
        # columns costs several times a product with ones (kernels.py.j2, `_column_sums`).
        self.kernels_used.add("_column_sums")
        return f"_column_sums({code})"

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

    #: Whether the template defines `_complement_at(P, labels)`, the complement at each row's
    #: label only, (n, 1): printed for the label's entry instead of the whole n x K complement
    #: (where the block has no log-sum-exp of the row to print `label_complement` from).
    complement_at = True

    def _complement(self, probabilities: str, idx: sp.Basic) -> str:
        """`1 - p` from the whole row of probabilities (exact at the row's largest entry)."""
        if idx == S.c and self.gather is not None and self.complement_at:
            self.kernels_used.add("_complement_at")
            return f"_complement_at({probabilities}, {self.gather})"
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
        # The kernel, not `np.max`: NumPy's max over a short last axis costs ~4x the argmax
        # whose entry it is (kernels.py.j2, `_row_max`).
        self.kernels_used.add("_row_max")
        return f"_row_max({self._print(expr.args[0])})"

    def _shift_in_place(self, logits: str, top: str | None) -> str:
        """The statement `logits -= max(logits)` (`z = o - max(o)` on a scratch block); with
        `top`, one that also binds each row's top column to that name (`_subtract_row_max`)."""
        if top is None:
            return f"{logits} -= {self.doprint(RowMax(S.o[ROW]))}"
        self.kernels_used.add("_subtract_row_max")
        return f"{top} = _subtract_row_max({logits})"

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
    shift, exprs, in_place = _shifted_logits(exprs, printer, logits_are_scratch)
    shift += _centred_direction(exprs, printer)
    shared, top_used = _print_shared(printer, names, exprs, prefix, logits_are_scratch, in_place)
    if in_place:
        # The block's logits shifted in place: where the fused kernel takes the top's column
        # (`_softmax_and_logsumexp_shifted`), the shift hands it over.
        o_row = printer.doprint(S.o[ROW])
        shift.insert(0, printer._shift_in_place(o_row, TOP if top_used else None))
    return [formatted(line) for line in shift] + shared


def print_matrix(printer: VectorPrinter, name: str, expr: sp.Expr) -> list[str]:
    """`name = expr` for an expression in two free class indices (on two axes)."""
    shift, exprs, _ = _shifted_logits([expr], printer, logits_are_scratch=False)
    shared, _ = _print_shared(printer, [name], exprs, "_t", logits_are_scratch=False)
    return [formatted(line) for line in shift] + shared


def _print_shared(
    printer: VectorPrinter,
    names: list[str],
    exprs: list[sp.Expr],
    prefix: str,
    logits_are_scratch: bool,
    shifted_in_place: bool = False,
) -> tuple[list[str], bool]:
    printer.logits_in_scope = next(
        (
            printer.arrays[b.name]
            for b in (S.z, S.o)
            if b.name in printer.arrays and any(e.has(b.label) for e in exprs)
        ),
        None,
    )
    shared, exprs, top_used = _share_softmax_and_lse(
        exprs, printer, logits_are_scratch, shifted_in_place
    )
    temps, reduced = sp.cse(
        exprs,
        symbols=sp.numbered_symbols(prefix),
        optimizations=None,
    )
    lines = list(shared)
    lines += [f"{printer._print(sym)} = {printer.doprint(val)}" for sym, val in temps]
    lines += [f"{name} = {printer.doprint(e)}" for name, e in zip(names, reduced, strict=True)]
    return [formatted(line) for line in lines], top_used


def _centred_direction(exprs: list[sp.Expr], printer: VectorPrinter) -> list[str]:
    """`w = v - v_top`, the direction minus its entry at the row's largest logit, if used."""
    if not any(a.base == S.w for e in exprs for a in e.atoms(sp.Indexed)):
        return []
    v, o, w = (printer.doprint(b[ROW]) for b in (S.v, S.o, S.w))
    return [f"{w} = {v} - {printer._at_row_max(v, o)}"]


def _shifted_logits(
    exprs: list[sp.Expr], printer: VectorPrinter, logits_are_scratch: bool
) -> tuple[list[str], list[sp.Expr], bool]:
    """The statement that computes the shifted logits `z = o - max(o)`, where a form uses them.

    With scratch logits and no other use of `o` left, the block's logits are shifted in place
    and `z` prints as `O`: one n x K array per block, as before the shift. That statement is left
    to the caller (True is returned): it is printed once the fused kernel that follows is known
    (`VectorPrinter._shift_in_place`).
    """

    def uses(base: sp.IndexedBase) -> bool:
        return any(a.base == base for e in exprs for a in e.atoms(sp.Indexed))

    if not uses(S.z):
        return [], exprs, False
    o_row, z_row = S.o[ROW], S.z[ROW]
    if logits_are_scratch and not uses(S.o):
        table = {a: S.o[a.indices[0]] for e in exprs for a in e.atoms(sp.Indexed) if a.base == S.z}
        return [], [e.xreplace(table) for e in exprs], True
    shift = printer.doprint(RowMax(o_row))
    return [f"{printer.doprint(z_row)} = {printer.doprint(o_row)} - {shift}"], exprs, False


#: The name a block binds each row's top column to, where its logits were shifted in place.
TOP = "_top"


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


def label_complement(row: sp.Expr, logsumexp: sp.Expr) -> sp.Expr:
    """`1 - softmax(f)_c` from the label's log-probability: `-expm1(f_c - LSE(f))`, with
    `logsumexp` the block's LSE(f).

    The same number (softmax(f)_c = exp(f_c - LSE(f)); `tests/test_printing.py` checks the
    identity), from n numbers where the complement reads the whole n x K row again: in a block
    that computes the row's log-sum-exp anyway (the fused loss and gradient), it costs no pass
    over the probabilities. `expm1` keeps every digit where p_c rounds to 1 (`f_c - LSE(f)` is
    then -log1p of the others' tiny sum); where p_c <= 1/2, `f_c - LSE(f)` <= -log 2 has an
    absolute error of a few ulps of max(1, |f_c|), which exp turns into a relative error of p_c
    that `1 - p_c` does not feel.
    """
    return -expm1(row.xreplace({ROW: S.c}) - logsumexp)


def _shared_complement(
    complement: sp.Expr,
    p_name: sp.Symbol,
    l_name: sp.Symbol,
    printer: VectorPrinter,
    shifted: bool,
) -> sp.Expr:
    """A complement in a block that shares its row's softmax and log-sum-exp: at the label of
    a `shifted` row (each row's largest entry exactly 0) from the log-sum-exp
    (`label_complement`), elsewhere from the shared probabilities.

    NOTE: only shifted rows: at the top `f_c - LSE(f)` is then `0 - log1p(r)`, where an
    unshifted row's `m - (m + log1p(r))` would round a tiny r away.
    """
    row, idx = complement.args
    if idx == S.c and printer.gather is not None and shifted:
        return label_complement(row, l_name)
    return SharedComplement(p_name, idx)


def _share_softmax_and_lse(
    exprs: list[sp.Expr],
    printer: VectorPrinter,
    logits_are_scratch: bool = False,
    shifted_in_place: bool = False,
) -> tuple[list[str], list[sp.Expr], bool]:
    """Where a block needs both `softmax(f)` and `logsumexp(f)`, compute them in one pass.

    Both start from `exp(f - max f)`; the fused kernel exponentiates once (the exp over the
    n x K logits is the costliest elementwise step of a fused loss and gradient). Where the
    logits were `shifted_in_place` (each row's max is 0) the kernel is handed the top's column
    (`TOP`) and does not shift again; the last value says whether it was.
    """
    lines: list[str] = []
    top_used = False
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
        shifted = shifted_in_place or row.has(S.z.label)
        swap |= {a: _shared_complement(a, p_name, l_name, printer, shifted) for a in complements}
        exprs = [e.xreplace(swap) for e in exprs]
        kernel = "_softmax_and_logsumexp"
        if logits_are_scratch and row == S.o[ROW]:
            hoisted = _hoist_logit_terms(exprs, printer)
            if hoisted is not None:
                before, exprs = hoisted
                lines += before
                kernel = "_softmax_and_logsumexp_inplace"
        args = printer.doprint(row)
        if kernel == "_softmax_and_logsumexp_inplace" and shifted_in_place:
            kernel, args, top_used = "_softmax_and_logsumexp_shifted", f"{args}, {TOP}", True
        printer.kernels_used.add(kernel)
        lines.append(f"{p_name}, {l_name} = {kernel}({args})")
    return lines, exprs, top_used
