"""Rows: the module agrees with itself along every path it offers.

`check=False` computes exactly what `check=True` does; the float32 path keeps its dtype and
agrees with float64 to 1e-5 relative (float32 eps is 1.2e-7; a sum over up to 1000 terms loses
~1e-6); the blocked `loss_and_grad` equals the weighted mean over two halves; `reduction="sum"`
over uneven chunks adds up to n times the mean.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from derive.verify.subject import IDENTITY_BOUND, Result, Subject, rel, result, seeded


def unchecked_path(s: Subject) -> Result:
    """`check=False` (no validation) computes exactly what `check=True` computes."""
    name = "loss_and_grad(check=False) vs check=True"
    worst = 0.0
    for soft in (False, True):
        X, y, W, b = s.problem(seeded(12), 9, 3, 4, soft)
        a = s.m.loss_and_grad(X, y, W, b)
        c = s.m.loss_and_grad(X, y, W, b, check=False)
        worst = max(worst, *(rel(np.asarray(c[i]), np.asarray(a[i])) for i in range(3)))
    return result(name, worst, 0.0)


def dtypes(s: Subject) -> Result:
    """float32 in, float32 out, computed in float32; agrees with float64 to float32 precision."""
    X, y, W, b = s.problem(seeded(8), 300, 20, 7, soft=False)
    X *= 0.3
    L64, dW64, db64 = s.m.loss_and_grad(X, y, W, b)
    y32 = y.astype(np.float32) if y.dtype.kind == "f" else y
    L32, dW32, db32 = s.m.loss_and_grad(
        X.astype(np.float32), y32, W.astype(np.float32), b.astype(np.float32)
    )
    kept = (
        dW32.dtype == np.float32
        and db32.dtype == np.float32
        and np.asarray(L32).dtype == np.float32
    )
    worst = max(abs(float(L32) - float(L64)) / abs(float(L64)), rel(dW32, dW64), rel(db32, db64))
    if not kept:
        return Result("float32 path vs float64 (dtype kept)", worst, 1e-5, "FAIL", "dtype not kept")
    return result("float32 path vs float64 (dtype kept)", worst, 1e-5)


def blocks(s: Subject) -> Result:
    """The blocked `loss_and_grad` over n rows equals the weighted mean over two halves."""
    block = int(getattr(s.m, "_BLOCK_ROWS", 4096))
    n = block + 37
    worst = 0.0
    for soft in (False, True):  # labels and target rows take different paths through a block
        X, y, W, b = s.problem(seeded(9), n, 5, 4, soft=soft)
        whole = s.m.loss_and_grad(X, y, W, b)
        h = n // 2
        a, c = s.m.loss_and_grad(X[:h], y[:h], W, b), s.m.loss_and_grad(X[h:], y[h:], W, b)
        worst = max(
            worst,
            *(
                rel(np.asarray(whole[i]), (h * np.asarray(a[i]) + (n - h) * np.asarray(c[i])) / n)
                for i in range(3)
            ),
        )
    name = "blocked loss_and_grad vs the same over two halves (labels, targets)"
    return result(name, worst, IDENTITY_BOUND)


def summed_chunks(s: Subject) -> Result:
    """`reduction="sum"` over three uneven chunks adds up to n times the mean over all rows."""
    name = "reduction='sum' over chunks vs n x mean"
    if "reduction" not in inspect.signature(s.m.loss_and_grad).parameters:
        return Result(name, math.inf, IDENTITY_BOUND, "FAIL", "no reduction= option")
    n = 1000
    X, y, W, b = s.problem(seeded(10), n, 5, 4, soft=False)
    mean = s.m.loss_and_grad(X, y, W, b)
    cuts = [(0, 1), (1, 611), (611, n)]
    parts = [s.m.loss_and_grad(X[i:j], y[i:j], W, b, reduction="sum") for i, j in cuts]
    worst = max(
        rel(n * np.asarray(mean[i]), np.sum([np.asarray(p[i]) for p in parts], axis=0))
        for i in range(3)
    )
    return result(name, worst, IDENTITY_BOUND)
