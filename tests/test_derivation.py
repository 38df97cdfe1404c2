"""Unit tests of the derivation subpackage's own logic (derive/losses/derivation/), module by
module: the vector display (`symbols.as_vector`), the labels' composition (`labels.compose`), the
printed forms and their sources (`final.final_forms`), the mean loss the binding reads
(`binding`), and the rule table (`chains`). The whole derivations are checked elsewhere
(test_proofs, test_mutations, test_follows); these pin the pieces with exact expectations.
"""

from __future__ import annotations

import pytest
import sympy as sp

from derive import notation as S
from derive.errors import StepCheckError
from derive.losses.derivation import loss_derivation
from derive.losses.derivation.chains import rule_proof, rule_wording
from derive.losses.derivation.labels import LABEL_GRADIENT, LABEL_PARTS, compose
from derive.losses.derivation.symbols import (
    MEAN_LOSS,
    YHAT,
    as_vector,
    ell_rows,
    ones_K,
    y_vec,
    yhat_vec,
)
from derive.losses.model import SOFTMAX_CROSS_ENTROPY
from derive.symbolic.steps import Derivation, FirstOf


@pytest.fixture(scope="module")
def derivation() -> Derivation:
    return loss_derivation(SOFTMAX_CROSS_ENTROPY)


def test_as_vector_writes_yhat_minus_y_and_refuses_what_is_not_linear() -> None:
    def same(a: sp.MatrixExpr | None, b: sp.MatrixExpr) -> bool:
        return a is not None and set(sp.Add.make_args(a.doit())) == set(sp.Add.make_args(b.doit()))

    assert same(as_vector(YHAT[S.j] - S.y[S.j]), sp.MatAdd(yhat_vec, -y_vec))
    assert same(as_vector(2 * YHAT[S.j] - 1), sp.MatAdd(2 * yhat_vec, -ones_K))
    batch = as_vector(YHAT[S.j] - S.y[S.j], batch=True)
    assert same(batch, sp.MatAdd(S.Yhat, -S.Ym))
    assert as_vector(YHAT[S.j] * S.y[S.j]) is None  # a product is no linear combination
    assert as_vector(sp.log(YHAT[S.j])) is None


def test_compose_replaces_only_the_named_placeholders() -> None:
    a, b = sp.Symbol("a"), sp.Symbol("b")
    parts = {f"code_{name}": expr for name, expr in zip(LABEL_PARTS, (a, b), strict=True)}
    composed = compose(LABEL_GRADIENT, parts)
    delta = sp.KroneckerDelta(S.j, S.c)
    assert sp.expand(composed - ((1 - delta) * a + delta * b)) == 0
    assert compose(LABEL_GRADIENT, {}) == LABEL_GRADIENT


def test_every_final_form_is_its_sources_rhs_or_a_size_or_a_reference(
    derivation: Derivation,
) -> None:
    steps = {s.name: s for s in derivation.steps}
    for name in derivation.final_forms:
        if name.startswith("reference_") or name == "batch_rows":
            assert name not in derivation.final_sources
            continue
        source = derivation.final_sources[name]
        assert source in steps, (name, source)
    assert derivation.final_forms["mean_loss"] == steps["mean_loss"].rhs
    assert derivation.final_forms["dO"] == sp.MatMul(1 / S.n, S.Gm)
    assert steps["mean_loss"].definition and steps["mean_loss"].lhs == MEAN_LOSS


def test_the_mean_loss_is_defined_before_every_step_that_differentiates_it(
    derivation: Derivation,
) -> None:
    names = [s.name for s in derivation.steps]
    first = names.index("mean_loss")
    for user in ("batch_gradient_O", "batch_gradient_W", "batch_gradient_b"):
        assert names.index(user) > first


def test_the_binding_reads_the_mean_loss_definition(derivation: Derivation) -> None:
    """A mean defined as the plain sum makes the batch gradient for W fail its check."""
    total = sp.MatMul(ell_rows.T, S.ones_n)
    with pytest.raises(StepCheckError, match="batch_gradient_W"):
        derivation.replace_step("mean_loss", rhs=total).check(only={"batch_gradient_W"})


@pytest.mark.parametrize("rule", ["shifted", "stable", "complements", "diagonal", "endpoints"])
def test_each_rule_has_wording_and_a_proof(rule: str) -> None:
    words = rule_wording("gradient", rule)
    assert words.title.en.startswith("The gradient ") and words.reason.zh
    assert isinstance(rule_proof(rule, SOFTMAX_CROSS_ENTROPY), FirstOf)
