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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import sympy as sp

from derive import notation as S
from derive.errors import StepCheckError

Transform = Callable[[sp.Expr], sp.Expr]
Relation = Literal["=", ">", ">="]


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
    from derive.symbolic.functions import to_raw

    expr = to_raw(expr)
    if expr == 0:
        return True
    atoms = lambda e: sp.cancel(sp.together(_exponentials_as_symbols(e)))  # noqa: E731
    # A polynomial (no exponentials) is decided fastest by `expand` alone.
    first = (atoms, sp.expand) if expr.has(sp.exp) else (sp.expand, atoms)
    rewrites = (*first, sp.simplify)
    for rewrite in rewrites:
        if rewrite is sp.simplify and sp.count_ops(expr) > SIMPLIFY_LIMIT:
            break  # NOTE: simplify on a huge expression can run for hours; report unproved
        try:
            if rewrite(expr) == 0:
                return True
        except (StopIteration, RecursionError):  # NOTE: SymPy's simplify can raise on sums.
            continue
    return False


#: Operation count above which the last-resort `simplify` is not attempted.
SIMPLIFY_LIMIT = 400


def _exponentials_as_symbols(expr: sp.Basic) -> sp.Basic:
    table: dict[sp.Basic, sp.Symbol] = {}

    def atom(e: sp.exp) -> sp.Expr:
        # exp(2a - b) = E_a^2 / E_b: one symbol per distinct term of the exponent, so that
        # every product and power of exponentials is a monomial in those symbols.
        out: sp.Expr = sp.S.One
        for term in sp.Add.make_args(sp.expand(e.args[0])):
            coeff, rest = term.as_coeff_Mul()
            if coeff.is_Rational and rest != 1:
                out *= table.setdefault(rest, sp.Dummy(positive=True)) ** coeff
            else:
                out *= table.setdefault(term, sp.Dummy(positive=True))
        return out

    out = expr.replace(lambda e: isinstance(e, sp.exp), atom)
    # A power with a symbolic exponent is opaque to `cancel`: bring its base to one normal form
    # (a reduced fraction) so that equal powers written differently become the same atom.
    out = out.replace(
        lambda e: isinstance(e, sp.Pow) and not e.exp.is_Integer,
        lambda e: sp.Pow(sp.factor(sp.cancel(sp.together(e.base))), e.exp),
    )
    # b^(g - 1) = b^g / b: one generator per base for `cancel`, whatever the exponent's offset.
    return sp.expand_power_exp(out)


# --------------------------------------------------------------------------- rewrites


def canonical_sums(expr: sp.Basic) -> sp.Basic:
    """Rename each single-limit Sum's dummy to one symbol, so equal sums compare equal."""
    canon = sp.Symbol("_s", integer=True, positive=True)

    def rename(s: sp.Sum) -> sp.Sum:
        (var, lo, hi), *rest = s.limits
        if rest:
            return s
        return sp.Sum(s.function.xreplace({var: canon}), (canon, lo, hi))

    return expr.replace(lambda e: isinstance(e, sp.Sum), rename)


def refine_indices(*indices: sp.Symbol) -> Transform:
    """Evaluate delta sums (`doit`) and drop the Piecewise guards, given `1 <= index <= K`."""

    def apply(expr: sp.Expr) -> sp.Expr:
        # Two passes: a Derivative's doit yields delta sums that need a doit of their own.
        out: sp.Expr = sp.refine(expr.doit().doit(), S.class_index_range(*indices))
        return out

    apply.__name__ = f"refine_indices({', '.join(map(str, indices))})"
    return apply


def expand_logs(expr: sp.Expr) -> sp.Expr:
    """`log(a b) = log a + log b`, `log(exp(t)) = t`: valid as every log argument is positive."""
    out: sp.Expr = sp.expand_log(expr, force=True)
    return out


def split_sums(expr: sp.Expr, multinomial: bool = True) -> sp.Expr:
    """Linearity of Sum: distribute over +, pull out factors that do not depend on the index,
    and sum constants (`sum_{k=1}^K c = K c`). With `multinomial=False`, powers of sums stay
    as written (`(o - y)^2` is not multiplied out)."""
    expanded = sp.expand(
        canonical_sums(sp.expand(expr, multinomial=multinomial)), multinomial=multinomial
    )
    out: sp.Expr = sp.factor_terms(sp.expand(expanded, multinomial=multinomial))
    out = out.replace(
        lambda e: (
            isinstance(e, sp.Sum)
            and len(e.limits) == 1
            and e.limits[0][0] not in e.function.free_symbols
        ),
        lambda e: e.function * (e.limits[0][2] - e.limits[0][1] + 1),
    )
    return sp.expand(out, multinomial=multinomial)


