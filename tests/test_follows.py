"""One source of truth: change the loss and every displayed formula and printed line follows.

A loss is doubled, given weight decay, and given a parameter of its own named `lam` (the name
the weight decay would take): each variant goes through the whole pipeline (checked derivation,
notes, emitted module), and the module's numbers are compared with the original's, so nothing
typed separately (a display override, a name read as a role) can survive the change.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import sympy as sp
from conftest import FRAMEWORK_TARGETS, SLOW_FRAMEWORK_TARGETS

from derive import notation as S
from derive.errors import StepCheckError
from derive.losses.definitions import with_weight_decay
from derive.losses.derivation import loss_derivation
from derive.losses.derivation.final import batch_forms
from derive.losses.derivation.symbols import MEAN_LOSS, PENALTY, ell_rows
from derive.losses.model import SOFTMAX_CROSS_ENTROPY, LossModel, Param
from derive.losses.softmax_regression import softmax_regression
from derive.output.codegen import emit_module
from derive.output.frameworks import emit_framework_module
from derive.output.loader import load_module_from_path
from derive.output.notes import render_markdown
from derive.symbolic.decision import ArgMax, ArgMin
from derive.symbolic.steps import CheckedDerivation, Derivation
from derive.verify import frameworks

ROOT = Path(__file__).resolve().parents[1]
BASE = SOFTMAX_CROSS_ENTROPY
DOUBLED = replace(BASE, name="doubled", loss=2 * BASE.loss)


def _emit(checked: CheckedDerivation, tmp_path: Path) -> ModuleType:
    path = tmp_path / f"{checked.derivation.name}.py"
    path.write_text(emit_module(checked), encoding="utf-8")
    return load_module_from_path(path)


def _emit_framework(checked: CheckedDerivation, target: str, folder: Path) -> ModuleType:
    path = folder / target.replace("-", "_") / f"{checked.derivation.name}.py"
    path.parent.mkdir(parents=True)
    path.write_text(emit_framework_module(checked, target), encoding="utf-8")
    return frameworks.load(path, target)


#: The framework modules' functions whose docstrings quote the per-sample forms.
PER_SAMPLE_FUNCTIONS = {
    "torch": ["_loss_probs", "_grad_probs", "_hvp_probs", "_loss_labels", "_grad_labels", "loss"],
    "jax": ["_loss_probs", "_grad_probs", "_hvp_probs", "_loss_labels", "_grad_labels", "loss"],
    "array-api": ["_loss_rows", "_gradient", "_hvp", "_gradient_labels", "grad_logits", "loss"],
}


def _docstrings(source: str) -> dict[str, str | None]:
    """Each function's docstring in a module's source (not imported)."""
    tree = ast.parse(source)
    return {n.name: ast.get_docstring(n) for n in tree.body if isinstance(n, ast.FunctionDef)}


def _problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X, W, b = rng.normal(size=(7, 3)), rng.normal(size=(3, 4)), rng.normal(size=4)
    return X, rng.integers(0, 4, size=7), W, b


def _displays(d: Derivation) -> dict[str, str]:
    return {s.name: sp.srepr(s.rhs) for s in d.steps}


@pytest.fixture(scope="module")
def base_story() -> CheckedDerivation:
    return softmax_regression().check()


@pytest.mark.slow
def test_a_doubled_loss_changes_every_display_after_the_loss_and_every_printed_number(
    base_story: CheckedDerivation, tmp_path: Path
) -> None:
    doubled = softmax_regression(DOUBLED).check()
    before, after = _displays(base_story.derivation), _displays(doubled.derivation)
    for name in ("loss_in_logits", "gradient_logits", "chain_rule_W", "chain_rule_b"):
        assert before[name] != after[name], f"{name} still displays the undoubled formula"
    for name in ("batch_gradient_W", "batch_gradient_b", "hessian_logits"):
        assert before[name] != after[name], f"{name} still displays the undoubled formula"
    notes = render_markdown(doubled, "en")
    assert r"\left(2 \hat{y}" in notes or r"2 \hat{y}" in notes
    X, y, W, b = _problem()
    (tmp_path / "a").mkdir()
    one = _emit(base_story, tmp_path / "a")
    two = _emit(doubled, tmp_path)
    for got, ref in zip(two.loss_and_grad(X, y, W, b), one.loss_and_grad(X, y, W, b), strict=True):
        np.testing.assert_allclose(got, 2 * np.asarray(ref), rtol=1e-13)
    O = X @ W + b
    np.testing.assert_allclose(two.hvp_logits(O, O), 2 * one.hvp_logits(O, O), rtol=1e-13)
    # The Hessian in W (printed from its step, not composed in the template) doubles too; the
    # decision does not move.
    V = np.random.default_rng(1).normal(size=W.shape)
    np.testing.assert_allclose(two.hvp_W(X, W, b, V), 2 * one.hvp_W(X, W, b, V), rtol=1e-13)
    np.testing.assert_array_equal(two.predict(X, W, b), one.predict(X, W, b))
    # Every target's docstrings quote the doubled forms (printed equations, no typed sides).
    for target in frameworks.FRAMEWORKS:
        docs = [_docstrings(emit_framework_module(c, target)) for c in (base_story, doubled)]
        for name in PER_SAMPLE_FUNCTIONS[target]:
            assert docs[0][name] != docs[1][name], (target, name)


def test_the_printed_decision_is_its_steps_right_hand_side(tmp_path: Path) -> None:
    """`predict` prints the rhs of step `decision_rule`: an equivalent rule written otherwise is
    proved and printed as written (no rule typed in the template); a wrong one is refused."""
    d = loss_derivation(BASE)
    rule = {s.name: s for s in d.steps}["decision_rule"].rhs
    f, t, lo, hi = rule.args
    other = ArgMax(2 * f + 1, t, lo, hi)
    changed = replace(
        d.replace_step("decision_rule", rhs=other),
        final_forms={**d.final_forms, "decision": other},
    )
    checked = changed.check(only={"decision_rule"})
    module = _emit(checked, tmp_path)
    assert "np.argmax(2 * P + 1, axis=-1)" in Path(module.__file__).read_text(encoding="utf-8")
    X, _, W, b = _problem()
    np.testing.assert_array_equal(module.predict(X, W, b), np.argmax(X @ W + b, axis=1))
    wrong = ArgMin(*rule.args)
    with pytest.raises(StepCheckError, match="decision_rule"):
        replace(
            d.replace_step("decision_rule", rhs=wrong),
            final_forms={**d.final_forms, "decision": wrong},
        ).check(only={"decision_rule"})


BATCH_STEPS = {"batch_gradient_O": "dO", "batch_gradient_W": "dW", "batch_gradient_b": "db"}


@pytest.fixture(scope="module")
def halved_mean() -> tuple[CheckedDerivation, CheckedDerivation]:
    """The generic derivation as it is, and with the mean defined as `(1/(2n)) ell^T 1`: its
    batch gradients (steps and printed forms, `batch_forms`) carry the new factor and are
    proved against the new definition."""
    d = loss_derivation(BASE)
    half = sp.MatMul(1 / (2 * S.n), ell_rows.T, S.ones_n)
    batch = batch_forms(half)
    changed = d.replace_step("mean_loss", rhs=half)
    for step, form in BATCH_STEPS.items():
        changed = changed.replace_step(step, rhs=batch[form])
    changed = replace(changed, final_forms={**d.final_forms, "mean_loss": half, **batch})
    return d.check(only=set(BATCH_STEPS)), changed.check(only=set(BATCH_STEPS))


@pytest.mark.slow  # seconds: proves the batch steps under a second mean (the fixture)
def test_the_printed_batch_mean_is_its_steps_right_hand_side(
    halved_mean: tuple[CheckedDerivation, CheckedDerivation], tmp_path: Path
) -> None:
    """`loss()`, `grad_logits()` and the fused loop print the mean from step `mean_loss`,
    `dL/dO` from step `batch_gradient_O` and the scaling of the loop's row sums from the factor
    of `dL/dW`, `dL/db` (nothing divides by `n` in the template): a mean defined with another
    factor is printed with it, and the batch gradients must follow it (proved against the new
    definition; the old ones are refused)."""
    base, changed = halved_mean
    module = _emit(changed, tmp_path)
    (tmp_path / "a").mkdir()
    one = _emit(base, tmp_path / "a")
    text = Path(module.__file__).read_text(encoding="utf-8")
    old = Path(one.__file__).read_text(encoding="utf-8")
    for line in (
        HALVED_MEAN_TEX,
        r"\frac{\partial L}{\partial W} = \frac{1}{2 n} X^{T} G",
        "np.sum(loss_rows, dtype=np.float64) / (2 * n)",
        "G / (2 * n)",
        "    dW /= 2 * n\n    db /= 2 * n\n",
        # reduction="sum": n times the mean, now half the row sums
        "        dW /= 2\n        db /= 2\n        return X.dtype.type(1 / 2 * total), dW, db\n",
    ):
        assert line in text and line not in old, line
    X, y, W, b = _problem()
    O = X @ W + b
    np.testing.assert_allclose(module.loss(O, y), one.loss(O, y) / 2, rtol=1e-15)
    np.testing.assert_allclose(module.grad_logits(O, y), one.grad_logits(O, y) / 2, rtol=1e-15)
    for reduction in ("mean", "sum"):
        got = module.loss_and_grad(X, y, W, b, reduction=reduction)
        ref = one.loss_and_grad(X, y, W, b, reduction=reduction)
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, np.asarray(r) / 2, rtol=1e-15)
    d = base.derivation
    half = changed.derivation.final_forms["mean_loss"]
    for step in BATCH_STEPS:
        with pytest.raises(StepCheckError, match=step):
            d.replace_step("mean_loss", rhs=half).check(only={step})


#: Lines each framework module prints from the halved mean (and not from the mean as it is).
#: The docstrings quote the same steps: `reduction="mean"` returns the halved mean.
HALVED_MEAN_TEX = r"L = \frac{1}{2 n} \boldsymbol{\ell}^{T} \mathbf{1}"
HALVED_LINES = {
    "torch": [
        "torch.sum(rows) / (2 * n)",
        'grad / (2 * n) if ctx.reduction == "mean"',
        HALVED_MEAN_TEX,
    ],
    "jax": ["jnp.sum(rows) / (2 * n)", HALVED_MEAN_TEX],
    "array-api": [
        "xp.sum(rows) / (2 * n)",
        "    return G / (2 * n)\n",
        "(G.T @ X).T / (2 * n)",
        "xp.sum(G, axis=0) / (2 * n)",
        HALVED_MEAN_TEX,
        r"\frac{\partial L}{\partial O} = \frac{1}{2 n} G",
        r"\frac{\partial L}{\partial W} = \frac{1}{2 n} X^{T} G",
        r"\frac{\partial L}{\partial b} = \frac{1}{2 n} G^{T} \mathbf{1}",
    ],
}


def _value_and_gradient(module: ModuleType, target: str, reduction: str) -> list[Any]:
    """The reduced loss of the problem's logits and its gradient in them, as the target's users
    get them (torch: backward and, for the double-backward path, `create_graph`; JAX: `grad`;
    the array API: `grad_logits` and `loss_and_grad`), as NumPy arrays."""
    X, y, W, b = _problem()
    O = X @ W + b
    if target == "torch":
        torch = importlib.import_module("torch")
        out = []
        for create_graph in (False, True):
            Ot = torch.tensor(O, requires_grad=True)
            value = module.loss(Ot, torch.tensor(y), reduction)
            (grad,) = torch.autograd.grad(value, Ot, create_graph=create_graph)
            out += [value.detach().numpy(), grad.detach().numpy()]
        return out
    if target == "jax":
        jax = importlib.import_module("jax")
        jax.config.update("jax_enable_x64", True)
        value, grad = jax.value_and_grad(lambda o: module.loss(o, y, reduction))(O)
        return [np.asarray(value), np.asarray(grad)]
    out = [module.loss(O, y, reduction)]
    if reduction == "mean":
        out += [module.grad_logits(O, y), *module.loss_and_grad(X, y, W, b)]
    return out


@pytest.mark.slow  # seconds: the fixture above, and each framework's import and compile
@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_every_framework_target_prints_the_batch_mean_from_its_steps(
    halved_mean: tuple[CheckedDerivation, CheckedDerivation], target: str, tmp_path: Path
) -> None:
    """torch, JAX and the array API print the mean (`reduction="mean"`), its gradient factor
    and the array API's chain rule from the same steps as the NumPy module: with the mean
    halved, those lines change, and the mean and every gradient of it halve; the "sum" of the
    per-sample losses (the mean's row sum `ell^T 1`) does not change."""
    base, changed = halved_mean
    module = _emit_framework(changed, target, tmp_path / "halved")
    one = _emit_framework(base, target, tmp_path / "as_is")
    text = Path(module.__file__).read_text(encoding="utf-8")
    old = Path(one.__file__).read_text(encoding="utf-8")
    for line in HALVED_LINES[target]:
        assert line in text and line not in old, line
    for reduction, factor in (("mean", 0.5), ("sum", 1.0)):
        got = _value_and_gradient(module, target, reduction)
        ref = _value_and_gradient(one, target, reduction)
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, factor * np.asarray(r), rtol=1e-15)


