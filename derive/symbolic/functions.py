"""Stable kernels as SymPy functions: what the unstable shapes of a derivation are rewritten to.

After differentiation a loss contains `exp(f_j) / sum_s exp(f_s)` and `log(sum_s exp(f_s))`,
which overflow in floating point at logits of ~710 (float64) or ~89 (float32). `stabilize`
rewrites them to `Softmax`, `LogSoftmax` and `LogSumExp`, whose printers emit max-shifted kernels,
and whose `doit()` returns the raw form, so that the rewrite itself is a checkable identity
(`stabilize(e).doit() - e == 0`). Each function also knows how it looks in LaTeX.

`f` is a *row expression*: written in the row variable `_r` (e.g. `o[_r]` or `o[_r]/T`), so
that `f` stands for the whole vector of classes.
"""

from __future__ import annotations

import itertools
from typing import Any

import sympy as sp
from sympy.codegen.cfunctions import expm1

from derive import notation as S
from derive.symbolic.rewrites import canonical_sums

CLASS_DUMMY = sp.Symbol("_s", integer=True, positive=True)
#: The class variable *inside* a row function (`LogSumExp(o[_r])` is the LSE of the whole row).
#: Distinct from CLASS_DUMMY so that a class sum over `_s` never mistakes a row function for a
#: term that depends on its index (it is constant along the row, and sums to K times itself).
ROW = sp.Symbol("_r", integer=True, positive=True)


def _power(tex: str, exp: str | None) -> str:
    """`f(x)^{e}` when SymPy's LaTeX printer prints a power of one of these functions."""
    return tex if exp is None else r"\left(" + tex + r"\right)^{" + exp + "}"


def _row_latex(printer: Any, f: sp.Expr) -> str:
    """`o[_s] / T` prints as `\\mathbf{o} / T`: the row expression as a vector."""
    vec = f.replace(
        lambda e: isinstance(e, sp.Indexed) and e.indices == (ROW,),
        lambda e: sp.Symbol(r"\mathbf{" + e.base.label.name + "}"),
    )
    out: str = printer._print(vec)
    return out


def sigmoid_expr(z: sp.Expr) -> sp.Expr:
    """`1 / (1 + exp(-z))`: the logistic function as a formula (the one definition of it that
    losses, user formulas and the `Sigmoid` kernel's raw form all use)."""
    out: sp.Expr = 1 / (1 + sp.exp(-z))
    return out


class _StableFunction(sp.Function):
    """Common LaTeX handling: SymPy prints powers of a function by passing `exp`."""

    def _latex(self, printer: Any, exp: str | None = None) -> str:
        return _power(self._latex_base(printer), exp)

    def _latex_base(self, printer: Any) -> str:
        raise NotImplementedError


def _softmax_latex(printer: Any, f: sp.Expr, idx: sp.Expr, prefix: str = "") -> str:
    index: str = printer._print(idx)
    row = _row_latex(printer, f)
    return prefix + r"\operatorname{softmax}\left(" + row + r"\right)_{" + index + "}"


class LogSumExp(_StableFunction):
    """`log sum_s exp(f_s)` over the classes, printed as a max-shifted kernel."""

    nargs = 1

    def doit(self, **hints: Any) -> sp.Expr:
        (f,) = self.args
        out: sp.Expr = sp.log(sp.Sum(sp.exp(f.xreplace({ROW: CLASS_DUMMY})), (CLASS_DUMMY, 1, S.K)))
        return out

    def _latex_base(self, printer: Any) -> str:
        return r"\operatorname{LSE}\left(" + _row_latex(printer, self.args[0]) + r"\right)"


class Softmax(_StableFunction):
    """`exp(f_idx) / sum_s exp(f_s)`: component `idx` of the softmax of the row `f`."""

    nargs = 2

    @property
    def is_positive(self) -> bool:
        return True

    def doit(self, **hints: Any) -> sp.Expr:
        f, idx = self.args
        out: sp.Expr = sp.exp(f.xreplace({ROW: idx})) / sp.Sum(
            sp.exp(f.xreplace({ROW: CLASS_DUMMY})), (CLASS_DUMMY, 1, S.K)
        )
        return out

    def _latex_base(self, printer: Any) -> str:
        f, idx = self.args
        return _softmax_latex(printer, f, idx)


