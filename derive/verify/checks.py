"""Numerical checks of an emitted module: the code is right, not just the math.

Each check compares the module with something independent of it: central finite differences in
float64, the loss's and the prediction's own definitions (printed into the module by SymPy,
before any rewrite) evaluated to 50 digits with `mpmath`, `scipy.special` for the softmax
kernels, and properties over random shapes. A check reports its worst error next to its bound;
`derive verify` prints the table and exits non-zero on any failure, and the test suite runs the
same checks. Checks adapt to what the
module says it is (`LOSS`, `TARGETS`, `STABLE`): a loss with no independent reference says so in
the table ("skip") instead of passing silently.

Tolerances, and why:
- finite differences: central differences with step h have truncation error O(h^2 f''') and
  rounding error O(eps |f| / h); with h = 1e-6 on O(1) inputs both are ~1e-10, so the bound on
  the relative error (max abs error / max |gradient|) is 1e-7, three orders above the noise.
- float64 against mpmath: 8 ulp of the row's largest magnitude (the kernels round a handful of
  times: shift, exp, sum, log, divide).
- float32: 1e-5 relative (float32 eps is 1.2e-7; a sum over up to 1000 terms loses ~1e-6).
- references and identities in float64: 1e-12 relative (a few hundred ulps for sums of many terms).
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import math
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any, Literal

import mpmath
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from scipy import special

from derive.verify.accuracy import FAMILIES as ACCURACY_FAMILIES
from derive.verify.accuracy import measure as accuracy_measure

Array = np.ndarray[Any, Any]
Status = Literal["pass", "FAIL", "skip"]

FD_BOUND = 1e-7
IDENTITY_BOUND = 1e-12


@dataclass(frozen=True)
class Result:
    name: str
    worst: float
    bound: float
    status: Status
    note: str = ""

    @property
    def passed(self) -> bool:
        """A skipped check is not a failure (the table says it was skipped, and why)."""
        return self.status != "FAIL"


def _result(name: str, worst: float, bound: float, note: str = "") -> Result:
    return Result(name, worst, bound, "pass" if worst <= bound else "FAIL", note)


# --------------------------------------------------------------------------- the module under test


@dataclass(frozen=True)
class Subject:
    """An emitted module and what it declares about itself."""

    m: ModuleType

    @property
    def loss_name(self) -> str:
        return str(getattr(self.m, "LOSS", "?"))

    @property
    def targets(self) -> str:
        return str(getattr(self.m, "TARGETS", "distribution"))

    @property
    def softmax_api(self) -> bool:
        return hasattr(self.m, "softmax")

    @property
    def params(self) -> dict[str, float]:
        """The loss parameters of `loss_and_grad` at their defaults (weight decay included)."""
        sig = inspect.signature(self.m.loss_and_grad)
        return {
            n: float(p.default)
            for n, p in sig.parameters.items()
            if p.kind is p.KEYWORD_ONLY and isinstance(p.default, float)
        }

    @property
    def decay(self) -> float:
        """The weight-decay strength at its default: the parameter the module names in
        `WEIGHT_DECAY` (its declared role), never guessed from a name."""
        name = getattr(self.m, "WEIGHT_DECAY", None)
        return self.params[name] if name is not None else 0.0

    @property
    def loss_params(self) -> dict[str, float]:
        """The parameters of the per-sample loss (all but the weight decay)."""
        name = getattr(self.m, "WEIGHT_DECAY", None)
        return {k: v for k, v in self.params.items() if k != name}

    @property
    def reference(self) -> bool:
        return hasattr(self.m, "REFERENCE_LOSS")

    def targets_for(self, rng: np.random.Generator, n: int, K: int, soft: bool) -> Array:
        if self.targets == "distribution":
            if soft:
                Y: Array = rng.random(size=(n, K)) + 0.01
                out: Array = Y / Y.sum(axis=1, keepdims=True)
                return out
            return rng.integers(0, K, size=n)
        if self.targets == "binary":
            return rng.random(size=(n, K)) if soft else rng.integers(0, 2, size=(n, K)) * 1.0
        return rng.normal(size=(n, K))

    def problem(
        self, rng: np.random.Generator, n: int, d: int, K: int, soft: bool, dtype: type = np.float64
    ) -> tuple[Array, Array, Array, Array]:
        X: Array = rng.normal(size=(n, d)).astype(dtype)
        W: Array = rng.normal(size=(d, K)).astype(dtype)
        b: Array = rng.normal(size=K).astype(dtype)
        y = self.targets_for(rng, n, K, soft)
        return X, (y.astype(dtype) if y.dtype.kind == "f" else y), W, b

    def loss(self, O: Array, y: Array) -> float:
        return float(self.m.loss(O, y))


# --------------------------------------------------------------------------- references


def _as_targets(y: Array, K: int) -> Array:
    return np.eye(K)[y] if y.ndim == 1 else y


#: Digits of the mpmath references.
MP_DIGITS = 50


def _mp_eval(s: Subject, expr: str, o_row: Array, y_row: Array | None, j: int = 1) -> Any:
    """`expr` (a SymPy-printed mpmath expression in 1-based `o`, `y`) at one sample."""
    namespace: dict[str, Any] = {
        "builtins": builtins,
        "mpmath": mpmath,
        "mpf": mpmath.mpf,
        "exp": mpmath.exp,
        "log": mpmath.log,
        "sqrt": mpmath.sqrt,
        "o": [None, *(mpmath.mpf(float(v)) for v in o_row)],
        "y": [None, *(mpmath.mpf(float(v)) for v in (y_row if y_row is not None else o_row))],
        "K": len(o_row),
        "j": j,
        **{name: mpmath.mpf(value) for name, value in s.loss_params.items()},
    }
    return eval(expr, namespace)


def _settled(value: Callable[[], Any]) -> float:
    """`value()` evaluated with enough digits: at 50, then more, until two precisions agree to
    30 digits. A definition written naively (`log(1 - 1/(1 + exp(-o)))`) cancels at extreme
    logits; the reference must not (at |o| = 1e4 that takes ~4400 digits)."""
    digits = MP_DIGITS
    while True:
        with mpmath.workdps(digits):
            low = value()
        with mpmath.workdps(2 * digits):
            high = value()
            if mpmath.isfinite(high) and (
                high == low or abs(high - low) <= mpmath.mpf(10) ** -30 * abs(high)
            ):
                return float(high)
        if digits > 20000:
            return float(high)
        digits *= 4


def reference_mean_loss(s: Subject, O: Array, y: Array) -> float:
    """The mean of the loss *as defined* (the module's REFERENCE_LOSS) over the rows, to at
    least 30 correct digits, rounded once: independent of every kernel in the module."""
    Y = _as_targets(y, O.shape[1]) if s.targets == "distribution" else y
    n = O.shape[0]
    return _settled(
        lambda: mpmath.fsum(_mp_eval(s, s.m.REFERENCE_LOSS, O[r], Y[r]) for r in range(n)) / n
    )


def reference_prediction(s: Subject, O: Array) -> Array:
    """`yhat` *as defined* (REFERENCE_PREDICTION) at every row and class, as above."""
    n, K = O.shape
    expr = s.m.REFERENCE_PREDICTION
    out = np.empty((n, K))
    for r in range(n):
        for j in range(K):
            out[r, j] = _settled(partial(_mp_eval, s, expr, O[r], None, j + 1))
    return out


# --------------------------------------------------------------------------- helpers


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


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


def _rel(a: Array, ref: Array) -> float:
    scale = max(float(np.max(np.abs(ref))), 1e-300)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - ref))) / scale


# --------------------------------------------------------------------------- checks

Check = Callable[[Subject], Result]
CHECKS: list[Check] = []
#: A check's row title where it is known before the check runs (by the check's function name):
#: a check that raises is reported under it, not under its function's name.
TITLES: dict[str, str] = {}


def check(f: Check) -> Check:
    CHECKS.append(f)
    return f


def _loss_at(s: Subject, y: Array, O: Array) -> float:
    return s.loss(O, y)


@check
def fd_logits(s: Subject) -> Result:
    worst = 0.0
    for soft in (False, True):
        X, y, W, b = s.problem(_rng(1), 6, 3, 5, soft)
        O = X @ W + b
        g = s.m.grad_logits(O, y)
        worst = max(worst, _rel(g, _fd_grad(partial(_loss_at, s, y), O.copy())))
    return _result("gradient w.r.t. logits vs central differences (float64)", worst, FD_BOUND)


@check
def fd_parameters(s: Subject) -> Result:
    worst = 0.0
    for soft in (False, True):
        X, y, W, b = s.problem(_rng(2), 7, 4, 3, soft)
        _, dW, db = s.m.loss_and_grad(X, y, W, b)
        fW = _fd_grad(lambda w: float(s.m.loss_and_grad(X, y, w, b)[0]), W.copy())  # noqa: B023
        fb = _fd_grad(lambda c: float(s.m.loss_and_grad(X, y, W, c)[0]), b.copy())  # noqa: B023
        worst = max(worst, _rel(dW, fW), _rel(db, fb))
    return _result("dL/dW, dL/db vs central differences (float64)", worst, FD_BOUND)


def _gradient_entry(s: Subject, y: Array, j: int) -> Callable[[Array], float]:
    """`o -> dl/do_j` for one sample (grad_logits divides by n = 1)."""
    return lambda t: float(s.m.grad_logits(t[None, :], y)[0, j])


@check
def fd_hessian(s: Subject) -> Result:
    name = "Hessian, HVPs vs differences of the gradient (float64)"
    if not hasattr(s.m, "hessian_logits"):
        return Result(name, math.nan, FD_BOUND, "skip", "the model derives no second order")
    rng = _rng(3)
    worst = 0.0
    for K in (1, 2, 5, 9) if s.targets != "distribution" else (2, 5, 9):
        o = rng.normal(size=K)
        y = s.targets_for(rng, 1, K, soft=False)
        H = s.m.hessian_logits(o)
        cols = [_fd_grad(_gradient_entry(s, y, j), o.copy()) for j in range(K)]
        worst = max(worst, _rel(H, np.array(cols)))
        V = rng.normal(size=(1, K))
        worst = max(worst, _rel(s.m.hvp_logits(o[None, :], V)[0], H @ V[0]))
    X, labels, W, b = s.problem(rng, 6, 3, 4, soft=False)
    D: Array = rng.normal(size=(W.shape[0], W.shape[1]))
    hv = s.m.hvp_W(X, W, b, D)
    h = 1e-6
    up, down = (
        s.m.loss_and_grad(X, labels, W + h * D, b),
        s.m.loss_and_grad(X, labels, W - h * D, b),
    )
    worst = max(worst, _rel(hv, (up[1] - down[1]) / (2 * h)))
    return _result(name, worst, FD_BOUND)


@check
def reference_loss(s: Subject) -> Result:
    """The module's loss (and the fused total, weight decay included) against the loss's own
    definition evaluated with mpmath: a module whose loss and gradients are all wrong the same
    way passes the finite-difference rows, not this one."""
    name = "loss vs its definition evaluated with mpmath (50 digits)"
    if not s.reference:
        return Result(name, math.nan, IDENTITY_BOUND, "skip", "module carries no REFERENCE_LOSS")
    rng = _rng(4)
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
    return _result(name, worst, IDENTITY_BOUND)


@check
def prediction(s: Subject) -> Result:
    """`predict_proba` against the prediction's definition (mpmath; parameters such as a
    temperature included), and `predict` against the rule for the targets: the most probable
    class, `p > 0.5` for binary outputs, the output itself for regression."""
    name = "predict_proba vs its definition (mpmath), predict vs its rule"
    if not s.reference:
        return Result(name, math.nan, IDENTITY_BOUND, "skip", "module carries no reference")
    rng = _rng(11)
    X, _, W, b = s.problem(rng, 40, 3, 4, soft=False)
    W *= 2.0
    P = np.asarray(s.m.predict_proba(X, W, b), dtype=np.float64)
    ref = reference_prediction(s, X @ W + b)
    worst = _rel(P, ref)
    if s.targets == "distribution":
        rule = np.argmax(ref, axis=-1)
    elif s.targets == "binary":
        rule = (ref > 0.5).astype(np.intp)
    else:
        rule = ref
    got = np.asarray(s.m.predict(X, W, b))
    wrong = float(np.mean(got != rule)) if s.targets != "real" else _rel(got, np.asarray(rule))
    note = f"predict disagrees with its rule on {wrong:.0%} of rows" if wrong > 0 else ""
    if s.targets == "real":
        worst = max(worst, wrong)
        wrong = 0.0
    return _result(name, worst if wrong == 0 else math.inf, IDENTITY_BOUND, note)


@check
def unchecked_path(s: Subject) -> Result:
    """`check=False` (no validation) computes exactly what `check=True` computes."""
    name = "loss_and_grad(check=False) vs check=True"
    worst = 0.0
    for soft in (False, True):
        X, y, W, b = s.problem(_rng(12), 9, 3, 4, soft)
        a = s.m.loss_and_grad(X, y, W, b)
        c = s.m.loss_and_grad(X, y, W, b, check=False)
        worst = max(worst, *(_rel(np.asarray(c[i]), np.asarray(a[i])) for i in range(3)))
    return _result(name, worst, 0.0)


@check
def softmax_kernels(s: Subject) -> Result:
    name = "softmax, log_softmax, logsumexp vs scipy.special"
    if not s.softmax_api:
        return Result(name, math.nan, IDENTITY_BOUND, "skip", "no softmax in this module")

    rng = _rng(5)
    worst = 0.0
    for n, K, scale in ((5, 3, 1.0), (50, 10, 30.0), (20, 1000, 1e3)):
        O = rng.normal(size=(n, K)) * scale
        worst = max(
            worst,
            _rel(s.m.softmax(O), special.softmax(O, axis=-1)),
            _rel(s.m.log_softmax(O), special.log_softmax(O, axis=-1)),
            _rel(s.m.logsumexp(O), special.logsumexp(O, axis=-1)),
        )
    return _result(name, worst, IDENTITY_BOUND)


def _mp_reference(row: Array) -> tuple[Array, Array, float]:
    """softmax, log_softmax and logsumexp of one row, to 50 digits, rounded to float64."""

    with mpmath.workdps(50):
        vals = [mpmath.mpf(float(v)) if math.isfinite(v) else None for v in row]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in vals if v is not None))
        logp = [(v - lse) if v is not None else None for v in vals]
        sm = np.array([float(mpmath.exp(v)) if v is not None else 0.0 for v in logp])
        lsm = np.array([float(v) if v is not None else -math.inf for v in logp])
        return sm, lsm, float(lse)


def _extreme_rows() -> list[Array]:
    rng = _rng(6)
    return [
        np.array([1e4, -1e4, 0.0]),
        np.array([-1e4, -1e4 + 1.0, -1e4 + 2.0]),
        np.array([1e4, 1e4, 1e4 - 30.0, -np.inf]),
        np.array([-np.inf, 3.0, -np.inf, 2.5]),
        np.array([800.0, 799.0, -800.0]),
        rng.normal(size=1000) * 1e3,
        np.concatenate([rng.normal(size=999) * 50.0, [-np.inf]]),
    ]


def _ulp_error(got: Array, ref: Array) -> float:
    """Worst error in units of the float64 spacing at the row's largest magnitude."""
    finite = np.isfinite(ref)
    if not np.array_equal(np.isfinite(got), finite) or not np.array_equal(
        got[~finite], ref[~finite]
    ):
        return math.inf
    scale = np.spacing(max(float(np.max(np.abs(ref[finite]))), 1e-300))
    return float(np.max(np.abs(got[finite] - ref[finite])) / scale)


