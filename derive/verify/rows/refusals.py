"""Row: every bad input is refused with ValueError or TypeError, never answered or warned about.

Wrong shapes, empty batches, NaN and inf, complex and float16 arrays, parameters out of range,
labels out of range and target rows that do not sum to 1, the softmax API's degenerate rows:
each must raise one clear error; an answer or any other exception fails the row.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from derive.verify.subject import FP_ERRORS_RAISE, Result, Subject, result, seeded


def _bad_inputs(s: Subject) -> list[tuple[str, Callable[[], Any]]]:
    X, y, W, b = s.problem(seeded(10), 4, 3, 2, soft=False)
    m = s.m
    nan_X, inf_X = X.copy(), X.copy()
    nan_X[1, 1] = np.nan
    inf_X[0, 0] = np.inf
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("X 1-D", lambda: m.loss_and_grad(X[0], y, W, b)),
        ("W rows != d", lambda: m.loss_and_grad(X, y, W[:2], b)),
        ("b wrong length", lambda: m.loss_and_grad(X, y, W, b[:1])),
        ("n = 0", lambda: m.loss_and_grad(X[:0], y[:0], W, b)),
        ("too few targets", lambda: m.loss_and_grad(X, y[:3], W, b)),
        ("NaN in X", lambda: m.loss_and_grad(nan_X, y, W, b)),
        ("inf in X", lambda: m.loss_and_grad(inf_X, y, W, b)),
        ("NaN in W", lambda: m.loss_and_grad(X, y, W * np.nan, b)),
        ("complex X", lambda: m.loss_and_grad(X.astype(complex), y, W, b)),
        ("float16 X", lambda: m.loss_and_grad(X.astype(np.float16), y, W, b)),
        ("NaN in targets", lambda: m.loss(X @ W + b, np.full((4, 2), np.nan))),
        ("logits 1-D", lambda: m.loss(np.zeros(2), y)),
    ]
    if hasattr(m, "hessian_logits"):
        cases.append(("hessian of a batch", lambda: m.hessian_logits(np.zeros((2, 3)))))
        cases.append(("inf in X (hvp_W)", lambda: m.hvp_W(inf_X, W, b, W)))
        cases.append(("NaN in V (hvp_W)", lambda: m.hvp_W(X, W, b, W * np.nan)))
        cases.append(("inf in X (predict_proba)", lambda: m.predict_proba(inf_X, W, b)))
    for p in s.params:
        for value in (math.nan, -1e9):
            call = partial(m.loss_and_grad, X, y, W, b, **{p: value})
            cases.append((f"{p} = {value}", call))
    if s.targets == "distribution":
        Y = np.eye(2)[y]
        cases += [
            ("label = K", lambda: m.loss_and_grad(X, np.array([0, 1, 2, 0]), W, b)),
            ("label < 0", lambda: m.loss_and_grad(X, np.array([0, -1, 1, 0]), W, b)),
            ("float labels", lambda: m.loss_and_grad(X, y.astype(float), W, b)),
            ("target rows != 1", lambda: m.loss_and_grad(X, Y * 0.9, W, b)),
            ("target rows off by 1e-3", lambda: m.loss_and_grad(X, Y * (1 - 1e-3), W, b)),
            ("negative targets", lambda: m.loss_and_grad(X, Y * 2 - 0.5, W, b)),
        ]
    if s.targets == "binary":
        cases.append(("targets > 1", lambda: m.loss_and_grad(X, y + 2, W, b)))
    if s.softmax_api:
        cases += [
            ("softmax all -inf row", lambda: m.softmax(np.array([[-np.inf, -np.inf]]))),
            ("softmax NaN", lambda: m.softmax(np.array([0.0, np.nan]))),
            ("softmax +inf", lambda: m.softmax(np.array([0.0, np.inf]))),
            ("softmax empty", lambda: m.softmax(np.zeros((2, 0)))),
        ]
    return cases


def bad_inputs(s: Subject) -> Result:
    """Every bad input raises ValueError/TypeError; none returns an answer or warns."""
    cases = _bad_inputs(s)
    failures = []
    for label, call in cases:
        try:
            with warnings.catch_warnings(), np.errstate(**FP_ERRORS_RAISE):  # type: ignore[arg-type]
                warnings.simplefilter("error")
                call()
        except (ValueError, TypeError):
            continue
        except Exception as exc:  # a crash is not a clear error
            failures.append(f"{label}: {type(exc).__name__}")
            continue
        failures.append(f"{label}: accepted")
    return result(
        f"bad inputs refused ({len(cases)} cases)", float(len(failures)), 0.0, "; ".join(failures)
    )
