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


def _log_cosh_code(dtype: str) -> object:
    """The printed `LogCosh` kernel as a NumPy function of one array (what a module runs)."""
    import numpy as np

    from derive.output.printers.vector import VectorPrinter
    from derive.symbolic.functions import LogCosh

    code = VectorPrinter({"o": "X"}).doprint(LogCosh(S.o[S.k]))
    return lambda x: eval(code, {"np": np, "X": np.asarray(x, dtype=dtype)})


def test_log_add_exp_recognises_logaddexp_logcosh_sigmoid_and_tanh() -> None:
    from derive.symbolic.accurate import exponentiated, log_add_exp, per_class, tanh_as_exp
    from derive.symbolic.functions import LogAddExp, LogCosh, Sigmoid, to_raw
    from derive.symbolic.steps import is_zero

    a, b, x = sp.symbols("a b x", real=True)

    def proved(before: sp.Expr, after: sp.Expr) -> bool:
        diff = before - after
        for t in (to_raw, tanh_as_exp, R.split_sums, R.canonical_sums, per_class, exponentiated):
            diff = t(diff)
        return is_zero(diff)

    cases = [
        (sp.log(sp.exp(a) + sp.exp(b)), LogAddExp(a, b)),
        (sp.log(sp.exp(x) + sp.exp(-x)) - sp.log(2), LogCosh(x)),
        # the log-cosh gradient as differentiation leaves it: two ratios of exponentials
        (
            sp.exp(x) / (sp.exp(x) + sp.exp(-x)) - sp.exp(-x) / (sp.exp(x) + sp.exp(-x)),
            sp.tanh(x),
        ),
        (sp.exp(a) / (sp.exp(a) + sp.exp(b)), Sigmoid(a - b)),
        # a split sum: the log 2 goes back into the sum
        (
            _sum(sp.log(sp.exp(S.o[S.k] - S.y[S.k]) + sp.exp(S.y[S.k] - S.o[S.k])))
            - S.K * sp.log(2),
            _sum(LogCosh(S.o[S.k] - S.y[S.k])),
        ),
    ]
    for before, after in cases:
        got = log_add_exp(before)
        assert sp.expand(got - after) == 0, (before, got)
        assert proved(before, got), before
    # a wrong rewrite is not proved by the same transforms (the check can fail)
    assert not proved(sp.log(sp.exp(x) + sp.exp(-x)) - sp.log(2), LogCosh(2 * x))
    # shapes that are not two exponentials are left alone
    left = [sp.log(sp.exp(a) + b), sp.exp(a) / (sp.exp(b) + sp.exp(x)), 2 * Sigmoid(a) - b]
    for e in left:
        assert log_add_exp(e) == e


def test_log_cosh_kernel_is_accurate_from_tiny_to_huge_arguments() -> None:
    import mpmath
    import numpy as np

    xs = [1e-300, 1e-12, 1e-4, 0.3, 0.999, 1.0, 1.001, 7.0, 40.0, 800.0, 1e3, 1e4, 1e300]
    for dtype, u in (("float64", 2.0**-53), ("float32", 2.0**-24)):
        f = _log_cosh_code(dtype)
        inputs = np.array([x for x in xs if x < float(np.finfo(dtype).max)] + [-1e3], dtype=dtype)
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is benign
            got = f(inputs)
        for x, value in zip(inputs, got, strict=True):
            with mpmath.workdps(60):  # the argument as the dtype holds it
                exact = mpmath.log(mpmath.cosh(mpmath.mpf(float(x))))
            # 4 roundings of ~u each (sinh/expm1, square or add, log1p): 8 u relative, margin 2
            assert abs(value - exact) <= 8 * u * abs(exact) + 1e-320, (dtype, x, value, exact)


