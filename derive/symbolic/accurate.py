"""Accurate forms: among the expressions a derivation proves equal, one that is accurate in floats.

A stable kernel avoids overflow; an accurate form also avoids cancellation. Each rule here is a
rewrite whose result the derivation checks as a step of its own (`lhs - rhs` reduces to 0), so
the code generator only prints what a checked step produced. The rules are general, applied to
any expression whose shape they match, in this order:

1. `stable`: overflow-prone shapes become max-shifted kernels (`functions.stabilize`).
2. `endpoints`: for targets in [0, 1], an expression affine in a target `y` is written
   `(1 - y) F(y=0) + y F(y=1)`: for exact 0/1 targets one term vanishes exactly, and the other is
   free of the cancellation `F(0) + y (F(1) - F(0))` suffers (`sigmoid(37) - 1` rounds to 0).
3. `complements`: `1 - sigmoid(z)` becomes `sigmoid(-z)` (`SigmoidComplement`), common factors
   first pulled out so that `s - s^2` is seen as `s (1 - s)`.
4. `rationalised`: `sqrt(A) - B` with `A - B^2` shorter than `A` (the constant cancels) is
   written `(A - B^2) / (sqrt(A) + B)`, for `B > 0`: `sqrt(1 + x^2) - 1` as
   `x^2 / (sqrt(1 + x^2) + 1)` keeps its digits for small `x` (the pseudo-Huber loss).
5. `shifted`: a function the derivation proves invariant under adding one constant to every
   logit is evaluated at `z = o - max(o)`: differences of large logits become exact before they
   are combined (cross-entropy as `LSE(z) - z_c`, i.e. `-log_softmax`).
6. `powers` (right after `stable`): `exp(q o_j) / exp(LSE(o))^q` as `softmax_j^q` for a
   symbolic power q (`stabilize` normalises rational multiples only), `1 - p^q` as
   `-expm1(q log_softmax)`, `1 - sum y F` as `sum y (1 - F)` for targets that sum to 1.
7. `logaddexp` (before `shifted`): two exponentials added, without overflow
   (`log(e^a + e^b)`, log-cosh, `e^a / (e^a + e^b)` as a sigmoid, `2 sigmoid - 1` as tanh).
8. `masked` (last): a class's probability times its logit (`p log p`) is 0 where `p` is 0,
   the limit, instead of `0 * -inf`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import sympy as sp
from sympy.codegen.cfunctions import expm1

from derive import notation as S
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
    stabilize,
)
from derive.symbolic.rewrites import canonical_sums, refine_indices
from derive.symbolic.steps import instantiate

Rule = Callable[[sp.Expr], sp.Expr]

#: The rules that take an expression to its printed form, by name, in the order they apply.
RULES: tuple[str, ...] = (
    "stable",
    "powers",
    "endpoints",
    "complements",
    "diagonal",
    "rationalised",
    "logaddexp",
    "centred_mean",
    "shifted",
    "masked",
)

SHIFTED_ROW = S.o[ROW] - RowMax(S.o[ROW])
"""`z = o - max(o)`, the definition of the shifted logits the `shifted` rule introduces."""


# --------------------------------------------------------------------------- complements


def _complement_of(t: sp.Basic) -> sp.Expr:
    if isinstance(t, Sigmoid):
        return 1 - SigmoidComplement(t.args[0])
    out: sp.Expr = 1 - SoftmaxComplement(*t.args)
    return out


def _complement_add(add: sp.Add) -> sp.Expr:
    """Write `p = 1 - (1 - p)` (sigmoid or softmax) in a sum where that cancels a constant.

    First the whole sum (`p - p^2` after factoring); else just the pair `a - a p` among other
    terms (`1 - p_c + gamma p_c x` becomes `(1 - p_c) + gamma p_c x`: the pair is what rounds).
    """
    for p in sorted(add.atoms(Sigmoid, Softmax), key=str):
        candidate = sp.expand(add.xreplace({p: _complement_of(p)}))
        if len(sp.Add.make_args(candidate)) < len(add.args):
            return candidate
    terms = sp.Add.make_args(add)
    for p in sorted(add.atoms(Sigmoid, Softmax), key=str):
        for a in terms:
            if a.has(p) or -a * p not in terms:
                continue
            rest = [t for t in terms if t not in (a, -a * p)]
            return sp.Add(*rest, a * (1 - _complement_of(p)))
    return add


def complements(expr: sp.Expr) -> sp.Expr:
    """`1 - sigmoid(z)` as `sigmoid(-z)`, `1 - softmax_j` as the other classes' probability,
    wherever a sum has that shape (after factoring)."""
    if not expr.has(Sigmoid, Softmax):
        return expr
    factored = sp.factor_terms(expr)
    out: sp.Expr = factored.replace(
        lambda t: isinstance(t, sp.Add) and t.has(Sigmoid, Softmax), _complement_add
    )
    return out


def delta_endpoints(expr: sp.Expr) -> sp.Expr:
    """`F = (1 - delta) F(delta=0) + delta F(delta=1)` for a Kronecker delta (0 or 1), each
    part then with complements: the diagonal of `(delta_jk - p_k) p_j` is `(1 - p_j) p_j`."""
    deltas = sorted(expr.atoms(sp.KroneckerDelta), key=str)
    if len(deltas) != 1:
        return expr
    (d,) = deltas
    f0, f1 = expr.xreplace({d: 0}), expr.xreplace({d: 1})
    if f0 == 0 or sp.expand(expr - (f0 + d * (f1 - f0))) != 0 or not f1.has(Sigmoid, Softmax):
        return expr
    return (1 - d) * sp.factor_terms(f0) + d * complements(sp.expand(f1))


# --------------------------------------------------------------------------- collected

#: The probability functions whose complements, logs and powers the rules below know.
_PROBABILITY = (Softmax, Sigmoid, SoftmaxComplement, SigmoidComplement)


def _over_denominators(add: sp.Add) -> sp.Expr:
    """Terms over one denominator that holds a probability, added over it and the common factor
    cancelled: `p X / (p - 1) - p^2 X / (p - 1)` is `-p X`, no division by `p - 1`."""
    groups: dict[sp.Expr, list[sp.Expr]] = {}
    rest: list[sp.Expr] = []
    for term in sp.Add.make_args(add):
        num, den = sp.fraction(term)
        if den != 1 and den.has(*_PROBABILITY):
            groups.setdefault(den, []).append(num)
        else:
            rest.append(term)
    changed = False
    for den, nums in groups.items():
        whole = sp.Add(*nums) / den
        if len(nums) > 1:
            reduced = sp.cancel(whole)
            if not sp.fraction(reduced)[1].has(*_PROBABILITY):
                whole, changed = sp.factor_terms(reduced), True
        rest.append(whole)
    return sp.Add(*rest) if changed else add


def _symbolic_powers(expr: sp.Basic) -> list[sp.Pow]:
    """Powers of a probability's complement with a symbolic exponent (`(1 - p)^(gamma - 1)`)."""
    return sorted(
        (
            t
            for t in expr.atoms(sp.Pow)
            if not t.exp.is_number and t.base.has(*_PROBABILITY) and not t.exp.has(sp.Indexed)
        ),
        key=sp.default_sort_key,
    )


