"""Symbolic layer: every step is proved, and a corrupted step stops the pipeline by name."""

from __future__ import annotations

import pytest
import sympy as sp

from derive import notation as S
from derive.errors import StepCheckError
from derive.losses.model import softmax_expr
from derive.losses.softmax_regression import softmax_regression
from derive.symbolic.steps import (
    CheckedDerivation,
    ConcreteK,
    GeneralK,
    Numeric,
    Prose,
    Step,
    is_zero,
)

DERIVATION = softmax_regression()
CLAIMS = [s.name for s in DERIVATION.steps if not s.definition]


@pytest.mark.parametrize("name", CLAIMS)
def test_every_claim_is_checked_and_proved(checked: CheckedDerivation, name: str) -> None:
    (step,) = [s for s in checked.steps if s.step.name == name]
    assert step.outcomes, "a claim without a check"
    assert step.proved, f"{name}: only numeric evidence"


def test_the_story_is_complete(checked: CheckedDerivation) -> None:
    names = [s.step.name for s in checked.steps]
    for required in (
        "one_hot",
        "softmax_shift_invariance",
        "softmax_argmax",
        "likelihood_one_hot",
        "log_likelihood",
        "maximum_likelihood",
        "cross_entropy",
        "loss_in_logits",
        "gradient_logits",
        "chain_rule_W",
        "batch_gradient_W",
        "hessian_psd",
    ):
        assert required in names


def test_gradient_is_softmax_minus_label(checked: CheckedDerivation) -> None:
    """The derived gradient equals the textbook result, typed independently here."""
    derived = checked.derivation.final_forms["gradient"]
    textbook = softmax_expr(S.j) - S.y[S.j]
    for K in (2, 3, 5):
        for j in range(1, K + 1):
            diff = (derived - textbook).subs(S.j, j).subs(S.K, K).doit()
            assert is_zero(diff)


@pytest.mark.slow
def test_dropping_the_label_term_stops_the_pipeline_at_that_step() -> None:
    wrong = softmax_expr(S.j)  # the notes' gradient without "- y_j"
    corrupted = DERIVATION.replace_step("gradient_logits", rhs=wrong)
    with pytest.raises(StepCheckError) as err:
        corrupted.check()
    assert err.value.step == "gradient_logits"
    assert "lhs" in str(err.value) and "rhs" in str(err.value)


@pytest.mark.parametrize(
    ("name", "rhs"),
    [
        ("softmax_sums_to_one", sp.Integer(2)),
        ("loss_in_logits", sp.log(sp.Sum(sp.exp(S.o[S.m]), (S.m, 1, S.K)))),
        pytest.param(
            "hessian_logits", sp.Integer(0), marks=pytest.mark.slow
        ),  # seconds: K=2..4 Hessians
        # the likelihood story: P(y | x) is not yhat_j, the NLL is not +sum y log yhat
        ("likelihood_one_hot", S.yhat[S.j]),
        ("log_likelihood", sp.Sum(S.y[S.j] * sp.log(S.yhat[S.j]), (S.j, 1, S.K))),
        (
            "maximum_likelihood",
            sp.Sum(
                sp.Sum(S.Y_entries[S.i, S.j] * sp.log(S.Yhat_entries[S.i, S.j]), (S.j, 1, S.K)),
                (S.i, 1, S.n),
            ),
        ),
        ("softmax_argmax", sp.exp(S.o[S.k] - S.o[S.j])),
    ],
)
def test_each_kind_of_check_can_fail(name: str, rhs: sp.Expr) -> None:
    with pytest.raises(StepCheckError, match=name):
        DERIVATION.replace_step(name, rhs=rhs).check()


def _step(lhs: sp.Expr, rhs: sp.Expr, *checks: object) -> Step:
    return Step("t", Prose("t", "t"), Prose("t", "t"), lhs, rhs, checks)  # type: ignore[arg-type]


