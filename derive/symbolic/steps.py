"""`Step` and `Derivation`: equations with reasons, and the checks that prove them.

A step is a claim `lhs <relation> rhs` plus the words a student would write next to it. It is not
trusted until its checks have run: `Derivation.check()` runs every check of every step, in order,
and stops at the first failure with the step's name and both sides (`StepCheckError`). Only a
`CheckedDerivation` reaches the renderers and the code generator, so nothing unproved is exported.

Three kinds of check, strongest first:
- `GeneralK`: a proof for a *symbolic* number of classes K, by a named chain of SymPy rewrites
  that must end in exactly 0 (SymPy's plain `simplify` fails on Sum/KroneckerDelta expressions,
  so each step says which rewrites prove it);
- `ConcreteK`: a proof for each concrete K (2..8 by default) with explicit symbols;
- `Numeric`: agreement at random points to many digits, for what symbolic proof cannot reach;
  the notes say so when a step's strongest check is this one.
`Elementwise` proves a matrix identity entry by entry for concrete small shapes.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import sympy as sp

from derive import notation as S
from derive.errors import StepCheckError
from derive.symbolic.functions import to_raw
from derive.symbolic.rewrites import (
    Transform,
    run_transforms,
)

Relation = Literal["=", ">", ">="]

#: The concrete class counts a step is proved for by default (and every catalogue loss asks for).
CONCRETE_KS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)


@dataclass(frozen=True)
class Prose:
    """One piece of text in every language the notes are written in."""

    en: str
    zh: str

    def __call__(self, lang: str) -> str:
        text: str = getattr(self, lang)
        return text


# --------------------------------------------------------------------------- zero tests


def is_zero(expr: sp.Basic) -> bool:
    """Exact zero test, cheapest rewrite first; `False` means "not proved", never "proved wrong".

    Exponentials become opaque positive symbols (one per term of their exponent), which makes
    most expressions here rational functions that `cancel` decides quickly; that is sound, since
    a rational identity in the exp's holds for any values. Then `expand`, then `simplify`.
    """
    if expr == 0:
        return True
    expr = to_raw(expr)
    if expr == 0:
        return True
    if expr.has(sp.log) and expr.has(sp.exp):
        expr = _logs_out_of_exponents(expr)
    atoms = lambda e: sp.cancel(sp.together(_exponentials_as_symbols(e)))  # noqa: E731
    whole = lambda e: sp.cancel(sp.together(_whole_exponentials(e)))  # noqa: E731
    # A polynomial (no exponentials) is decided fastest by `expand` alone; with exponentials,
    # one opaque symbol per distinct exponential is tried first (cheap where the exponents are
    # long sums, as in the explicit matrix checks), then one per term of each exponent.
    if not expr.has(sp.exp):
        first: tuple[Transform, ...] = (sp.expand, atoms)
    elif _exponent_terms(expr) > 12:
        first = (whole, atoms)
    else:
        first = (atoms, sp.expand)
    rewrites = (*first, sp.simplify)
    for number, rewrite in enumerate(rewrites):
        if number == 1 and provably_nonzero(expr):
            # The cheapest rewrite did not reach 0 and a value says it never will: a wrong
            # step is refused here, not after `simplify` has tried for minutes.
            return False
        if rewrite is sp.simplify and sp.count_ops(expr) > SIMPLIFY_LIMIT:
            break  # NOTE: simplify on a huge expression can run for hours; report unproved
        try:
            if rewrite(expr) == 0:
                return True
        except (StopIteration, RecursionError):  # NOTE: SymPy's simplify can raise on sums.
            continue
    return False


def _logs_out_of_exponents(expr: sp.Basic) -> sp.Basic:
    """`exp(c log X + d)` as `X^c exp(d)`: sound where X > 0, as every log's argument here is
    (a probability, a sum of exponentials); `p^q` computed as `exp(q log p)` meets `p^q`."""

    def split(t: sp.exp) -> sp.Expr:
        out: sp.Expr = sp.S.One
        for term in sp.Add.make_args(sp.expand(t.args[0])):
            logs = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.log)]
            out *= logs[0].args[0] ** (term / logs[0]) if len(logs) == 1 else sp.exp(term)
        return out

    return expr.replace(lambda t: isinstance(t, sp.exp) and t.args[0].has(sp.log), split)


def provably_nonzero(expr: sp.Basic, digits: int = 60) -> bool:
    """Whether `expr` is shown nonzero by its value at one exact rational point: a wrong step
    is refused at once instead of after every rewrite (and `simplify`) has failed to reach 0.

    Sound for a "no": the value is computed to `digits` significant digits and must be real and
    far above what rounding at that precision could leave of an exact 0 (relative to the size
    of the terms). A symbolic size or class index is first given one concrete value (a claim
    false for K = 4 is false for symbolic K). Inconclusive (False) where the point leaves the
    domain (a complex value), an atom has no value (another integer symbol, an unevaluated
    derivative), or evaluation fails.
    """
    rng = random.Random(sp.srepr(expr)[:500])
    integers = {a for a in expr.free_symbols if a.is_integer}
    try:
        if integers:
            # Symbolic sizes and class indices: one concrete instance (K = 4, the indices
            # 1..4), its sums written out. A claim false there is false for symbolic K.
            if not integers <= set(INSTANCE_SIZES) | set(INSTANCE_INDICES):
                return False
            # Distinct indices take distinct values (a swapped j and k must not coincide).
            distinct = rng.sample(range(1, INSTANCE_SIZES[S.K] + 1), len(INSTANCE_INDICES))
            table = {
                a: INSTANCE_SIZES[a] if a in INSTANCE_SIZES else distinct[INSTANCE_INDICES.index(a)]
                for a in sorted(integers, key=str)
            }
            expr = expr.xreplace(table).doit()
        atoms = expr.free_symbols | expr.atoms(sp.Indexed)
        if any(a.is_integer for a in atoms if isinstance(a, sp.Symbol)):
            return False
        values = {a: _random_value(a, rng) for a in sorted(atoms, key=sp.srepr)}
        at = expr.xreplace(values)
        if not at.is_number or at.has(sp.Sum, sp.Derivative, sp.Integral, sp.Piecewise):
            return False
        terms = sp.Add.make_args(at)
        val = sp.N(at, digits)
        size = max((abs(sp.N(t, 15)) for t in terms), default=sp.S.One)
    except (
        TypeError,
        ValueError,
        ZeroDivisionError,
        ArithmeticError,
        RecursionError,
        AttributeError,  # NOTE: a size put into a matrix expression (tr(W^T W)) breaks its shape
    ):
        return False
    if not (val.is_number and size.is_number) or not val.is_real or not val.is_finite:
        return False
    return bool(abs(val) > sp.Float(10) ** (20 - digits) * (1 + size))


#: The concrete instance `provably_nonzero` evaluates a symbolic-size claim at.
INSTANCE_SIZES: dict[sp.Basic, int] = {S.K: 4, S.n: 3, S.d: 2}
INSTANCE_INDICES = (S.j, S.k, S.c, S.m)

#: Operation count above which the last-resort `simplify` is not attempted.
SIMPLIFY_LIMIT = 400


def _exponent_terms(expr: sp.Basic) -> int:
    """How many distinct terms the exponents of `expr` have (a measure of their length)."""
    return len({t for e in expr.atoms(sp.exp) for t in sp.Add.make_args(sp.expand(e.args[0]))})


def _whole_exponentials(expr: sp.Basic) -> sp.Basic:
    """Each distinct `exp(t)` (t expanded) as one positive symbol: sound, as a rational
    identity in those symbols holds whatever their values."""
    table: dict[sp.Basic, sp.Symbol] = {}

    def atom(e: sp.exp) -> sp.Expr:
        # exp(-2t) = E_t^-2: one symbol per exponent up to a rational factor; and
        # exp(q t) = E_t^q for a sum t with a common factor q (a parameter times a logit).
        t = sp.expand(e.args[0])
        sign = -1 if t.could_extract_minus_sign() else 1
        scale, t = _common_factor(sp.expand(sign * t))
        content, primitive = t.as_content_primitive()
        out: sp.Expr = table.setdefault(primitive, sp.Dummy(positive=True)) ** (
            sign * scale * content
        )
        return out

    out = expr.replace(lambda e: isinstance(e, sp.exp), atom)
    # (a / b)^q = a^q b^-q and b^(q + 1) = b^q b for positive a, b (the symbols and their sums
    # are): one generator per base for `cancel`, whichever way a power was written.
    return sp.expand_power_exp(sp.expand_power_base(out)) if out != expr else out


def _common_factor(t: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """`t = scale * rest` with `scale` the non-numeric factor every term of the sum `t` shares
    (`q o_1 + q o_2` gives `(q, o_1 + o_2)`); `(1, t)` where there is none."""
    if not isinstance(t, sp.Add):
        return sp.S.One, t
    factored = sp.factor_terms(t)
    sums = [f for f in sp.Mul.make_args(factored) if isinstance(f, sp.Add)]
    if len(sums) != 1:
        return sp.S.One, t
    scale = sp.Mul(*[f for f in sp.Mul.make_args(factored) if f is not sums[0]])
    coeff, symbolic = scale.as_coeff_Mul()
    if symbolic == 1 or not symbolic.free_symbols:
        return sp.S.One, t
    return symbolic, sp.expand(coeff * sums[0])


def _exponentials_as_symbols(expr: sp.Basic) -> sp.Basic:
    table: dict[sp.Basic, sp.Symbol] = {}
    # Every term of every exponent (rational factor dropped): `exp(q o_1)` is `E_{o_1}^q` where
    # `o_1` is such a term elsewhere (exp(q o) = exp(o)^q: a positive base, a real exponent).
    terms = {
        term.as_coeff_Mul()[1]
        for e in expr.atoms(sp.exp)
        for term in sp.Add.make_args(sp.expand(e.args[0]))
    }

    def symbol(term: sp.Expr) -> sp.Expr:
        base = [f for f in sorted(sp.Mul.make_args(term), key=str) if f in terms and f != term]
        if isinstance(term, sp.Mul) and base:
            return table.setdefault(base[0], sp.Dummy(positive=True)) ** (term / base[0])
        return table.setdefault(term, sp.Dummy(positive=True))

    def atom(e: sp.exp) -> sp.Expr:
        # exp(2a - b) = E_a^2 / E_b: one symbol per distinct term of the exponent, so that
        # every product and power of exponentials is a monomial in those symbols.
        out: sp.Expr = sp.S.One
        for term in sp.Add.make_args(sp.expand(e.args[0])):
            coeff, rest = term.as_coeff_Mul()
            if coeff.is_Rational and rest != 1:
                out *= symbol(rest) ** coeff
            else:
                out *= symbol(term)
        return out

    out = expr.replace(lambda e: isinstance(e, sp.exp), atom)
    # A power with a symbolic exponent is opaque to `cancel`: bring its base to one normal form
    # (a reduced fraction) so that equal powers written differently become the same atom.
    out = out.replace(
        lambda e: isinstance(e, sp.Pow) and not e.exp.is_Integer,
        lambda e: sp.Pow(sp.factor(sp.cancel(sp.together(e.base))), e.exp),
    )
    # b^(g - 1) = b^g / b: one generator per base for `cancel`, whatever the exponent's offset.
    return sp.expand_power_exp(sp.expand_power_base(out))


# --------------------------------------------------------------------------- concrete instances


def instantiate(expr: sp.Basic, K: int, targets_simplex: bool) -> sp.Basic:
    """Substitute a concrete K, expand every Sum and Derivative into explicit terms.

    With `targets_simplex`, `y_K = 1 - sum_{j<K} y_j`, so that identities that need `sum y = 1`
    become plain algebraic identities.
    """
    # Stable functions first become their raw formulas (in symbolic K), then K is substituted.
    out = to_raw(expr).subs(S.K, K).doit()
    if targets_simplex:
        out = out.subs(S.y[K], 1 - sum(S.y[t] for t in range(1, K)))
    return out


def free_class_indices(expr: sp.Basic) -> list[sp.Symbol]:
    """The class indices (j, k) that appear free in an expression, in a fixed order."""
    return [idx for idx in (S.j, S.k, S.c) if idx in expr.free_symbols]


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Outcome:
    """What a check established, in words for the notes."""

    strength: Literal["proof", "replay", "numeric"]
    text: Prose


class Check(Protocol):
    @property
    def relations(self) -> frozenset[str]:
        """The relations this kind of check can establish; a step claiming another is refused."""
        ...

    def run(self, step: Step, definitions: Definitions | None = None) -> Outcome: ...


EQUALITY: frozenset[str] = frozenset({"="})


def _require_relation(check: Check, step: Step) -> None:
    if step.relation not in check.relations:
        raise _fail(
            step,
            f"{type(check).__name__} proves {'/'.join(sorted(check.relations))}, "
            f"not the claimed relation {step.relation!r}",
        )


def _fail(step: Step, detail: str) -> StepCheckError:
    return StepCheckError(step.name, sp.sstr(step.lhs), sp.sstr(step.rhs), detail)


@dataclass(frozen=True)
class GeneralK:
    """Proof for symbolic K: the named rewrites turn `lhs - rhs` into exactly 0."""

    transforms: tuple[Transform, ...]
    #: The size the proof is symbolic in (K classes; n samples for the likelihood).
    size: str = "K"
    #: True where the right-hand side was *produced* by these same rewrites: the reduction to 0
    #: then only replays them, so it is not an independent proof. The step must also carry an
    #: independent check (`Derivation.check` refuses it otherwise), and the label says so.
    replays: bool = False
    relations: frozenset[str] = EQUALITY

    def run(self, step: Step, definitions: Definitions | None = None) -> Outcome:
        _require_relation(self, step)
        diff = run_transforms(step.lhs - step.rhs, self.transforms)
        if not is_zero(diff):
            raise _fail(step, f"symbolic {self.size}: lhs - rhs reduced to {sp.sstr(diff)}, not 0")
        if self.replays:
            return Outcome(
                "replay",
                Prose(
                    en=f"reduced to 0 for symbolic ${self.size}$ by the rewrites that produced "
                    "the right-hand side (a replay, not an independent proof)",
                    zh=f"对符号 ${self.size}$ 用生成右边的同一组改写化为 0（复现，非独立证明）",
                ),
            )
        return Outcome(
            "proof",
            Prose(
                en=f"proved for symbolic ${self.size}$", zh=f"对任意（符号）${self.size}$ 严格证明"
            ),
        )


@dataclass(frozen=True)
class ConcreteK:
    """Proof for each concrete K with explicit symbols, every free class index enumerated."""

    Ks: tuple[int, ...] = CONCRETE_KS
    targets_simplex: bool = False
    prepare: tuple[Transform, ...] = ()
    relations: frozenset[str] = EQUALITY

    def run(self, step: Step, definitions: Definitions | None = None) -> Outcome:
        _require_relation(self, step)
        diff0 = step.lhs - step.rhs
        idx = free_class_indices(diff0)
        for K in self.Ks:
            for values in _index_values(len(idx), K):
                at_index = diff0.subs(dict(zip(idx, values, strict=True)))
                e = instantiate(at_index, K, self.targets_simplex)
                for t in self.prepare:
                    e = t(e)
                if not is_zero(e):
                    at = ", ".join(f"{s}={val}" for s, val in zip(idx, values, strict=True))
                    raise _fail(step, f"K={K} {at}: lhs - rhs = {_short(e)}, not 0")
        few = len(self.Ks) <= 3
        ks = ", ".join(map(str, self.Ks)) if few else f"{self.Ks[0]}, \\dots, {self.Ks[-1]}"
        if not idx:
            return Outcome(
                "proof", Prose(en=f"proved for $K = {ks}$", zh=f"对 $K = {ks}$ 逐一严格证明")
            )
        small = [K for K in self.Ks if K <= ALL_INDICES_UP_TO]
        every = f"every value of the free class indices for $K \\le {max(small)}$" if small else ""
        rest = "at 1, 2 and $K$" + (f" for $K > {max(small)}$" if small else "")
        if small and max(small) >= self.Ks[-1]:
            en, zh = every, "自由类别下标取遍所有值"
        else:
            en = f"{every}, {rest}" if small else f"free class indices {rest}"
            zh = "自由类别下标：" + (
                f"$K \\le {max(small)}$ 时取遍所有值，其余取 1、2 和 $K$"
                if small
                else "取 1、2 和 $K$"
            )
        return Outcome(
            "proof",
            Prose(en=f"proved for $K = {ks}$ ({en})", zh=f"对 $K = {ks}$ 逐一严格证明（{zh}）"),
        )


def _short(expr: sp.Basic, limit: int = 300) -> str:
    text = str(sp.sstr(expr))
    return text if len(text) <= limit else text[:limit] + " ..."


#: Up to this K a concrete check tries every value of every free class index.
ALL_INDICES_UP_TO = 4


def _index_values(count: int, K: int) -> Iterable[tuple[int, ...]]:
    """Every index value for small K; beyond, 1, 2 and K: every pattern of equal/distinct
    indices, and the last class (special where `y_K = 1 - sum_{j<K} y_j` was substituted)."""
    values = range(1, K + 1) if K <= ALL_INDICES_UP_TO else sorted({1, 2, K})
    return itertools.product(values, repeat=count)


@dataclass(frozen=True)
class Numeric:
    """Agreement at random points to `digits` digits: evidence, not proof, and labelled so."""

    points: int = 20
    digits: int = 50
    K: int = 5
    targets_simplex: bool = False
    seed: int = 0
    relations: frozenset[str] = EQUALITY

    def run(self, step: Step, definitions: Definitions | None = None) -> Outcome:
        _require_relation(self, step)
        rng = random.Random(f"{self.seed}:{step.name}")
        diff0 = step.lhs - step.rhs
        idx = free_class_indices(diff0)
        tol = sp.Float(10) ** (-(self.digits - 10))
        for _ in range(self.points):
            at_index = diff0.subs({s: rng.randint(1, self.K) for s in idx})
            e = instantiate(at_index, self.K, self.targets_simplex)
            values = {sym: _random_value(sym, rng) for sym in e.free_symbols}
            values.update(
                {ind: _random_value(ind, rng) for ind in e.atoms(sp.Indexed) if ind not in values}
            )
            val = sp.N(e.xreplace(values), self.digits)
            if not val.is_number or abs(val) > tol:
                raise _fail(step, f"numeric: lhs - rhs = {val} at {values}")
        return Outcome(
            "numeric",
            Prose(
                en=f"checked numerically at {self.points} random points to {self.digits} digits "
                f"($K = {self.K}$), not a proof",
                zh=f"在 {self.points} 个随机点上以 {self.digits} 位精度数值检验（$K = {self.K}$），"
                "非严格证明",
            ),
        )


def _random_value(sym: sp.Basic, rng: random.Random) -> sp.Expr:
    """A random exact rational in a range that suits the symbol's assumptions."""
    lo, hi = (1, 3) if getattr(sym, "is_positive", False) else (-3, 3)
    return sp.Rational(rng.randint(lo * 1000, hi * 1000), 1000) + sp.Rational(1, 7919)