def _under_powers(add: sp.Add) -> sp.Expr:
    """Terms that share a symbolic power of a probability collected under it, so that what
    cancels inside meets (`(1 - p)^e p - (1 - p)^e` is `(1 - p)^e (p - 1)`)."""
    terms = sp.Add.make_args(add)
    for power in _symbolic_powers(add):
        sharing = [t for t in terms if power in sp.Mul.make_args(t)]
        if len(sharing) < 2:
            continue
        # (each term without that factor; dividing by the power would not cancel it: SymPy
        # does not add the exponents of a power of a sum)
        inner = sp.factor_terms(
            sp.Add(*[sp.Mul(*[f for f in sp.Mul.make_args(t) if f != power]) for t in sharing])
        )
        others = [t for t in terms if t not in sharing]
        return sp.Add(*others, power * inner)
    return add


def collected(expr: sp.Expr) -> sp.Expr:
    """Cancelling terms put where they meet: terms over a common denominator added over it
    (and the common factor cancelled), terms sharing a symbolic power collected under it."""
    if not expr.has(*_PROBABILITY):
        return expr
    out: sp.Expr = expr.replace(
        lambda t: isinstance(t, sp.Add) and t.has(*_PROBABILITY), _over_denominators
    )
    previous = None
    while previous != out:  # one power at a time, each collect may expose the next
        previous = out
        out = out.replace(
            lambda t: isinstance(t, sp.Add) and bool(_symbolic_powers(t)), _under_powers
        )
    return out


# --------------------------------------------------------------------------- log-softmax

#: The class indices a row function may be taken at.
_ENTRIES = (S.j, S.k, S.c, CLASS_DUMMY)


def _pair_log_softmax(add: sp.Add) -> sp.Expr:
    """`a LSE(f) - a f_x` as `-a log softmax(f)_x` (each pair once), where `a` holds a
    probability: the shape `combined` joins with a power of its complement. (A bare
    `LSE(z) - z_c`, the cross-entropy at shifted logits, is exact as it is and stays.)"""
    terms = list(sp.Add.make_args(add))
    changed = False
    for lse in sorted(add.atoms(LogSumExp), key=sp.default_sort_key):
        (row,) = lse.args
        for t in list(terms):
            if t not in terms or lse not in sp.Mul.make_args(t):
                continue
            a = t / lse
            if not a.has(*_PROBABILITY):
                continue
            for x in _ENTRIES:
                partner = -a * row.xreplace({ROW: x})
                if partner in terms and partner != t:
                    terms.remove(t)
                    terms.remove(partner)
                    terms.append(-a * LogSoftmax(row, x))
                    changed = True
                    break
    return sp.Add(*terms) if changed else add


def _sums_by_limits(
    terms: tuple[sp.Expr, ...], coeff_ok: Callable[[sp.Expr], bool] = lambda _: True
) -> tuple[dict[tuple[sp.Basic, ...], list[sp.Expr]], list[sp.Expr]]:
    """The terms `a Sum_s f_s` (one single-index sum, `coeff_ok(a)`) as summands `a f_s` grouped
    by the sum's limits, and the other terms as they are: what merging sums over one range needs."""
    groups: dict[tuple[sp.Basic, ...], list[sp.Expr]] = {}
    rest: list[sp.Expr] = []
    for term in terms:
        sums = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.Sum)]
        coeff = term / sums[0] if len(sums) == 1 and len(sums[0].limits) == 1 else None
        if coeff is None or not coeff_ok(coeff):
            rest.append(term)
            continue
        groups.setdefault(tuple(sums[0].limits[0]), []).append(coeff * sums[0].function)
    return groups, rest


