"""Numerical checks of an emitted module: the code is right, not just the math.

Each check compares the module with something independent of it: central finite differences in
float64, `scipy.special`, a 50-digit `mpmath` reference, and properties over random shapes. A
check reports its worst error next to its bound; `derive verify` prints the table and exits
non-zero on any failure, and the test suite runs the same checks.

Tolerances, and why:
- finite differences: central differences with step h have truncation error O(h^2 f''') and
  rounding error O(eps |f| / h); with h = 1e-6 on O(1) inputs both are ~1e-10, so the bound on
  the relative error (max abs error / max |gradient|) is 1e-7, three orders above the noise.
- float64 against mpmath: a few ulps of the true value (bound 8 ulp, relative to max |value| of
  the row: softmax entries that underflow are compared absolutely).
- float32 against mpmath: 1e-5 relative (float32 eps is 1.2e-7; the kernels lose a few ulps
  in the shift and the sum).
- properties: rows sum to 1 within 1e-12 (float64), shift invariance within 1e-12 for shifts up
  to 1e8 (exactly representable shifts), gradient rows sum to 0 within 1e-12.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Result:
    name: str
    worst: float
    bound: float
    passed: bool
    note: str = ""


class _Checks:
    """Registry: each check is a function `(module) -> Result`."""

    def __init__(self) -> None:
        self.funcs: list[Callable[[ModuleType], Result]] = []

    def __call__(self, f: Callable[[ModuleType], Result]) -> Callable[[ModuleType], Result]:
        self.funcs.append(f)
        return f


CHECKS = _Checks()


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _problem(
    rng: np.random.Generator, n: int, d: int, K: int, soft: bool, dtype: type = np.float64
) -> tuple[Array, Array, Array, Array]:
    X: Array = rng.normal(size=(n, d)).astype(dtype)
    W: Array = rng.normal(size=(d, K)).astype(dtype)
    b: Array = rng.normal(size=K).astype(dtype)
    if soft:
        Y = rng.random(size=(n, K)) + 0.01
        y: Array = (Y / Y.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        y = rng.integers(0, K, size=n)
    return X, y, W, b


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
    return float(np.max(np.abs(a - ref))) / scale


FD_BOUND = 1e-7


def _mean_loss(m: ModuleType, y: Array, O: Array) -> float:
    return float(m.cross_entropy(O, y))


@CHECKS
def fd_logits(m: ModuleType) -> Result:
    worst = 0.0
    for soft in (False, True):
        X, y, W, b = _problem(_rng(1), 6, 3, 5, soft)
        O = X @ W + b
        g = m.grad_logits(O, y)
        worst = max(worst, _rel(g, _fd_grad(partial(_mean_loss, m, y), O.copy())))
    return Result(
        "gradient w.r.t. logits vs central differences (float64)",
        worst,
        FD_BOUND,
        worst <= FD_BOUND,
    )


@CHECKS
def fd_parameters(m: ModuleType) -> Result:
    worst = 0.0
    for soft in (False, True):
        X, y, W, b = _problem(_rng(2), 7, 4, 3, soft)
        _, dW, db = m.loss_and_grad(X, y, W, b)
        fW = _fd_grad(lambda w: float(m.loss_and_grad(X, y, w, b)[0]), W.copy())  # noqa: B023
        fb = _fd_grad(lambda c: float(m.loss_and_grad(X, y, W, c)[0]), b.copy())  # noqa: B023
        worst = max(worst, _rel(dW, fW), _rel(db, fb))
    return Result(
        "dL/dW, dL/db vs central differences (float64)", worst, FD_BOUND, worst <= FD_BOUND
    )


def _gradient_entry(m: ModuleType, y: Array, j: int) -> Callable[[Array], float]:
    """`o -> dl/do_j` for one sample (grad_logits divides by n = 1)."""
    return lambda t: float(m.grad_logits(t[None, :], y)[0, j])


@CHECKS
def fd_hessian(m: ModuleType) -> Result:
    rng = _rng(3)
    worst = 0.0
    for K in (2, 5, 9):
        o = rng.normal(size=K)
        y = rng.integers(0, K, size=1)
        H = m.hessian_logits(o)
        cols = [_fd_grad(_gradient_entry(m, y, j), o.copy()) for j in range(K)]
        worst = max(worst, _rel(H, np.array(cols)))
        V = rng.normal(size=(1, K))
        worst = max(worst, _rel(m.hvp_logits(o[None, :], V)[0], H @ V[0]))
    X, labels, W, b = _problem(rng, 6, 3, 4, soft=False)
    D: Array = rng.normal(size=(W.shape[0], W.shape[1]))
    hv = m.hvp_W(X, W, b, D)
    # Directional derivative of dL/dW along V, by central differences.
    h = 1e-6
    up, down = m.loss_and_grad(X, labels, W + h * D, b), m.loss_and_grad(X, labels, W - h * D, b)
    fd = (up[1] - down[1]) / (2 * h)
    worst = max(worst, _rel(hv, fd))
    return Result(
        "Hessian, HVPs vs differences of the gradient (float64)", worst, FD_BOUND, worst <= FD_BOUND
    )


@CHECKS
def scipy_reference(m: ModuleType) -> Result:
    from scipy import special

    rng = _rng(4)
    worst = 0.0
    for n, K, scale in ((5, 3, 1.0), (50, 10, 30.0), (20, 1000, 1e3)):
        O = rng.normal(size=(n, K)) * scale
        worst = max(
            worst,
            _rel(m.softmax(O), special.softmax(O, axis=-1)),
            _rel(m.log_softmax(O), special.log_softmax(O, axis=-1)),
            _rel(m.logsumexp(O), special.logsumexp(O, axis=-1)),
        )
        y = rng.integers(0, K, size=n)
        ref = float(np.mean(special.logsumexp(O, axis=-1) - O[np.arange(n), y]))
        worst = max(worst, abs(float(m.cross_entropy(O, y)) - ref) / max(abs(ref), 1.0))
    bound = 1e-13
    return Result(
        "softmax, log_softmax, logsumexp, loss vs scipy.special", worst, bound, worst <= bound
    )


def _mp_reference(row: Array) -> tuple[list[float], list[float], float]:
    """softmax, log_softmax and logsumexp of one row, to 50 digits, rounded to float64."""
    import mpmath

    with mpmath.workdps(50):
        vals = [mpmath.mpf(float(v)) if math.isfinite(v) else None for v in row]
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in vals if v is not None))
        logp = [(v - lse) if v is not None else None for v in vals]
        sm = [float(mpmath.exp(v)) if v is not None else 0.0 for v in logp]
        lsm = [float(v) if v is not None else -math.inf for v in logp]
        return sm, lsm, float(lse)


def _extreme_rows(rng: np.random.Generator) -> list[Array]:
    rows = [
        np.array([1e4, -1e4, 0.0]),
        np.array([-1e4, -1e4 + 1.0, -1e4 + 2.0]),
        np.array([1e4, 1e4, 1e4 - 30.0, -np.inf]),
        np.array([-np.inf, 3.0, -np.inf, 2.5]),
        np.array([800.0, 799.0, -800.0]),
        rng.normal(size=1000) * 1e3,
        np.concatenate([rng.normal(size=999) * 50.0, [-np.inf]]),
    ]
    return rows


def _ulp_error(got: Array, ref: Array) -> float:
    """Worst error in units of the float64 spacing at the row's largest magnitude."""
    finite = np.isfinite(ref)
    if not np.array_equal(np.isfinite(got), finite) or not np.array_equal(
        got[~finite], ref[~finite]
    ):
        return math.inf
    scale = np.spacing(max(float(np.max(np.abs(ref[finite]))), 1e-300))
    return float(np.max(np.abs(got[finite] - ref[finite])) / scale)


