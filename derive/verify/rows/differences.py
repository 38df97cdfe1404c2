"""Rows: the module's derivatives against central finite differences (float64).

The gradient in the logits and in (W, b), the Hessian in the logits and the Hessian-vector
products, each against central differences of the function one order below, within `FD_BOUND`
(see `derive.verify.subject` for why 1e-7).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np

from derive.verify.subject import FD_BOUND, Array, Result, Subject, rel, result, seeded


def _fd_grad(f: Callable[[Array], float], x: Array, h: float = 1e-6) -> Array:
    """Central finite differences of a scalar function, entry by entry."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for idx in range(flat.size):
        old = flat[idx]
        flat[idx] = old + h
        fp = f(x)
        flat[idx] = old - h
        fm = f(x)
        flat[idx] = old
        gflat[idx] = (fp - fm) / (2 * h)
    return g


def _loss_at(s: Subject, y: Array, O: Array) -> float:
    return s.loss(O, y)


def fd_logits(s: Subject) -> Result:
    worst = 0.0
    for soft in (False, True):
        X, y, W, b = s.problem(seeded(1), 6, 3, 5, soft)
        O = X @ W + b
        g = s.m.grad_logits(O, y)
        worst = max(worst, rel(g, _fd_grad(partial(_loss_at, s, y), O.copy())))
    return result("gradient w.r.t. logits vs central differences (float64)", worst, FD_BOUND)


def fd_parameters(s: Subject) -> Result:
    worst = 0.0
    for soft in (False, True):
        X, y, W, b = s.problem(seeded(2), 7, 4, 3, soft)
        _, dW, db = s.m.loss_and_grad(X, y, W, b)
        fW = _fd_grad(lambda w: float(s.m.loss_and_grad(X, y, w, b)[0]), W.copy())  # noqa: B023
        fb = _fd_grad(lambda c: float(s.m.loss_and_grad(X, y, W, c)[0]), b.copy())  # noqa: B023
        worst = max(worst, rel(dW, fW), rel(db, fb))
    return result("dL/dW, dL/db vs central differences (float64)", worst, FD_BOUND)


def _gradient_entry(s: Subject, y: Array, j: int) -> Callable[[Array], float]:
    """`o -> dl/do_j` for one sample (grad_logits divides by n = 1)."""
    return lambda t: float(s.m.grad_logits(t[None, :], y)[0, j])


def fd_hessian(s: Subject) -> Result:
    name = "Hessian, HVPs vs differences of the gradient (float64)"
    if not hasattr(s.m, "hessian_logits"):
        return Result(name, math.nan, FD_BOUND, "skip", "the model derives no second order")
    rng = seeded(3)
    worst = 0.0
    for K in (1, 2, 5, 9) if s.targets != "distribution" else (2, 5, 9):
        o = rng.normal(size=K)
        y = s.targets_for(rng, 1, K, soft=False)
        H = s.m.hessian_logits(o)
        cols = [_fd_grad(_gradient_entry(s, y, j), o.copy()) for j in range(K)]
        worst = max(worst, rel(H, np.array(cols)))
        V = rng.normal(size=(1, K))
        worst = max(worst, rel(s.m.hvp_logits(o[None, :], V)[0], H @ V[0]))
    X, labels, W, b = s.problem(rng, 6, 3, 4, soft=False)
    D: Array = rng.normal(size=(W.shape[0], W.shape[1]))
    hv = s.m.hvp_W(X, W, b, D)
    h = 1e-6
    up, down = (
        s.m.loss_and_grad(X, labels, W + h * D, b),
        s.m.loss_and_grad(X, labels, W - h * D, b),
    )
    worst = max(worst, rel(hv, (up[1] - down[1]) / (2 * h)))
    return result(name, worst, FD_BOUND)
