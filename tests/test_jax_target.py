"""The JAX target: check_grads (first and second order, forward and reverse), jit, vmap, grad,
optax's own losses, verify's accuracy checks.

Skipped with a reason when JAX (or optax, for the comparisons) is not installed.

Tolerances: `check_grads`' own (float64: atol = rtol = 1e-5 against finite differences of step
1e-4... as JAX's test utility sets them). Against optax: 1e-12 relative (both max-shifted float64
kernels; a wrong formula is off by far more).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from derive.cli import main
from derive.losses import catalogue
from derive.output.loader import GENERATED_DIR
from derive.verify import frameworks, runner

jax = pytest.importorskip("jax", reason="JAX not installed: pip install -e '.[jax]'")
jnp = jax.numpy
from jax.test_util import check_grads  # noqa: E402

jax.config.update("jax_enable_x64", True)

REL = 1e-12
#: verify rows that check the softmax kernels (skipped where the module has none).
SOFTMAX_ROWS = {"softmax_kernels", "extreme_float64", "extreme_float32"}


def _load(name: str) -> ModuleType:
    return frameworks.load(GENERATED_DIR / "jax" / f"{name}.py", "jax")


def _targets(m: ModuleType, n: int, K: int, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    if m.TARGETS == "distribution":
        probs = rng.random((n, K)) + 0.01
        return [
            jnp.asarray(rng.integers(0, K, n)),
            jnp.asarray(probs / probs.sum(-1, keepdims=True)),
        ]
    if m.TARGETS == "binary":
        return [jnp.asarray(rng.random((n, K)))]
    return [jnp.asarray(rng.normal(size=(n, K)))]


def _logits(n: int, K: int, scale: float = 1.0, seed: int = 1) -> Any:
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, K)) * scale)


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


@pytest.mark.slow
@pytest.mark.parametrize("name", catalogue.names())
def test_check_grads_under_jit(name: str) -> None:
    m = _load(name)
    O = _logits(5, 4)
    order = 2 if m.SECOND_ORDER else 1
    for target in _targets(m, 5, 4):
        for reduction in ("mean", "none"):
            f = jax.jit(lambda o, t=target, r=reduction: m.loss(o, t, r))
            check_grads(f, (O,), order=order, modes=["fwd", "rev"])


@pytest.mark.slow
def test_vmap_over_problems_equals_the_loop() -> None:
    m = _load("label_smoothing")
    O = _logits(6, 4).reshape(3, 2, 4)
    labels = _targets(m, 6, 4)[0].reshape(3, 2)
    f = lambda o, t: m.loss(o, t, eps=0.2)  # noqa: E731
    batched = jax.vmap(jax.grad(f))(O, labels)
    for i in range(3):
        assert _rel(batched[i], jax.grad(f)(O[i], labels[i])) <= REL


def test_second_order_is_the_derived_hvp() -> None:
    """jvp of grad applies the derived HVP rule: compare with the Hessian from finite differences
    of the (derived) gradient, and with the closed form p * (v - <p, v>) computed here."""
    m = _load("softmax_regression")
    O, V = _logits(4, 5), _logits(4, 5, seed=2)
    labels = _targets(m, 4, 5)[0]
    g = jax.grad(lambda o: m.loss(o, labels, "sum"))
    hv = jax.jvp(g, (O,), (V,))[1]
    p = jax.nn.softmax(O)
    assert _rel(hv, p * (V - jnp.sum(p * V, -1, keepdims=True))) <= REL


optax = pytest.importorskip("optax", reason="optax not installed: pip install optax")


def _against(ours: Any, theirs: Any, O: Any) -> None:
    assert _rel(ours(O), theirs(O)) <= REL
    assert _rel(jax.grad(lambda o: ours(o).sum())(O), jax.grad(lambda o: theirs(o).sum())(O)) <= REL


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_losses_match_optax(scale: float) -> None:
    O = _logits(64, 10, scale)
    labels, probs = _targets(_load("softmax_regression"), 64, 10)
    onehot = jax.nn.one_hot(labels, 10, dtype=O.dtype)
    ce, ls, ts = _load("softmax_regression"), _load("label_smoothing"), _load("temperature_softmax")
    cases = [
        (
            lambda o: ce.loss(o, labels, "none"),
            lambda o: optax.softmax_cross_entropy_with_integer_labels(o, labels),
        ),
        (lambda o: ce.loss(o, probs, "none"), lambda o: optax.softmax_cross_entropy(o, probs)),
        (
            lambda o: ls.loss(o, labels, "none", eps=0.2),
            lambda o: optax.softmax_cross_entropy(o, optax.smooth_labels(onehot, 0.2)),
        ),
        (
            lambda o: ts.loss(o, labels, "none", T=3.0),
            lambda o: optax.softmax_cross_entropy_with_integer_labels(o / 3.0, labels),
        ),
    ]
    (Y,) = _targets(_load("logistic_regression"), 64, 10)
    cases.append(
        (
            lambda o: _load("logistic_regression").loss(o, Y, "none"),
            lambda o: optax.sigmoid_binary_cross_entropy(o, Y).sum(-1),
        )
    )
    (R,) = _targets(_load("squared_error"), 64, 10)
    cases.append(
        (lambda o: _load("squared_error").loss(o, R, "none"), lambda o: optax.l2_loss(o, R).sum(-1))
    )
    for ours, theirs in cases:
        _against(jax.jit(ours), jax.jit(theirs), O)


#: Through JAX every input family compiles new XLA programs: about two minutes per loss on CI's
#: two cores. CI's slow pass runs the story's loss and label smoothing (labels, a parameter,
#: second order); the other losses print the same forms (checked per loss on torch and the array
#: API) and run on demand with `-m exhaustive` (all six passed in the slow run of 6c144cd).
IN_CI = ("softmax_regression", "label_smoothing")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [n if n in IN_CI else pytest.param(n, marks=pytest.mark.exhaustive) for n in catalogue.names()],
)
def test_verify_accuracy_checks_pass(name: str) -> None:
    m = _load(name)
    results = frameworks.run(m, "jax")
    failed = [r for r in results if not r.passed]
    assert not failed, runner.table(results)
    # Every row runs (the loss-reference row too: the module carries its definition), except
    # the softmax-kernel rows of a module without softmax kernels and the accuracy families that
    # do not apply to the loss (masked classes for real targets, say: the same as for NumPy).
    skipped = {
        c for c, r in zip(frameworks.ACCURACY_CHECKS, results, strict=True) if r.status == "skip"
    }
    allowed = {c for c in skipped if c.startswith("accuracy_")}
    allowed |= set() if m.TARGETS == "distribution" else SOFTMAX_ROWS
    assert "reference_loss" not in skipped and skipped <= allowed, runner.table(results)


def test_bad_inputs_are_refused() -> None:
    m = _load("label_smoothing")
    O = _logits(4, 3)
    labels = jnp.asarray([0, 2, 1, 0])
    bad = [
        lambda: m.loss(O, jnp.asarray([0, 3, 1, 0])),
        lambda: m.loss(O, jnp.asarray([0, -1, 1, 0])),
        lambda: m.loss(O, labels[:3]),
        lambda: m.loss(O, labels, "average"),
        lambda: m.loss(O, labels, eps=1.5),
        lambda: m.loss(O.astype(int), labels),
    ]
    for call in bad:
        with pytest.raises((ValueError, TypeError)):
            call()


@pytest.mark.slow
def test_focal_example(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "focal_loss.py"
    argv = ["emit", "--model", str(example), "--target", "jax", "--out", str(tmp_path)]
    assert main(argv) == 0
    m = frameworks.load(tmp_path / "jax" / "focal_loss.py", "jax")
    O = _logits(6, 4)
    for target in _targets(m, 6, 4):
        check_grads(jax.jit(lambda o, t=target: m.loss(o, t)), (O,), order=1, modes=["rev"])
    labels = _targets(m, 6, 4)[0]
    _against(
        lambda o: m.loss(o, labels, "none", gamma=0.0),
        lambda o: optax.softmax_cross_entropy_with_integer_labels(o, labels),
        O,
    )
