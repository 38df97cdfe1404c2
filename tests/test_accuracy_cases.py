"""The cases of issue 8 where the emitted code lost digits, against 50-digit mpmath references.

Each reference is written here from the textbook formula in mpmath (independent of the derivation
and of the emitted code). Tolerances are a few units of the float64 roundoff u = 1.1e-16 relative
to the true value: the inputs are exact binary numbers, so the only error allowed is the code's
own rounding (a handful of operations, each at most u).
"""

from __future__ import annotations

from pathlib import Path
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


# --------------------------------------------------------------------------- the focal example
# The README's own user loss, `-sum_k y_k (1 - p_k)^gamma log p_k`, at the cases issue 8 found
# NaN or wrong: soft targets at a logit gap of 37 (`[nan, -0.5]`, then `[7e-15, -0.5]`), a hard
# label with gamma = 0.5 at a margin of 40, gamma = 0 at logits of +-1e4 (NaN: `0^(gamma - 1)`).
# The reference: the loss from its textbook formula in mpmath (60 digits), its gradient by
# mpmath's numerical differentiation at that precision (independent of the derivation).

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def focal(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    from derive.losses.derivation import loss_derivation
    from derive.losses.user_model import load_user_model
    from derive.output.codegen import emit_module
    from derive.output.loader import load_module_from_path

    checked = loss_derivation(load_user_model(EXAMPLES / "focal_loss.toml")).check()
    path = tmp_path_factory.mktemp("focal") / "focal_loss.py"
    path.write_text(emit_module(checked), encoding="utf-8")
    return load_module_from_path(path)


def _focal_loss_ref(o: list[mpmath.mpf], y: list[float], gamma: float) -> mpmath.mpf:
    lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in o))
    g = mpmath.mpf(gamma)
    return -mpmath.fsum(
        mpmath.mpf(yk) * (-mpmath.expm1(ok - lse)) ** g * (ok - lse)
        for ok, yk in zip(o, y, strict=True)
        if yk != 0
    )


def _focal_grad_ref(o: list[float], y: list[float], gamma: float) -> list[mpmath.mpf]:
    with mpmath.workdps(60):
        base = [mpmath.mpf(v) for v in o]

        def along(j: int) -> mpmath.mpf:
            return mpmath.diff(
                lambda t: _focal_loss_ref(
                    [v + t if i == j else v for i, v in enumerate(base)], y, gamma
                ),
                0,
            )

        return [along(j) for j in range(len(o))]


FOCAL_CASES = [
    # (logits, target: a label or a row, gamma)
    ([37.0, 0.0], [0.5, 0.5], 2.0),  # soft targets at a gap of 37: [0.5, -0.5]
    ([40.0, 0.0, 0.0], 0, 0.5),  # gamma = 0.5, hard label on the leader, margin 40
    ([40.0, 0.0, 0.0], 1, 0.5),  # ... and on a class the leader beats by 40
    ([1e4, -1e4], 0, 0.0),  # gamma = 0 (the cross-entropy) at logits of +-1e4
    ([1e4, -1e4], 1, 0.0),
    ([1e4, -1e4], [0.25, 0.75], 0.0),
]


@pytest.mark.slow
@pytest.mark.parametrize(("logits", "target", "gamma"), FOCAL_CASES)
def test_focal_example_is_finite_and_right_where_it_was_nan(
    focal: ModuleType, logits: list[float], target: int | list[float], gamma: float
) -> None:
    K = len(logits)
    rows = np.eye(K)[target] if isinstance(target, int) else np.array(target)
    grad_ref = _focal_grad_ref(logits, list(rows), gamma)
    loss_ref = _focal_loss_ref([mpmath.mpf(v) for v in logits], list(rows), gamma)
    O = np.array([logits])
    # (a label goes in as a label: a one-hot row through the soft-target form loses the leading
    # class's tiny gradient at saturation, as the cross-entropy's `p - y` does; not covered here)
    for y in [[target]] if isinstance(target, int) else [[list(rows)]]:
        # no NaN, no division by zero, no invalid value on the way (underflow is legitimate)
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            G = focal.grad_logits(O, np.array(y), gamma=gamma)[0]
            L = float(focal.loss(O, np.array(y), gamma=gamma))
        for got, ref in zip(G, grad_ref, strict=True):
            # relative to the true value (an exact 0 must come out 0, to the smallest normal)
            assert abs(mpmath.mpf(float(got)) - ref) <= REL * abs(ref) + np.finfo(float).tiny
        assert abs(mpmath.mpf(L) - loss_ref) <= REL * abs(loss_ref) + np.finfo(float).tiny