@check
def extreme_float64(s: Subject) -> Result:
    name = "extreme logits (|o| to 1e4, -inf, K=1000) vs mpmath, float64 [ulp]"
    if not s.softmax_api:
        return Result(name, math.nan, 8.0, "skip", "no softmax in this module")
    worst = 0.0
    for row in _extreme_rows():
        sm, lsm, lse = _mp_reference(row)
        worst = max(
            worst,
            _ulp_error(s.m.softmax(row), sm),
            _ulp_error(s.m.log_softmax(row), lsm),
            _ulp_error(np.array([s.m.logsumexp(row)]), np.array([lse])),
        )
    return _result(name, worst, 8.0)


@check
def extreme_float32(s: Subject) -> Result:
    name = "extreme logits vs mpmath, float32 [rel]"
    if not s.softmax_api:
        return Result(name, math.nan, 1e-5, "skip", "no softmax in this module")
    worst = 0.0
    for row in _extreme_rows():
        r32 = row.astype(np.float32)
        sm, lsm, lse = _mp_reference(r32.astype(np.float64))
        pairs = ((s.m.softmax(r32), sm), (s.m.log_softmax(r32), lsm), (s.m.logsumexp(r32), [lse]))
        for got_any, ref_any in pairs:
            got = np.atleast_1d(got_any)
            ref = np.asarray(ref_any)
            fin = np.isfinite(ref)
            if got.dtype != np.float32 or not np.array_equal(np.isfinite(got), fin):
                return Result(name, math.inf, 1e-5, "FAIL", "dtype not kept or inf/NaN differs")
            worst = max(worst, _rel(got[fin], ref[fin]))
    return _result(name, worst, 1e-5)


