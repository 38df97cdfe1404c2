"""Layout experiments for the fused softmax cross-entropy kernel `loss_and_grad`.

Every candidate computes, for O = X W + b (n x K logits) and integer labels y, without a one-hot
matrix:

    loss = mean_i( logsumexp(O_i) - O_{i, y_i} )
    G    = (softmax(O) - onehot(y)) / n          (dL/dO)
    dW   = X^T G,    db = 1^T G

and they differ only in memory layout and operation order: a fresh array per operation or in-place
updates, `X.T @ G` or `(G.T @ X).T`, one pass over all rows or row blocks whose logits stay in
cache. `limit_*` are the two GEMMs alone (X @ W and the backward product), the floor no layout can
beat. The script checks every candidate against `plain` in float64, then prints median times and
ratios (measured side by side, see `_timing.py`), one table per size and dtype.

    python benchmarks/layouts.py               # all sizes, float32 and float64 (~5 min idle)
    python benchmarks/layouts.py --quick       # fewer rounds and block sizes (~40 s idle)

Benchmark against the current OpenBLAS kernel: where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set,
prefix the command with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (
    Contender,
    blas_env_note,
    blas_info,
    format_table,
    time_interleaved,
)

Array = NDArray[np.floating]
Result = tuple[float, Array, Array]
Kernel = Callable[[Array, NDArray[np.intp], Array, Array], Result]

SIZES: dict[str, tuple[int, int, int]] = {
    "mnist": (60000, 784, 10),
    "batch": (256, 784, 10),
    "wide": (4096, 512, 1000),
}


# --------------------------------------------------------------------------- reference layouts
def plain(X: Array, y: NDArray[np.intp], W: Array, b: Array) -> Result:
    """Textbook order, a fresh array per step, dW = X.T @ G."""
    n = X.shape[0]
    O = X @ W + b
    Z = O - O.max(axis=1, keepdims=True)
    E = np.exp(Z)
    s = E.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(s[:, 0]) - Z[rows, y]))
    G = E / s
    G[rows, y] -= 1
    G /= n
    return loss, X.T @ G, G.sum(axis=0)


def plain_gtx(X: Array, y: NDArray[np.intp], W: Array, b: Array) -> Result:
    """`plain` with dW = (G.T @ X).T."""
    n = X.shape[0]
    O = X @ W + b
    Z = O - O.max(axis=1, keepdims=True)
    E = np.exp(Z)
    s = E.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(s[:, 0]) - Z[rows, y]))
    G = E / s
    G[rows, y] -= 1
    G /= n
    return loss, (G.T @ X).T, G.sum(axis=0)


# --------------------------------------------------------------------------- in-place pieces
def _softmax_grad_inplace(O: Array, y: NDArray[np.intp], inv_n: float) -> float:
    """Turn logits O (in place) into G = (softmax(O) - onehot(y)) * inv_n; return sum of losses.

    Labels are addressed through the flat index i*K + y_i: one 1-D gather and one 1-D scatter
    instead of 2-D fancy indexing.
    """
    B, K = O.shape
    flat = O.reshape(-1)
    idx = np.arange(B) * K + y
    O -= O.max(axis=1, keepdims=True)
    z_y = flat[idx]
    np.exp(O, out=O)
    s = O.sum(axis=1)
    loss_sum = float(np.log(s).sum() - z_y.sum())
    # NOTE: 1/n is folded into the row scale (one pass over O instead of two).
    np.divide(inv_n, s, out=s)
    O *= s[:, None]
    flat[idx] -= inv_n
    return loss_sum


def inplace(X: Array, y: NDArray[np.intp], W: Array, b: Array) -> Result:
    """One block, in-place elementwise work, dW = X.T @ G."""
    n = X.shape[0]
    O = X @ W
    O += b
    loss = _softmax_grad_inplace(O, y, 1.0 / n) / n
    return loss, X.T @ O, O.sum(axis=0)


def inplace_gtx(X: Array, y: NDArray[np.intp], W: Array, b: Array) -> Result:
    """One block, in-place elementwise work, dW = (G.T @ X).T."""
    n = X.shape[0]
    O = X @ W
    O += b
    loss = _softmax_grad_inplace(O, y, 1.0 / n) / n
    return loss, (O.T @ X).T, O.sum(axis=0)


def make_blocked(block: int, gtx: bool, use_out: bool = True) -> Kernel:
    """Row blocks of `block` rows: both GEMMs and the elementwise work on a cache-resident block.

    With `use_out`, both GEMMs write through `np.dot(..., out=)` into buffers reused across
    blocks; without, each block allocates its logits and its dW part afresh.
    """

    def blocked(X: Array, y: NDArray[np.intp], W: Array, b: Array) -> Result:
        n, d = X.shape
        K = W.shape[1]
        dt = np.result_type(X, W)
        inv_n = 1.0 / n
        obuf = np.empty((min(block, n), K), dtype=dt)
        acc = np.zeros((K, d) if gtx else (d, K), dtype=dt)
        part = np.empty_like(acc)
        db = np.zeros(K, dtype=dt)
        loss = 0.0
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            Xb = X[lo:hi]
            if use_out:
                O = obuf[: hi - lo]
                np.dot(Xb, W, out=O)
            else:
                O = Xb @ W
            O += b
            loss += _softmax_grad_inplace(O, y[lo:hi], inv_n)
            if not use_out:
                acc += O.T @ Xb if gtx else Xb.T @ O
            elif gtx:
                np.dot(O.T, Xb, out=part)
                acc += part
            else:
                np.dot(Xb.T, O, out=part)
                acc += part
            db += O.sum(axis=0)
        dW = acc.T if gtx else acc
        return loss * inv_n, dW, db

    blocked.__name__ = f"blocked{block}_{'gtx' if gtx else 'xtg'}{'' if use_out else '_noout'}"
    return blocked


def make_blocked_elementwise(block: int, gtx: bool) -> Kernel:
    """Full-size GEMMs; only the elementwise work walks the logits in row blocks."""

    def blocked_ew(X: Array, y: NDArray[np.intp], W: Array, b: Array) -> Result:
        n = X.shape[0]
        inv_n = 1.0 / n
        O = X @ W
        O += b
        loss = 0.0
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            loss += _softmax_grad_inplace(O[lo:hi], y[lo:hi], inv_n)
        dW = (O.T @ X).T if gtx else X.T @ O
        return loss * inv_n, dW, O.sum(axis=0)

    blocked_ew.__name__ = f"ew{block}_{'gtx' if gtx else 'xtg'}"
    return blocked_ew


# --------------------------------------------------------------------------- the rule
# NOTE: 1024-row blocks were up to ~20 % faster on the AMD machine, but each block costs two
# OpenBLAS thread hand-offs, and with one of the 2 cores taken by another process 1024-row blocks
# ran 3.5x slower than `plain` (2048: 2x, 4096: 1.0-1.4x, 8192: 1x). 4096 keeps nearly all of
# the cache gain and degrades gracefully (benchmarks/README.md has the figures).
FUSED_BLOCK_ROWS = 4096


def fused(X: Array, y: NDArray[np.intp], W: Array, b: Array) -> Result:
    """The recommended layout: rows in blocks of FUSED_BLOCK_ROWS, dW += X_b.T @ G_b.

    One block when n <= FUSED_BLOCK_ROWS (then it is `inplace`).
    """
    return _fused(X, y, W, b)


_fused = make_blocked(FUSED_BLOCK_ROWS, gtx=False)


# --------------------------------------------------------------------------- the limit
def make_limits(X: Array, W: Array) -> dict[str, Callable[[], object]]:
    """The two GEMMs alone, on a fixed G of the right shape and dtype."""
    G = np.full((X.shape[0], W.shape[1]), 1e-3, dtype=np.result_type(X, W))
    return {
        "limit_xtg": lambda: (X @ W, X.T @ G),
        "limit_gtx": lambda: (X @ W, (G.T @ X).T),
        "gemm_fwd": lambda: X @ W,
    }


# --------------------------------------------------------------------------- driver
def make_inputs(
    n: int, d: int, K: int, dtype: type[np.floating], seed: int = 0
) -> tuple[Array, NDArray[np.intp], Array, Array]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    W = (rng.standard_normal((d, K)) / np.sqrt(d)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y = rng.integers(0, K, size=n).astype(np.intp)
    return X, y, W, b


def generated_kernel() -> Kernel | None:
    """generated/softmax_regression.py's loss_and_grad (check=False), if it has been emitted."""
    path = Path(__file__).resolve().parent.parent / "generated" / "softmax_regression.py"
    if not path.is_file():
        return None
    sys.path.insert(1, str(path.parent.parent))
    from derive.output.loader import load_generated

    try:
        m = load_generated("softmax_regression")
    except Exception as e:  # a half-written module must not stop the layout study
        print(f"note: generated module skipped, it does not import: {e!r}")
        return None

    def generated(X: Array, y: NDArray[np.intp], W: Array, b: Array) -> Result:
        loss, dW, db = m.loss_and_grad(X, y, W, b, check=False)
        return float(loss), dW, db

    return generated