class LogSoftmax(_StableFunction):
    """`f_idx - log sum_s exp(f_s)`: the log of `Softmax`, without taking a log of a rounded 0."""

    nargs = 2

    def doit(self, **hints: Any) -> sp.Expr:
        f, idx = self.args
        out: sp.Expr = f.xreplace({ROW: idx}) - LogSumExp(f).doit()
        return out

    def _latex_base(self, printer: Any) -> str:
        f, idx = self.args
        return _softmax_latex(printer, f, idx, prefix=r"\log ")


class SoftmaxComplement(_StableFunction):
    """`1 - softmax(f)_idx`, the probability of the *other* classes, `sum_{s != idx} softmax_s`.

    NOTE: `1 - p` rounds to 0 once `p` rounds to 1 (a logit ahead by 37 in float64); summed from
    the other classes it keeps every digit. Printed as a kernel that sums the others at the row's
    largest entry (the only place `1 - p` can cancel: elsewhere `p <= 1/2`).
    """

    nargs = 2

    @property
    def is_positive(self) -> bool:
        return True

    def doit(self, **hints: Any) -> sp.Expr:
        out: sp.Expr = 1 - Softmax(*self.args).doit()
        return out

    def _latex_base(self, printer: Any) -> str:
        f, idx = self.args
        return r"\left(1 - " + _softmax_latex(printer, f, idx) + r"\right)"


class Sigmoid(_StableFunction):
    """`1 / (1 + exp(-z))`, printed as a kernel that never exponentiates a positive number.

    `Sigmoid(-z)` evaluates to `1 - Sigmoid(z)`, one canonical form, so that gradients of the
    binary losses collapse to `sigmoid(o) - y` by plain expansion.
    """

    nargs = 1

    @classmethod
    def eval(cls, z: sp.Expr) -> sp.Expr | None:
        if z.could_extract_minus_sign():
            out: sp.Expr = 1 - cls(-z)
            return out
        return None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        out: sp.Expr = self * (1 - self)
        return out

    def raw(self) -> sp.Expr:
        return sigmoid_expr(self.args[0])

    def _latex_base(self, printer: Any) -> str:
        return r"\sigma\left(" + str(printer._print(self.args[0])) + r"\right)"