def test_a_probability_times_its_logit_takes_its_limit_at_masked_classes() -> None:
    import numpy as np

    from derive.output.loader import GENERATED_DIR, load_module_from_path
    from derive.output.printers.vector import VectorPrinter
    from derive.symbolic.accurate import masked_limits
    from derive.symbolic.functions import ROW, ProbabilityTimes, Softmax, to_raw
    from derive.symbolic.steps import is_zero

    beta = sp.Symbol("beta", positive=True)
    z, j, k = S.z, S.j, S.k
    p = lambda i: Softmax(z[ROW], i)  # noqa: E731
    entropy = _sum(p(k) * z[k])  # sum_k p_k log p_k + LSE, as the derivation leaves it
    gradient = (beta * z[j] - beta * entropy + 1) * p(j)
    assert masked_limits(entropy) == _sum(ProbabilityTimes(p(k), z[k]))
    out = masked_limits(gradient)
    # only the term with the class's own logit is wrapped; the rest keeps its shape
    assert ProbabilityTimes(beta * p(j), z[j]) in sp.Add.make_args(out), out
    assert is_zero(to_raw(out - gradient))
    # a logit of another class, or a target times a logit, is not this shape
    for other in (p(j) * z[k], S.y[k] * z[k], _sum(S.y[k] * z[k])):
        assert masked_limits(other) == other
    # the printed product is 0 at a masked class (p = 0, z = -inf), p z elsewhere
    code = VectorPrinter({"z": "Z"}).doprint(masked_limits(p(k) * z[k]))
    assert "_target_mul" in code
    Z = np.array([[0.0, -np.inf, -1.0]])
    P = np.exp(Z) / np.exp(Z).sum()

    # the kernel as every emitted module carries it
    kernel = load_module_from_path(GENERATED_DIR / "softmax_regression.py")._target_mul
    with np.errstate(all="raise"):
        got = eval(code, {"_target_mul": kernel, "_softmax": lambda _: P, "Z": Z})
    assert got[0, 1] == 0 and got[0, 2] == P[0, 2] * -1.0


def test_a_target_inside_a_square_is_split_at_its_endpoints() -> None:
    import math

    import numpy as np

    from derive.output.loader import GENERATED_DIR, load_module_from_path
    from derive.output.printers.vector import VectorPrinter
    from derive.symbolic.accurate import endpoints_within
    from derive.symbolic.functions import Sigmoid, SigmoidComplement, to_raw
    from derive.symbolic.steps import is_zero

    o, y = S.o[S.j], S.y[S.j]
    squared = (Sigmoid(o) - y) ** 2 / 2
    out = endpoints_within(squared)
    assert out == ((1 - y) * Sigmoid(o) - y * SigmoidComplement(o)) ** 2 / 2
    assert is_zero(to_raw(out - squared))
    # y = 1 at o = 40, printed and run with the modules' sigmoid kernel: the split form keeps
    # sigmoid(-40)^2 / 2 (~ e^-80 / 2), the form as written rounds sigmoid(40) - 1 to 0
    kernels = load_module_from_path(GENERATED_DIR / "logistic_regression.py")
    scope = {"np": np, "O": np.array([40.0]), "Y": np.array([1.0])}
    scope |= {name: getattr(kernels, name) for name in ("_sigmoid", "_target_mul")}
    printer = VectorPrinter({"o": "O", "y": "Y"})
    written, split = (eval(printer.doprint(e), scope)[0] for e in (squared, out))
    exact = math.exp(-80) * (1 + math.exp(-40)) ** -2 / 2
    assert written == 0.0
    assert math.isclose(split, exact, rel_tol=1e-15), (split, exact)
    # not affine in the target (a square of y), or no sigmoid: left alone
    for e in ((Sigmoid(o) - y**2) ** 2, (o - y) ** 2):
        assert endpoints_within(e) == e


# --------------------------------------------------------------------------- focal-shaped rules
# The rules of `derive.symbolic.accurate` that a power of a complement needs (issue 8): each on a
# small expression of the shape the focal loss's gradient has, its result known by hand, and
# the value unchanged (to_raw, at a point).


def _row_functions() -> tuple[sp.Expr, sp.Expr, sp.Expr, sp.Expr]:
    from derive.symbolic.functions import ROW, LogSoftmax, LogSumExp, Softmax, SoftmaxComplement

    row = S.o[ROW]
    return Softmax(row, S.j), SoftmaxComplement(row, S.j), LogSoftmax(row, S.j), LogSumExp(row)


def _same_value(a: sp.Expr, b: sp.Expr) -> bool:
    """Equal at one point with K = 3 and j = 2 (raw forms, 30 digits)."""
    from derive.symbolic.steps import instantiate

    diff = instantiate((a - b).subs(S.j, 2), 3, False)
    symbols = sorted(diff.free_symbols, key=str)
    entries = sorted(diff.atoms(sp.Indexed), key=str)
    point = {x: sp.Rational(7 * i + 3, 11) for i, x in enumerate(symbols)}
    point |= {o: sp.Rational(5 * i - 4, 7) for i, o in enumerate(entries)}
    return abs(sp.N(diff.xreplace(point), 30)) < 1e-25


