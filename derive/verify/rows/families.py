"""Rows: one per adversarial input family of `derive.verify.accuracy`, against mpmath.

Each row is the worst error over float64 and float32, in units of the bound the accuracy module
states (pass: at most 1); its title is registered in `TITLES` so a row that raises is reported
under it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from derive.verify.accuracy import FAMILIES as ACCURACY_FAMILIES
from derive.verify.accuracy import measure as accuracy_measure
from derive.verify.subject import TITLES, Check, Result, Subject, result


def _accuracy_check(family: str, build: Any) -> Check:
    """One verify row per input family: the worst error over float64 and float32, in units of
    the bound `derive.verify.accuracy` states (pass: at most 1)."""

    name = f"accuracy vs mpmath: {family} [units of the bound]"

    def accuracy(s: Subject) -> Result:
        if not hasattr(s.m, "reference"):
            return Result(name, math.nan, 1.0, "skip", "the module carries no reference()")
        worst, where = 0.0, ""
        for dtype in (np.float64, np.float32):
            ratio, at = accuracy_measure(s.m, build, dtype)
            if math.isnan(ratio):
                return Result(name, math.nan, 1.0, "skip", at)
            if ratio > worst or not math.isfinite(ratio):
                worst, where = ratio, f"{np.dtype(dtype).name} {at}"
        return result(name, worst, 1.0, where if worst > 1.0 else "")

    accuracy.__name__ = "accuracy_" + "".join(ch if ch.isalnum() else "_" for ch in family)
    TITLES[accuracy.__name__] = name
    return accuracy


#: One row per input family of `derive.verify.accuracy`, in its order.
ROWS: list[Check] = [_accuracy_check(family, build) for family, build in ACCURACY_FAMILIES]