@dataclass(frozen=True)
class FirstOf:
    """The first of several checks that succeeds (the notes name the one that did).

    For rewrites whose symbolic-K proof SymPy may not find (large user losses), a concrete-K
    proof is the fallback; if every alternative fails, the last failure stops the pipeline.
    """

    alternatives: tuple[Check, ...]

    @property
    def relations(self) -> frozenset[str]:
        return frozenset().union(*(a.relations for a in self.alternatives))

    def run(self, step: Step, definitions: Definitions | None = None) -> Outcome:
        error: StepCheckError | None = None
        for alternative in self.alternatives:
            try:
                return alternative.run(step, definitions)
            except StepCheckError as exc:
                error = exc
        assert error is not None
        raise error


@dataclass(frozen=True)
class Positive:
    """`lhs > rhs` (or `>=`) by SymPy's assumption system applied to `lhs - rhs` (exp is
    positive, sums and quotients of positives are positive). Reads the claimed relation and
    both sides: an equality, or a right-hand side the assumptions do not bound, is not proved."""

    relations: frozenset[str] = frozenset({">", ">="})

    def run(self, step: Step, definitions: Definitions | None = None) -> Outcome:
        _require_relation(self, step)
        diff = step.lhs - step.rhs
        proved = diff.is_positive if step.relation == ">" else diff.is_nonnegative
        if proved is not True:
            raise _fail(
                step, f"could not establish lhs - rhs {step.relation} 0 from the assumptions"
            )
        return Outcome(
            "proof",
            Prose(
                en=f"proved from the assumptions (SymPy: lhs $-$ rhs ${step.relation}$ 0)",
                zh=f"由 SymPy 的假设系统证明（左边 $-$ 右边 ${step.relation}$ 0）",
            ),
        )