def test_collected_cancels_a_common_denominator_and_gathers_a_symbolic_power() -> None:
    from derive.symbolic.accurate import collected

    p, _, _, _ = _row_functions()
    X, g = sp.Symbol("X", positive=True), sp.Symbol("gamma", positive=True)
    # p X / (p - 1) - p^2 X / (p - 1) = -p X: no division by p - 1 (0 once p rounds to 1)
    pair = p * X / (p - 1) - p**2 * X / (p - 1)
    assert collected(pair) == -p * X
    # terms sharing (1 - p)^(g - 1) meet under it: (1 - p)^(g - 1) (p - 1) y_j
    power = (1 - p) ** (g - 1)
    shared = power * p * S.y[S.j] - power * S.y[S.j]
    out = collected(shared)
    assert out == power * (p - 1) * S.y[S.j]
    assert _same_value(out, shared)
    # a lone term over p - 1 has nothing to cancel with: left alone
    assert collected(X / (p - 1) + X) == X / (p - 1) + X


def test_log_softmax_pairs_a_log_sum_exp_with_its_logit_where_a_probability_multiplies() -> None:
    from derive.symbolic.accurate import log_softmax
    from derive.symbolic.functions import CLASS_DUMMY, ROW, LogSoftmax, SoftmaxComplement

    _, q, _, lse = _row_functions()
    g = sp.Symbol("gamma", positive=True)
    s = CLASS_DUMMY
    qs = SoftmaxComplement(S.o[ROW], s) ** g
    # the focal loss as the derivation leaves it: LSE sum_s y_s q_s^g - sum_s y_s q_s^g o_s
    loss = lse * _sum(qs * S.y[s], s) - _sum(qs * S.y[s] * S.o[s], s)
    out = log_softmax(loss)
    assert out == -_sum(LogSoftmax(S.o[ROW], s) * qs * S.y[s], s)
    assert _same_value(out, loss)
    # outside a sum too
    assert log_softmax(q**g * lse - q**g * S.o[S.j]) == -(q**g) * LogSoftmax(S.o[ROW], S.j)
    # the cross-entropy's LSE(o) - o_c is exact at shifted logits as it is: left alone
    assert log_softmax(lse - S.o[S.c]) == lse - S.o[S.c]


def test_combined_joins_a_power_of_the_complement_with_p_log_p() -> None:
    from derive.symbolic.accurate import combined
    from derive.symbolic.functions import LogRatio

    p, q, lg, _ = _row_functions()
    g = sp.Symbol("gamma", nonnegative=True)
    # (1 - p)^(g - 1) p log p = -(1 - p)^g rho(p): finite where p rounds to 1, for any g >= 0
    term = q ** (g - 1) * p * lg * S.y[S.j]
    out = combined(term)
    assert out == -(q**g) * LogRatio(p, lg, q) * S.y[S.j]
    assert _same_value(out, term)
    # inside a sum, the power goes to each term: q^(g-1) (g p log p - q) = -q^g (g rho + 1)
    inner = q ** (g - 1) * (g * p * lg - q)
    out = combined(inner)
    assert not any(isinstance(t, sp.Pow) and t.exp == g - 1 for t in out.atoms(sp.Pow))
    assert sp.expand(out + q**g * (g * LogRatio(p, lg, q) + 1)) == 0
    assert _same_value(out, inner)
    # no log of that probability: nothing to combine
    assert combined(q ** (g - 1) * p) == q ** (g - 1) * p


def test_powered_takes_a_symbolic_power_of_the_complement_from_its_probability() -> None:
    from derive.symbolic.accurate import powered
    from derive.symbolic.functions import ComplementPower

    p, q, _, _ = _row_functions()
    g = sp.Symbol("gamma", nonnegative=True)
    assert powered(q**g * S.y[S.j]) == ComplementPower(p, q, g) * S.y[S.j]
    assert _same_value(powered(q**g), q**g)
    # an integer power keeps its form (its rounding is not amplified by a large exponent)
    assert powered(q**2) == q**2