@check
def extreme_training(s: Subject) -> Result:
    """The fused loss and gradient stay finite (and right) at logits of +-1e4."""
    name = "loss and gradients at logits of +-1e4 (float64)"
    rng = _rng(7)
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    W = np.array([[1e4, -1e4, 0.0], [-1e4, 3e3, 1e4]])
    b = np.zeros(3)
    y = s.targets_for(rng, 3, 3, soft=False)
    O = X @ W + b
    if not getattr(s.m, "STABLE", True):
        return _unstable_at_extremes(s, name, (X, y, W, b), O)
    loss, dW, db = s.m.loss_and_grad(X, y, W, b)
    G = s.m.grad_logits(O, y)
    outputs = (np.asarray(loss), dW, db, G)
    if not all(np.isfinite(a).all() for a in outputs):
        return Result(name, math.inf, 0.0, "FAIL", "non-finite output")
    if not s.reference:
        return Result(name, 0.0, 0.0, "pass", "finite; no reference to compare values with")
    expected = reference_mean_loss(s, O, y) + s.decay / 2 * float(np.vdot(W, W))
    return _result(name, abs(float(loss) - expected) / max(abs(expected), 1.0), IDENTITY_BOUND)


def _unstable_at_extremes(s: Subject, name: str, args: tuple[Array, ...], O: Array) -> Result:
    """STABLE = False: a FAIL where the exact loss is finite (a form that keeps it finite may
    exist), a skip where it exceeds float64 (no form can return it: `exp(o)` at 1e4) and the
    module refuses the input as STABLE = False promises, instead of returning inf."""
    unstable = "no stable form known for a shape in this loss"
    if not s.reference or math.isfinite(reference_mean_loss(s, O, args[1])):
        return Result(name, math.inf, 0.0, "FAIL", unstable)
    try:
        # NOTE: floating-point flags ignored here, so the refusal must be the module's own.
        with np.errstate(all="ignore"):
            s.m.loss_and_grad(*args)
    except FloatingPointError:
        note = "the exact loss exceeds the largest float64 here; the module raises, as it says"
        return Result(name, math.nan, 0.0, "skip", note)
    return Result(name, math.inf, 0.0, "FAIL", f"{unstable}; a non-finite result was returned")


