"""Unit tests of `derive.symbolic.rewrites`: each named rewrite on a small expression whose result
is known by hand (the symbolic-K proofs are only as sound as these)."""

from __future__ import annotations

import sympy as sp

from derive import notation as S
from derive.symbolic import rewrites as R


def _sum(body: sp.Expr, index: sp.Symbol = S.k) -> sp.Sum:
    return sp.Sum(body, (index, 1, S.K))


def test_canonical_sums_makes_sums_that_differ_only_in_their_index_equal() -> None:
    assert R.canonical_sums(_sum(S.o[S.k])) == R.canonical_sums(_sum(S.o[S.m], S.m))
    assert R.canonical_sums(_sum(S.o[S.k])) != R.canonical_sums(_sum(S.y[S.m], S.m))


def test_split_sums_is_linearity_and_sums_a_constant_to_K_times_it() -> None:
    c = sp.Symbol("c")
    out = R.split_sums(_sum(2 * S.o[S.k] + c))
    assert sp.expand(out - (2 * R.canonical_sums(_sum(S.o[S.k])) + S.K * c)) == 0


def test_split_sums_without_multinomial_keeps_a_square_of_a_difference() -> None:
    square = _sum((S.o[S.k] - S.y[S.k]) ** 2)
    kept = R.split_sums(square, multinomial=False)
    assert any(isinstance(p.base, sp.Add) for p in kept.atoms(sp.Pow))
    expanded = R.split_sums(square)
    assert not any(isinstance(p.base, sp.Add) for p in expanded.atoms(sp.Pow))


def test_targets_sum_to_one_whatever_the_index_is_called() -> None:
    assert R.targets_sum_to_one(3 * _sum(S.y[S.m], S.m)) == 3
    # a sum of something else is left alone
    assert R.targets_sum_to_one(_sum(S.o[S.m], S.m)) != 1


def test_probabilities_sum_to_one() -> None:
    assert R.probabilities_sum_to_one(_sum(S.p[S.k]) + S.o[S.j]) == 1 + S.o[S.j]


def test_expand_logs_splits_products_and_cancels_exp() -> None:
    a, b = sp.symbols("a b", positive=True)
    assert R.expand_logs(sp.log(a * sp.exp(S.o[S.j]))) == sp.log(a) + S.o[S.j]
    assert R.expand_logs(sp.log(a / b)) == sp.log(a) - sp.log(b)


def test_factor_shift_pulls_a_common_offset_out_of_the_exponential_sum() -> None:
    c = sp.Symbol("c", real=True)
    out = R.factor_shift(_sum(sp.exp(S.o[S.k] - c)))
    assert sp.simplify(out - sp.exp(-c) * _sum(sp.exp(S.o[S.k]))) == 0
    assert out.has(sp.exp(-c)) and not any(s.function.has(c) for s in out.atoms(sp.Sum))


def test_refine_indices_evaluates_a_kronecker_delta_sum() -> None:
    delta_sum = _sum(sp.KroneckerDelta(S.j, S.k) * S.o[S.k])
    assert R.refine_indices(S.j)(delta_sum) == S.o[S.j]


def test_run_transforms_applies_in_order_then_names_sums_canonically() -> None:
    double = lambda e: 2 * e  # noqa: E731
    plus_one = lambda e: e + 1  # noqa: E731
    assert R.run_transforms(S.o[S.j], [double, plus_one]) == 2 * S.o[S.j] + 1
    assert R.run_transforms(S.o[S.j], [plus_one, double]) == 2 * S.o[S.j] + 2
    assert R.run_transforms(_sum(S.o[S.m], S.m), []) == R.canonical_sums(_sum(S.o[S.k]))


def test_a_cancelling_square_root_is_rationalised_and_keeps_its_digits() -> None:
    import math

    from derive.symbolic.accurate import rationalised

    x = sp.Symbol("x", positive=True)
    naive = sp.sqrt(1 + x**2) - 1
    accurate = rationalised(naive)
    assert accurate == x**2 / (sp.sqrt(x**2 + 1) + 1)
    assert sp.simplify(accurate - naive) == 0
    # float64 at x = 1e-9: the naive form rounds to 0, the rationalised one keeps x^2/2
    f = sp.lambdify(x, accurate, "math")
    g = sp.lambdify(x, naive, "math")
    assert g(1e-9) == 0.0 and math.isclose(f(1e-9), 5e-19, rel_tol=1e-15)
    # a split sum (`Sum sqrt(A_k) - K`, as the derivation leaves it) is rationalised term by term
    split = sp.Sum(sp.sqrt(1 + S.o[S.k] ** 2), (S.k, 1, S.K)) - S.K
    assert rationalised(split) == sp.Sum(
        S.o[S.k] ** 2 / (sp.sqrt(S.o[S.k] ** 2 + 1) + 1), (S.k, 1, S.K)
    )
    # no cancelling constant, or B not positive: left alone
    assert rationalised(sp.sqrt(x) - 1) == sp.sqrt(x) - 1
    assert rationalised(sp.sqrt(1 + x**2) + 1) == sp.sqrt(1 + x**2) + 1
