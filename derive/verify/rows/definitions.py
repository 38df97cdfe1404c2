"""Rows: the loss and the prediction against their own definitions, evaluated with mpmath.

A module whose loss and gradients are all wrong the same way passes the finite-difference rows,
not these: the loss (and the fused total, weight decay included) and `predict_proba` are compared
with `derive.verify.references` within `IDENTITY_BOUND`, and `predict` with its decision rule.
"""

from __future__ import annotations

import math

import numpy as np

from derive.verify.references import reference_mean_loss, reference_prediction
from derive.verify.subject import IDENTITY_BOUND, Result, Subject, rel, result, seeded


def reference_loss(s: Subject) -> Result:
    """The module's loss (and the fused total, weight decay included) against the loss's own
    definition evaluated with mpmath: a module whose loss and gradients are all wrong the same
    way passes the finite-difference rows, not this one."""
    name = "loss vs its definition evaluated with mpmath (50 digits)"
    if not s.reference:
        return Result(name, math.nan, IDENTITY_BOUND, "skip", "module carries no REFERENCE_LOSS")
    rng = seeded(4)
    worst = 0.0
    for n, d, K, scale, soft in (
        (5, 3, 3, 1.0, False),
        (12, 4, 10, 10.0, True),
        (3, 3, 60, 100.0, False),
    ):
        X, y, W, b = s.problem(rng, n, d, K, soft)
        X *= scale
        O = X @ W + b
        expected = reference_mean_loss(s, O, y)
        worst = max(worst, abs(s.loss(O, y) - expected) / max(abs(expected), 1.0))
        total = float(s.m.loss_and_grad(X, y, W, b)[0])
        decay = s.decay / 2 * float(np.vdot(W, W))
        worst = max(worst, abs(total - expected - decay) / max(abs(expected + decay), 1.0))
    return result(name, worst, IDENTITY_BOUND)


def prediction(s: Subject) -> Result:
    """`predict_proba` against the prediction's definition (mpmath; parameters such as a
    temperature included), and `predict` against the rule for the targets: the most probable
    class, `p > 0.5` for binary outputs, the output itself for regression."""
    name = "predict_proba vs its definition (mpmath), predict vs its rule"
    if not s.reference:
        return Result(name, math.nan, IDENTITY_BOUND, "skip", "module carries no reference")
    rng = seeded(11)
    X, _, W, b = s.problem(rng, 40, 3, 4, soft=False)
    W *= 2.0
    P = np.asarray(s.m.predict_proba(X, W, b), dtype=np.float64)
    ref = reference_prediction(s, X @ W + b)
    worst = rel(P, ref)
    if s.targets == "distribution":
        rule = np.argmax(ref, axis=-1)
    elif s.targets == "binary":
        rule = (ref > 0.5).astype(np.intp)
    else:
        rule = ref
    got = np.asarray(s.m.predict(X, W, b))
    wrong = float(np.mean(got != rule)) if s.targets != "real" else rel(got, np.asarray(rule))
    note = f"predict disagrees with its rule on {wrong:.0%} of rows" if wrong > 0 else ""
    if s.targets == "real":
        worst = max(worst, wrong)
        wrong = 0.0
    return result(name, worst if wrong == 0 else math.inf, IDENTITY_BOUND, note)