#: What an `Elementwise` check substitutes: every matrix (and display) symbol of the step,
#: mapped to an explicit matrix (or scalar) for sizes n, d, K, given the derivation's definitions;
#: a value may be a thunk, evaluated only when the step uses that symbol.
Binding = Callable[[int, int, int, "Definitions"], dict[sp.Basic, Any]]


@dataclass(frozen=True)
class Elementwise:
    """A matrix identity proved entry by entry for concrete small shapes, *on the displayed
    formula*: `bind(n, d, K, definitions)` gives an explicit matrix for every matrix symbol
    of the step (X, W, b, Y, Yhat, G, 1, and the display names of derivatives), and both sides
    of the step are evaluated with them. A symbol the binding does not cover is a failure, so a
    displayed term can never go unchecked. Symbolic MatrixSymbol calculus is not used (its
    derivatives of `[0, 0]` elements can silently be 0); derivatives are taken of explicit
    entries.
    """

    bind: Binding
    shapes: tuple[tuple[int, int, int], ...] = ((2, 2, 2), (2, 3, 3))
    #: What the bound symbols mean, for the label (e.g. "$\\hat{Y}$ the softmax of $O$").
    meaning: Prose = field(default_factory=lambda: Prose("", ""))
    #: Rewrites applied to each entry's difference before the zero test (as for `ConcreteK`).
    prepare: tuple[Transform, ...] = ()
    relations: frozenset[str] = EQUALITY

    def run(self, step: Step, definitions: Definitions | None = None) -> Outcome:
        _require_relation(self, step)
        defs = definitions or Definitions()
        for n, d, K in self.shapes:
            binding = {
                key: (value() if callable(value) else value)
                for key, value in self.bind(n, d, K, defs).items()
                if step.lhs.has(key) or step.rhs.has(key)
            }
            try:
                lhs = explicit(step.lhs, binding, n, d, K)
                rhs = explicit(step.rhs, binding, n, d, K)
            except (sp.ShapeError, ValueError, TypeError) as exc:
                raise _fail(step, f"n={n}, d={d}, K={K}: cannot evaluate ({exc})") from None
            for side, value in (("lhs", lhs), ("rhs", rhs)):
                left = _unbound(value)
                if left:
                    raise _fail(step, f"n={n}, d={d}, K={K}: {side} has unbound {left}")
            if isinstance(lhs, sp.MatrixBase) != isinstance(rhs, sp.MatrixBase) or (
                isinstance(lhs, sp.MatrixBase) and lhs.shape != rhs.shape
            ):
                shapes = [getattr(x, "shape", "scalar") for x in (lhs, rhs)]
                raise _fail(step, f"n={n}, d={d}, K={K}: shapes {shapes[0]} != {shapes[1]}")
            pairs = (
                [((r, c), lhs[r, c] - rhs[r, c]) for r in range(lhs.rows) for c in range(lhs.cols)]
                if isinstance(lhs, sp.MatrixBase)
                else [((0, 0), lhs - rhs)]
            )
            for (r, col), diff in pairs:
                for t in self.prepare:
                    diff = t(diff)
                if not is_zero(diff):
                    raise _fail(step, f"n={n}, d={d}, K={K}: entry ({r}, {col}) differs")
        sizes = "; ".join(f"$n={n}, d={d}, K={K}$" for n, d, K in self.shapes)
        en = f"both displayed sides proved equal entry by entry on explicit matrices, {sizes}"
        zh = f"两边按显示的公式在显式矩阵上逐元素严格证明（{sizes}）"
        if self.meaning.en:
            en, zh = f"{en}, with {self.meaning.en}", f"{zh}，其中 {self.meaning.zh}"
        return Outcome("proof", Prose(en=en, zh=zh))


