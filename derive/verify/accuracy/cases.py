"""What an accuracy family is made of: rows of inputs with their targets (`Case`), what the
module under test declares (`Module`: its kind of targets, its loss parameters' ranges and
defaults), and a family (a function from the one to cases, or the reason it does not apply)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

#: A masked class (-inf) in the reference: exp(-1e6) is 0 to over 400000 digits.
MASKED = -1e6


@dataclass
class Case:
    """Rows of logits with their targets (labels or rows), directions and parameters."""

    O: Array
    y: Array
    V: Array
    params: dict[str, float]
    hard: bool
    #: Class indices whose entries are compared (all for small K; a sample for K = 1000).
    sample: list[int] | None = None
    masked: bool = False


@dataclass
class Module:
    m: ModuleType
    kind: str
    defaults: dict[str, float]
    ranges: dict[str, tuple[float | None, float | None, bool, bool]]


Family = Callable[[Module], "list[Case] | str"]


def declared(m: ModuleType) -> Module:
    """What the module declares: its targets and its loss parameters (ranges and defaults)."""
    sig = inspect.signature(m.loss_and_grad)
    ranges: dict[str, tuple[float | None, float | None, bool, bool]] = {
        name: (lo, hi, bool(lo_in), bool(hi_in))
        for name, (lo, hi, lo_in, hi_in) in getattr(m, "PARAMETER_RANGES", {}).items()
        # weight decay (the parameter in that declared role, never a name) acts on W, not on
        # the logits' functions
        if name != getattr(m, "WEIGHT_DECAY", None)
    }
    defaults = {name: float(sig.parameters[name].default) for name in ranges}
    return Module(m, str(getattr(m, "TARGETS", "distribution")), defaults, ranges)


def row_inputs(case: Case, row: int) -> tuple[Array, Array, Array]:
    O = case.O[row]
    o = np.where(np.isfinite(O), O, MASKED)
    K = O.shape[0]
    y = np.eye(K)[case.y[row]] if case.y.ndim == 1 else case.y[row]
    return o, y, case.V[row]