def _ranged(low: float) -> CheckedDerivation:
    """The cross-entropy scaled by a parameter `s` > `low` of the model's own (only the step
    that prints it checked: the range is declared, not derived)."""
    s = sp.Symbol("s", positive=True)
    model = replace(
        BASE,
        name="scaled",
        loss=s * BASE.loss,
        params=(Param(s, 2.5, low=low, low_inclusive=False, doc="a scale"),),
    )
    return loss_derivation(model).check(only={"linear_model"})


@pytest.mark.parametrize("target", ["numpy", *SLOW_FRAMEWORK_TARGETS])
def test_every_target_prints_the_parameter_check_from_the_declared_range(
    target: str, tmp_path: Path
) -> None:
    """Each target's `_param` call prints the declared interval's check (`param.py.j2`): with
    the range moved, the printed check and what the module refuses move with it."""
    checks = {}
    for low in (0.0, 1.0):
        folder = tmp_path / str(low)
        folder.mkdir()
        checked = _ranged(low)
        if target == "numpy":
            module = _emit(checked, folder)
        else:
            module = _emit_framework(checked, target, folder)
        text = Path(module.__file__).read_text(encoding="utf-8")
        check = f'_param("s", s, "({low}, inf)", lambda s: s > {low})'
        assert check in text, check
        checks[low] = module
    X, y, W, b = _problem()
    O = X @ W + b
    as_array = _as_array(target)
    for low, module in checks.items():
        call = module.loss_and_grad if target == "numpy" else module.loss
        args = (X, y, W, b) if target == "numpy" else (as_array(O), as_array(y))
        call(*args, s=1.5)  # inside both ranges
        if low == 1.0:
            with pytest.raises(
                ValueError, match=r"s: 0\.5 is outside its valid range \(1\.0, inf\)"
            ):
                call(*args, s=0.5)
        else:
            call(*args, s=0.5)


