"""The cases of issue 8 where the emitted code lost digits, against 50-digit mpmath references.

Each reference is written here from the textbook formula in mpmath (independent of the derivation
and of the emitted code). Tolerances are a few units of the float64 roundoff u = 1.1e-16 relative
to the true value: the inputs are exact binary numbers, so the only error allowed is the code's
own rounding (a handful of operations, each at most u).
"""

from __future__ import annotations

from types import ModuleType

import mpmath
import numpy as np
import pytest

from derive.output.loader import load_generated
from derive.verify import accuracy

mpmath.mp.dps = 50
U = np.finfo(np.float64).eps / 2
#: Relative error allowed for these short formulas: 16 roundings of at most u each.
REL = 16 * U


def rel_err(got: float, ref: mpmath.mpf) -> float:
    return float(abs(mpmath.mpf(got) - ref) / abs(ref))


@pytest.fixture(scope="module")
def ce() -> ModuleType:
    return load_generated("softmax_regression")


def _ce_ref(o: list[float], c: int) -> mpmath.mpf:
    lse = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in o))
    return lse - mpmath.mpf(o[c])


@pytest.mark.parametrize("offset", [0.0, 1e4, 1e8, 1e12])
def test_cross_entropy_at_a_common_offset(ce: ModuleType, offset: float) -> None:
    """Three equal logits of 1e8: log 3 to the last digits (was 1.0986122936 before the shift)."""
    O = np.array([[offset, offset, offset], [offset + 1.0, offset - 2.0, offset + 0.5]])
    labels = np.array([0, 1])
    refs = [_ce_ref(list(row), c) for row, c in zip(O, labels, strict=True)]
    mean = (refs[0] + refs[1]) / 2
    assert rel_err(float(ce.loss(O, labels)), mean) <= REL
    assert rel_err(float(ce.loss(O, np.eye(3)[labels])), mean) <= REL
    # The fused path computes the logits itself: X = I, W = O, b = 0 reproduces O exactly.
    X = np.eye(2)
    L, _, _ = ce.loss_and_grad(X, labels, O.copy(), np.zeros(3))
    assert rel_err(float(L), mean) <= REL


def test_squared_error_near_1e8_keeps_the_residual() -> None:
    """`(o - y)^2 / 2` with o, y ~ 1e8 and residuals ~ 1 (the expanded form returned 0.0067)."""
    se = load_generated("squared_error")
    O = np.array([[1e8 + 0.75, 1e8 - 1.25]])
    Y = np.array([[1e8 - 0.5, 1e8 + 0.25]])
    ref = mpmath.fsum(
        (mpmath.mpf(o) - mpmath.mpf(y)) ** 2 / 2 for o, y in zip(O[0], Y[0], strict=True)
    )
    assert rel_err(float(se.loss(O, Y)), ref) <= REL
    np.testing.assert_array_equal(se.grad_logits(O, Y), O - Y)


@pytest.mark.parametrize("x", [37.0, 40.0, 200.0, 700.0])
def test_sigmoid_tails_keep_their_tiny_values(x: float) -> None:
    """BCE at y = 1, logit x: gradient -sigmoid(-x) (was exactly 0), loss softplus(-x)."""
    bce = load_generated("logistic_regression")
    O, Y = np.array([[x, -x]]), np.array([[1.0, 0.0]])
    g = bce.grad_logits(O, Y)[0]
    tail = 1 / (1 + mpmath.exp(mpmath.mpf(x)))  # sigmoid(-x)
    assert rel_err(float(g[0]), -tail) <= REL
    assert rel_err(float(g[1]), tail) <= REL
    loss_ref = 2 * mpmath.log1p(mpmath.exp(-mpmath.mpf(x)))
    assert rel_err(float(bce.loss(O, Y)), loss_ref) <= REL
    # The Hessian's diagonal sigmoid(x) sigmoid(-x), not sigmoid(x) (1 - sigmoid(x)) = 0.
    H = bce.hessian_logits(np.array([x]))
    assert rel_err(float(H[0, 0]), tail * (1 - tail)) <= REL


def test_a_family_whose_exact_values_overflow_the_dtype_is_a_skip_with_its_reason() -> None:
    """`exp(o)` at o = 1e4 (a Poisson loss at the offset family) has no finite value to compare
    with: verify says so instead of failing on the overflow the module rightly raises."""
    m = load_generated("squared_error")

    def family(residual: float) -> accuracy.Family:
        def build(mod: accuracy.Module) -> list[accuracy.Case]:
            O = np.array([[residual / 2, 1.0]])
            return [accuracy.Case(O, -O, np.zeros_like(O), {}, False)]

        return build

    # (o - y)^2 / 2 = 2e40 overflows float32 (max 3.4e38) but not float64; 1e400 overflows both.
    ratio, why = accuracy.measure(m, family(2e20), np.float32)
    assert np.isnan(ratio) and why == accuracy.OVERFLOWS.format(dtype="float32"), why
    ratio, why = accuracy.measure(m, family(2e20), np.float64)
    assert ratio <= 1.0, why
    ratio, why = accuracy.measure(m, family(2e200), np.float64)
    assert np.isnan(ratio) and "float64" in why, why