@CHECKS
def extreme_float64(m: ModuleType) -> Result:
    worst = 0.0
    for row in _extreme_rows(_rng(5)):
        sm, lsm, lse = _mp_reference(row)
        worst = max(
            worst,
            _ulp_error(m.softmax(row), np.array(sm)),
            _ulp_error(m.log_softmax(row), np.array(lsm)),
            _ulp_error(np.array([m.logsumexp(row)]), np.array([lse])),
        )
    bound = 8.0
    return Result(
        "extreme logits (|o| to 1e4, -inf, K=1000) vs mpmath, float64 [ulp]",
        worst,
        bound,
        worst <= bound,
    )


@CHECKS
def extreme_float32(m: ModuleType) -> Result:
    worst = 0.0
    got: Array
    for row in _extreme_rows(_rng(6)):
        r32 = row.astype(np.float32)
        sm, lsm, lse = _mp_reference(r32.astype(np.float64))
        for got, ref in (
            (m.softmax(r32), sm),
            (m.log_softmax(r32), lsm),
            (m.logsumexp(r32), [lse]),
        ):
            got = np.atleast_1d(got)
            if got.dtype != np.float32:
                return Result(
                    "extreme logits vs mpmath, float32 [rel]",
                    math.inf,
                    1e-5,
                    False,
                    "dtype not kept",
                )
            ref_a = np.array(ref)
            fin = np.isfinite(ref_a)
            if not np.array_equal(np.isfinite(got), fin):
                return Result(
                    "extreme logits vs mpmath, float32 [rel]", math.inf, 1e-5, False, "inf/NaN"
                )
            worst = max(worst, _rel(got[fin].astype(np.float64), ref_a[fin]))
    bound = 1e-5
    return Result("extreme logits vs mpmath, float32 [rel]", worst, bound, worst <= bound)


