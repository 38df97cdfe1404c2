"""Numerics of the emitted module: the verify checks, plus behaviour a user relies on."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest

from derive import verify
from derive.losses import catalogue
from derive.output.loader import load_generated

CATALOGUE = catalogue.names()
#: K = 1000 takes seconds (the reference sums 1000 classes per entry): in the slow pass.
SLOW_CHECKS = ("accuracy_K___1000",)
CHECK_CASES = [
    pytest.param(c, marks=pytest.mark.slow, id=c.__name__)
    if c.__name__ in SLOW_CHECKS
    else pytest.param(c, id=c.__name__)
    for c in verify.CHECKS
]


@pytest.mark.parametrize("name", CATALOGUE)
@pytest.mark.parametrize("check", CHECK_CASES)
def test_verify_check_passes_on_every_catalogue_module(name: str, check: verify.Check) -> None:
    result = check(verify.Subject(load_generated(name)))
    if result.status == "skip":
        pytest.skip(f"{result.name}: {result.note}")  # a skip is never counted as a pass
    assert result.status == "pass", (
        f"{result.name}: worst {result.worst} > bound {result.bound} {result.note}"
    )


@pytest.mark.slow  # every row at once (seconds); each row alone runs by default above
def test_softmax_module_skips_only_the_families_that_do_not_apply(module: ModuleType) -> None:
    """Every check runs on softmax regression, except the accuracy families for other targets
    (regression targets, sigmoid tails) and for parameters (it has none), each saying why."""
    skipped = {r.name: r.note for r in verify.run(module) if r.status == "skip"}
    assert sorted(skipped) == [
        "accuracy vs mpmath: parameters at their ends [units of the bound]",
        "accuracy vs mpmath: sigmoid tails [units of the bound]",
        "accuracy vs mpmath: targets near 1e8 [units of the bound]",
    ]
    assert all(note for note in skipped.values())


def test_inputs_are_never_modified(module: ModuleType) -> None:
    rng = np.random.default_rng(0)
    X, W, b = rng.normal(size=(50, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)
    Y = np.full((50, 3), 1 / 3)
    O = X @ W + b
    copies = [a.copy() for a in (X, W, b, Y, O)]
    module.loss_and_grad(X, Y, W, b)
    module.softmax(O)
    module.grad_logits(O, Y)
    module.hvp_W(X, W, b, W)
    for before, after in zip(copies, (X, W, b, Y, O), strict=True):
        assert np.array_equal(before, after)


def test_zero_target_on_a_masked_logit_contributes_zero(module: ModuleType) -> None:
    O = np.array([[0.0, -np.inf, 1.0]])
    Y = np.array([[0.5, 0.0, 0.5]])
    loss = float(module.cross_entropy(O, Y))
    expected = 0.5 * -math.log(1 / (1 + math.e)) + 0.5 * -math.log(math.e / (1 + math.e))
    assert loss == pytest.approx(expected, rel=1e-15)
    G = module.grad_logits(O, Y)
    assert np.isfinite(G).all() and G[0, 1] == 0.0


def test_labels_and_one_hot_targets_agree(module: ModuleType) -> None:
    rng = np.random.default_rng(1)
    X, W, b = rng.normal(size=(30, 5)), rng.normal(size=(5, 4)), rng.normal(size=4)
    y = rng.integers(0, 4, size=30)
    a = module.loss_and_grad(X, y, W, b)
    c = module.loss_and_grad(X, np.eye(4)[y], W, b)
    assert float(a[0]) == pytest.approx(float(c[0]), rel=1e-14)
    np.testing.assert_allclose(a[1], c[1], rtol=0, atol=1e-15)


def test_integer_features_are_converted_and_float16_refused(module: ModuleType) -> None:
    X = np.arange(6).reshape(3, 2)
    W, b = np.zeros((2, 2)), np.zeros(2)
    loss, dW, _ = module.loss_and_grad(X, np.array([0, 1, 1]), W, b)
    assert dW.dtype == np.float64 and float(loss) == pytest.approx(math.log(2))
    with pytest.raises(TypeError, match="X: dtype float16"):
        module.loss_and_grad(X.astype(np.float16), np.array([0, 1, 1]), W, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"y": np.array([0, 3, 1])},
            r"y: label 3 at index 1 is out of range; expected 0 <= label < 3",
        ),
        ({"W": np.zeros((5, 3))}, r"W: expected shape \(2, K\) to match X of shape \(3, 2\)"),
        ({"b": np.zeros(2)}, r"b: expected shape \(3,\)"),
        (
            {"y": np.full((3, 3), 0.3)},
            r"y: row 0 sums to 0\.89+; target rows must be probability vectors",
        ),
        ({"X": np.zeros((0, 2)), "y": np.zeros(0, dtype=int)}, r"X: empty batch"),
        ({"X": np.array([[0.0, np.nan], [0, 0], [0, 0]])}, r"X: row 0 contains NaN or inf"),
    ],
)
def test_error_messages_name_the_argument_and_the_expectation(
    module: ModuleType, kwargs: dict[str, np.ndarray], message: str
) -> None:
    args = {
        "X": np.zeros((3, 2)),
        "y": np.array([0, 1, 2]),
        "W": np.zeros((2, 3)),
        "b": np.zeros(3),
    }
    args |= kwargs
    with pytest.raises((ValueError, TypeError), match=message):
        module.loss_and_grad(args["X"], args["y"], args["W"], args["b"])


def test_runs_at_a_thousand_classes(module: ModuleType) -> None:
    rng = np.random.default_rng(2)
    X, W, b = rng.normal(size=(64, 8)), rng.normal(size=(8, 1000)), np.zeros(1000)
    y = rng.integers(0, 1000, size=64)
    loss, dW, db = module.loss_and_grad(X, y, W, b)
    assert np.isfinite(loss) and dW.shape == (8, 1000) and abs(db.sum()) < 1e-12


def test_predict_is_argmax_of_the_logits(module: ModuleType) -> None:
    rng = np.random.default_rng(3)
    X, W, b = rng.normal(size=(40, 3)), rng.normal(size=(3, 6)), rng.normal(size=6)
    np.testing.assert_array_equal(module.predict(X, W, b), np.argmax(X @ W + b, axis=1))
    np.testing.assert_allclose(module.predict_proba(X, W, b).sum(axis=1), 1.0, rtol=0, atol=1e-15)


@pytest.mark.slow  # the whole table (seconds); tests/test_verify_rows.py breaks each row by default
def test_verify_fails_on_a_broken_module(module: ModuleType) -> None:
    """The verifier can fail: a module whose gradient forgets the label term is caught."""

    class Broken:
        def __getattr__(self, name: str) -> object:
            return getattr(module, name)

        @staticmethod
        def grad_logits(O: np.ndarray, y: np.ndarray) -> np.ndarray:
            return module.softmax(O) / len(O)

    results = {r.name: r for r in verify.run(Broken())}  # type: ignore[arg-type]
    assert not results["gradient w.r.t. logits vs central differences (float64)"].passed


@pytest.mark.parametrize("name", CATALOGUE)
def test_check_false_follows_the_dtype_rules_of_check_true(name: str) -> None:
    """Integer inputs become float64 either way: the loss is not truncated to an integer."""
    m = load_generated(name)
    s = verify.Subject(m)
    X, y, W, b = s.problem(np.random.default_rng(4), 6, 3, 3, soft=False)
    Xi = np.rint(X * 3).astype(np.int64)
    checked = m.loss_and_grad(Xi, y, W, b, check=True)
    unchecked = m.loss_and_grad(Xi, y, W, b, check=False)
    for a, c in zip(checked, unchecked, strict=True):
        assert np.asarray(a).dtype == np.asarray(c).dtype == np.float64
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("name", CATALOGUE)
def test_bad_inputs_raise_no_floating_point_error_on_any_cpu(name: str) -> None:
    """With every FP flag raising (not only on CPUs whose BLAS reports them), bad inputs still
    get their ValueError/TypeError and nothing else."""
    m = load_generated(name)
    with np.errstate(all="raise"):
        result = verify.bad_inputs(verify.Subject(m))
    assert result.passed, result.note


def test_verify_catches_arithmetic_on_unvalidated_numbers(module: ModuleType) -> None:
    """A module that computes on X before validating it fails the bad-input row everywhere."""

    class Eager:
        def __getattr__(self, name: str) -> object:
            return getattr(module, name)

        @staticmethod
        def loss_and_grad(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray) -> object:
            np.asarray(X, dtype=float) * 2.0 @ np.asarray(W, dtype=float)  # may see inf/NaN
            np.exp(np.asarray(X, dtype=float) * 1e308)  # overflows for any non-tiny X
            return module.loss_and_grad(X, y, W, b)

    result = verify.bad_inputs(verify.Subject(Eager()))  # type: ignore[arg-type]
    assert not result.passed and "FloatingPointError" in result.note
