"""The array-API target: one module on array-api-strict, NumPy, PyTorch and JAX arrays.

array-api-strict refuses anything outside the standard (methods, NumPy-only functions, implicit
conversions), so a run on its arrays shows the module is written against the standard alone.
Results on every library are compared with the NumPy module's (`generated/<name>.py`) to 1e-12
relative in float64 (the same formulas, rounded in a different order), and verify's accuracy
checks run on the module itself.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from derive.cli import main
from derive.losses import catalogue
from derive.output.loader import GENERATED_DIR, load_generated
from derive.verify import frameworks, runner

pytest.importorskip("array_api_compat", reason="pip install -e '.[array-api]'")
strict = pytest.importorskip("array_api_strict", reason="pip install -e '.[array-api]'")

REL = 1e-12
#: verify rows that check the softmax kernels (skipped where the module has none).
SOFTMAX_ROWS = {"softmax_kernels", "extreme_float64", "extreme_float32"}


def _load(name: str) -> ModuleType:
    return frameworks.load(GENERATED_DIR / "array_api" / f"{name}.py", "array-api")


def _problem(m: ModuleType, seed: int = 0) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    n, d, K = 12, 4, 5
    X, W, b = rng.normal(size=(n, d)), rng.normal(size=(d, K)), rng.normal(size=K)
    if m.TARGETS == "distribution":
        ys = [rng.integers(0, K, n)]
        P = rng.random((n, K)) + 0.01
        ys.append(P / P.sum(-1, keepdims=True))
    elif m.TARGETS == "binary":
        ys = [rng.random((n, K))]
    else:
        ys = [rng.normal(size=(n, K))]
    return X, W, b, ys


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def _libraries() -> dict[str, Any]:
    """Array constructors: array-api-strict always; torch and JAX where installed."""
    libs: dict[str, Any] = {"array-api-strict": strict.asarray, "numpy": np.asarray}
    try:
        import torch

        libs["torch"] = lambda a: torch.from_numpy(np.array(a))
    except ImportError:
        pass
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        libs["jax"] = lambda a: jax.numpy.asarray(np.array(a))
    except ImportError:
        pass
    return libs


def _to_numpy(a: Any) -> Any:
    """Back to NumPy through DLPack (the standard's interchange), or a plain float."""
    try:
        return np.from_dlpack(a)
    except (TypeError, AttributeError, BufferError, RuntimeError):
        return np.asarray(float(a))


#: JAX compiles each shape it meets (seconds per case): its case runs in the slow pass.
LIBRARY_CASES = [pytest.param(k, marks=pytest.mark.slow) if k == "jax" else k for k in _libraries()]


@pytest.mark.parametrize("name", catalogue.names())
@pytest.mark.parametrize("lib", LIBRARY_CASES)
def test_same_results_as_the_numpy_module_on_every_library(name: str, lib: str) -> None:
    m, ref = _load(name), load_generated(name)
    to = _libraries()[lib]
    X, W, b, ys = _problem(m)
    for y in ys:
        L, dW, db = m.loss_and_grad(to(X), to(y), to(W), to(b))
        L0, dW0, db0 = ref.loss_and_grad(X, y, W, b)
        assert _rel(_to_numpy(L), L0) <= REL
        assert _rel(_to_numpy(dW), dW0) <= REL and _rel(_to_numpy(db), db0) <= REL
        O = X @ W + b
        assert _rel(_to_numpy(m.grad_logits(to(O), to(y))), ref.grad_logits(O, y)) <= REL
        if m.SECOND_ORDER:
            V = np.random.default_rng(3).normal(size=O.shape)
            assert _rel(_to_numpy(m.hvp_logits(to(O), to(V), to(y))), ref.hvp_logits(O, V)) <= REL


@pytest.mark.slow  # every verify row through the array API (seconds per loss), as for torch/JAX
@pytest.mark.parametrize("name", catalogue.names())
def test_verify_accuracy_checks_pass(name: str) -> None:
    m = _load(name)
    results = frameworks.run(m, "array-api")
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
    O = strict.asarray(np.zeros((4, 3)))
    labels = strict.asarray(np.array([0, 2, 1, 0]))
    bad = [
        lambda: m.loss(O, labels[:3]),
        lambda: m.loss(O, labels, "average"),
        lambda: m.loss(O, labels, eps=1.5),
        lambda: m.loss(strict.asarray(np.zeros(3)), labels),
        lambda: m.loss_and_grad(O, labels, strict.asarray(np.zeros((2, 3))), O[0, ...]),
    ]
    for call in bad:
        with pytest.raises((ValueError, TypeError)):
            call()


@pytest.mark.slow
def test_focal_example(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "focal_loss.py"
    argv = ["emit", "--model", str(example), "--target", "array-api", "--out", str(tmp_path)]
    assert main(argv) == 0
    from derive.output.loader import load_module_from_path

    m = frameworks.load(tmp_path / "array_api" / "focal_loss.py", "array-api")
    ref = load_module_from_path(tmp_path / "focal_loss.py")
    X, W, b, ys = _problem(m)
    for y in ys:
        L, dW, _ = m.loss_and_grad(
            strict.asarray(X), strict.asarray(y), strict.asarray(W), strict.asarray(b)
        )
        L0, dW0, _ = ref.loss_and_grad(X, y, W, b)
        assert _rel(_to_numpy(L), L0) <= REL and _rel(_to_numpy(dW), dW0) <= REL