@CHECKS
def extreme_training(m: ModuleType) -> Result:
    """The fused loss and gradient stay finite and right where naive exp overflows."""
    O = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4 + 5.0]])
    y = np.array([1, 2])
    loss = float(m.cross_entropy(O, y))
    sm0, _, lse0 = _mp_reference(O[0])
    sm1, _, lse1 = _mp_reference(O[1])
    ref = ((lse0 - O[0, 1]) + (lse1 - O[1, 2])) / 2
    G = m.grad_logits(O, y)
    Gref = (np.array([sm0, sm1]) - np.eye(3)[y]) / 2
    worst = max(abs(loss - ref) / abs(ref), _rel(G, Gref))
    ok = bool(np.isfinite(loss) and np.isfinite(G).all()) and worst <= 1e-15
    return Result("loss and gradient at logits of +-1e4 (float64)", worst, 1e-15, ok)


@CHECKS
def dtypes(m: ModuleType) -> Result:
    """float32 in, float32 out, computed in float32; agrees with float64 to float32 precision."""
    X, y, W, b = _problem(_rng(7), 300, 20, 7, soft=False)
    L64, dW64, db64 = m.loss_and_grad(X, y, W, b)
    L32, dW32, db32 = m.loss_and_grad(
        X.astype(np.float32), y, W.astype(np.float32), b.astype(np.float32)
    )
    kept = (
        dW32.dtype == np.float32
        and db32.dtype == np.float32
        and np.asarray(L32).dtype == np.float32
    )
    worst = max(abs(float(L32) - float(L64)) / abs(float(L64)), _rel(dW32, dW64), _rel(db32, db64))
    bound = 1e-5
    return Result("float32 path vs float64 (dtype kept)", worst, bound, kept and worst <= bound)


@CHECKS
def fused_consistency(m: ModuleType) -> Result:
    """The blocked `loss_and_grad` equals the unfused pieces, across a block boundary."""
    block = int(getattr(m, "_BLOCK_ROWS", 4096))
    X, y, W, b = _problem(_rng(8), block + 37, 5, 4, soft=False)
    L, dW, db = m.loss_and_grad(X, y, W, b)
    O = X @ W + b
    G = m.grad_logits(O, y)
    worst = max(
        abs(float(L) - float(m.cross_entropy(O, y))) / abs(float(L)),
        _rel(dW, X.T @ G),
        _rel(db, G.sum(axis=0)),
    )
    bound = 1e-12
    return Result("blocked loss_and_grad vs grad_logits + chain rule", worst, bound, worst <= bound)


