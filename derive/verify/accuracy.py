"""Accuracy of an emitted module: every function against a high-precision value of its derivation.

The module carries its own reference: `reference()` returns the derived forms (as derived, before
the accurate rewrites) and their first partial derivatives as mpmath functions, printed by SymPy
from the same expressions. This module imports nothing of the symbolic layers: it evaluates those
functions at 50 digits or more (doubling the precision until two evaluations agree to 30 digits,
which cancellation at a lead of 800 needs) and compares each emitted function with them.

The bound, per output entry F, in the precision of the call (unit roundoff u):

    |computed - exact| <= C * u * (|F| + sum_v s_v |dF/dv|) + C * tiny

`s_v` is the scale the function really depends on: for a function invariant under a common shift
of the logits (tested on the reference), the logit's gap to its row max; for real targets the
residual |o - y| (logits and targets); else |o|; |y| for soft targets and 0 for exact 0/1 targets
(and labels); |v| for a direction; |p| for a parameter. `tiny` is the smallest normal number
(values that underflow). C = 32: each emitted formula rounds a handful of times (the shift, exp,
a class sum whose pairwise rounding grows like log2 K, a log, a division, the 1/n), each at most
u relative to a term bounded by the sensitivity sum; 32 covers about ten such roundings with
margin, and is small enough that a lost digit fails (cancellation of an offset of 1e8 costs
1e8 units, a complement rounded to 0 costs 1/u).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import mpmath
import numpy as np

Array = np.ndarray[Any, Any]

C = 32.0
#: Digits to start with (more for rows that need them); doubled until an evaluation with 40
#: more digits agrees to `AGREE` digits.
DIGITS = 50
AGREE = 30
MAX_DIGITS = 1600
#: Why a masked family is skipped for a loss that puts target weight on masked classes.
INFINITE_LOSS = "the loss gives masked (-inf) classes target weight: its exact value is +inf"
#: Why a family is skipped in a dtype whose range the exact values exceed (`exp(o)` at 1e4).
OVERFLOWS = "the exact values exceed the largest {dtype} (nothing finite to compare)"
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
class Worst:
    ratio: float = 0.0
    where: str = ""
    notes: list[str] = field(default_factory=list)

    def add(self, err: float, bound: float, where: str) -> None:
        r = math.inf if not math.isfinite(err) else err / bound
        if r > self.ratio or (math.isnan(r) and not math.isnan(self.ratio)):
            self.ratio, self.where = r, where


# --------------------------------------------------------------------------- the reference


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


def _indices(kind: str, K: int, sample: list[int]) -> list[tuple[int, int]]:
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


def _exact_row(
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


# --------------------------------------------------------------------------- the families


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


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
    rng = _rng(seed)
    V = np.asarray(rng.normal(size=O.shape))
    return [Case(O, _targets(kind, rng, O, hard), V, params, hard, **kw) for hard in (True, False)]


Family = Callable[["Module"], "list[Case] | str"]


@dataclass
class Module:
    m: ModuleType
    kind: str
    defaults: dict[str, float]
    ranges: dict[str, tuple[float | None, float | None, bool, bool]]


def _random(mod: Module) -> list[Case] | str:
    return _both(mod.kind, 1, _rng(11).normal(size=(3, 5)) * 3, mod.defaults)


def _offset(offset: float) -> Family:
    def family(mod: Module) -> list[Case] | str:
        O = offset + _rng(12).normal(size=(2, 4)) * 3
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
        V = _rng(3).normal(size=O.shape)
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
    V = _rng(4).normal(size=O.shape)
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
    O = _rng(13).normal(size=(2, 4)) * 3
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
    rng = _rng(14)
    O = 1e8 + rng.normal(size=(3, 4)) * 10
    Y = O + rng.normal(size=O.shape)
    V = rng.normal(size=O.shape)
    return [Case(O, Y, V, mod.defaults, False)]


def _tails(mod: Module) -> list[Case] | str:
    if mod.kind != "binary":
        return "far sigmoid tails: binary targets only (softmax tails: saturated rows)"
    O = np.array([[30.0, -30.0, 40.0, -40.0], [100.0, -100.0, 700.0, -700.0]])
    V = _rng(6).normal(size=O.shape)
    return [
        Case(O, np.array([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]), V, mod.defaults, True),
        Case(O, np.array([[0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]]), V, mod.defaults, True),
    ]


def _classes(K: int) -> Family:
    def family(mod: Module) -> list[Case] | str:
        rng = _rng(15 + K)
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


# --------------------------------------------------------------------------- measuring


def _module(m: ModuleType) -> Module:
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


def _shift_invariant(ref: Reference, case: Case, row: int) -> bool:
    """Whether the loss is unchanged by a common shift of the logits (on the reference)."""
    mp = ref.mp
    o, y, v = _row_inputs(case, row)
    finite = np.isfinite(case.O[row])
    with mp.workdps(60):
        a = ref.row("loss", o, y, v, case.params)(1, 1, 1)
        shifted = np.where(finite, o + 1.5, o)
        b = ref.row("loss", shifted, y, v, case.params)(1, 1, 1)
    return bool(abs(a - b) <= mp.mpf(10) ** -40 * (1 + abs(a)))


def _row_inputs(case: Case, row: int) -> tuple[Array, Array, Array]:
    O = case.O[row]
    o = np.where(np.isfinite(O), O, MASKED)
    K = O.shape[0]
    y = np.eye(K)[case.y[row]] if case.y.ndim == 1 else case.y[row]
    return o, y, case.V[row]


def _scales(mod: Module, case: Case, row: int, invariant: bool) -> dict[str, Array]:
    o, y, v = _row_inputs(case, row)
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
    mod = _module(m)
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
        o, y, v = _row_inputs(case, r)
        if case.masked and _depends_on_masked(ref, case, r):
            yield INFINITE_LOSS, 0.0, 1.0
            return
        invariant = _shift_invariant(ref, case, r)
        scales = _scales(mod, case, r, invariant)
        row: dict[str, Any] = {}
        kinds = ["loss", "gradient"] + (["hessian", "hvp"] if ref.has("hessian") else [])
        for kind in kinds:
            pairs = _indices(kind, K, sample)
            row[kind] = _exact_row(ref, kind, o, y, v, kw, pairs, scales)
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
    o, y, v = _row_inputs(case, row)
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