class Softplus(_StableFunction):
    """`log(1 + exp(z))`, printed as `np.logaddexp(0, z)` (no overflow at z ~ 1e4)."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        out: sp.Expr = Sigmoid(self.args[0])
        return out

    def raw(self) -> sp.Expr:
        out: sp.Expr = sp.log(1 + sp.exp(self.args[0]))
        return out

    def _latex_base(self, printer: Any) -> str:
        return r"\operatorname{softplus}\left(" + str(printer._print(self.args[0])) + r"\right)"


class SigmoidComplement(_StableFunction):
    """`1 - sigmoid(z)`, computed as `sigmoid(-z)`: the complement without subtracting from 1.

    NOTE: `1 - sigmoid(37)` rounds to 0 in float64, `sigmoid(-37)` is 8.5e-17 to full precision.
    A class of its own because `Sigmoid(-z)` evaluates to `1 - Sigmoid(z)` (the canonical form
    the derivation differentiates in).
    """

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        out: sp.Expr = -Sigmoid(self.args[0]) * self
        return out

    def raw(self) -> sp.Expr:
        out: sp.Expr = 1 / (1 + sp.exp(self.args[0]))
        return out

    def _latex_base(self, printer: Any) -> str:
        return r"\sigma\left(-" + str(printer.parenthesize(self.args[0], 50)) + r"\right)"


class LogAddExp(_StableFunction):
    """`log(exp(a) + exp(b))`, printed as the library's `logaddexp`.

    NOTE: `max(a, b) + log1p(exp(-|a - b|))`: the raw form overflows once `a` or `b` passes ~710
    (float64) or ~89 (float32); this never exponentiates a positive number.
    """

    nargs = 2

    def raw(self) -> sp.Expr:
        a, b = self.args
        out: sp.Expr = sp.log(sp.exp(a) + sp.exp(b))
        return out

    def _latex_base(self, printer: Any) -> str:
        a, b = (str(printer._print(x)) for x in self.args)
        return r"\operatorname{logaddexp}\left(" + a + ", " + b + r"\right)"


class LogCosh(_StableFunction):
    """`log(cosh(x)) = log((exp(x) + exp(-x)) / 2)`, printed as a two-branch expression.

    NOTE: near 0 the value is ~x^2/2 while `logaddexp(x, -x)` is ~log 2: subtracting `log 2`
    leaves an absolute error of ~u, a relative one of ~u / x^2. `log1p(2 sinh(x/2)^2)` keeps
    every digit there (cosh(x) - 1 = 2 sinh(x/2)^2), and `|x| + log1p(expm1(-2|x|) / 2)` does
    for |x| >= 1 without overflowing.
    """

    nargs = 1

    @classmethod
    def eval(cls, x: sp.Expr) -> sp.Expr | None:
        if x.could_extract_minus_sign():  # an even function: one canonical form
            out: sp.Expr = cls(-x)
            return out
        return None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        out: sp.Expr = sp.tanh(self.args[0])
        return out

    def raw(self) -> sp.Expr:
        (x,) = self.args
        out: sp.Expr = sp.log(sp.exp(x) + sp.exp(-x)) - sp.log(2)
        return out

    def _latex_base(self, printer: Any) -> str:
        return r"\log\cosh\left(" + str(printer._print(self.args[0])) + r"\right)"


class ProbabilityTimes(_StableFunction):
    """`p t` for a probability `p` and a factor `t` that is `-inf` only where `p` is 0.

    NOTE: at a masked class (logit -inf) the softmax is exactly 0 and `p log p`, computed as
    `p z`, is `0 * -inf` = NaN in floats; its value is the limit 0 (`x log x -> 0`, SciPy's
    `xlogy`/`entr` convention). Printed as `_target_mul(p, t)`: 0 wherever p == 0.
    """

    nargs = 2

    def raw(self) -> sp.Expr:
        p, t = self.args
        out: sp.Expr = p * t
        return out

    def _latex_base(self, printer: Any) -> str:
        return str(printer._print(sp.Mul(*self.args, evaluate=False)))


class LogRatio(_StableFunction):
    """`-p l / q` for `l = log p` and `q = 1 - p` of one probability: `-p log p / (1 - p)`.

    NOTE: the factor a power `(1 - p)^e` leaves when it is combined with `p log p`
    (`(1 - p)^e p log p = -(1 - p)^(e + 1) rho(p)`): bounded, between 0 (p -> 0) and 1
    (p -> 1), where `log p / (1 - p)` alone is 0/0 once p rounds to 1 (a row led by 37 in
    float64, K = 1) and `p log p` is 0 * -inf at a masked class (p = 0). The arguments are the
    accurate kernels of p, log p and 1 - p (so the quotient keeps every digit where 1 - p is
    tiny); the printed kernel takes the limits 1 where `1 - p` is 0 and 0 where p is 0. A proof
    sees `-p l / q`, which is the definition wherever `q != 0`.
    """

    nargs = 3

    def raw(self) -> sp.Expr:
        p, lg, q = self.args
        out: sp.Expr = -p * lg / q
        return out

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        # Used only to size the error bound of the high-precision reference (its sensitivities).
        p, lg, q = self.args
        partials = (-lg / q, -p / q, p * lg / q**2)
        out: sp.Expr = partials[argindex - 1]
        return out

    def _latex_base(self, printer: Any) -> str:
        return r"\rho\left(" + str(printer._print(self.args[0])) + r"\right)"


class ComplementPower(_StableFunction):
    """`q^e` for `q = 1 - p` of one probability `p`, computed from whichever of the two is
    accurate.

    NOTE: where p is small `1 - p` rounds to a number near 1 with a relative error of u, and a
    power multiplies it by e (`(1 - 3.8e-7)^1000` loses three digits); there the kernel computes
    `exp(e log1p(-p))`, exact to a few ulps. Where p > 1/2 it raises the accurate complement
    (the other classes' sum) to e. A proof sees `q^e`; the kernel relies on `q = 1 - p`.
    """

    nargs = 3

    def raw(self) -> sp.Expr:
        _, q, e = self.args
        out: sp.Expr = q**e
        return out

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        _, q, e = self.args
        partials = (sp.S.Zero, e * q ** (e - 1), q**e * sp.log(q))
        out: sp.Expr = partials[argindex - 1]
        return out

    def _latex_base(self, printer: Any) -> str:
        # as computed: the exponential of e times the log of the complement
        _, q, e = self.args
        power = str(printer.parenthesize(e, 50))
        return r"\exp\left(" + power + r" \log " + str(printer._print(q)) + r"\right)"


class AtTop(_StableFunction):
    """`f_t`, the entry of the row `f` at the row's leading class `t` (the largest logit of the
    row `logits`), one value per row.

    A proof treats it as an arbitrary real number (`raw` is a symbol named after `f`): the
    rewrite that introduces it (`centred_mean`) holds for *any* constant, the leading class is
    only the accurate choice.
    """

    nargs = 2

    def raw(self) -> sp.Expr:
        return sp.Symbol(f"top[{sp.srepr(self.args[0])}]", real=True)

    def _latex_base(self, printer: Any) -> str:
        # the row's entry at t, as the code takes it: `(softmax(z)_t - y_t)`
        at_t = self.args[0].xreplace({ROW: sp.Symbol("t", integer=True)})
        return r"\left(" + str(printer._print(at_t)) + r"\right)"


#: The value the row max stands for in a proof: shift invariance holds for every real shift.
ANY_SHIFT = sp.Symbol("mu", real=True)
#: The same for a direction's entry at the leading class (`w = v - v_top`).
ANY_DIRECTION_SHIFT = sp.Symbol("nu", real=True)


class RowMax(_StableFunction):
    """`max_s f_s`, the largest entry of the row `f` (the shift that keeps every exponent <= 0).

    A proof treats it as an arbitrary real number (`to_raw` maps it to `ANY_SHIFT`): the
    rewrites that introduce it hold for *any* shift, the max is only the accurate choice.
    """

    nargs = 1

    def raw(self) -> sp.Expr:
        return ANY_SHIFT

    def _latex_base(self, printer: Any) -> str:
        return r"\max\left(" + _row_latex(printer, self.args[0]) + r"\right)"


def to_raw(expr: sp.Basic, keep: tuple[type, ...] = ()) -> sp.Basic:
    """Every stable function replaced by the raw formula it stands for (to check a rewrite).

    The elementwise sigmoid and softplus keep their form under `doit` (so differentiation stays
    in stable functions); every one of these functions expands here, but those in `keep`
    (their arguments still expand: the reference keeps `LogRatio` for its limits).
    """
    # Only these functions are rewritten: a general `doit` would also try to evaluate every
    # symbolic-K sum (slow, and not needed to compare raw formulas).
    out = expr.replace(
        lambda t: isinstance(t, Softmax | LogSoftmax | LogSumExp | SoftmaxComplement),
        lambda t: t.doit(),
    )
    out = out.replace(
        lambda t: (
            isinstance(
                t,
                Sigmoid
                | Softplus
                | SigmoidComplement
                | RowMax
                | LogAddExp
                | LogCosh
                | ProbabilityTimes
                | LogRatio
                | ComplementPower
                | AtTop,
            )
            and not isinstance(t, keep)
        ),
        lambda t: t.raw(),
    )
    # expm1(x) = exp(x) - 1 (SymPy's codegen function, printed as the library's expm1).
    out = out.replace(lambda t: isinstance(t, expm1), lambda t: sp.exp(t.args[0]) - 1)
    # The shifted logits z_k = o_k - max(o), with the max standing for any real shift; the
    # centred direction w_k = v_k - v_top likewise.
    return out.replace(
        lambda t: isinstance(t, sp.Indexed) and t.base in (S.z, S.w),
        lambda t: (
            S.o[t.indices[0]] - ANY_SHIFT
            if t.base == S.z
            else S.v[t.indices[0]] - ANY_DIRECTION_SHIFT
        ),
    )


def _one_plus_exp(e: sp.Basic) -> sp.Expr | None:
    """For `1 + exp(z)` return z, else None."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args:
        (other,) = [t for t in e.args if t != 1]
        if isinstance(other, sp.exp):
            z: sp.Expr = other.args[0]
            return z
    return None