@check
def dtypes(s: Subject) -> Result:
    """float32 in, float32 out, computed in float32; agrees with float64 to float32 precision."""
    X, y, W, b = s.problem(_rng(8), 300, 20, 7, soft=False)
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
    worst = max(abs(float(L32) - float(L64)) / abs(float(L64)), _rel(dW32, dW64), _rel(db32, db64))
    if not kept:
        return Result("float32 path vs float64 (dtype kept)", worst, 1e-5, "FAIL", "dtype not kept")
    return _result("float32 path vs float64 (dtype kept)", worst, 1e-5)


@check
def blocks(s: Subject) -> Result:
    """The blocked `loss_and_grad` over n rows equals the weighted mean over two halves."""
    block = int(getattr(s.m, "_BLOCK_ROWS", 4096))
    n = block + 37
    worst = 0.0
    for soft in (False, True):  # labels and target rows take different paths through a block
        X, y, W, b = s.problem(_rng(9), n, 5, 4, soft=soft)
        whole = s.m.loss_and_grad(X, y, W, b)
        h = n // 2
        a, c = s.m.loss_and_grad(X[:h], y[:h], W, b), s.m.loss_and_grad(X[h:], y[h:], W, b)
        worst = max(
            worst,
            *(
                _rel(np.asarray(whole[i]), (h * np.asarray(a[i]) + (n - h) * np.asarray(c[i])) / n)
                for i in range(3)
            ),
        )
    name = "blocked loss_and_grad vs the same over two halves (labels, targets)"
    return _result(name, worst, IDENTITY_BOUND)