def test_log_ratio_and_power_log_take_their_limits_in_the_reference() -> None:
    """The reference (mpmath) of rho(p) is 1 at p = 1 (one class), and x^e log x is 0 at
    x = 0 for e > 0 (a power's derivative in its exponent at K = 1): not 0/0 or 0 * -inf."""
    import mpmath

    from derive.output.printers.reference import print_reference
    from derive.symbolic.functions import LogRatio

    e = sp.Symbol("e")
    p = S.o[S.j]
    rho = LogRatio(p, sp.log(p), 1 - p)
    namespace: dict[str, object] = {"mpmath": mpmath, "Any": object}
    for name, expr in (("_rho", rho), ("_xlog", (1 - p) ** e * sp.log(1 - p))):
        exec("\n".join(print_reference(name, expr, ["e"])), namespace)
    o = [None, mpmath.mpf(1)]
    assert namespace["_rho"](o, o, o, 1, e=mpmath.mpf(2))(1, 1, 1) == 1  # type: ignore[operator]
    assert namespace["_xlog"](o, o, o, 1, e=mpmath.mpf(2))(1, 1, 1) == 0  # type: ignore[operator]
    half = [None, mpmath.mpf("0.5")]
    got = namespace["_rho"](half, half, half, 1, e=mpmath.mpf(2))(1, 1, 1)  # type: ignore[operator]
    assert abs(got - mpmath.log(2)) < mpmath.mpf(10) ** -40  # -p log p / (1 - p) at p = 1/2


def test_a_symbolic_power_of_a_probability_is_a_power_of_the_softmax() -> None:
    from sympy.codegen.cfunctions import expm1

    from derive.symbolic.accurate import probability_powers
    from derive.symbolic.functions import ROW, LogSoftmax, LogSumExp, Softmax, to_raw
    from derive.symbolic.steps import is_zero

    q = sp.Symbol("q", positive=True)
    o, j, c, k = S.o, S.j, S.c, S.k
    row = o[ROW]
    Z_q = sp.exp(LogSumExp(row)) ** q  # (sum_k e^{o_k})^q, as `stabilize` leaves it
    p = lambda i: Softmax(row, i)  # noqa: E731
    cases = [
        # p_j^q: overflow-free, bounded by 1
        (sp.exp(q * o[j]) / Z_q, p(j) ** q, False),
        # 1 - p_c^q, which rounds to 0 once p_c rounds to 1: -expm1(q log p_c)
        ((1 - sp.exp(q * o[c]) / Z_q) / q, -expm1(q * LogSoftmax(row, c)) / q, False),
        # a symbolic power pulled out, so the complement shows: p^q (p - 1)
        (-sp.exp(q * o[c]) / Z_q + sp.exp((q + 1) * o[c]) / (Z_q * sp.exp(LogSumExp(row))),
         (p(c) - 1) * p(c) ** q, False),
        # soft targets (they sum to 1): 1 - sum_k y_k p_k^q = sum_k y_k (1 - p_k^q)
        (1 - _sum(S.y[k] * sp.exp(q * o[k]) / Z_q),
         -_sum(S.y[k] * expm1(q * LogSoftmax(row, k))), True),
    ]  # fmt: skip
    for before, expected, simplex in cases:
        got = probability_powers(before, simplex=simplex)
        assert R.split_sums(sp.expand(got - expected)) == 0, (before, got)
        diff = to_raw(got - before)
        if simplex:
            diff = R.targets_sum_to_one(R.split_sums(diff))
        assert is_zero(diff), before
    # nothing to do without an exponential; a wrong power is not proved equal
    assert probability_powers(p(j) * o[j]) == p(j) * o[j]
    assert not is_zero(to_raw(p(j) ** q - sp.exp(q * o[j]) / Z_q**2))


def test_centred_mean_centres_an_entry_minus_its_weighted_mean_at_the_leading_class() -> None:
    from derive.symbolic.accurate import centred_mean
    from derive.symbolic.functions import ROW, AtTop, Softmax

    row = S.o[ROW]
    p_j, p_k = Softmax(row, S.j), Softmax(row, S.k)
    # Brier's gradient bracket: r_j - sum_k p_k r_k with r = p - y (as the chain expands it)
    bracket = p_j - S.y[S.j] - _sum(p_k**2) + _sum(S.y[S.k] * p_k)
    top = AtTop(Softmax(row, ROW) - S.y[ROW], row)
    out = centred_mean(bracket)
    r_k = p_k - S.y[S.k]
    expected = p_j - S.y[S.j] - top - _sum(p_k * (r_k - top))
    assert sp.expand(R.canonical_sums(out) - R.canonical_sums(expected)) == 0
    assert out.has(AtTop) and _same_value(out, bracket)
    # any value stands for the entry at the top in a proof: the identity holds for all of them
    assert _same_value(out.xreplace({top: sp.Rational(-3, 7)}), bracket)
    # a sum that is not the p-weighted mean of the rest is left alone (x_j - sum_k p_k y_k)
    other = S.x[S.j] - _sum(p_k * S.y[S.k])
    assert centred_mean(other) == other
    # nor is a rest that is constant along the row
    assert centred_mean(S.y[S.c] - _sum(p_k * S.y[S.c])) == S.y[S.c] - _sum(p_k * S.y[S.c])
