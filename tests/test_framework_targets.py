"""What every framework target shares: parameters by their role, not their name; a loss with no
overflow-free form refuses a non-finite result (STABLE = False); `predict(X, W, b)`.

A user's loss parameter named `lam` and the weight decay (whose strength `with_weight_decay` then
names `weight_decay`) must each reach their own place on every target: `lam` the per-sample loss,
the decay the penalty on W. Tolerance: 1e-12 relative in float64 (the same formulas rounded in a
different order; a parameter mixed up with the other is off by O(1)).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import sympy as sp
from conftest import FRAMEWORK_TARGETS, SLOW_FRAMEWORK_TARGETS

from derive import notation as S
from derive.losses import catalogue
from derive.losses.definitions import with_weight_decay
from derive.losses.derivation import loss_derivation
from derive.losses.model import SOFTMAX_CROSS_ENTROPY, LossModel, Param, class_sum
from derive.output import loader
from derive.output.codegen import emit_module
from derive.output.frameworks import emit_framework_module
from derive.output.loader import load_module_from_path
from derive.symbolic.steps import CheckedDerivation, Prose
from derive.verify import frameworks, runner

REL = 1e-12

Array = np.ndarray[Any, Any]


@pytest.fixture(scope="module")
def scaled_with_decay() -> CheckedDerivation:
    lam = sp.Symbol("lam", positive=True)
    scaled = LossModel(
        name="scaled_ce",
        title=SOFTMAX_CROSS_ENTROPY.title,
        loss=lam * SOFTMAX_CROSS_ENTROPY.loss,
        prediction=SOFTMAX_CROSS_ENTROPY.prediction,
        targets="distribution",
        params=(Param(lam, 0.5, low=0.0, low_inclusive=False, doc="a scale of the user's own"),),
        second_order=False,
    )
    decayed = with_weight_decay(scaled)
    assert decayed.decay_symbol is not None and decayed.decay_symbol.name == "weight_decay"
    return loss_derivation(decayed).check()


def _emit(checked: CheckedDerivation, target: str, tmp_path: Path) -> ModuleType:
    path = tmp_path / target.replace("-", "_") / f"{checked.derivation.name}.py"
    path.parent.mkdir()
    if target == "numpy":
        path.write_text(emit_module(checked), encoding="utf-8")
        return load_module_from_path(path)
    path.write_text(emit_framework_module(checked, target), encoding="utf-8")
    return frameworks.load(path, target)


def _rel(a: object, b: object) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


@pytest.mark.slow
@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_a_user_parameter_named_lam_and_weight_decay(
    scaled_with_decay: CheckedDerivation, target: str, tmp_path: Path
) -> None:
    m = _emit(scaled_with_decay, target, tmp_path)
    assert m.WEIGHT_DECAY == "weight_decay"
    assert set(m.PARAMS) == {"lam"}
    ref = _emit(scaled_with_decay, "numpy", tmp_path)
    view = frameworks.numpy_view(m, target)
    rng = np.random.default_rng(0)
    X, W, b = rng.normal(size=(7, 3)), rng.normal(size=(3, 4)), rng.normal(size=4)
    y = rng.integers(0, 4, size=7)
    O = X @ W + b
    # The user's lam reaches the per-sample loss, where it scales it...
    assert _rel(view.loss(O, y, lam=0.25), 0.5 * view.loss(O, y, lam=0.5)) <= REL
    # ...and the weight decay adds its own penalty on W only.
    strength = 0.3
    L0, dW0, db0 = view.loss_and_grad(X, y, W, b, lam=0.5, weight_decay=0.0)
    L1, dW1, db1 = view.loss_and_grad(X, y, W, b, lam=0.5, weight_decay=strength)
    assert _rel(L1 - L0, strength / 2 * np.vdot(W, W)) <= REL
    assert _rel(dW1 - dW0, strength * W) <= REL
    assert _rel(db1, db0) <= REL
    # The same numbers as the NumPy module of the same derivation.
    for got, want in zip(
        view.loss_and_grad(X, y, W, b, lam=0.7, weight_decay=strength),
        ref.loss_and_grad(X, y, W, b, lam=0.7, weight_decay=strength),
        strict=True,
    ):
        assert _rel(got, want) <= REL
    # verify reads the roles the module declares: every accuracy row passes.
    results = frameworks.run(m, target)
    assert all(r.passed for r in results), runner.table(results)


@pytest.fixture(scope="module")
def poisson() -> CheckedDerivation:
    """Poisson regression, exp(o) - y o: exp(o) has no bounded rewrite (STABLE = False)."""
    model = LossModel(
        "poisson",
        Prose("p", "p"),
        class_sum(sp.exp(S.o[S.k]) - S.y[S.k] * S.o[S.k]),
        sp.exp(S.o[S.j]),
        "real",
        concrete_Ks=(2, 3),
    )
    return loss_derivation(model).check()


def _framework_calls(m: ModuleType, target: str) -> list[Callable[[Array, Array], object]]:
    """The loss, its gradient and (with second order) the HVP w.r.t. the logits, each a
    function of (O, Y) in float64 NumPy arrays, through the target's own API and autodiff."""
    view = frameworks.numpy_view(m, target)
    calls = [view.loss, view.grad_logits]
    if m.SECOND_ORDER:
        calls.append(lambda O, Y: view.hvp_logits(O, np.ones_like(O)))
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_an_unstable_loss_refuses_a_non_finite_result(
    poisson: CheckedDerivation, target: str, tmp_path: Path
) -> None:
    """As the NumPy module: one FloatingPointError naming the shape, not a silent inf/NaN;
    finite results pass through unchanged (equal to the NumPy module's to 1e-12)."""
    m = _emit(poisson, target, tmp_path)
    numpy_module = _emit(poisson, "numpy", tmp_path)
    assert m.STABLE is False
    O, Y = np.array([[1e4, 0.0]]), np.zeros((1, 2))
    calls = _framework_calls(m, target)
    assert len(calls) == 3  # the model derives second order: its HVP is refused too
    for f in calls:
        with pytest.raises(FloatingPointError, match=r"exp\(o\[.*\]\).*STABLE = False"):
            f(O, Y)
    small = np.array([[0.5, -1.0], [2.0, 0.0]])
    Ys = np.array([[1.0, 0.0], [2.0, 3.0]])
    assert _rel(m.loss(*_inputs(target, small, Ys)), numpy_module.loss(small, Ys)) < REL


