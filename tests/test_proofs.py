"""Each check reads the step it labels: wrong displays, relations, definitions and final forms fail.

These are the defects of issue 9 one by one (the mutation suite, `test_mutations.py`, runs every
kind of mutation over every step of every loss); each test names the check that must catch it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import sympy as sp

from derive import notation as S
from derive.errors import StepCheckError
from derive.losses.catalogue import CATALOGUE
from derive.losses.derivation.symbols import LOSS, YHAT, x_vec, y_vec, yhat_vec
from derive.losses.model import class_sum
from derive.losses.softmax_regression import softmax_regression
from derive.symbolic.rewrites import canonical_sums, split_sums
from derive.symbolic.steps import SIZES, ConcreteK, Derivation, GeneralK, Prose, Step

STORY = softmax_regression()
L2 = CATALOGUE["softmax_regression_l2"]()


def _only(d: Derivation, name: str) -> Derivation:
    """`d` reduced to its definitions and the step `name` (checking one step is fast)."""
    keep = tuple(s for s in d.steps if s.definition or s.name == name)
    return replace(d, steps=keep, final_forms={}, final_sources={}, questions=(), results=())


def _fails(d: Derivation, name: str, **changes: object) -> StepCheckError:
    with pytest.raises(StepCheckError) as err:
        _only(d, name).replace_step(name, **changes).check()
    return err.value


def _step(lhs: sp.Basic, rhs: sp.Basic, *checks: object, relation: str = "=") -> Step:
    return Step("t", Prose("t", "t"), Prose("t", "t"), lhs, rhs, checks, relation)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- capture-free sums


def test_nested_sums_sharing_only_a_name_are_not_confused() -> None:
    """`sum_j v_j sum_k p_k v_j` is not `sum_j v_j sum_k p_k v_k`: renaming must not capture."""
    j, k, K = S.j, S.k, S.K
    outer_index = sp.Sum(S.v[j] * sp.Sum(S.p[k] * S.v[j], (k, 1, K)), (j, 1, K))
    inner_index = sp.Sum(S.v[j] * sp.Sum(S.p[k] * S.v[k], (k, 1, K)), (j, 1, K))
    assert canonical_sums(outer_index) != canonical_sums(inner_index)
    step = _step(outer_index, inner_index, GeneralK((canonical_sums,)))
    with pytest.raises(StepCheckError, match="symbolic K"):
        step.checks[0].run(step)
    # The same sums with other index names are still recognised as equal.
    relabelled = sp.Sum(S.v[k] * sp.Sum(S.p[j] * S.v[k], (j, 1, K)), (k, 1, K))
    assert canonical_sums(outer_index) == canonical_sums(relabelled)


def test_a_sum_shadowing_a_dummy_named_like_the_canonical_one_is_not_captured() -> None:
    s = sp.Symbol("_s", integer=True, positive=True)
    j, K = S.j, S.K
    expr = sp.Sum(S.v[j] * sp.Sum(S.p[s] * S.v[j], (s, 1, K)), (j, 1, K))
    other = sp.Sum(S.v[j] * sp.Sum(S.p[s] * S.v[s], (s, 1, K)), (j, 1, K))
    assert canonical_sums(expr) != canonical_sums(other)


def test_split_sums_still_proves_the_softmax_normalisation() -> None:
    step = STORY.steps[[s.name for s in STORY.steps].index("softmax_sums_to_one")]
    assert step.checks[0] == GeneralK((split_sums, canonical_sums))
    _only(STORY, "softmax_sums_to_one").check()


# --------------------------------------------------------------------------- concrete K


def test_concrete_k_tries_every_index_value_for_small_k() -> None:
    """False only at j = 3 with K = 4: indices 1, 2 and K alone would miss it."""
    step = _step(sp.KroneckerDelta(S.j, 3), sp.Integer(0), ConcreteK(Ks=(4,)))
    with pytest.raises(StepCheckError, match="j=3"):
        step.checks[0].run(step)


# --------------------------------------------------------------------------- relations


def test_positive_reads_the_relation_and_the_rhs() -> None:
    assert _fails(STORY, "softmax_positive", rhs=sp.Integer(1)).step == "softmax_positive"
    _fails(STORY, "softmax_positive", relation="=")
    _only(STORY, "softmax_positive").check()


def test_an_equality_relabelled_as_inequality_is_refused() -> None:
    err = _fails(STORY, "softmax_sums_to_one", relation=">")
    assert "relation" in str(err)


def test_a_step_whose_only_proof_is_a_replay_is_refused() -> None:
    step = next(s for s in STORY.steps if s.name == "gradient_logits")
    replay_only = tuple(c for c in step.checks if isinstance(c, GeneralK))
    err = _fails(STORY, "gradient_logits", checks=replay_only)
    assert "replays" in str(err)


# --------------------------------------------------------------------------- elementwise


@pytest.mark.parametrize(
    ("name", "rhs"),
    [
        ("chain_rule_W", 2 * x_vec * (yhat_vec - y_vec).T),
        ("chain_rule_W", ((yhat_vec - y_vec) * x_vec.T).T.T),
        ("chain_rule_W", x_vec * yhat_vec.T),
        ("chain_rule_b", yhat_vec),
        ("batch_gradient_W", S.Xm.T * (S.Yhat - S.Ym)),
        ("batch_gradient_W", sp.MatMul(1 / S.n, S.Xm.T, S.Yhat)),
        ("batch_gradient_b", (S.Yhat - S.Ym).T * S.ones_n),
        ("linear_model", S.Xm * S.Wm),
    ],
)
def test_the_elementwise_check_proves_the_displayed_formula(name: str, rhs: sp.Basic) -> None:
    with pytest.raises(StepCheckError):
        _only(STORY, name).replace_step(name, rhs=rhs).check()


def test_the_weight_decay_display_is_proved() -> None:
    lam = S.lam
    _only(L2, "weight_decay").check()
    _fails(L2, "weight_decay", rhs=2 * lam * S.Wm)
    _fails(L2, "weight_decay", rhs=lam * S.Wm.T * S.Wm)


def test_a_display_symbol_the_check_cannot_bind_fails() -> None:
    stray = sp.MatrixSymbol("Z", S.n, S.K)
    err = _fails(STORY, "batch_gradient_W", rhs=sp.MatMul(1 / S.n, S.Xm.T, stray))
    assert "unbound" in str(err)


# --------------------------------------------------------------------------- definitions


def test_a_changed_softmax_definition_makes_the_derivation_fail() -> None:
    doubled = sp.exp(2 * S.o[S.j]) / sp.Sum(sp.exp(S.o[S.m]), (S.m, 1, S.K))
    changed = STORY.replace_step("softmax_definition", rhs=doubled)
    with pytest.raises(StepCheckError):
        changed.check()


def test_a_changed_cross_entropy_definition_makes_the_derivation_fail() -> None:
    doubled = -2 * class_sum(S.y[S.k] * sp.log(YHAT[S.k]))
    changed = _only(STORY, "loss_in_logits").replace_step("cross_entropy", rhs=doubled)
    with pytest.raises(StepCheckError, match="loss_in_logits"):
        changed.check()


def test_the_batch_steps_read_the_defined_loss() -> None:
    """With the loss definition doubled, the displayed batch gradient no longer holds."""
    changed = _only(STORY, "batch_gradient_W").replace_step(
        "cross_entropy", rhs=-2 * class_sum(S.y[S.k] * sp.log(YHAT[S.k]))
    )
    with pytest.raises(StepCheckError, match="batch_gradient_W"):
        changed.check()


def test_a_step_using_an_undefined_loss_fails() -> None:
    d = replace(_only(STORY, "loss_in_logits"))
    steps = tuple(s for s in d.steps if s.name != "cross_entropy")
    with pytest.raises(StepCheckError):
        replace(d, steps=steps).check()
    assert LOSS in next(s for s in d.steps if s.name == "loss_in_logits").lhs.free_symbols


# --------------------------------------------------------------------------- final forms


@pytest.mark.parametrize(
    ("form", "value"),
    [
        ("dW", S.Gm.T * S.Xm),
        ("dW", S.Xm.T * S.Gm),
        ("db", sp.MatMul(2 / S.n, S.Gm.T, S.ones_n)),
        ("gradient", sp.exp(S.o[S.j]) / sp.Sum(sp.exp(S.o[S.m]), (S.m, 1, S.K))),
        ("prediction", sp.exp(S.o[S.j])),
        ("logits", S.Xm * S.Wm),
    ],
)
def test_a_wrong_final_form_is_refused(form: str, value: sp.Basic) -> None:
    names = {"dW": "batch_gradient_W", "db": "batch_gradient_b", "logits": "linear_model"}
    source = names.get(form, "gradient_logits" if form == "gradient" else "softmax_definition")
    keep = tuple(s for s in STORY.steps if s.definition or s.name == source)
    d = replace(
        STORY,
        steps=keep,
        questions=(),
        results=(),
        final_forms={form: value},
        final_sources={form: STORY.final_sources[form]},
    )
    with pytest.raises(StepCheckError, match=f"final form {form}"):
        d.check()


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_every_final_form_names_its_step(name: str) -> None:
    d = CATALOGUE[name]()
    formulas = {
        f
        for f, value in d.final_forms.items()
        if value not in SIZES and not f.startswith("reference_")
    }
    assert formulas <= set(d.final_sources), name
    steps = {s.name for s in d.steps}
    assert set(d.final_sources.values()) <= steps, name