def _sums_to_one(base: sp.IndexedBase, expr: sp.Expr) -> sp.Expr:
    canon = canonical_sums(expr)
    s = canonical_sums(sp.Sum(base[S.j], (S.j, 1, S.K)))
    out: sp.Expr = canon.subs(s, 1)
    return out


def targets_sum_to_one(expr: sp.Expr) -> sp.Expr:
    """Use the assumption `sum_j y_j = 1` (one-hot or any probability vector)."""
    return _sums_to_one(S.y, expr)


def probabilities_sum_to_one(expr: sp.Expr) -> sp.Expr:
    """Use `sum_j p_j = 1` for the probability vector p."""
    return _sums_to_one(S.p, expr)


def expand_in_sums(expr: sp.Expr) -> sp.Expr:
    """Multiply out each summand (squares of differences become sums of products)."""
    return expr.replace(
        lambda t: isinstance(t, sp.Sum), lambda t: sp.Sum(sp.expand(t.function), *t.limits)
    )


def factor_shift(expr: sp.Expr) -> sp.Expr:
    """`sum_m exp(o_m - c) = exp(-c) sum_m exp(o_m)`: expand each summand, then factor."""

    def fac(s: sp.Sum) -> sp.Expr:
        out: sp.Expr = sp.factor_terms(sp.Sum(sp.expand(s.function), *s.limits))
        return out

    return expr.replace(lambda e: isinstance(e, sp.Sum), fac)


def factor_exponentials(expr: sp.Expr) -> sp.Expr:
    """`log(sum_m exp(o_m - c))` = `-c + log(sum_m exp(o_m))` on explicit (concrete-K) sums."""
    return expand_logs(sp.factor_terms(sp.expand(expr)))


def run_transforms(expr: sp.Expr, transforms: Sequence[Transform]) -> sp.Expr:
    for t in transforms:
        expr = t(expr)
    return canonical_sums(expr)


# --------------------------------------------------------------------------- concrete instances


def instantiate(expr: sp.Basic, K: int, targets_simplex: bool) -> sp.Basic:
    """Substitute a concrete K, expand every Sum and Derivative into explicit terms.

    With `targets_simplex`, `y_K = 1 - sum_{j<K} y_j`, so that identities that need `sum y = 1`
    become plain algebraic identities.
    """
    from derive.symbolic.functions import to_raw

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

    strength: Literal["proof", "numeric"]
    text: Prose


class Check(Protocol):
    def run(self, step: Step) -> Outcome: ...


def _fail(step: Step, detail: str) -> StepCheckError:
    return StepCheckError(step.name, sp.sstr(step.lhs), sp.sstr(step.rhs), detail)


@dataclass(frozen=True)
class GeneralK:
    """Proof for symbolic K: the named rewrites turn `lhs - rhs` into exactly 0."""

    transforms: tuple[Transform, ...]
    #: The size the proof is symbolic in (K classes; n samples for the likelihood).
    size: str = "K"

    def run(self, step: Step) -> Outcome:
        diff = run_transforms(step.lhs - step.rhs, self.transforms)
        if not is_zero(diff):
            raise _fail(step, f"symbolic {self.size}: lhs - rhs reduced to {sp.sstr(diff)}, not 0")
        return Outcome(
            "proof",
            Prose(
                en=f"proved for symbolic ${self.size}$", zh=f"对任意（符号）${self.size}$ 严格证明"
            ),
        )


@dataclass(frozen=True)
class ConcreteK:
    """Proof for each concrete K with explicit symbols, every free class index enumerated."""

    Ks: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    targets_simplex: bool = False
    prepare: tuple[Transform, ...] = ()

    def run(self, step: Step) -> Outcome:
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
                    raise _fail(step, f"K={K} {at}: lhs - rhs = {sp.sstr(sp.simplify(e))}")
        few = len(self.Ks) <= 3
        ks = ", ".join(map(str, self.Ks)) if few else f"{self.Ks[0]}, \\dots, {self.Ks[-1]}"
        return Outcome(
            "proof",
            Prose(
                en=f"proved for $K = {ks}$ (free class indices at 1, 2 and $K$)",
                zh=f"对 $K = {ks}$ 逐一严格证明（自由类别下标取 1、2 和 $K$）",
            ),
        )


def _index_values(count: int, K: int) -> Iterable[tuple[int, ...]]:
    """Index values 1, 2 and K: every pattern of equal/distinct indices, and the last class
    (special where `y_K = 1 - sum_{j<K} y_j` was substituted). Other values are relabellings."""
    return itertools.product(sorted({1, 2, K}), repeat=count)