def _inputs(target: str, *arrays: Array) -> tuple[object, ...]:
    """NumPy arrays as the target's own arrays."""
    if target == "torch":
        import torch

        return tuple(torch.from_numpy(a.copy()) for a in arrays)
    if target == "jax":
        import jax.numpy as jnp

        return tuple(jnp.asarray(a) for a in arrays)
    return arrays


@pytest.mark.parametrize("name", ["softmax_regression", "logistic_regression", "squared_error"])
@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
def test_predict_takes_the_layer_and_matches_the_numpy_module(name: str, target: str) -> None:
    """`predict(X, W, b)` decides as the NumPy module of the same derivation does (classes,
    0/1, or the output itself to 1e-12), and a layer of mismatched shapes is one ValueError."""
    from derive.output.loader import GENERATED_DIR

    m = frameworks.load(GENERATED_DIR / target.replace("-", "_") / f"{name}.py", target)
    numpy_module = load_module_from_path(GENERATED_DIR / f"{name}.py")
    rng = np.random.default_rng(5)
    X, W, b = rng.normal(size=(30, 4)), 2.0 * rng.normal(size=(4, 3)), rng.normal(size=3)
    got = np.asarray(m.predict(*_inputs(target, X, W, b)))
    expected = numpy_module.predict(X, W, b)
    if catalogue.checked(name).derivation.model.targets == "real":
        assert _rel(got, expected) < REL
    else:
        assert got.shape == expected.shape and np.array_equal(got, expected)
    with pytest.raises(ValueError, match=r"X, W, b: expected shapes \(n, d\), \(d, K\), \(K,\)"):
        m.predict(*_inputs(target, X, W.T, b))


#: Rows where the kernels' masks decide: ties at the top (the row's largest term exp(0) = 1 more
#: than once), a gap that rounds exp(-gap) to 1 in float32 but not in float64, a saturated lead
#: (the others' sum ~ 2e-22, which `1 - p` or `log(1 + r)` would round away), a masked class.
KERNEL_ROWS = [
    [3.0, 3.0, -1.0, 0.5],
    [2.0, 2.0, 2.0, 2.0],
    [0.0, -1e-9, -40.0, -3.0],
    [50.0, 0.0, 0.0, -2.0],
    [1.0, -np.inf, 5.0, 5.0 - 2.0**-20],
]


def _wide_kernel_rows(dtype: type) -> Array:
    """KERNEL_ROWS widened to K = 300 classes (each padded with logits 30 to 60 below its lowest
    finite one) and tiled to 256 rows: 76800 entries, past the size and class count where the
    framework kernels switch to their in-place and fused-softmax paths. The pads are whole
    numbers below the row's values, so each shifted logit `o - max` is exact: exp's own
    sensitivity to a rounded argument (|o - max| ulps) stays out of the 8-ulp bound below."""
    rng = np.random.default_rng(7)
    rows = []
    for row in KERNEL_ROWS:
        low = min(v for v in row if np.isfinite(v))
        rows.append(np.concatenate([row, low - rng.integers(30, 60, 300 - len(row))]))
    return np.tile(np.array(rows, dtype=dtype), (52, 1))[:256]