def candidates(n: int, blocks: list[int], ew: bool) -> list[Kernel]:
    ks: list[Kernel] = [plain, plain_gtx, inplace, inplace_gtx]
    for B in blocks:
        if n > B:
            ks += [make_blocked(B, False), make_blocked(B, True)]
            if ew:
                ks.append(make_blocked_elementwise(B, True))
    if n > FUSED_BLOCK_ROWS:
        ks.append(make_blocked(FUSED_BLOCK_ROWS, False, use_out=False))
    if (g := generated_kernel()) is not None:
        ks.append(g)
    return ks


def check(kernels: list[Kernel], n: int, d: int, K: int) -> None:
    """Every kernel agrees with `plain` in float64 (and the reference with itself, trivially)."""
    X, y, W, b = make_inputs(min(n, 5000), min(d, 64), K, np.float64, seed=1)
    ref = plain(X, y, W, b)
    for k in kernels:
        got = k(X, y, W, b)
        for r, g in zip(ref, got, strict=True):
            np.testing.assert_allclose(
                np.asarray(g), np.asarray(r), rtol=1e-10, atol=1e-13, err_msg=k.__name__
            )


def run_size(
    label: str,
    n: int,
    d: int,
    K: int,
    dtype: type[np.floating],
    blocks: list[int],
    rounds: int,
    ew: bool,
) -> str:
    X, y, W, b = make_inputs(n, d, K, dtype)
    kernels = candidates(n, blocks, ew)
    check(kernels, n, d, K)
    contenders = [Contender(k.__name__, partial(k, X, y, W, b)) for k in kernels]
    contenders += [Contender(name, fn) for name, fn in make_limits(X, W).items()]
    t = time_interleaved(contenders, rounds=rounds, block_s=0.05, max_calls=100)
    base = t["plain"].median
    lim = min(t["limit_xtg"].median, t["limit_gtx"].median)
    rows = sorted(t.values(), key=lambda s: s.median)
    body = [
        [
            s.name,
            f"{s.median * 1e3:.3f}",
            f"{s.best * 1e3:.3f}",
            f"{s.spread * 100:.0f}%",
            f"{s.median / base:.2f}",
            f"{s.median / lim:.2f}",
        ]
        for s in rows
    ]
    title = f"{label}: n={n} d={d} K={K} {np.dtype(dtype).name}"
    head = ["layout", "median ms", "min ms", "IQR", "vs plain", "vs limit"]
    return f"{title}\n{format_table(head, body)}\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer rounds and block sizes")
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=list(SIZES))
    p.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], default=None)
    p.add_argument("--blocks", nargs="+", type=int, default=None)
    p.add_argument("--no-ew", action="store_true", help="skip the blocked-elementwise layouts")
    a = p.parse_args(argv)
    blocks = a.blocks or ([1024, 4096] if a.quick else [256, 512, 1024, 2048, 4096, 8192, 16384])
    rounds = 3 if a.quick else 7
    dtypes = [np.dtype(x).type for x in (a.dtypes or ["float32", "float64"])]
    print("BLAS:", *blas_info(), sep="\n  ")
    if note := blas_env_note():
        print(note)
    print()
    for label in a.sizes:
        n, d, K = SIZES[label]
        for dt in dtypes:
            print(run_size(label, n, d, K, dt, blocks, rounds, not a.no_ew), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
