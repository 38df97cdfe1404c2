"""The adversarial input families (DESIGN.md "Accuracy"): ordinary rows, common offsets,
saturation with soft targets, masked classes, parameters at their ends, large real targets,
sigmoid tails and extreme class counts. Each returns its cases, or why it does not apply to the
module's kind of targets."""

from __future__ import annotations

from typing import Any

import numpy as np

from derive.verify.accuracy.cases import Array, Case, Family, Module
from derive.verify.subject import seeded


def _targets(kind: str, rng: np.random.Generator, O: Array, hard: bool) -> Array:
    n, K = O.shape
    if kind == "distribution":
        if hard:
            labels: Array = rng.integers(0, K, size=n)
            return labels
        Y = rng.random(size=(n, K)) + 0.05
        out: Array = Y / Y.sum(axis=1, keepdims=True)
        return out
    if kind == "binary":
        Y01: Array = (rng.integers(0, 2, size=(n, K)) * 1.0) if hard else rng.random(size=(n, K))
        return Y01
    real: Array = O + rng.normal(size=(n, K))
    return real


def _both(kind: str, seed: int, O: Array, params: dict[str, float], **kw: Any) -> list[Case]:
    rng = seeded(seed)
    V = np.asarray(rng.normal(size=O.shape))
    return [Case(O, _targets(kind, rng, O, hard), V, params, hard, **kw) for hard in (True, False)]


def _random(mod: Module) -> list[Case] | str:
    return _both(mod.kind, 1, seeded(11).normal(size=(3, 5)) * 3, mod.defaults)


def _offset(offset: float) -> Family:
    def family(mod: Module) -> list[Case] | str:
        O = offset + seeded(12).normal(size=(2, 4)) * 3
        return _both(mod.kind, 2, O, mod.defaults)

    return family


def _saturated(lead: float) -> Family:
    def family(mod: Module) -> list[Case] | str:
        if mod.kind == "real":
            return "saturation is a property of softmax/sigmoid outputs, not real targets"
        if mod.kind == "binary":
            O = np.array([[lead, -lead, lead], [-lead, lead, 0.5]])
            Y_hard = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
            Y_soft = np.array([[0.9, 0.2, 0.5], [0.3, 0.99, 0.5]])
        else:
            O = np.array([[lead, 0.0, -1.0, 0.5], [lead, 0.0, -1.0, 0.5]])
            Y_hard = np.array([0, 1])
            Y_soft = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1]])
        V = seeded(3).normal(size=O.shape)
        return [
            Case(O, Y_hard, V, mod.defaults, True),
            Case(O, Y_soft, V, mod.defaults, False),
        ]

    return family


def _masked(mod: Module) -> list[Case] | str:
    if mod.kind != "distribution":
        return "masked (-inf) classes exist for softmax targets only"
    O = np.array([[1.0, -np.inf, 3.0, -np.inf, 0.5], [-np.inf, 2.0, -1.0, 0.0, -np.inf]])
    labels = np.array([2, 3])
    Y = np.array([[0.3, 0.0, 0.5, 0.0, 0.2], [0.0, 0.25, 0.25, 0.5, 0.0]])
    V = seeded(4).normal(size=O.shape)
    return [
        Case(O, labels, V, mod.defaults, True, masked=True),
        Case(O, Y, V, mod.defaults, False, masked=True),
    ]


def _param_values(lo: float | None, hi: float | None, lo_in: bool, hi_in: bool) -> list[float]:
    vals: list[float] = []
    if lo is not None:
        vals.append(lo if lo_in else lo + 1e-3)
    if hi is not None:
        vals.append(hi if hi_in else hi - 1e-3)
    else:
        vals.append(1e3)
    vals += [0.5, 1.0, 2.0]
    if lo is not None and hi is not None:
        vals.append((lo + hi) / 2)
    return sorted(set(vals))


def _parameters(mod: Module) -> list[Case] | str:
    if not mod.ranges:
        return "the loss has no parameters"
    cases: list[Case] = []
    O = seeded(13).normal(size=(2, 4)) * 3
    for name, (lo, hi, lo_in, hi_in) in mod.ranges.items():
        for value in _param_values(lo, hi, lo_in, hi_in):
            if (lo is not None and (value < lo or (value == lo and not lo_in))) or (
                hi is not None and (value > hi or (value == hi and not hi_in))
            ):
                continue
            cases += _both(mod.kind, 5, O, mod.defaults | {name: value})
    return cases


def _regression(mod: Module) -> list[Case] | str:
    if mod.kind != "real":
        return "large targets with small residuals: real targets only"
    rng = seeded(14)
    O = 1e8 + rng.normal(size=(3, 4)) * 10
    Y = O + rng.normal(size=O.shape)
    V = rng.normal(size=O.shape)
    return [Case(O, Y, V, mod.defaults, False)]


def _tails(mod: Module) -> list[Case] | str:
    if mod.kind != "binary":
        return "far sigmoid tails: binary targets only (softmax tails: saturated rows)"
    O = np.array([[30.0, -30.0, 40.0, -40.0], [100.0, -100.0, 700.0, -700.0]])
    V = seeded(6).normal(size=O.shape)
    return [
        Case(O, np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]), V, mod.defaults, True),
        Case(O, np.array([[0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]]), V, mod.defaults, True),
    ]


def _classes(K: int) -> Family:
    def family(mod: Module) -> list[Case] | str:
        rng = seeded(15 + K)
        n = 1 if K > 50 else 3
        O = rng.normal(size=(n, K)) * 3
        sample = None
        if K > 50:  # entries at the leading, the last and a middle class (all classes summed)
            sample = sorted({int(np.argmax(O[0])), int(np.argmin(O[0])), K // 2})
        return _both(mod.kind, 7, O, mod.defaults, sample=sample)

    return family


FAMILIES: list[tuple[str, Family]] = [
    ("random", _random),
    ("offset 1e4", _offset(1e4)),
    ("offset 1e8", _offset(1e8)),
    ("offset 1e12", _offset(1e12)),
    ("saturated, lead 20", _saturated(20.0)),
    ("saturated, lead 40", _saturated(40.0)),
    ("saturated, lead 800", _saturated(800.0)),
    ("masked classes", _masked),
    ("parameters at their ends", _parameters),
    ("targets near 1e8", _regression),
    ("sigmoid tails", _tails),
    ("K = 1", _classes(1)),
    ("K = 2", _classes(2)),
    ("K = 1000", _classes(1000)),
]
