"""Rows: the stable kernels, from ordinary logits to extreme ones.

The softmax, log-softmax and log-sum-exp against `scipy.special`; at logits up to |o| = 1e4,
-inf and K = 1000 against mpmath (`softmax_reference`): float64 within 8 ulp of the row's largest
magnitude (the kernels round a handful of times: shift, exp, sum, log, divide), float32 within
1e-5 relative; and the fused loss and gradients at logits of +-1e4, finite and right (or, for a
module that says it is not STABLE, refused as it promises).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from derive.verify.references import reference_mean_loss, softmax_reference
from derive.verify.subject import IDENTITY_BOUND, Array, Result, Subject, rel, result, seeded


def softmax_kernels(s: Subject) -> Result:
    name = "softmax, log_softmax, logsumexp vs scipy.special"
    if not s.softmax_api:
        return Result(name, math.nan, IDENTITY_BOUND, "skip", "no softmax in this module")

    rng = seeded(5)
    worst = 0.0
    for n, K, scale in ((5, 3, 1.0), (50, 10, 30.0), (20, 1000, 1e3)):
        O = rng.normal(size=(n, K)) * scale
        worst = max(
            worst,
            rel(s.m.softmax(O), special.softmax(O, axis=-1)),
            rel(s.m.log_softmax(O), special.log_softmax(O, axis=-1)),
            rel(s.m.logsumexp(O), special.logsumexp(O, axis=-1)),
        )
    return result(name, worst, IDENTITY_BOUND)


def _extreme_rows() -> list[Array]:
    rng = seeded(6)
    return [
        np.array([1e4, -1e4, 0.0]),
        np.array([-1e4, -1e4 + 1.0, -1e4 + 2.0]),
        np.array([1e4, 1e4, 1e4 - 30.0, -np.inf]),
        np.array([-np.inf, 3.0, -np.inf, 2.5]),
        np.array([800.0, 799.0, -800.0]),
        rng.normal(size=1000) * 1e3,
        np.concatenate([rng.normal(size=999) * 50.0, [-np.inf]]),
    ]


def _ulp_error(got: Array, ref: Array) -> float:
    """Worst error in units of the float64 spacing at the row's largest magnitude."""
    finite = np.isfinite(ref)
    if not np.array_equal(np.isfinite(got), finite) or not np.array_equal(
        got[~finite], ref[~finite]
    ):
        return math.inf
    scale = np.spacing(max(float(np.max(np.abs(ref[finite]))), 1e-300))
    return float(np.max(np.abs(got[finite] - ref[finite])) / scale)


def extreme_float64(s: Subject) -> Result:
    name = "extreme logits (|o| to 1e4, -inf, K=1000) vs mpmath, float64 [ulp]"
    if not s.softmax_api:
        return Result(name, math.nan, 8.0, "skip", "no softmax in this module")
    worst = 0.0
    for row in _extreme_rows():
        sm, lsm, lse = softmax_reference(row)
        worst = max(
            worst,
            _ulp_error(s.m.softmax(row), sm),
            _ulp_error(s.m.log_softmax(row), lsm),
            _ulp_error(np.array([s.m.logsumexp(row)]), np.array([lse])),
        )
    return result(name, worst, 8.0)


def extreme_float32(s: Subject) -> Result:
    name = "extreme logits vs mpmath, float32 [rel]"
    if not s.softmax_api:
        return Result(name, math.nan, 1e-5, "skip", "no softmax in this module")
    worst = 0.0
    for row in _extreme_rows():
        r32 = row.astype(np.float32)
        sm, lsm, lse = softmax_reference(r32.astype(np.float64))
        pairs = ((s.m.softmax(r32), sm), (s.m.log_softmax(r32), lsm), (s.m.logsumexp(r32), [lse]))
        for got_any, ref_any in pairs:
            got = np.atleast_1d(got_any)
            ref = np.asarray(ref_any)
            fin = np.isfinite(ref)
            if got.dtype != np.float32 or not np.array_equal(np.isfinite(got), fin):
                return Result(name, math.inf, 1e-5, "FAIL", "dtype not kept or inf/NaN differs")
            worst = max(worst, rel(got[fin], ref[fin]))
    return result(name, worst, 1e-5)


def extreme_training(s: Subject) -> Result:
    """The fused loss and gradient stay finite (and right) at logits of +-1e4."""
    name = "loss and gradients at logits of +-1e4 (float64)"
    rng = seeded(7)
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    W = np.array([[1e4, -1e4, 0.0], [-1e4, 3e3, 1e4]])
    b = np.zeros(3)
    y = s.targets_for(rng, 3, 3, soft=False)
    O = X @ W + b
    if not getattr(s.m, "STABLE", True):
        return _unstable_at_extremes(s, name, (X, y, W, b), O)
    loss, dW, db = s.m.loss_and_grad(X, y, W, b)
    G = s.m.grad_logits(O, y)
    outputs = (np.asarray(loss), dW, db, G)
    if not all(np.isfinite(a).all() for a in outputs):
        return Result(name, math.inf, 0.0, "FAIL", "non-finite output")
    if not s.reference:
        return Result(name, 0.0, 0.0, "pass", "finite; no reference to compare values with")
    expected = reference_mean_loss(s, O, y) + s.decay / 2 * float(np.vdot(W, W))
    return result(name, abs(float(loss) - expected) / max(abs(expected), 1.0), IDENTITY_BOUND)


def _unstable_at_extremes(s: Subject, name: str, args: tuple[Array, ...], O: Array) -> Result:
    """STABLE = False: a FAIL where the exact loss is finite (a form that keeps it finite may
    exist), a skip where it exceeds float64 (no form can return it: `exp(o)` at 1e4) and the
    module refuses the input as STABLE = False promises, instead of returning inf."""
    unstable = "no stable form known for a shape in this loss"
    if not s.reference or math.isfinite(reference_mean_loss(s, O, args[1])):
        return Result(name, math.inf, 0.0, "FAIL", unstable)
    try:
        # NOTE: floating-point flags ignored here, so the refusal must be the module's own.
        with np.errstate(all="ignore"):
            s.m.loss_and_grad(*args)
    except FloatingPointError:
        note = "the exact loss exceeds the largest float64 here; the module raises, as it says"
        return Result(name, math.nan, 0.0, "skip", note)
    return Result(name, math.inf, 0.0, "FAIL", f"{unstable}; a non-finite result was returned")