def explicit(expr: sp.Basic, binding: dict[sp.Basic, sp.Basic], n: int, d: int, K: int) -> sp.Basic:
    """`expr` with its bound symbols replaced and sizes substituted, evaluated to an explicit
    matrix (or a scalar for a trace)."""
    sizes = {S.n: n, S.d: d, S.K: K}
    table = {
        key: (sp.ImmutableMatrix(val) if isinstance(val, sp.MatrixBase) else val)
        for key, val in binding.items()
    }
    out = expr.xreplace(table).xreplace(sizes)
    if isinstance(out, sp.MatrixBase):
        return sp.Matrix(out)
    if isinstance(out, sp.MatrixExpr):
        return sp.Matrix(out.doit().as_explicit())
    return out.doit()


def _unbound(value: sp.Basic) -> list[str]:
    """Matrix symbols (or display symbols) that a binding left in an evaluated side."""
    atoms = value.atoms(sp.MatrixSymbol) | {s for s in value.atoms(sp.Symbol) if "\\" in s.name}
    return sorted(map(str, atoms))


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Step:
    """One line of the derivation: `lhs relation rhs`, why it holds, and how to check it."""

    name: str
    title: Prose
    reason: Prose
    lhs: sp.Basic
    rhs: sp.Basic
    checks: tuple[Check, ...] = ()
    relation: Relation = "="
    definition: bool = False