@pytest.mark.parametrize("target", ["numpy", *SLOW_FRAMEWORK_TARGETS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
def test_kernels_at_ties_near_ties_and_saturation(target: str, dtype: type, wide: bool) -> None:
    """The kernels' masks (argmax, `ceil` of a clipped gap, `p > 1/2`, the others' sum) at the
    rows where they decide, against mpmath (50 digits): log-sum-exp, log-softmax and the labels'
    gradient with the label at every class (wide: at each of the first five classes, which hold
    the narrow rows' ties and leads). Bound: 8 units in the last place of each entry (the kernels
    round a handful of times; a mask that drops or double-counts a term is off by O(1) or by the
    lost tiny sum, i.e. by ~1e6 units or more)."""
    import mpmath

    path = loader.GENERATED_DIR / ("" if target == "numpy" else target.replace("-", "_"))
    path = path / "softmax_regression.py"
    m = (
        load_module_from_path(path)
        if target == "numpy"
        else frameworks.numpy_view(frameworks.load(path, target), target)
    )
    O = _wide_kernel_rows(dtype) if wide else np.array(KERNEL_ROWS, dtype=dtype)
    n, K = O.shape
    eps, tiny = float(np.finfo(dtype).eps), float(np.finfo(dtype).tiny)
    exact_rows: dict[bytes, tuple[list[Any], Any]] = {}

    def exact(row: Array) -> tuple[list[Any], Any]:
        key = row.tobytes()
        if key not in exact_rows:
            with mpmath.workdps(50):
                terms = [mpmath.exp(mpmath.mpf(float(v))) if np.isfinite(v) else 0 for v in row]
                total = mpmath.fsum(terms)
                exact_rows[key] = [t / total for t in terms], mpmath.log(total)
        return exact_rows[key]

    def close(got: object, want: Any, what: str, floor: float = tiny) -> None:
        got_f, want_f = float(got), float(want)  # type: ignore[arg-type]
        if not np.isfinite(want_f):
            assert got_f == want_f, what
            return
        # NOTE: plus the smallest normal number: a result below it (the wide rows' pads in
        # float32) is subnormal, where the relative bound does not hold, or flushed to 0 (XLA).
        assert abs(got_f - want_f) <= 8 * eps * abs(want_f) + floor, (what, got_f, want_f)

    lse = np.asarray(m.logsumexp(O))
    log_p = np.asarray(m.log_softmax(O))
    for r in range(n):
        p, exact_lse = exact(O[r].astype(np.float64))
        close(lse[r], exact_lse, f"logsumexp row {r}")
        for j in range(K):
            want = mpmath.log(p[j]) if p[j] != 0 else -np.inf
            close(log_p[r, j], want, f"log_softmax row {r} class {j}")
    # The loss alone and fused with the gradient (one exp pass for both: `loss_and_grad` with
    # the row as the bias, X = 0), n copies of one row, the label at each of its first classes:
    # with the label at a saturated lead the loss is the tiny others' sum, which `log(p_top)`
    # would round to 0. Bound: 16 ulps (the kernels' 8, and the mean's sum of n equal terms).
    zeros_X, zeros_W = np.zeros((n, 1), dtype=dtype), np.zeros((1, K), dtype=dtype)
    for r in range(len(KERNEL_ROWS)):
        p, exact_lse = exact(O[r].astype(np.float64))
        for c in range(len(KERNEL_ROWS[0])):
            if p[c] == 0:
                continue  # a masked label: an infinite loss
            labels = np.full(n, c)
            want = float(exact_lse - mpmath.mpf(float(O[r, c])))
            values = [m.loss(np.tile(O[r], (n, 1)), labels)]
            if np.isfinite(O[r]).all():  # (a masked class is no bias: b must be finite)
                values.append(m.loss_and_grad(zeros_X, labels, zeros_W, O[r].copy())[0])
            for value in values:
                assert abs(float(value) - want) <= 16 * eps * abs(want), (r, c, value, want)
    for c in range(len(KERNEL_ROWS[0]) + 1 if wide else K):
        G = np.asarray(m.grad_logits(O, np.full(n, c))) * n
        for r in range(n):
            p, _ = exact(O[r].astype(np.float64))
            for j in range(K):
                # (the module returns the mean's gradient, G / n: its floor is n times larger here)
                want = p[j] - (1 if j == c else 0)
                close(G[r, j], want, f"gradient row {r} class {j} label {c}", n * tiny)