def _as_array(target: str) -> Any:
    if target == "torch":
        return importlib.import_module("torch").asarray
    if target == "jax":
        return importlib.import_module("jax.numpy").asarray
    return np.asarray


@pytest.mark.slow  # seconds: derives and checks a second story with a doubled penalty
def test_the_fused_loop_prints_the_objective_and_its_gradient_from_their_steps(
    tmp_path: Path,
) -> None:
    """`loss_and_grad` of a model with weight decay prints `J = L + R` (step `objective`) and
    the penalty's part of `dJ/dW` (step `objective_gradient_W`): with the penalty doubled in
    both, the printed lines change and J and dW gain exactly R and lam W more, in both
    reductions; the old gradient under the doubled objective is refused."""
    model = with_weight_decay(BASE)
    assert model.decay_symbol is not None
    lam = model.decay_symbol
    d = loss_derivation(model)
    doubled = MEAN_LOSS + 2 * PENALTY
    grad = sp.MatAdd(sp.MatMul(1 / S.n, S.Xm.T, S.Gm), 2 * lam * S.Wm)
    shown = sp.MatAdd(d.final_forms["dW"], 2 * lam * S.Wm)
    changed = replace(
        d.replace_step("objective", rhs=doubled).replace_step("objective_gradient_W", rhs=shown),
        final_forms={**d.final_forms, "objective": doubled, "objective_grad": grad},
    )
    only = {"objective", "objective_gradient_W"}
    module = _emit(changed.check(only=only), tmp_path)
    (tmp_path / "a").mkdir()
    one = _emit(d.check(only=only), tmp_path / "a")
    text = Path(module.__file__).read_text(encoding="utf-8")
    old = Path(one.__file__).read_text(encoding="utf-8")
    for line in (
        "return X.dtype.type(L + 2 * R), dW, db",
        "dW += W * 2 * lam",
        "total = 2 * R * n + total",
    ):
        assert line in text and line not in old, line
    X, y, W, b = _problem()
    R = 0.5 * 0.3 * np.sum(W * W)
    for reduction, times in (("mean", 1.0), ("sum", float(X.shape[0]))):
        J2, dW2, db2 = module.loss_and_grad(X, y, W, b, lam=0.3, reduction=reduction)
        J1, dW1, db1 = one.loss_and_grad(X, y, W, b, lam=0.3, reduction=reduction)
        np.testing.assert_allclose(J2 - J1, times * R, rtol=1e-12)
        np.testing.assert_allclose(dW2 - dW1, times * 0.3 * W, rtol=1e-12)
        np.testing.assert_array_equal(db2, db1)
    with pytest.raises(StepCheckError, match="objective_gradient_W"):
        replace(
            d.replace_step("objective", rhs=doubled),
            final_forms={**d.final_forms, "objective": doubled},
        ).check(only=only)


