"""The loss catalogue: every entry goes through the same pipeline, and the derived gradients are
the textbook ones (typed independently here). A loss the templates never saw comes out right."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from derive import notation as S
from derive import verify
from derive.errors import ModelDefinitionError
from derive.losses import catalogue
from derive.losses.definitions import LABEL_SMOOTHING, LOGISTIC, SQUARED_ERROR, TEMPERATURE, T, eps
from derive.losses.derivation import loss_derivation
from derive.losses.model import SOFTMAX_CROSS_ENTROPY, LossModel, Param, class_sum, softmax_expr
from derive.output import build, codegen
from derive.output.loader import load_generated, load_module_from_path
from derive.symbolic.steps import Prose, is_zero


@pytest.mark.parametrize("name", catalogue.names())
def test_every_claim_of_every_loss_is_proved(name: str) -> None:
    checked = catalogue.checked(name)
    unproved = [s.step.name for s in checked.steps if not s.proved]
    assert unproved == []


def _sigmoid(x: sp.Expr) -> sp.Expr:
    return 1 / (1 + sp.exp(-x))


@pytest.mark.parametrize(
    ("model", "textbook"),
    [
        (LABEL_SMOOTHING, softmax_expr(S.j) - (1 - eps) * S.y[S.j] - eps / S.K),
        (
            TEMPERATURE,
            (sp.exp(S.o[S.j] / T) / sp.Sum(sp.exp(S.o[S.m] / T), (S.m, 1, S.K)) - S.y[S.j]) / T,
        ),
        (LOGISTIC, _sigmoid(S.o[S.j]) - S.y[S.j]),
        (SQUARED_ERROR, S.o[S.j] - S.y[S.j]),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
def test_derived_gradient_is_the_textbook_one(model: LossModel, textbook: sp.Expr) -> None:
    derived = catalogue.checked(model.name).derivation.final_forms["gradient"]
    for K in (2, 3):
        for j in range(1, K + 1):
            assert is_zero((derived - textbook).subs(S.j, j).subs(S.K, K).doit())


def test_weight_decay_adds_lambda_W() -> None:
    m = load_generated("softmax_regression_l2")
    rng = np.random.default_rng(0)
    X, W, b = rng.normal(size=(20, 3)), rng.normal(size=(3, 4)), rng.normal(size=4)
    y = rng.integers(0, 4, size=20)
    l0, g0, _ = m.loss_and_grad(X, y, W, b, lam=0.0)
    l1, g1, _ = m.loss_and_grad(X, y, W, b, lam=0.5)
    np.testing.assert_allclose(g1 - g0, 0.5 * W, rtol=1e-13, atol=0)
    assert float(l1 - l0) == pytest.approx(0.25 * float(np.vdot(W, W)), rel=1e-13)


def test_parameters_are_validated_by_the_emitted_code() -> None:
    m = load_generated("label_smoothing")
    O, y = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match=r"eps: 1\.0 is outside its valid range \[0\.0, 1\.0\)"):
        m.loss(O, y, eps=1.0)


@pytest.mark.slow
def test_a_loss_the_templates_never_saw_comes_out_right(tmp_path: Path) -> None:
    """Twice the cross-entropy: same pipeline, different code, gradient exactly doubled."""
    doubled = replace(SOFTMAX_CROSS_ENTROPY, name="doubled", loss=2 * SOFTMAX_CROSS_ENTROPY.loss)
    checked = loss_derivation(doubled).check()
    build.write(build.code_artifacts(checked), tmp_path)
    m2 = load_module_from_path(tmp_path / "doubled.py")
    m1 = load_generated("softmax_regression")
    assert (tmp_path / "doubled.py").read_text() != (
        Path(m1.__file__).read_text()  # type: ignore[arg-type]
    )
    rng = np.random.default_rng(1)
    X, W, b = rng.normal(size=(30, 4)), rng.normal(size=(4, 5)), rng.normal(size=5)
    y = rng.integers(0, 5, size=30)
    for a, c in zip(m2.loss_and_grad(X, y, W, b), m1.loss_and_grad(X, y, W, b), strict=True):
        np.testing.assert_allclose(a, 2 * np.asarray(c), rtol=1e-14, atol=1e-15)
    results = {r.name: r for r in verify.run(m2)}
    for name, r in results.items():
        if "reference" not in name:
            assert r.passed, (name, r)


def test_a_name_that_is_code_is_refused_before_anything_is_emitted() -> None:
    evil = sp.Symbol('__import__("os").getcwd()')
    with pytest.raises(ModelDefinitionError):
        replace(SOFTMAX_CROSS_ENTROPY, name="evil", loss=evil * SOFTMAX_CROSS_ENTROPY.loss)
    with pytest.raises(ModelDefinitionError, match="keyword"):
        replace(SOFTMAX_CROSS_ENTROPY, name="class")
    with pytest.raises(ModelDefinitionError, match="dunder"):
        Param(sp.Symbol("__x__"), 1.0)
    with pytest.raises(ModelDefinitionError, match="undeclared"):
        LossModel("m", Prose("m", "m"), class_sum(S.o[S.k] * sp.Symbol("zeta")), S.o[S.j], "real")


def test_a_gradient_that_is_the_logits_themselves_does_not_alias_the_input(tmp_path: Path) -> None:
    """loss = sum_k o_k^2 / 2 has dl/do = o: the emitted code must copy, not return O itself."""
    model = LossModel(
        "half_square",
        Prose("h", "h"),
        class_sum(S.o[S.k] ** 2 / 2),
        S.o[S.j],
        "real",
        concrete_Ks=(2, 3),
        second_order=False,
    )
    build.write(build.code_artifacts(loss_derivation(model).check()), tmp_path)
    m = load_module_from_path(tmp_path / "half_square.py")
    O = np.arange(6.0).reshape(2, 3)
    before = O.copy()
    G = m.grad_logits(O, np.zeros((2, 3)))
    assert np.array_equal(O, before) and not np.shares_memory(G, O)
    np.testing.assert_allclose(G, O / 2)


@pytest.mark.slow  # derives, emits and verifies a user loss (seconds)
def test_a_loss_with_no_known_stable_form_is_reported_not_passed(tmp_path: Path) -> None:
    """Poisson regression, exp(o) - y o: exp(o) has no bounded rewrite, and verify says so:
    at +-1e4 the exact loss exceeds float64, so the row is a skip with that reason (the module
    refuses the input), never a pass."""
    model = LossModel(
        "poisson",
        Prose("p", "p"),
        class_sum(sp.exp(S.o[S.k]) - S.y[S.k] * S.o[S.k]),
        sp.exp(S.o[S.j]),
        "real",
        concrete_Ks=(2, 3),
    )
    checked = loss_derivation(model).check()
    build.write(build.code_artifacts(checked), tmp_path)
    m = load_module_from_path(tmp_path / "poisson.py")
    assert m.STABLE is False
    results = {r.name: r for r in verify.run(m)}
    extreme = results["loss and gradients at logits of +-1e4 (float64)"]
    assert extreme.status == "skip" and "exceeds the largest float64" in extreme.note
    fd = results["gradient w.r.t. logits vs central differences (float64)"]
    assert fd.passed
    # The overflow is refused with one clear error, not returned as inf (and no RuntimeWarning,
    # which pytest would turn into an error); finite results pass through unchanged.
    O, Y = np.array([[1e4, 0.0]]), np.zeros((1, 2))
    for f in (m.loss, m.grad_logits):
        with pytest.raises(FloatingPointError, match=r"exp\(o\[.*\]\).*STABLE = False"):
            f(O, Y)
    assert np.isfinite(m.loss(np.zeros((1, 2)), Y))
    assert "exp(o[j])" in codegen.unstable_shapes(checked.derivation)
    assert codegen.unstable_shapes(catalogue.checked("softmax_regression").derivation) == []