@dataclass(frozen=True)
class Definitions:
    """The definitions met so far, in order: what a defined name (`\\ell`, `yhat_j`) stands for.

    Checks see every step with its defined names unfolded, so a definition is the object later
    steps are built from: change it and what they prove changes with it (or fails).
    A definition's lhs is a symbol, or `base[index]` (which defines `base[t]` for every t).
    """

    table: tuple[tuple[sp.Basic, sp.Basic], ...] = ()

    def define(self, lhs: sp.Basic, rhs: sp.Basic) -> Definitions:
        if not (
            isinstance(lhs, sp.Symbol)
            or (isinstance(lhs, sp.Indexed) and len(lhs.indices) == 1 and lhs.indices[0].is_Symbol)
        ):
            raise ValueError(f"a definition names a symbol or base[index], not {lhs}")
        return Definitions((*self.table, (lhs, self.unfold(rhs))))

    def unfold(self, expr: sp.Basic) -> sp.Basic:
        for lhs, rhs in self.table:
            if isinstance(lhs, sp.Symbol):
                expr = expr.xreplace({lhs: rhs})
            else:
                expr = _unfold_indexed(expr, lhs, rhs)
        return expr


def _unfold_indexed(expr: sp.Basic, lhs: sp.Indexed, rhs: sp.Basic) -> sp.Basic:
    (index,) = lhs.indices
    out: sp.Basic = expr.replace(
        lambda e: isinstance(e, sp.Indexed) and e.base == lhs.base,
        lambda e: rhs.xreplace({index: e.indices[0]}),
    )
    return out