@CHECKS
def properties(m: ModuleType) -> Result:
    """Rows sum to 1, shift invariance up to 1e8, gradient rows sum to 0, db = column sums."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    worst = [0.0]

    @settings(
        max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(
        n=st.integers(1, 20),
        K=st.integers(1, 30),
        seed=st.integers(0, 2**32 - 1),
        shift=st.sampled_from([0.0, 1.0, -3.0, 1e4, 1e8, -1e8]),
        scale=st.sampled_from([1e-3, 1.0, 20.0]),
    )
    def prop(n: int, K: int, seed: int, shift: float, scale: float) -> None:
        rng = np.random.default_rng(seed)
        # NOTE: logits on a grid of 2^-10 so that o + shift is exact for |shift| <= 1e8.
        O = np.round(rng.normal(size=(n, K)) * scale * 1024) / 1024
        P = m.softmax(O)
        errs = [float(np.max(np.abs(P.sum(axis=-1) - 1)))]
        errs.append(float(np.max(np.abs(m.softmax(O + shift) - P))))
        y = rng.integers(0, K, size=n)
        G = m.grad_logits(O, y)
        errs.append(float(np.max(np.abs(G.sum(axis=-1)))))
        errs.append(float(np.max(np.abs(m.grad_logits(O + shift, y) - G))))
        X = rng.normal(size=(n, 3))
        W = rng.normal(size=(3, K))
        b = rng.normal(size=K)
        _, _, db = m.loss_and_grad(X, y, W, b)
        errs.append(float(np.max(np.abs(db - m.grad_logits(X @ W + b, y).sum(axis=0)))))
        worst[0] = max(worst[0], *errs)
        assert max(errs) <= 1e-12, errs

    try:
        prop()
    except AssertionError:
        return Result("properties (hypothesis, 60 cases)", worst[0], 1e-12, False)
    return Result("properties (hypothesis, 60 cases)", worst[0], 1e-12, True)


def _bad_inputs() -> list[tuple[str, Callable[[ModuleType], Any]]]:
    X, y, W, b = _problem(_rng(9), 4, 3, 2, soft=False)
    Y = np.eye(2)[y]
    nan_X = X.copy()
    nan_X[1, 1] = np.nan
    inf_X = X.copy()
    inf_X[0, 0] = np.inf
    return [
        ("X 1-D", lambda m: m.loss_and_grad(X[0], y, W, b)),
        ("W rows != d", lambda m: m.loss_and_grad(X, y, W[:2], b)),
        ("b wrong length", lambda m: m.loss_and_grad(X, y, W, b[:1])),
        ("n = 0", lambda m: m.loss_and_grad(X[:0], y[:0], W, b)),
        ("label = K", lambda m: m.loss_and_grad(X, np.array([0, 1, 2, 0]), W, b)),
        ("label < 0", lambda m: m.loss_and_grad(X, np.array([0, -1, 1, 0]), W, b)),
        ("float labels", lambda m: m.loss_and_grad(X, y.astype(float), W, b)),
        ("too few labels", lambda m: m.loss_and_grad(X, y[:3], W, b)),
        ("targets rows != 1", lambda m: m.loss_and_grad(X, Y * 0.9, W, b)),
        ("negative targets", lambda m: m.loss_and_grad(X, Y * 2 - 0.5, W, b)),
        ("NaN in X", lambda m: m.loss_and_grad(nan_X, y, W, b)),
        ("inf in X", lambda m: m.loss_and_grad(inf_X, y, W, b)),
        ("NaN in W", lambda m: m.loss_and_grad(X, y, W * np.nan, b)),
        ("complex X", lambda m: m.loss_and_grad(X.astype(complex), y, W, b)),
        ("float16 X", lambda m: m.loss_and_grad(X.astype(np.float16), y, W, b)),
        ("softmax all -inf row", lambda m: m.softmax(np.array([[-np.inf, -np.inf]]))),
        ("softmax NaN", lambda m: m.softmax(np.array([0.0, np.nan]))),
        ("softmax +inf", lambda m: m.softmax(np.array([0.0, np.inf]))),
        ("softmax empty", lambda m: m.softmax(np.zeros((2, 0)))),
        ("cross_entropy 1-D logits", lambda m: m.cross_entropy(np.zeros(3), np.array([0]))),
        ("hessian of a batch", lambda m: m.hessian_logits(np.zeros((2, 3)))),
    ]


@CHECKS
def bad_inputs(m: ModuleType) -> Result:
    """Every bad input raises ValueError/TypeError; none returns an answer or warns."""
    failures = []
    for label, call in _bad_inputs():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                call(m)
        except (ValueError, TypeError):
            continue
        except Exception as exc:  # a crash is not a clear error
            failures.append(f"{label}: {type(exc).__name__}")
            continue
        failures.append(f"{label}: accepted")
    n = len(_bad_inputs())
    return Result(
        f"bad inputs refused ({n} cases)",
        float(len(failures)),
        0.0,
        not failures,
        "; ".join(failures),
    )


def run(module: ModuleType) -> list[Result]:
    """Run every check on `module`; valid input must raise no warning anywhere."""
    results = []
    for check in CHECKS.funcs:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                results.append(check(module))
            except Exception as exc:
                results.append(
                    Result(check.__name__, math.inf, 0.0, False, f"{type(exc).__name__}: {exc}")
                )
    return results


def table(results: list[Result]) -> str:
    """The results as a fixed-width table: check, worst error, bound, pass/fail."""
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  {'worst':>10}  {'bound':>10}  result", "-" * (width + 32)]
    for r in results:
        verdict = "pass" if r.passed else "FAIL"
        line = f"{r.name:<{width}}  {r.worst:>10.2e}  {r.bound:>10.1e}  {verdict}"
        lines.append(line + (f"  ({r.note})" if r.note else ""))
    return "\n".join(lines)