def _merge_sums(add: sp.Add) -> sp.Expr:
    """`LSE(f) Sum_s a_s - Sum_s a_s f_s` as `-Sum_s a_s log softmax(f)_s` (sums over the same
    range with row-constant coefficients merged), where that pairs a log-sum-exp with a logit."""
    groups, rest = _sums_by_limits(
        sp.Add.make_args(add), lambda coeff: not coeff.free_symbols & {S.j, S.k, S.c}
    )
    changed = False
    for limits, bodies in groups.items():
        body = sp.expand(sp.Add(*bodies), multinomial=False)
        paired = _pair_log_softmax(body) if isinstance(body, sp.Add) else body
        if len(bodies) > 1 and paired != body:
            rest.append(sp.Sum(sp.factor_terms(paired), limits))
            changed = True
        else:
            rest += [sp.Sum(b, limits) for b in bodies]
    return sp.Add(*rest) if changed else add


def log_softmax(expr: sp.Expr) -> sp.Expr:
    """`LSE(f) - f_x` written `-log softmax(f)_x` wherever a sum pairs them (in a sum's terms
    too): the log of the probability, accurate, and a factor the next rule can combine."""
    if not expr.has(LogSumExp):
        return expr
    out = canonical_sums(expr)
    out = out.replace(lambda t: isinstance(t, sp.Add) and t.has(sp.Sum), _merge_sums)
    out = out.replace(
        lambda t: isinstance(t, sp.Add) and t.has(LogSumExp),
        lambda t: _pair_log_softmax(sp.expand(t, multinomial=False)),
    )
    return sp.factor_terms(out) if out != expr else expr


# --------------------------------------------------------------------------- combined


def _probability_triples(expr: sp.Basic) -> list[tuple[sp.Expr, sp.Expr, sp.Expr]]:
    """`(p, log p, 1 - p)` as the kernels write them, for every softmax entry in `expr`."""
    return [
        (Softmax(*c.args), LogSoftmax(*c.args), c)
        for c in sorted(expr.atoms(SoftmaxComplement), key=sp.default_sort_key)
    ]


def _combine_power(term: sp.Expr) -> sp.Expr:
    """`(1 - p)^e p^a log p` as `-(1 - p)^(e + 1) p^(a - 1) rho(p)` in one product."""
    factors = sp.Mul.make_args(term)
    for p, lg, q in _probability_triples(term):
        if lg not in factors:
            continue
        power = next((f for f in factors if _base_exp(f)[0] == q), None)
        with_p = next((f for f in factors if _base_exp(f)[0] == p), None)
        if power is None or with_p is None:
            continue
        e, a = _base_exp(power)[1], _base_exp(with_p)[1]
        rest = sp.Mul(*[f for f in factors if f not in (power, with_p, lg)])
        out: sp.Expr = -rest * sp.Pow(q, e + 1) * sp.Pow(p, a - 1) * LogRatio(p, lg, q)
        return out
    return term


def combined(expr: sp.Expr) -> sp.Expr:
    """A power of `1 - p` combined with the factor `p log p` that vanishes where it does, and
    `(1 - p) (1 - p)^e` with its power: `(1 - p)^(gamma - 1) p log p` is
    `-(1 - p)^gamma rho(p)`, finite where p rounds to 1 (`0^(gamma - 1)` is inf for
    gamma < 1) and 0 at a masked class."""
    triples = _probability_triples(expr)
    if not any(lg in expr.atoms(LogSoftmax) for _, lg, _ in triples):
        return expr
    powers = {q for _, _, q in triples}

    def spread(t: sp.Mul) -> sp.Expr:
        # a product of a power of 1 - p and a sum: the power goes to each term
        out: sp.Expr = sp.expand(t, multinomial=False, power_base=False, power_exp=False)
        return out

    out = expr.replace(
        lambda t: (
            isinstance(t, sp.Mul)
            and any(isinstance(f, sp.Add) for f in t.args)
            and any(isinstance(f, sp.Pow) and f.base in powers for f in t.args)
        ),
        spread,
    )
    out = out.replace(lambda t: isinstance(t, sp.Mul) and t.has(LogSoftmax), _combine_power)
    out = out.replace(lambda t: isinstance(t, sp.Mul) and _repeated_base(t), _merge_powers)
    return sp.factor_terms(out) if out != expr else expr