@dataclass(frozen=True)
class CheckedStep:
    step: Step
    outcomes: tuple[Outcome, ...]

    @property
    def proved(self) -> bool:
        """Whether at least one check is a proof (rather than numeric evidence or a replay)."""
        return self.step.definition or any(o.strength == "proof" for o in self.outcomes)


@dataclass(frozen=True)
class Question:
    """A question the notes answer on their first page, and the steps whose proofs answer it.

    `shows` names the step whose equation the answer displays (printed from that step).
    """

    question: Prose
    answer: Prose
    steps: tuple[str, ...]
    shows: str


@dataclass(frozen=True)
class Result:
    """A final result for the closing summary: the right side of step `step`, under `lhs`."""

    label: Prose
    lhs: sp.Basic
    step: str


@dataclass(frozen=True)
class Derivation:
    """An ordered list of steps, plus the final forms the code generator prints.

    Every final form names the step it comes from (`final_sources`): `check()` refuses a form
    that is not that step's right-hand side (or proved equal to it), so what the code prints is
    what a step proved.
    """

    name: str
    title: Prose
    intro: Prose
    steps: tuple[Step, ...]
    final_forms: dict[str, sp.Basic] = field(default_factory=dict)
    #: The `LossModel` the derivation is about (what the code generator needs besides forms).
    model: Any = None
    #: What the notes answer first, and the results they close with (by step name).
    questions: tuple[Question, ...] = ()
    results: tuple[Result, ...] = ()

    def __post_init__(self) -> None:
        names = {s.name for s in self.steps}
        cited = [n for q in self.questions for n in (*q.steps, q.shows)]
        missing = sorted({n for n in (*cited, *(r.step for r in self.results)) if n not in names})
        if missing:
            raise ValueError(f"derivation {self.name!r}: no step named {', '.join(missing)}")

    #: For each final form, the name of the step whose right-hand side it is.
    final_sources: dict[str, str] = field(default_factory=dict)
    #: Steps whose rhs the code prints in parts: step name -> the rhs as an expression in
    #: placeholder symbols named after the final forms (e.g. `(1 - delta) A + delta B`).
    #: `check()` confirms the rhs is exactly that composition of the printed forms.
    final_compositions: dict[str, sp.Basic] = field(default_factory=dict)

    def definitions(self) -> list[Definitions]:
        """The definitions in force at each step (those of the steps before it, and its own)."""
        defs, out = Definitions(), []
        for step in self.steps:
            if step.definition:
                try:
                    defs = defs.define(step.lhs, step.rhs)
                except ValueError as exc:
                    raise _fail(step, str(exc)) from None
            out.append(defs)
        return out

    def check(self, workers: int = 1, only: Collection[str] | None = None) -> CheckedDerivation:
        """Run every check; the first failing step, in order, stops everything.

        Before any check runs: a claim with no check, a relation none of its checks can prove,
        a step whose only proof replays the rewrites that made it, a definition of something
        that cannot be defined, and a final form that is not its source step's rhs are refused.
        With `workers > 1` the steps are checked in forked processes (they are independent);
        the steps reach the workers through the fork, only outcomes and errors come back.
        `only` checks just the named steps (and the final forms they are the source of): a
        partial check, for tests that corrupt one step at a time; its result is not for export.
        """
        for step in self.steps:
            _admissible(step)
        self.definitions()
        indices = [i for i, step in enumerate(self.steps) if only is None or step.name in only]
        # Forms printed from a definition are compared first: no check of a later step would
        # report a wrong one more precisely.
        self._check_final_forms(only, definitions=True)
        results: dict[int, tuple[Outcome, ...] | StepCheckError]
        if workers > 1 and hasattr(os, "fork"):
            global _CHECKING
            _CHECKING = self
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(workers) as pool:
                # Later steps (second order, convexity) are the slowest: start them first.
                results = dict(pool.imap_unordered(_check_step, indices[::-1]))
            _CHECKING = None
        else:
            results = {}
            for i in indices:  # in order, stopping at the first failure
                results[i] = _run_step(self, i)[1]
                if isinstance(results[i], StepCheckError):
                    break
        checked = []
        for i in indices:
            outcome = results[i]
            if isinstance(outcome, StepCheckError):
                raise outcome
            checked.append(CheckedStep(self.steps[i], outcome))
        self._check_final_forms(only, definitions=False)
        return CheckedDerivation(self, tuple(checked))

    def _check_final_forms(self, only: Collection[str] | None, definitions: bool) -> None:
        by_name = {s.name: s for s in self.steps}
        defs = self.definitions()[-1] if self.steps else Definitions()
        for name, form in self.final_forms.items():
            if form in SIZES or name.startswith("reference_"):
                # A size (the n the code divides its row sums by) is no formula; a reference is
                # what verify evaluates the code against in high precision, never printed as code.
                continue
            source = self.final_sources.get(name)
            step = by_name.get(source or "")
            if step is not None and (
                step.definition != definitions or (only is not None and step.name not in only)
            ):
                continue
            if step is None:
                raise StepCheckError(
                    f"final form {name}", sp.sstr(form), "?", f"no step proves it ({source!r})"
                )
            if form == step.rhs:
                continue
            scalar = not isinstance(form, sp.MatrixExpr) and not isinstance(step.rhs, sp.MatrixExpr)
            if scalar and is_zero(defs.unfold(form - step.rhs)):
                continue
            if scalar and self._composes(step, name, defs):
                continue  # a part of a proved rhs, which is exactly their composition
            matrix = [c for c in step.checks if isinstance(c, Elementwise)]
            if not scalar and matrix:
                # Equal to the step's rhs on the explicit matrices its own check proved it on.
                probe = replace(step, name=f"final form {name}", lhs=form)
                try:
                    matrix[0].run(probe, defs)
                    continue
                except StepCheckError:
                    pass
            composition = self.final_compositions.get(step.name)
            detail = f"not the right-hand side of step {source!r}"
            if composition is not None and sp.Symbol(name) in composition.free_symbols:
                detail = (
                    f"the printed parts {sp.sstr(composition)} do not make up the right-hand "
                    f"side of step {source!r}"
                )
            raise StepCheckError(f"final form {name}", sp.sstr(form), sp.sstr(step.rhs), detail)

    def _composes(self, step: Step, form: str, defs: Definitions) -> bool:
        """Whether `form` is one of the parts `step`'s rhs is composed of, and the rhs is
        exactly that composition of the printed forms."""
        composition = self.final_compositions.get(step.name)
        if composition is None or sp.Symbol(form) not in composition.free_symbols:
            return False
        parts = {
            s: self.final_forms[s.name]
            for s in composition.free_symbols
            if isinstance(s, sp.Symbol) and s.name in self.final_forms
        }
        whole = composition.xreplace(parts)
        return bool(whole == step.rhs or is_zero(defs.unfold(whole - step.rhs)))

    def replace_step(self, name: str, **changes: object) -> Derivation:
        """A copy with one step changed (used to show that a corrupted step is caught)."""
        names = [s.name for s in self.steps]
        if name not in names:
            raise KeyError(name)
        steps = tuple(replace(s, **changes) if s.name == name else s for s in self.steps)  # type: ignore[arg-type]
        return replace(self, steps=steps)