@contextlib.contextmanager
def _hypothesis_home_elsewhere() -> Iterator[None]:
    """Keep Hypothesis out of the user's folder. `derandomize=True` already means no example
    database; but Hypothesis also caches the constants it collects from loaded modules under
    `./.hypothesis/`. A user's `derive verify` must leave nothing in their folder: give it a
    temporary home for the run, removed after."""
    with tempfile.TemporaryDirectory(prefix="derive-hypothesis-") as home:
        set_hypothesis_home_dir(home)
        try:
            yield
        finally:
            set_hypothesis_home_dir(None)


@check
def summed_chunks(s: Subject) -> Result:
    """`reduction="sum"` over three uneven chunks adds up to n times the mean over all rows."""
    name = "reduction='sum' over chunks vs n x mean"
    if "reduction" not in inspect.signature(s.m.loss_and_grad).parameters:
        return Result(name, math.inf, IDENTITY_BOUND, "FAIL", "no reduction= option")
    n = 1000
    X, y, W, b = s.problem(_rng(10), n, 5, 4, soft=False)
    mean = s.m.loss_and_grad(X, y, W, b)
    cuts = [(0, 1), (1, 611), (611, n)]
    parts = [s.m.loss_and_grad(X[i:j], y[i:j], W, b, reduction="sum") for i, j in cuts]
    worst = max(
        _rel(n * np.asarray(mean[i]), np.sum([np.asarray(p[i]) for p in parts], axis=0))
        for i in range(3)
    )
    return _result(name, worst, IDENTITY_BOUND)