def test_concrete_check_catches_an_identity_false_only_for_some_K() -> None:
    # sum_j 1 = 3 holds for K = 3 only.
    step = _step(sp.Sum(1, (S.j, 1, S.K)), sp.Integer(3), ConcreteK(Ks=(3, 4)))
    with pytest.raises(StepCheckError, match="K=4"):
        step.checks[0].run(step)


def test_numeric_check_catches_a_small_error_and_says_it_is_not_a_proof() -> None:
    good = _step(sp.exp(S.o[S.j]) * sp.exp(-S.o[S.j]), sp.Integer(1), Numeric(points=3))
    assert "not a proof" in good.checks[0].run(good).text.en
    bad = _step(sp.exp(S.o[S.j]), 1 + S.o[S.j] + S.o[S.j] ** 2 / 2, Numeric(points=3))
    with pytest.raises(StepCheckError, match="numeric"):
        bad.checks[0].run(bad)


def test_a_claim_without_checks_is_refused() -> None:
    corrupted = DERIVATION.replace_step("one_hot", checks=())
    with pytest.raises(StepCheckError, match="no check"):
        corrupted.check()


def test_general_k_check_reports_the_residue() -> None:
    step = _step(sp.Sum(S.y[S.j], (S.j, 1, S.K)), sp.Integer(1), GeneralK(()))
    with pytest.raises(StepCheckError, match="symbolic K"):
        step.checks[0].run(step)


def test_zero_test_sees_a_symbolic_power_of_an_exponential() -> None:
    # exp(q t) = exp(t)^q and (a/b)^q = a^q / b^q for positive a, b: what a generalized
    # cross-entropy's p^q needs (its batch gradient was refused before: a gap of the test, not of
    # the step). Both the long-exponent route (`whole`) and the per-term one (`atoms`) see it.
    q = sp.Symbol("q", positive=True)
    a, b, x, w, mu = sp.symbols("a b x w mu", real=True)
    o1, o2 = a + x * w, b - x * w  # logits as explicit sums (the matrix checks' shape)
    E = sp.exp
    Z = E(o1) + E(o2)
    true = [
        E(q * o1) / Z**q - (E(o1) / Z) ** q,
        E(q * (o1 + o2)) - (E(o1) * E(o2)) ** q,
        E(q * (mu - o1)) * E(q * o1) - E(mu) ** q,
        E(q * o1) * E(o1) / (Z * Z**q) - (E(o1) / Z) ** (q + 1),
        # p^q computed as exp(q log p) (a log in the exponent: X^q for X > 0)
        E(q * (a - sp.log(Z))) - E(q * a) / Z**q,
        # long exponents (more than 12 terms: the `whole` route first)
        E(q * sum(sp.symbols("t0:14"))) - sp.Mul(*[E(t) for t in sp.symbols("t0:14")]) ** q,
        # the generalized cross-entropy's label gradient at K = 2 against its shifted code form
        # (mu the shift): the per-term route must see exp(q (mu - o_1)) as E_mu^q / E_o1^q
        (
            -1 / Z**q
            + E(o1) / (Z * Z**q)
            + (E(o1) * E(o2)) ** q
            * E(-mu * q)
            * E(q * (mu - o1))
            * E(q * (mu - o2))
            / (Z * E(mu)) ** q
            - (E(o1) * E(o2)) ** q
            * E(-mu * q)
            * E(q * (mu - o1))
            * E(q * (mu - o2))
            * E(o1)
            / ((Z * E(mu)) ** q * Z)
        )
        * E(q * o1),
    ]
    for diff in true:
        assert is_zero(diff), diff
    wrong = [
        E(q * o1) / Z**q - (E(o1) / Z) ** (2 * q),
        E(q * (o1 + o2)) - E(o1) ** q * E(o2),
        E(q * (mu - o1)) * E(q * o1) - E(mu),
        E(q * (a - sp.log(Z))) - E(q * a) / Z,
    ]
    for diff in wrong:
        assert not is_zero(diff), diff