#: Final forms that are sizes, not formulas: they need no source step.
SIZES = frozenset({S.n, S.d, S.K})


def _admissible(step: Step) -> None:
    """Refuse, before checking, what no check could make true."""
    if step.definition:
        return
    if not step.checks:
        raise _fail(step, "a claim with no check")
    if not any(step.relation in chk.relations for chk in step.checks):
        raise _fail(step, f"no check of this step can prove the relation {step.relation!r}")
    if all(isinstance(chk, GeneralK) and chk.replays for chk in step.checks):
        raise _fail(step, "its only proof replays the rewrites that produced it")


_CHECKING: Derivation | None = None


def _run_step(d: Derivation, i: int) -> tuple[int, tuple[Outcome, ...] | StepCheckError]:
    step = d.steps[i]
    if step.definition:
        return i, ()
    defs = d.definitions()[i]
    # The checks read the step with every defined name unfolded; errors show it as displayed.
    unfolded = replace(step, lhs=defs.unfold(step.lhs), rhs=defs.unfold(step.rhs))
    try:
        return i, tuple(chk.run(unfolded, defs) for chk in step.checks)
    except StepCheckError as exc:
        return i, StepCheckError(step.name, sp.sstr(step.lhs), sp.sstr(step.rhs), exc.detail)


def _check_step(i: int) -> tuple[int, tuple[Outcome, ...] | StepCheckError]:
    """Worker side of `Derivation.check(workers > 1)`: the derivation came with the fork."""
    assert _CHECKING is not None
    return _run_step(_CHECKING, i)


@dataclass(frozen=True)
class CheckedDerivation:
    """A derivation whose every step passed its checks: the only thing renderers accept."""

    derivation: Derivation
    steps: tuple[CheckedStep, ...]