def test_weight_decay_adds_its_proved_hessian_term_to_hvp_W() -> None:
    """The committed l2 module: `hvp_W` gains exactly `lam V` (step `weight_decay_hvp`)."""
    module = load_module_from_path(ROOT / "generated" / "softmax_regression_l2.py")
    X, _, W, b = _problem()
    V = np.random.default_rng(2).normal(size=W.shape)
    base = module.hvp_W(X, W, b, V, lam=0.0)
    np.testing.assert_allclose(module.hvp_W(X, W, b, V, lam=0.3) - base, 0.3 * V, rtol=1e-12)


@pytest.mark.slow
def test_a_user_parameter_named_lam_is_not_taken_for_weight_decay(tmp_path: Path) -> None:
    lam = sp.Symbol("lam", positive=True)
    scaled = LossModel(
        name="scaled_ce",
        title=BASE.title,
        loss=lam * BASE.loss,
        prediction=BASE.prediction,
        targets="distribution",
        params=(Param(lam, 0.5, low=0.0, low_inclusive=False, doc="a scale of the user's own"),),
        second_order=False,
    )
    decayed = with_weight_decay(scaled)
    assert decayed.decay_symbol is not None and decayed.decay_symbol.name != "lam"
    checked = loss_derivation(decayed).check()
    module = _emit(checked, tmp_path)
    assert decayed.decay_symbol.name == module.WEIGHT_DECAY
    X, y, W, b = _problem()
    O = X @ W + b
    # The user's lam reaches the per-sample functions, where it scales the loss...
    np.testing.assert_allclose(
        module.loss(O, y, lam=0.25), 0.5 * module.loss(O, y, lam=0.5), rtol=1e-13
    )
    # ...and the weight decay adds its own penalty on W only.
    strength = 0.3
    L0, dW0, db0 = module.loss_and_grad(X, y, W, b, lam=0.5, weight_decay=0.0)
    L1, dW1, db1 = module.loss_and_grad(X, y, W, b, lam=0.5, weight_decay=strength)
    np.testing.assert_allclose(L1 - L0, strength / 2 * np.vdot(W, W), rtol=1e-12)
    np.testing.assert_allclose(dW1 - dW0, strength * W, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(db1, db0)
    steps = {s.step.name: s.step for s in checked.steps}
    assert steps["weight_decay"].rhs.has(decayed.decay_symbol)
    assert not steps["weight_decay"].rhs.has(lam)