def recognise_binary(expr: sp.Expr) -> sp.Expr:
    """Rewrite the logistic shapes into `Sigmoid` and `Softplus` (value unchanged).

    `1/(1 + exp(-z))` is `Sigmoid(z)`, `exp(z)/(1 + exp(z))` is `Sigmoid(z)`,
    `log(1 + exp(z))` is `Softplus(z)`, `log(Sigmoid(z))` is `-Softplus(-z)` and
    `log(1 - Sigmoid(z))` is `-Softplus(z)`. Applied before differentiation, so the derivative
    comes out in stable functions too (`Softplus' = Sigmoid`, `Sigmoid' = Sigmoid (1 - Sigmoid)`).
    """
    e = expr.replace(
        lambda t: (
            isinstance(t, sp.Mul)
            and any(isinstance(f, sp.exp) for f in t.args)
            and any(
                isinstance(f, sp.Pow) and f.exp == -1 and _one_plus_exp(f.base) is not None
                for f in t.args
            )
        ),
        _exp_over_one_plus_exp,
    )
    e = e.replace(
        lambda t: isinstance(t, sp.Pow) and t.exp == -1 and _one_plus_exp(t.base) is not None,
        lambda t: Sigmoid(-sp.sympify(_one_plus_exp(t.base))),
    )
    e = e.replace(
        lambda t: isinstance(t, sp.log) and _one_plus_exp(t.args[0]) is not None,
        lambda t: Softplus(_one_plus_exp(t.args[0])),
    )
    e = e.replace(
        lambda t: isinstance(t, sp.log) and isinstance(t.args[0], Sigmoid),
        lambda t: -Softplus(-t.args[0].args[0]),
    )
    e = e.replace(
        lambda t: isinstance(t, sp.log) and _one_minus_sigmoid(t.args[0]) is not None,
        lambda t: -Softplus(_one_minus_sigmoid(t.args[0])),
    )
    return e