def _base_exp(f: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    return (f.base, f.exp) if isinstance(f, sp.Pow) else (f, sp.S.One)


def _repeated_base(t: sp.Mul) -> bool:
    bases = [_base_exp(f)[0] for f in t.args if f.has(*_PROBABILITY)]
    return len(bases) != len(set(bases))


def _merge_powers(t: sp.Mul) -> sp.Expr:
    """`q q^e` as `q^(e + 1)`: one power, no `0 * inf` where q is 0 and e < 0."""
    exps: dict[sp.Expr, sp.Expr] = {}
    rest: list[sp.Expr] = []
    for f in t.args:
        if f.has(*_PROBABILITY):
            b, e = _base_exp(f)
            exps[b] = exps.get(b, sp.S.Zero) + e
        else:
            rest.append(f)
    return sp.Mul(*rest, *(sp.Pow(b, e) for b, e in exps.items()))


# --------------------------------------------------------------------------- powered


def powered(expr: sp.Expr) -> sp.Expr:
    """`(1 - p)^e` with a symbolic exponent computed from p where p is small (`log1p`) and
    from the complement elsewhere (`ComplementPower`): a large e multiplies the rounding of
    `1 - p` near 1 (`(1 - 3.8e-7)^1000` loses three digits)."""
    out: sp.Expr = expr.replace(
        lambda t: (
            isinstance(t, sp.Pow)
            and isinstance(t.base, SoftmaxComplement)
            and not t.exp.is_number
            and not t.exp.has(sp.Indexed)
        ),
        lambda t: ComplementPower(Softmax(*t.base.args), t.base, t.exp),
    )
    return out


# --------------------------------------------------------------------------- rationalised


def _rationalise_add(add: sp.Add) -> sp.Expr:
    """`sqrt(A) - B` as `(A - B^2) / (sqrt(A) + B)` where that removes a cancelling constant."""
    roots = [t for t in add.args if isinstance(t, sp.Pow) and t.exp == sp.Rational(1, 2)]
    if len(roots) != 1:
        return add
    (root,) = roots
    b = root - add  # add = sqrt(A) - b
    a = root.base
    if b.has(root) or not b.is_positive:
        return add
    reduced = a - b**2
    if reduced == 0 or len(sp.Add.make_args(reduced)) >= len(sp.Add.make_args(a)):
        return add
    return reduced / (root + b)


def _split_sum_less_constant(add: sp.Add) -> tuple[sp.Sum, sp.Expr] | None:
    """For `Sum_k f_k - K b` (a split sum: the constant taken out once per term) return the sum
    and `b`, so that a rule that needs the pair `f_k - b` can put it back; else None."""
    sums = [t for t in add.args if isinstance(t, sp.Sum) and len(t.limits) == 1]
    if len(sums) != 1:
        return None
    (s,) = sums
    k, lo, hi = s.limits[0]
    b = sp.cancel(-(add - s) / (hi - lo + 1))
    return None if b.has(k, S.K) else (s, b)


def _rationalise_in_sum(add: sp.Add) -> sp.Expr:
    """`Sum_k sqrt(A_k) - K B` (a split sum) as `Sum_k (sqrt(A_k) - B)`, then rationalised."""
    found = _split_sum_less_constant(add)
    if found is None:
        return add
    s, b = found
    term = s.function - b
    inner = _rationalise_add(term) if isinstance(term, sp.Add) else term
    return add if inner == term else sp.Sum(inner, s.limits[0])


def rationalised(expr: sp.Expr) -> sp.Expr:
    """Every `sqrt(A) - B` whose difference cancels written as `(A - B^2) / (sqrt(A) + B)`, in a
    sum's terms too (`Sum_k sqrt(A_k) - K` is `Sum_k (sqrt(A_k) - 1)`)."""
    if not any(p.exp == sp.Rational(1, 2) for p in expr.atoms(sp.Pow)):
        return expr
    out: sp.Expr = expr.replace(
        lambda t: isinstance(t, sp.Add) and t.has(sp.Sum), _rationalise_in_sum
    )
    out = out.replace(
        lambda t: isinstance(t, sp.Add) and any(isinstance(a, sp.Pow) for a in t.args),
        _rationalise_add,
    )
    return out


# --------------------------------------------------------------------------- log-add-exp


def _two_exponents(e: sp.Basic) -> tuple[sp.Expr, sp.Expr] | None:
    """For `exp(a) + exp(b)` return (a, b), else None."""
    if isinstance(e, sp.Add) and len(e.args) == 2 and all(isinstance(t, sp.exp) for t in e.args):
        a, b = (t.args[0] for t in e.args)
        return a, b
    return None


def _exp_ratio(t: sp.Mul) -> sp.Expr:
    """`exp(a) / (exp(a) + exp(b))` as `sigmoid(a - b)`, other factors kept."""
    factors = sp.Mul.make_args(t)
    for num in (f for f in factors if isinstance(f, sp.exp)):
        for den in (f for f in factors if isinstance(f, sp.Pow) and f.exp == -1):
            pair = _two_exponents(den.base)
            if pair is None:
                continue
            for a, b in (pair, pair[::-1]):
                if sp.expand(num.args[0] - a) == 0:
                    rest = [f for f in factors if f is not num and f is not den]
                    return sp.Mul(*rest) * Sigmoid(sp.expand(a - b))
    return t


def _as_tanh(add: sp.Add) -> sp.Expr:
    """`2 sigmoid(z) - 1` as `tanh(z / 2)` (`sigmoid(z) = (1 + tanh(z/2)) / 2`), where that
    removes a constant: the difference cancels near z = 0, tanh does not."""
    for s in sorted(add.atoms(Sigmoid), key=str):
        z = s.args[0]
        candidate = sp.expand(add.xreplace({s: (1 + sp.tanh(z / 2)) / 2}))
        if len(sp.Add.make_args(candidate)) < len(add.args) and not candidate.has(Sigmoid):
            return candidate
    return add


def _log_mean_exp(add: sp.Add) -> sp.Expr:
    """`c logaddexp(a, b) - c log 2` as `c ((a + b)/2 + logcosh((a - b)/2))`."""
    terms = list(sp.Add.make_args(add))
    for t in terms:
        coeff, rest = t.as_coeff_Mul()
        if not isinstance(rest, LogAddExp) or -coeff * sp.log(2) not in terms:
            continue
        a, b = rest.args
        others = [u for u in terms if u is not t and u != -coeff * sp.log(2)]
        return sp.Add(*others, coeff * ((a + b) / 2 + LogCosh(sp.expand((a - b) / 2))))
    return add


def _log_mean_exp_in_sum(add: sp.Add) -> sp.Expr:
    """`Sum_k logaddexp(a_k, b_k) - K log 2` (a split sum) as `Sum_k (logaddexp - log 2)`,
    then the log-cosh form."""
    found = _split_sum_less_constant(add)
    if found is None or found[1] == 0:
        return add
    s, b = found
    term = s.function - b
    inner = _log_mean_exp(term) if isinstance(term, sp.Add) else term
    return add if inner == term else sp.Sum(sp.expand(inner), s.limits[0])


def log_add_exp(expr: sp.Expr) -> sp.Expr:
    """Two exponentials, added, in their overflow-free forms.

    `log(exp(a) + exp(b))` is `logaddexp(a, b)` (less `log 2`: `(a + b)/2 + logcosh((a - b)/2)`,
    which keeps its digits where the two are close); `exp(a) / (exp(a) + exp(b))` is
    `sigmoid(a - b)`, and `2 sigmoid(z) - 1` is `tanh(z / 2)`.
    """
    if not expr.has(sp.exp):
        return expr
    e = expr.replace(
        lambda t: isinstance(t, sp.log) and _two_exponents(t.args[0]) is not None,
        lambda t: LogAddExp(*_two_exponents(t.args[0])),  # type: ignore[misc]
    )
    e = e.replace(lambda t: isinstance(t, sp.Mul) and t.has(sp.exp), _exp_ratio)
    e = sp.expand(e, multinomial=False) if e.has(Sigmoid) and not e.has(sp.Sum) else e
    e = e.replace(lambda t: isinstance(t, sp.Add) and t.has(Sigmoid), _as_tanh)
    e = e.replace(lambda t: isinstance(t, sp.Add) and t.has(sp.Sum), _log_mean_exp_in_sum)
    out: sp.Expr = e.replace(lambda t: isinstance(t, sp.Add) and t.has(LogAddExp), _log_mean_exp)
    return out


def tanh_as_exp(expr: sp.Basic) -> sp.Basic:
    """Every `tanh(x)` as `(exp(x) - exp(-x)) / (exp(x) + exp(-x))` (to check a rewrite)."""
    return expr.replace(lambda t: isinstance(t, sp.tanh), lambda t: t.rewrite(sp.exp))


def per_class(expr: sp.Basic) -> sp.Basic:
    """`Sum_k f_k + C` (C free of k) as `f_k + C / K`: that this is 0 for every k is a
    stronger claim than the sum being 0, so reducing it to 0 proves the sum's identity."""
    e = combine_sums(sp.sympify(expr))
    sums = [t for t in sp.Add.make_args(e) if isinstance(t, sp.Sum) and len(t.limits) == 1]
    if len(sums) != 1:
        return e
    (s,) = sums
    k, lo, hi = s.limits[0]
    rest = e - s
    if rest.has(k):
        return e
    out: sp.Expr = s.function + rest / (hi - lo + 1)
    return out


def exponentiated(expr: sp.Basic) -> sp.Basic:
    """`exp(d) - 1` for a real difference `d` of logs: 0 exactly when `d` is (for real `d`),
    and a rational function of the exponentials that `cancel` decides, where `d` is not."""
    if not expr.has(sp.log):
        return expr
    return sp.expand_power_exp(sp.exp(sp.expand(expr))) - 1


# --------------------------------------------------------------------------- powers


def _scale_of(f: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """`f = c g` with `c` the factors of `f` free of the row variable (`q o[_r]`: (q, o[_r]))."""
    c, g = f.as_independent(ROW, as_Add=False)
    return c, g


def _exp_of_scaled_softmax(t: Softmax, rows: set[sp.Basic]) -> sp.Expr:
    """`softmax(c g)_i` as `exp(c g_i - LSE(c g))` where `LSE(g)` is the row's own normaliser."""
    f, idx = t.args
    c, g = _scale_of(f)
    if c.is_Number or g not in rows:
        return t
    out: sp.Expr = sp.exp(f.xreplace({ROW: idx}) - LogSumExp(f))
    return out


def _into_sums(mul: sp.Mul) -> sp.Expr:
    """Exponential factors of a product with one class sum moved into it (they are constant
    along the sum): `exp(a) Sum(exp(b_s) y_s)` is `Sum(exp(a + b_s) y_s)`."""
    factors = sp.Mul.make_args(mul)
    sums = [f for f in factors if isinstance(f, sp.Sum)]
    if len(sums) != 1:
        return mul
    moving = [
        f
        for f in factors
        if isinstance(f, sp.exp) or (isinstance(f, sp.Pow) and isinstance(f.base, sp.exp))
    ]
    if not moving:
        return mul
    (s,) = sums
    rest = [f for f in factors if f is not s and f not in moving]
    inner = sp.powsimp(sp.Mul(*moving, s.function), combine="exp")
    return sp.Mul(*rest, sp.Sum(inner, *s.limits))


def _as_probability_powers(t: sp.exp, rows: set[sp.Basic]) -> sp.Expr:
    """`exp(sum_x c_x g_x - (sum_x c_x) LSE(g))` as `prod_x softmax(g)_x^c_x`, any real c_x."""
    arg = sp.expand(t.args[0])
    for g in sorted(rows, key=str):
        lse = LogSumExp(g)
        total = -arg.coeff(lse)
        rest = sp.expand(arg + total * lse)
        if total == 0 or rest.has(LogSumExp):
            continue
        out: sp.Expr = sp.S.One
        left = rest
        for idx in (S.j, S.k, S.c, CLASS_DUMMY):
            at = g.xreplace({ROW: idx})
            c = sp.expand(left).coeff(at) if isinstance(at, sp.Indexed) else sp.S.Zero
            if c != 0 and not c.has(idx):
                out *= Softmax(g, idx) ** c
                left = sp.expand(left - c * at)
        used = sp.Add(*[b.exp if isinstance(b, sp.Pow) else 1 for b in sp.Mul.make_args(out)])
        if left == 0 and sp.expand(used - total) == 0:
            return out
    return t


def _exponent_of(base: sp.Basic, term: sp.Expr) -> sp.Expr | None:
    for f in sp.Mul.make_args(term):
        if f == base:
            return sp.S.One
        if isinstance(f, sp.Pow) and f.base == base:
            out: sp.Expr = f.exp
            return out
    return None


def _lowest_power_out(add: sp.Add) -> sp.Expr:
    """`a p^q + b p^(q + 1)` as `p^q (a + b p)`: a symbolic power of a probability common to
    every term is pulled out, so that `p^q (p - 1)` shows its complement."""
    for base in sorted(add.atoms(Softmax), key=str):
        found = [_exponent_of(base, t) for t in add.args]
        exps = [e for e in found if e is not None]
        if len(exps) < len(found):
            continue
        low = min(exps, key=lambda e: sp.Add(e).as_coeff_Add()[0])
        if low.is_Number or any(not sp.expand(e - low).is_Integer for e in exps):
            continue
        inner = sp.Add(*[sp.powsimp(t / base**low) for t in add.args])
        return base**low * inner
    return add


def _one_minus_power(add: sp.Add) -> sp.Expr:
    """`a - a p^c` as `-a expm1(c log p)` (log p the log-softmax): `1 - p^c` rounds to 0 once
    `p` rounds to 1, `expm1` of the small `c log p` keeps every digit."""
    for t in add.args:
        coeff, rest = t.as_coeff_Mul()
        if not (isinstance(rest, sp.Pow) and isinstance(rest.base, Softmax)):
            continue
        if rest.exp.is_Integer or -coeff not in add.args:
            continue
        others = [u for u in add.args if u is not t and u != -coeff]
        log_p = LogSoftmax(*rest.base.args)
        return sp.Add(*others, coeff * expm1(rest.exp * log_p))
    return add


def _targets_weighted(add: sp.Add) -> sp.Expr:
    """`a - a Sum_s y_s F_s` as `a Sum_s y_s (1 - F_s)` (targets sum to 1)."""
    for t in add.args:
        coeff, rest = t.as_coeff_Mul()
        if not isinstance(rest, sp.Sum) or len(rest.limits) != 1 or -coeff not in add.args:
            continue
        (s, lo, hi) = rest.limits[0]
        if S.y[s] not in sp.Mul.make_args(rest.function) or (lo, hi) != (1, S.K):
            continue
        others = [u for u in add.args if u is not t and u != -coeff]
        f = rest.function / S.y[s]
        body = S.y[s] * _one_minus_power(sp.Add(1, -f, evaluate=False))
        return sp.Add(*others, -coeff * sp.Sum(body, rest.limits[0]))
    return add


def probability_powers(expr: sp.Expr, simplex: bool = False) -> sp.Expr:
    """`exp(q o_j) / exp(LSE(o))^q` as `softmax(o)_j^q`, for a symbolic power q: `stabilize`
    normalises rational multiples of a logit only, and leaves `p^q` (a generalized
    cross-entropy) as exponentials that overflow."""
    rows = {lse.args[0] for lse in expr.atoms(LogSumExp)}
    if not rows or not expr.has(sp.exp):
        return expr
    e = expr.replace(lambda t: isinstance(t, Softmax), lambda t: _exp_of_scaled_softmax(t, rows))
    # exp(a)^c = exp(c a) for a real `a` (powsimp leaves it: it does not know `a` is real)
    e = e.replace(
        lambda t: isinstance(t, sp.Pow) and isinstance(t.base, sp.exp),
        lambda t: sp.exp(t.base.args[0] * t.exp),
    )
    e = sp.expand(e, multinomial=False)
    e = e.replace(lambda t: isinstance(t, sp.Mul) and t.has(sp.Sum), _into_sums)
    e = sp.powsimp(e, combine="exp", deep=True)
    out: sp.Expr = e.replace(
        lambda t: isinstance(t, sp.exp), lambda t: _as_probability_powers(t, rows)
    )
    if out.has(sp.exp) or any(_scale_of(lse.args[0])[0] != 1 for lse in out.atoms(LogSumExp)):
        return expr
    out = out.replace(lambda t: isinstance(t, sp.Add) and t.has(Softmax), _lowest_power_out)
    out = sp.factor_terms(out)
    if simplex:
        out = out.replace(lambda t: isinstance(t, sp.Add) and t.has(sp.Sum), _targets_weighted)
    result: sp.Expr = out.replace(
        lambda t: isinstance(t, sp.Add) and t.has(Softmax), _one_minus_power
    )
    return result


# --------------------------------------------------------------------------- centred mean


def _centre_at_top(add: sp.Add) -> sp.Expr:
    """`A_x - Sum_s p_s A_s` as `(A_x - A_t) - Sum_s p_s (A_s - A_t)`, t the leading class
    (any constant works: the probabilities sum to 1)."""
    terms = sp.Add.make_args(add)
    rest = sp.Add(*[t for t in terms if not t.has(sp.Sum)])
    sums = combine_sums(sp.Add(*[t for t in terms if t.has(sp.Sum)]))
    free = rest.free_symbols & {S.j, S.k}
    if rest == 0 or len(free) != 1 or not isinstance(sums, sp.Sum) or len(sums.limits) != 1:
        return add
    if rest.has(S.v):  # a Hessian's direction: the `centred` step centres v itself (w = v - v_t)
        return add
    ((x,), (s, lo, hi)) = (free, sums.limits[0])
    if (lo, hi) != (1, S.K) or rest.has(s) or rest.has(sp.KroneckerDelta):
        return add
    for p in sorted(sums.function.atoms(Softmax), key=sp.default_sort_key):
        if p.args[1] != s:
            continue
        at_s = rest.xreplace({x: s})
        if sp.expand(sums.function + p * at_s) != 0:
            continue
        top = AtTop(rest.xreplace({x: ROW}), p.args[0])
        return sp.Add(rest - top, -sp.Sum(p * (at_s - top), (s, 1, S.K)))
    return add


def centred_mean(expr: sp.Expr) -> sp.Expr:
    """A row entry minus its probability-weighted mean, `A_x - sum_s p_s A_s`, centred at the
    row's leading class t: `(A_x - A_t) - sum_s p_s (A_s - A_t)`. Where `p_t` is close to 1 the
    mean is close to `A_t`, and the difference cancels; centred, the entry at t is exactly 0
    and the sum holds only the small probabilities of the other classes."""
    if not expr.has(sp.Sum) or not expr.has(Softmax):
        return expr
    out: sp.Expr = expr.replace(
        lambda t: isinstance(t, sp.Add) and t.has(sp.Sum) and t.has(Softmax), _centre_at_top
    )
    return out


# --------------------------------------------------------------------------- masked classes


def _logit_indices(factor: sp.Basic) -> set[sp.Basic]:
    """The class indices of the logits (raw or shifted) `factor` is a product of."""
    return {
        a.indices[0]
        for a in sp.Mul.make_args(factor)
        if isinstance(a, sp.Indexed) and a.base in (S.o, S.z)
    }


def _probability_indices(factors: tuple[sp.Basic, ...]) -> set[sp.Basic]:
    """The classes whose softmax is a factor (a power of it too); a Kronecker delta among the
    factors makes its two indices one class."""
    found = {
        (f.base if isinstance(f, sp.Pow) else f).args[1]
        for f in factors
        if isinstance(f, Softmax) or (isinstance(f, sp.Pow) and isinstance(f.base, Softmax))
    }
    for d in factors:
        if isinstance(d, sp.KroneckerDelta) and found & set(d.args):
            found |= set(d.args)
    return found


def _vanishing_product(mul: sp.Mul) -> sp.Expr:
    """`p_x ... z_x` (a product with the softmax of class x and its logit) as
    `ProbabilityTimes(p_x ..., z_x)`, an Add multiplying `p_x` distributed first."""
    factors = sp.Mul.make_args(mul)
    classes = _probability_indices(factors)
    if not classes:
        return mul
    sums = [f for f in factors if isinstance(f, sp.Add) and _logit_indices_in(f) & classes]
    if sums:  # distribute p over that sum only (other factors keep their shape)
        other = sp.Mul(*[f for f in factors if f is not sums[0]])
        return sp.Add(*[_vanishing_product(sp.Mul(other, t)) for t in sums[0].args])
    logits = [f for f in factors if _logit_indices(f) & classes and f.is_Indexed]
    if not logits:
        return mul
    rest = sp.Mul(*[f for f in factors if f not in logits])
    return ProbabilityTimes(rest, sp.Mul(*logits))


def _logit_indices_in(add: sp.Add) -> set[sp.Basic]:
    return set().union(*(_logit_indices(t) for t in sp.Add.make_args(add)))


def masked_limits(expr: sp.Expr) -> sp.Expr:
    """Every product of a class's softmax and its logit as `ProbabilityTimes(p, z)`: at a
    masked class (logit -inf, probability exactly 0) its value is the limit 0, not NaN."""
    if not expr.has(Softmax) or not any(a.base in (S.o, S.z) for a in expr.atoms(sp.Indexed)):
        return expr
    out: sp.Expr = expr.replace(
        lambda t: isinstance(t, sp.Mul) and t.has(Softmax),
        _vanishing_product,
    )
    return out


# --------------------------------------------------------------------------- endpoints


def combine_sums(expr: sp.Expr) -> sp.Expr:
    """`a Sum(f) + b Sum(g)` (same limits, a and b free of the index) as `Sum(a f + b g)`."""
    expr = canonical_sums(expr)
    groups, rest = _sums_by_limits(sp.Add.make_args(sp.expand(expr, multinomial=False)))
    out = sp.Add(*rest)
    for limits, functions in groups.items():
        out += sp.Sum(sp.Add(*functions), limits)
    return out


def _split_at_endpoints(f: sp.Expr, target: sp.Indexed) -> sp.Expr:
    if target not in f.atoms(sp.Indexed):
        return f
    f0, f1 = f.xreplace({target: 0}), f.xreplace({target: 1})
    affine = f0 + target * (f1 - f0)
    if sp.expand(f - affine) != 0:
        return f
    return (1 - target) * complements(sp.expand(f0)) + target * complements(sp.expand(f1))


def endpoints(expr: sp.Expr) -> sp.Expr:
    """For targets in [0, 1]: `F = (1 - y) F(0) + y F(1)` where F is affine in `y` (per class)."""
    e = combine_sums(expr)
    e = e.replace(
        lambda t: isinstance(t, sp.Sum) and len(t.limits) == 1,
        lambda t: sp.Sum(_split_at_endpoints(t.function, S.y[t.limits[0][0]]), *t.limits),
    )
    outside = sorted(
        (a for a in e.atoms(sp.Indexed) if a.base == S.y and a.indices[0] in (S.j, S.k)),
        key=str,
    )
    for target in outside:
        terms = sp.Add.make_args(e)
        with_sum = sp.Add(*[t for t in terms if t.has(sp.Sum)])
        e = with_sum + _split_at_endpoints(sp.Add(*[t for t in terms if not t.has(sp.Sum)]), target)
    return e


def _affine_part(add: sp.Add) -> sp.Expr:
    """A sum affine in one target, with a sigmoid or softmax in it, split at the endpoints."""
    targets = sorted((a for a in add.atoms(sp.Indexed) if a.base == S.y), key=str)
    if len(targets) != 1 or not add.has(Sigmoid, Softmax):
        return add
    return _split_at_endpoints(add, targets[0])


def endpoints_within(expr: sp.Expr) -> sp.Expr:
    """`endpoints` inside a nonlinear function of a target: the base of `(sigmoid(o) - y)^2` is
    affine in `y`, so it is `(1 - y) sigmoid(o) - y sigmoid(-o)` (exact for y = 1, where
    `sigmoid(37) - 1` rounds to 0), whatever the square does with it."""
    out: sp.Expr = expr.replace(
        lambda t: (
            isinstance(t, sp.Pow)
            and isinstance(t.base, sp.Add)
            and any(a.base == S.y for a in t.base.atoms(sp.Indexed))
        ),
        lambda t: sp.Pow(_affine_part(t.base), t.exp),
    )
    return out


# --------------------------------------------------------------------------- shift


def _row_functions(expr: sp.Basic) -> set[sp.Basic]:
    return set(expr.atoms(Softmax, LogSoftmax, LogSumExp, SoftmaxComplement))


def has_bare_logits(expr: sp.Basic) -> bool:
    """Whether a logit appears outside the max-shifted kernels (where an offset cancels late)."""
    inside = expr.xreplace({f: sp.Symbol("_kernel") for f in _row_functions(expr)})
    return any(a.base == S.o for a in inside.atoms(sp.Indexed))


def shifted(expr: sp.Expr) -> sp.Expr:
    """Every logit `o_x` replaced by `z_x = o_x - max(o)` (valid where the value is unchanged)."""
    table = {a: S.z[a.indices[0]] for a in expr.atoms(sp.Indexed) if a.base == S.o}
    out: sp.Expr = expr.xreplace(table)
    return out


def probably_equal(a: sp.Expr, b: sp.Expr, simplex: bool) -> bool:
    """A quick numeric screen (K = 3, every pattern of free class indices, a random point each,
    30 digits) before a rewrite is proposed.

    Not a proof: the step that records the rewrite is checked like every other step.
    """
    rng = random.Random(f"{sp.srepr(a)[:200]}")
    diff = a - b
    idx = [i for i in (S.j, S.k, S.c) if i in diff.free_symbols]
    for combo in itertools.product((1, 2, 3), repeat=len(idx)):
        e = instantiate(diff.subs(dict(zip(idx, combo, strict=True))), 3, simplex)
        values: dict[sp.Basic, sp.Expr] = {}
        for atom in sorted(e.free_symbols | e.atoms(sp.Indexed), key=str):
            if atom in values or isinstance(atom, sp.IndexedBase):
                continue
            low = 0.1 if getattr(atom, "is_positive", False) else -2.0
            values[atom] = sp.Float(rng.uniform(low, 2.0), 30)
        try:
            val = sp.N(e.xreplace(values), 30)
        except (TypeError, ValueError, ZeroDivisionError):
            return False
        if not val.is_number or not val.is_finite or abs(val) > 1e-20:
            return False
    return True


# --------------------------------------------------------------------------- chains


def accurate_chain(
    expr: sp.Expr, targets: str, shift: bool | None = None
) -> list[tuple[str, sp.Expr]]:
    """`expr` and every rewrite of it that changes something, as `(rule, result)` in order.

    `shift=None` shifts where a logit appears outside the kernels and the value provably does
    not change (screened numerically here, proved by the step); True shifts whenever the value
    does not change (a block computed together shares one shifted array); False never.
    """
    stages: list[tuple[str, sp.Expr]] = [("derived", expr)]

    def add(rule: str, new: sp.Expr) -> None:
        if new != stages[-1][1]:
            stages.append((rule, new))

    add("stable", stabilize(expr))
    add("powers", probability_powers(stages[-1][1], simplex=targets == "distribution"))
    if targets == "binary" and stages[-1][1].has(S.y):
        add("endpoints", endpoints_within(endpoints(stages[-1][1])))
    add("collected", collected(stages[-1][1]))
    add("complements", complements(stages[-1][1]))
    add("log_softmax", log_softmax(stages[-1][1]))
    add("combined", combined(stages[-1][1]))
    add("powered", powered(stages[-1][1]))
    add("diagonal", delta_endpoints(stages[-1][1]))
    add("rationalised", rationalised(stages[-1][1]))
    add("logaddexp", log_add_exp(stages[-1][1]))
    add("centred_mean", centred_mean(stages[-1][1]))
    current = stages[-1][1]
    if current.has(S.v):
        centred = current.xreplace(
            {a: S.w[a.indices[0]] for a in current.atoms(sp.Indexed) if a.base == S.v}
        )
        if probably_equal(current, centred, simplex=targets == "distribution"):
            add("centred", centred)
            current = centred
    wants = has_bare_logits(current) if shift is None else shift
    if wants and current.has(S.o):
        candidate = shifted(current)
        if probably_equal(current, candidate, simplex=targets == "distribution"):
            add("shifted", candidate)
    add("masked", masked_limits(stages[-1][1]))
    return stages


def labels_form(expr: sp.Expr) -> sp.Expr:
    """`expr` for a one-hot target at class c: substitute `y_k = delta_{kc}` and evaluate sums."""
    onehot = expr.replace(
        lambda e: isinstance(e, sp.Indexed) and e.base == S.y,
        lambda e: sp.KroneckerDelta(e.indices[0], S.c),
    )
    out: sp.Expr = refine_indices(S.c)(onehot)
    return out


def split_label_delta(gradient: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """`g_j = A_j + delta_{jc} B`: return (A, B with j = c)."""
    delta = sp.KroneckerDelta(S.j, S.c)
    expanded = sp.expand(gradient.xreplace({sp.KroneckerDelta(S.c, S.j): delta}))
    coeff = expanded.coeff(delta)
    rest = sp.expand(expanded - coeff * delta)
    if rest.has(sp.KroneckerDelta):
        raise NotImplementedError(f"gradient is not affine in the one-hot label: {gradient}")
    return rest, coeff.xreplace({S.j: S.c})