@dataclass(frozen=True)
class Numeric:
    """Agreement at random points to `digits` digits: evidence, not proof, and labelled so."""

    points: int = 20
    digits: int = 50
    K: int = 5
    targets_simplex: bool = False
    seed: int = 0

    def run(self, step: Step) -> Outcome:
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

    def run(self, step: Step) -> Outcome:
        error: StepCheckError | None = None
        for alternative in self.alternatives:
            try:
                return alternative.run(step)
            except StepCheckError as exc:
                error = exc
        assert error is not None
        raise error


@dataclass(frozen=True)
class Positive:
    """`rhs > 0` by SymPy's assumption system (exp is positive, sums of positives are positive)."""

    def run(self, step: Step) -> Outcome:
        if step.lhs.is_positive is not True:
            raise _fail(step, "could not establish positivity from the assumptions")
        return Outcome(
            "proof",
            Prose(en="proved from the assumptions (SymPy)", zh="由 SymPy 的假设系统证明"),
        )


@dataclass(frozen=True)
class Elementwise:
    """A matrix identity proved entry by entry for concrete small shapes.

    `build(n, d, K)` returns the explicit lhs and rhs matrices; symbolic MatrixSymbol calculus is
    not used (its derivatives of `[0, 0]` elements can silently be 0).
    """

    build: Callable[[int, int, int], tuple[sp.Matrix, sp.Matrix]]
    shapes: tuple[tuple[int, int, int], ...] = ((2, 2, 2), (2, 3, 3))

    def run(self, step: Step) -> Outcome:
        for n, d, K in self.shapes:
            lhs, rhs = self.build(n, d, K)
            if lhs.shape != rhs.shape:
                raise _fail(step, f"n={n}, d={d}, K={K}: shapes {lhs.shape} != {rhs.shape}")
            for r in range(lhs.rows):
                for col in range(lhs.cols):
                    if not is_zero(lhs[r, col] - rhs[r, col]):
                        raise _fail(step, f"n={n}, d={d}, K={K}: entry ({r}, {col}) differs")
        sizes = "; ".join(f"$n={n}, d={d}, K={K}$" for n, d, K in self.shapes)
        return Outcome(
            "proof",
            Prose(en=f"proved entry by entry for {sizes}", zh=f"对 {sizes} 逐元素严格证明"),
        )


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
class CheckedStep:
    step: Step
    outcomes: tuple[Outcome, ...]

    @property
    def proved(self) -> bool:
        """Whether at least one check is a proof (rather than only numeric evidence)."""
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
    """An ordered list of steps, plus the final forms the code generator prints."""

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

    def check(self, workers: int = 1) -> CheckedDerivation:
        """Run every check; the first failing step, in order, stops everything.

        With `workers > 1` the steps are checked in forked processes (they are independent);
        the steps reach the workers through the fork, only outcomes and errors come back.
        """
        for step in self.steps:
            if not step.definition and not step.checks:
                raise _fail(step, "a claim with no check")
        indices = list(range(len(self.steps)))
        if workers > 1 and hasattr(os, "fork"):
            global _CHECKING
            _CHECKING = self
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(workers) as pool:
                # Later steps (second order, convexity) are the slowest: start them first.
                results = dict(pool.imap_unordered(_check_step, indices[::-1]))
            _CHECKING = None
        else:
            results = dict(_run_step(self, i) for i in indices)
        checked = []
        for i in indices:
            outcome = results[i]
            if isinstance(outcome, StepCheckError):
                raise outcome
            checked.append(CheckedStep(self.steps[i], outcome))
        return CheckedDerivation(self, tuple(checked))

    def replace_step(self, name: str, **changes: object) -> Derivation:
        """A copy with one step changed (used to show that a corrupted step is caught)."""
        from dataclasses import replace

        names = [s.name for s in self.steps]
        if name not in names:
            raise KeyError(name)
        steps = tuple(replace(s, **changes) if s.name == name else s for s in self.steps)  # type: ignore[arg-type]
        return replace(self, steps=steps)


_CHECKING: Derivation | None = None


def _run_step(d: Derivation, i: int) -> tuple[int, tuple[Outcome, ...] | StepCheckError]:
    step = d.steps[i]
    try:
        return i, tuple(chk.run(step) for chk in step.checks)
    except StepCheckError as exc:
        return i, exc


def _check_step(i: int) -> tuple[int, tuple[Outcome, ...] | StepCheckError]:
    """Worker side of `Derivation.check(workers > 1)`: the derivation came with the fork."""
    assert _CHECKING is not None
    return _run_step(_CHECKING, i)


@dataclass(frozen=True)
class CheckedDerivation:
    """A derivation whose every step passed its checks: the only thing renderers accept."""

    derivation: Derivation
    steps: tuple[CheckedStep, ...]

    def _repr_markdown_(self) -> str:
        from derive.output.notes import render_markdown

        return render_markdown(self, "en")

    def _repr_latex_(self) -> str:
        from derive.output.notes import latex_fragment

        return latex_fragment(self)
