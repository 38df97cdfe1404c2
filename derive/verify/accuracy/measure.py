"""Measuring: every emitted function against the exact values, entry by entry, in units of the
bound the package states (`derive.verify.accuracy`)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from derive.verify.accuracy.cases import MASKED, Array, Case, Family, Module, declared, row_inputs
from derive.verify.accuracy.reference import Reference, exact_row, indices

#: The bound's constant (the package docstring says why 32).
C = 32.0
#: Why a masked family is skipped for a loss that puts target weight on masked classes.
INFINITE_LOSS = "the loss gives masked (-inf) classes target weight: its exact value is +inf"
#: Why a family is skipped in a dtype whose range the exact values exceed (`exp(o)` at 1e4).
OVERFLOWS = "the exact values exceed the largest {dtype} (nothing finite to compare)"


@dataclass
class Worst:
    ratio: float = 0.0
    where: str = ""
    notes: list[str] = field(default_factory=list)

    def add(self, err: float, bound: float, where: str) -> None:
        r = math.inf if not math.isfinite(err) else err / bound
        if r > self.ratio or (math.isnan(r) and not math.isnan(self.ratio)):
            self.ratio, self.where = r, where


def _shift_invariant(ref: Reference, case: Case, row: int) -> bool:
    """Whether the loss is unchanged by a common shift of the logits (on the reference)."""
    mp = ref.mp
    o, y, v = row_inputs(case, row)
    finite = np.isfinite(case.O[row])
    with mp.workdps(60):
        a = ref.row("loss", o, y, v, case.params)(1, 1, 1)
        shifted = np.where(finite, o + 1.5, o)
        b = ref.row("loss", shifted, y, v, case.params)(1, 1, 1)
    return bool(abs(a - b) <= mp.mpf(10) ** -40 * (1 + abs(a)))


def _scales(mod: Module, case: Case, row: int, invariant: bool) -> dict[str, Array]:
    o, y, v = row_inputs(case, row)
    finite = np.isfinite(case.O[row])
    if mod.kind == "real":
        s_o = np.abs(o - y)
        s_y = s_o
    else:
        s_o = (np.max(o[finite]) - o) if invariant else np.abs(o)
        s_y = np.zeros_like(y) if case.hard else np.abs(y)
    s_o = np.where(finite, s_o, 0.0)
    out = {"o": s_o, "y": s_y, "v": np.abs(v)}
    out |= {k: np.array([val]) for k, val in case.params.items()}
    return out


def _call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        return fn(*args, **kw)


def measure(m: ModuleType, family: Family, dtype: type) -> tuple[float, str]:
    """Worst error in units of the bound over one family, in one dtype; or a skip reason."""
    mod = declared(m)
    ref = Reference(m)
    cases = family(mod)
    if isinstance(cases, str):
        return math.nan, cases
    u = float(np.finfo(dtype).eps) / 2
    tiny = float(np.finfo(dtype).tiny)
    worst = Worst()
    for case in cases:
        for label, err, bound in _compare(mod, ref, case, dtype, u, tiny):
            if label in (INFINITE_LOSS, OVERFLOWS):
                return math.nan, label.format(dtype=np.dtype(dtype).name)
            worst.add(err, bound, label)
    return worst.ratio, worst.where


def _cast(case: Case, dtype: type) -> Case:
    """The case in `dtype`: the inputs are rounded first, the reference sees the rounded ones."""
    y = case.y if case.y.ndim == 1 else case.y.astype(dtype).astype(np.float64)
    return Case(
        case.O.astype(dtype).astype(np.float64),
        y,
        case.V.astype(dtype).astype(np.float64),
        case.params,
        case.hard,
        case.sample,
        case.masked,
    )


def _compare(
    mod: Module, ref: Reference, case: Case, dtype: type, u: float, tiny: float
) -> Iterator[tuple[str, float, float]]:
    case = _cast(case, dtype)
    m = mod.m
    n, K = case.O.shape
    sample = [i + 1 for i in (case.sample or range(K))]
    O: Array = case.O.astype(dtype)
    Y: Array = case.y if case.y.ndim == 1 else case.y.astype(dtype)
    V: Array = case.V.astype(dtype)
    kw = case.params
    floor = C * tiny
    rows: list[dict[str, Any]] = []
    for r in range(n):
        o, y, v = row_inputs(case, r)
        if case.masked and _depends_on_masked(ref, case, r):
            yield INFINITE_LOSS, 0.0, 1.0
            return
        invariant = _shift_invariant(ref, case, r)
        scales = _scales(mod, case, r, invariant)
        row: dict[str, Any] = {}
        kinds = ["loss", "gradient"] + (["hessian", "hvp"] if ref.has("hessian") else [])
        for kind in kinds:
            pairs = indices(kind, K, sample)
            row[kind] = exact_row(ref, kind, o, y, v, kw, pairs, scales)
        rows.append(row)
    biggest = float(np.finfo(dtype).max)
    if any(
        abs(value) > biggest  # inf included (float() of an mpf beyond 1.8e308)
        for row in rows
        for values, _ in row.values()
        for value in values.values()
    ):
        yield OVERFLOWS, 0.0, 1.0
        return

    def check(label: str, got: Any, exact: float, sens: float) -> tuple[str, float, float]:
        bound = C * u * sens + floor
        g = float(got)
        err = abs(g - exact) if math.isfinite(g) else math.inf
        return label, err, bound

    for r in range(n):
        yr = Y[r : r + 1]
        (lv, ls) = rows[r]["loss"]
        yield check(f"loss row {r}", _call(m.loss, O[r : r + 1], yr, **kw), lv[1, 1], ls[1, 1])
        G = _call(m.grad_logits, O[r : r + 1], yr, **kw)[0]
        gv, gs = rows[r]["gradient"]
        for j in sample:
            yield check(f"grad_logits[{r}, {j - 1}]", G[j - 1], gv[j, 1], gs[j, 1])
        if "hessian" in rows[r]:
            H = _call(_hessian(m), O[r], Y[r], **kw)
            hv, hs = rows[r]["hessian"]
            for j in sample:
                for k in sample:
                    yield check(f"hessian[{j - 1}, {k - 1}]", H[j - 1, k - 1], hv[j, k], hs[j, k])
            HV = _call(_hvp(m), O[r : r + 1], V[r : r + 1], Y[r : r + 1], **kw)[0]
            pv, ps = rows[r]["hvp"]
            for j in sample:
                yield check(f"hvp_logits[{r}, {j - 1}]", HV[j - 1], pv[j, 1], ps[j, 1])
    if case.masked:
        return
    # The fused path on the same logits: X = I, W = O, b = 0 gives O exactly (one 1 per row).
    X: Array = np.eye(n, dtype=dtype)
    decay = getattr(m, "WEIGHT_DECAY", None)
    extra = {decay: 0.0} if decay is not None else {}
    L, dW, db = _call(m.loss_and_grad, X, Y, O.copy(), np.zeros(K, dtype=dtype), **kw, **extra)
    mean = sum(rows[r]["loss"][0][1, 1] for r in range(n)) / n
    mean_sens = sum(rows[r]["loss"][1][1, 1] for r in range(n)) / n
    yield check("loss_and_grad: L", L, mean, mean_sens)
    for j in sample:
        col = [rows[r]["gradient"] for r in range(n)]
        for r in range(n):
            yield check(
                f"loss_and_grad: dW[{r}, {j - 1}]",
                dW[r, j - 1],
                col[r][0][j, 1] / n,
                col[r][1][j, 1] / n,
            )
        exact = sum(c[0][j, 1] for c in col) / n
        sens = sum(c[1][j, 1] for c in col) / n
        yield check(f"loss_and_grad: db[{j - 1}]", db[j - 1], exact, sens)


def _depends_on_masked(ref: Reference, case: Case, row: int) -> bool:
    mp = ref.mp
    o, y, v = row_inputs(case, row)
    far = np.where(np.isfinite(case.O[row]), o, 2 * MASKED)
    with mp.workdps(60):
        a = ref.row("loss", o, y, v, case.params)(1, 1, 1)
        b = ref.row("loss", far, y, v, case.params)(1, 1, 1)
    return bool(abs(a - b) > mp.mpf(10) ** -30 * (1 + abs(a)))


def _hessian(m: ModuleType) -> Callable[..., Any]:
    """`hessian_logits(o[, y])`: the targets are passed where the Hessian takes them."""
    fn = m.hessian_logits
    takes_y = "y" in inspect.signature(fn).parameters
    return (lambda o, y, **kw: fn(o, y, **kw)) if takes_y else (lambda o, y, **kw: fn(o, **kw))


def _hvp(m: ModuleType) -> Callable[..., Any]:
    fn = m.hvp_logits
    takes_y = "y" in inspect.signature(fn).parameters
    return (
        (lambda O, V, y, **kw: fn(O, V, y, **kw))
        if takes_y
        else (lambda O, V, y, **kw: fn(O, V, **kw))
    )