def _one_minus_sigmoid(e: sp.Basic) -> sp.Expr | None:
    """For `1 - Sigmoid(z)` return z, else None."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args:
        (other,) = [t for t in e.args if t != 1]
        if isinstance(other, sp.Mul) and other.args[0] == -1 and isinstance(other.args[1], Sigmoid):
            z: sp.Expr = other.args[1].args[0]
            return z
    return None


def _exp_over_one_plus_exp(t: sp.Mul) -> sp.Expr:
    """`exp(z) / (1 + exp(z)) = Sigmoid(z)` when the exponents match."""
    exps = [f for f in t.args if isinstance(f, sp.exp)]
    dens = [
        f
        for f in t.args
        if isinstance(f, sp.Pow) and f.exp == -1 and _one_plus_exp(f.base) is not None
    ]
    for ex in exps:
        for den in dens:
            if sp.expand(ex.args[0] - _one_plus_exp(den.base)) == 0:
                rest = [f for f in t.args if f is not ex and f is not den]
                return sp.Mul(*rest) * Sigmoid(ex.args[0])
    return t


def _is_class_sum(e: sp.Basic) -> bool:
    return (
        isinstance(e, sp.Sum)
        and len(e.limits) == 1
        and e.limits[0][0] == CLASS_DUMMY
        and e.limits[0][1:] == (1, S.K)
    )


def _exp_sum_row(e: sp.Basic) -> sp.Expr | None:
    """For `sum_s exp(f_s)` return the row expression `f` (in `_r`), else None."""
    if _is_class_sum(e) and isinstance(e.function, sp.exp):
        arg: sp.Expr = e.function.args[0].xreplace({CLASS_DUMMY: ROW})
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
    e = canonical_sums(expr)
    e = e.replace(
        lambda t: isinstance(t, sp.log) and _exp_sum_row(t.args[0]) is not None,
        lambda t: LogSumExp(_exp_sum_row(t.args[0])),
    )
    e = recognise_binary(e)
    e = e.replace(lambda t: _is_class_sum(t) and t.has(sp.exp), _normalise_sum)
    # NOTE: powers of sums stay as written (multinomial=False): `(o - y)^2` multiplied out
    # cancels every digit when o and y are both large.
    e = sp.expand_log(sp.expand(e, multinomial=False), force=True)
    e = sp.powsimp(sp.expand(e, multinomial=False), combine="exp", deep=True)
    e = e.replace(lambda t: isinstance(t, sp.exp), _as_softmax)
    e = e.replace(
        lambda t: _is_class_sum(t) and CLASS_DUMMY not in t.function.free_symbols,
        lambda t: S.K * t.function,
    )
    if _raw_exps(e):
        e = _eliminate_normaliser(e)
    out: sp.Expr = sp.factor_terms(e)
    return out


def _raw_exps(e: sp.Basic) -> bool:
    """Whether an `exp` is left outside the stable functions."""
    return bool(e.atoms(sp.exp))


def _eliminate_normaliser(e: sp.Expr) -> sp.Expr:
    """Write every exponential of a logit as `softmax * Z` (`Z = exp(LSE)`) and cancel Z.

    What remains after the shape rules is a ratio of exponentials such as
    `exp(o_j) / (exp(o_j) - sum_k exp(o_k))` (the derivative of `(1 - p_j)^gamma`). Since
    `exp(f_i) = softmax(f)_i * exp(LSE(f))` exactly, substituting and cancelling the common power
    of `Z` leaves the same value in bounded quantities (`p_j / (p_j - 1)`). If Z does not cancel
    (the expression really grows like an exponential), the input is returned unchanged and the
    module reports that no stable form was found.
    """
    rows = sorted({lse.args[0] for lse in e.atoms(LogSumExp)}, key=str)
    if len(rows) != 1:
        return e
    (row,) = rows
    Z = sp.Dummy("Z", positive=True)
    indices = (S.j, S.k, S.c, CLASS_DUMMY)

    def as_softmax_power(t: sp.exp) -> sp.Expr:
        out: sp.Expr = sp.S.One
        for term in sp.Add.make_args(sp.expand(t.args[0])):
            coeff, rest = term.as_coeff_Mul()
            if rest == LogSumExp(row):
                out *= Z**coeff
                continue
            for idx in indices:
                if coeff.is_Rational and sp.expand(rest - row.xreplace({ROW: idx})) == 0:
                    out *= (Softmax(row, idx) * Z) ** coeff
                    break
            else:
                out *= sp.exp(term)
        return out

    substituted = e.replace(lambda t: isinstance(t, sp.exp), as_softmax_power)
    cancelled = sp.cancel(sp.together(substituted))
    if cancelled.has(Z) or _raw_exps(cancelled):
        return e
    # `(1 - p)^g / (p - 1)` becomes `-(1 - p)^(g - 1)`: no 0/0 where p rounds to 1.
    out: sp.Expr = sp.powsimp(sp.expand(cancelled), deep=True)
    return out


def _normalise_sum(s: sp.Sum) -> sp.Expr:
    """`sum_s exp(h_s) g_s = exp(LSE(h)) sum_s softmax(h)_s g_s`: an identity that puts each
    exponential inside a class sum next to the normaliser that keeps it <= 1."""
    body = sp.powsimp(s.function, combine="exp")
    exps = [f for f in sp.Mul.make_args(body) if isinstance(f, sp.exp) and f.has(CLASS_DUMMY)]
    if len(exps) != 1:
        return s
    (ex,) = exps
    # Only the part of the exponent that varies with s is normalised; exp(o_j) and the like are
    # constant along the sum and stay outside it.
    terms = sp.Add.make_args(sp.expand(ex.args[0]))
    varying = sp.Add(*[t for t in terms if t.has(CLASS_DUMMY)])
    constant = sp.Add(*[t for t in terms if not t.has(CLASS_DUMMY)])
    # exp(c g_s) with a rational c (e.g. exp(2 o_s)) is normalised by c LSE(g), which becomes
    # softmax(g)_s^c: one row function per row, not a new log-sum-exp of c g.
    c, g = varying.as_coeff_Mul()
    if not (c.is_Rational and c > 0):
        c, g = sp.S.One, varying
    lse = LogSumExp(g.xreplace({CLASS_DUMMY: ROW}))
    rest = sp.Mul(*[f for f in sp.Mul.make_args(body) if f is not ex]) * sp.exp(constant)
    if rest == 1 and c == 1:  # sum_s exp(g_s) is exp(LSE(g)) itself
        return sp.exp(lse)
    inner = rest * sp.exp(c * (g - lse))
    outside = sp.exp(c * lse)
    return outside * sp.Sum(inner, *s.limits)


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
            if sp.expand(rest - sum(f.xreplace({ROW: idx}) for idx in combo)) == 0:
                return sp.Mul(*[Softmax(f, idx) for idx in combo])
    return t
