"""The exact values an emitted function is compared with: the module's own `reference()`
functions (its derived forms, printed for mpmath) evaluated at one row, with enough digits.

The derived forms are raw (before the accurate rewrites), so a value like `sigmoid(-700)` is a
difference from 1 there: the precision starts at 50 digits, grows with the row's exponents and
doubles until an evaluation with 40 more digits agrees to 30 digits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import mpmath
import numpy as np

from derive.verify.accuracy.cases import MASKED, Array

#: Digits to start with (more for rows that need them); doubled until an evaluation with 40
#: more digits agrees to `AGREE` digits.
DIGITS = 50
AGREE = 30
MAX_DIGITS = 1600


class Reference:
    """The module's `reference()` functions at one row, in a given precision."""

    def __init__(self, module: ModuleType) -> None:
        self.mp = mpmath
        self.fns: dict[str, Callable[..., Any]] = module.reference()

    def has(self, key: str) -> bool:
        return key in self.fns

    def row(self, key: str, o: Array, y: Array, v: Array, params: dict[str, float]) -> Any:
        mpf = self.mp.mpf

        def as_mp(a: Array) -> list[Any]:
            return [None, *(mpf(float(t)) for t in a)]  # indexed from 1, as derived

        ps = {k: mpf(float(val)) for k, val in params.items()}
        return self.fns[key](as_mp(o), as_mp(y), as_mp(v), len(o), **ps)


def indices(kind: str, K: int, sample: list[int]) -> list[tuple[int, int]]:
    if kind == "loss":
        return [(1, 1)]
    if kind == "hessian":
        return [(j, k) for j in sample for k in sample]
    return [(j, 1) for j in sample]


def _digits_for(o: Array, params: dict[str, float]) -> int:
    """Enough digits that `1 + exp(-x)` keeps `exp(-x)` for the exponents the row produces.

    The derived forms are raw (`1 / (1 + exp(-o))`, `exp(o_j) / sum exp`): a value like
    `sigmoid(-700)` is a difference from 1 there, invisible below ~305 digits, and two
    evaluations that both round it to 0 would agree. The exponents that matter are at most the
    row's logits (or their spread, for a common offset) times the largest inverse parameter
    (a temperature); beyond exp(-1600) a term is below every float's underflow floor.
    """
    finite = o[np.isfinite(o) & (o > MASKED)]
    if not finite.size:
        return DIGITS
    size = min(float(np.max(np.abs(finite))), float(np.ptp(finite)) + 1.0)
    scale = max([1.0, *(1 / abs(v) for v in params.values() if v != 0)])
    return DIGITS + math.ceil(0.4343 * min(2 * size * scale, 1600.0))


def exact_row(
    ref: Reference,
    kind: str,
    o: Array,
    y: Array,
    v: Array,
    params: dict[str, float],
    pairs: list[tuple[int, int]],
    scales: dict[str, Array],
) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
    """Exact values and sensitivity sums of `kind` at the entries `pairs` (1-based)."""
    mp = ref.mp
    digits = _digits_for(o, params)
    values: dict[tuple[int, int], Any] = {}
    while True:
        with mp.workdps(digits):
            at = ref.row(kind, o, y, v, params)
            now = {p: at(p[0], p[1], 1) for p in pairs}
        with mp.workdps(digits + 40):
            at = ref.row(kind, o, y, v, params)
            finer = {p: at(p[0], p[1], 1) for p in pairs}
        close = all(
            abs(finer[p] - now[p]) <= mp.mpf(10) ** -AGREE * (abs(finer[p]) + mp.mpf(10) ** -400)
            for p in pairs
        )
        values = finer
        if close or digits >= MAX_DIGITS:
            break
        digits *= 2
    sens: dict[tuple[int, int], Any] = dict.fromkeys(pairs, mp.mpf(0))
    K = len(o)
    with mp.workdps(digits):
        for var, scale in scales.items():
            key = f"{kind}_d{var}"
            if not ref.has(key) or not np.any(scale):
                # (a derivative whose every scale is 0 adds nothing, and is not evaluated: at
                # K = 1 the logits' scales are 0 and the raw derivative divides by 1 - p = 0)
                continue
            at = ref.row(key, o, y, v, params)
            if var in params:
                for p in pairs:
                    sens[p] += abs(scale[0]) * abs(at(p[0], p[1], 1))
                continue
            for m in range(1, K + 1):
                if scale[m - 1] == 0:
                    continue
                for p in pairs:
                    sens[p] += mp.mpf(float(scale[m - 1])) * abs(at(p[0], p[1], m))
    return (
        {p: float(values[p]) for p in pairs},
        {p: float(abs(values[p]) + sens[p]) for p in pairs},
    )
