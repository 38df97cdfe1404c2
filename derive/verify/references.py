"""Independent references the rows compare the module with, evaluated with mpmath.

The loss and the prediction *as defined* (the module's `REFERENCE_LOSS` and
`REFERENCE_PREDICTION`, printed into it by SymPy before any rewrite into stable kernels) are
evaluated at 50 digits, then at more until two precisions agree to 30 digits (a naively written
definition cancels at extreme logits), and rounded once: nothing of the module's kernels is used.
`softmax_reference` gives softmax, log-softmax and log-sum-exp of one row to 50 digits.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import mpmath
import numpy as np

from derive.verify.subject import Array, Subject


def _as_targets(y: Array, K: int) -> Array:
    return np.eye(K)[y] if y.ndim == 1 else y


#: Digits of the mpmath references.
MP_DIGITS = 50


def _mp_eval(s: Subject, expr: str, o_row: Array, y_row: Array | None, j: int = 1) -> Any:
    """`expr` (a SymPy-printed mpmath expression in 1-based `o`, `y`) at one sample."""
    namespace: dict[str, Any] = {
        "builtins": builtins,
        "mpmath": mpmath,
        "mpf": mpmath.mpf,
        "exp": mpmath.exp,
        "log": mpmath.log,
        "sqrt": mpmath.sqrt,
        "o": [None, *(mpmath.mpf(float(v)) for v in o_row)],
        "y": [None, *(mpmath.mpf(float(v)) for v in (y_row if y_row is not None else o_row))],
        "K": len(o_row),
        "j": j,
        **{name: mpmath.mpf(value) for name, value in s.loss_params.items()},
    }
    return eval(expr, namespace)


def _settled(value: Callable[[], Any]) -> float:
    """`value()` evaluated with enough digits: at 50, then more, until two precisions agree to
    30 digits. A definition written naively (`log(1 - 1/(1 + exp(-o)))`) cancels at extreme
    logits; the reference must not (at |o| = 1e4 that takes ~4400 digits)."""
    digits = MP_DIGITS
    while True:
        with mpmath.workdps(digits):
            low = value()
        with mpmath.workdps(2 * digits):
            high = value()
            if mpmath.isfinite(high) and (
                high == low or abs(high - low) <= mpmath.mpf(10) ** -30 * abs(high)
            ):
                return float(high)
        if digits > 20000:
            return float(high)
        digits *= 4


def reference_mean_loss(s: Subject, O: Array, y: Array) -> float:
    """The mean of the loss *as defined* (the module's REFERENCE_LOSS) over the rows, to at
    least 30 correct digits, rounded once: independent of every kernel in the module."""
    Y = _as_targets(y, O.shape[1]) if s.targets == "distribution" else y
    n = O.shape[0]
    return _settled(
        lambda: mpmath.fsum(_mp_eval(s, s.m.REFERENCE_LOSS, O[r], Y[r]) for r in range(n)) / n
    )


def reference_prediction(s: Subject, O: Array) -> Array:
    """`yhat` *as defined* (REFERENCE_PREDICTION) at every row and class, as above."""
    n, K = O.shape
    expr = s.m.REFERENCE_PREDICTION
    out = np.empty((n, K))
    for r in range(n):
        for j in range(K):
            out[r, j] = _settled(partial(_mp_eval, s, expr, O[r], None, j + 1))
    return out


def softmax_reference(row: Array) -> tuple[Array, Array, float]:
    """softmax, log_softmax and logsumexp of one row, to 50 digits, rounded to float64."""

    with mpmath.workdps(50):
        vals = [mpmath.mpf(float(v)) if math.isfinite(v) else None for v in row]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in vals if v is not None))
        logp = [(v - lse) if v is not None else None for v in vals]
        sm = np.array([float(mpmath.exp(v)) if v is not None else 0.0 for v in logp])
        lsm = np.array([float(v) if v is not None else -math.inf for v in logp])
        return sm, lsm, float(lse)