@check
def properties(s: Subject) -> Result:
    """db = column sums of dL/dO; for softmax losses: rows sum to 1, gradient rows to 0,
    shift invariance up to 1e8 (exactly representable shifts)."""

    worst = [0.0]
    distribution = s.targets == "distribution"
    # NOTE: the catalogue formulas are well conditioned (1e-12). A user loss's printed formula may
    # cancel near saturated logits (the focal loss divides by 1 - p): 1e-8 absolute, and said.
    catalogue = bool(getattr(s.m, "CATALOGUE_LOSS", False))
    bound = IDENTITY_BOUND if catalogue else 1e-8
    note = "" if catalogue else "user loss: bound 1e-8 (conditioning not known)"

    @settings(
        max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(
        n=st.integers(1, 20),
        K=st.integers(2 if distribution else 1, 30),
        seed=st.integers(0, 2**32 - 1),
        shift=st.sampled_from([0.0, 1.0, -3.0, 1e4, 1e8, -1e8]),
        scale=st.sampled_from([1e-3, 1.0, 20.0]),
    )
    def prop(n: int, K: int, seed: int, shift: float, scale: float) -> None:
        rng = np.random.default_rng(seed)
        # NOTE: logits on a grid of 2^-10 so that o + shift is exact for |shift| <= 1e8.
        O = np.round(rng.normal(size=(n, K)) * scale * 1024) / 1024
        y = s.targets_for(rng, n, K, soft=False)
        G = s.m.grad_logits(O, y)
        X = rng.normal(size=(n, 3))
        W = rng.normal(size=(3, K))
        b = rng.normal(size=K)
        _, _, db = s.m.loss_and_grad(X, y, W, b)
        errs = [_rel(db, s.m.grad_logits(X @ W + b, y).sum(axis=0)) if np.any(db) else 0.0]
        if s.softmax_api:
            P = s.m.softmax(O)
            errs.append(float(np.max(np.abs(P.sum(axis=-1) - 1))))
            errs.append(float(np.max(np.abs(s.m.softmax(O + shift) - P))))
        if distribution:
            errs.append(float(np.max(np.abs(G.sum(axis=-1)))))
            errs.append(float(np.max(np.abs(s.m.grad_logits(O + shift, y) - G))))
        worst[0] = max(worst[0], *errs)
        assert max(errs) <= bound, errs

    name = "properties (hypothesis, 40 cases)"
    try:
        with _hypothesis_home_elsewhere():
            prop()
    except AssertionError:
        return Result(name, worst[0], bound, "FAIL", note)
    return _result(name, worst[0], bound, note)


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
        return _result(name, worst, 1.0, where if worst > 1.0 else "")

    accuracy.__name__ = "accuracy_" + "".join(ch if ch.isalnum() else "_" for ch in family)
    TITLES[accuracy.__name__] = name
    return accuracy


def _register_accuracy() -> None:
    for family, build in ACCURACY_FAMILIES:
        CHECKS.append(_accuracy_check(family, build))


_register_accuracy()


def _bad_inputs(s: Subject) -> list[tuple[str, Callable[[], Any]]]:
    X, y, W, b = s.problem(_rng(10), 4, 3, 2, soft=False)
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


@check
def bad_inputs(s: Subject) -> Result:
    """Every bad input raises ValueError/TypeError; none returns an answer or warns."""
    cases = _bad_inputs(s)
    failures = []
    for label, call in cases:
        try:
            with warnings.catch_warnings(), np.errstate(**_FP_ERRORS_RAISE):  # type: ignore[arg-type]
                warnings.simplefilter("error")
                call()
        except (ValueError, TypeError):
            continue
        except Exception as exc:  # a crash is not a clear error
            failures.append(f"{label}: {type(exc).__name__}")
            continue
        failures.append(f"{label}: accepted")
    return _result(
        f"bad inputs refused ({len(cases)} cases)", float(len(failures)), 0.0, "; ".join(failures)
    )


#: Floating-point errors that turn into exceptions during every check. Underflow is left out:
#: `exp` of a logit far below the row max rounds to 0 by design (softmax's tail).
_FP_ERRORS_RAISE = {"over": "raise", "divide": "raise", "invalid": "raise", "under": "ignore"}


def run(
    module: ModuleType,
    selected: list[Check] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Result]:
    """Run every check on `module`; valid input must raise no warning anywhere. `progress(done,
    total, next check)` is called before each check and once at the end.

    Checks run with warnings as errors and NumPy's overflow/divide/invalid flags raising, so a
    module that computes on unvalidated numbers fails here on every CPU, not only on those whose
    BLAS kernel happens to report the flags (OpenBLAS's SkylakeX kernel does; Haswell's does not).
    `selected` runs only those checks (the framework targets run the accuracy checks).
    """
    subject = Subject(module)
    results = []
    checks = CHECKS if selected is None else selected
    for done, chk in enumerate(checks):
        if progress is not None:
            progress(done, len(checks), chk.__name__)
        with warnings.catch_warnings(), np.errstate(**_FP_ERRORS_RAISE):  # type: ignore[arg-type]
            warnings.simplefilter("error")
            try:
                results.append(chk(subject))
            except Exception as exc:
                title = TITLES.get(chk.__name__, chk.__name__)
                results.append(Result(title, math.inf, 0.0, "FAIL", f"{type(exc).__name__}: {exc}"))
    if progress is not None:
        progress(len(checks), len(checks), "done")
    return results


def table(results: list[Result]) -> str:
    """The results as a fixed-width table: check, worst error, bound, pass/fail/skip."""
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  {'worst':>10}  {'bound':>10}  result", "-" * (width + 32)]
    for r in results:
        worst = "-" if math.isnan(r.worst) else f"{r.worst:.2e}"
        line = f"{r.name:<{width}}  {worst:>10}  {r.bound:>10.1e}  {r.status}"
        lines.append(line + (f"  ({r.note})" if r.note else ""))
    return "\n".join(lines)
