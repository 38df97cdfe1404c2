"""Side-by-side speed of the generated `loss_and_grad` (issue 3), printed as ratios.

Contenders, timed in one process with `_timing.time_interleaved` (alternating blocks, each after a
short pause and one untimed call, medians):

- `generated`          generated/softmax_regression.py `loss_and_grad(X, y, W, b)` (check=True)
- `generated nocheck`  the same with check=False
- `naive d2l`          softmax, then cross-entropy by fancy indexing, one-hot gradient (NumPy)
- `torch eager`        PyTorch `cross_entropy` + `torch.autograd.grad` (skipped if not installed)
- `jax jit`            `jax.jit(jax.value_and_grad(...))` (skipped if not installed)
- `layouts.fused`      the layout benchmarks/layouts.py recommends to the emitter (NumPy)
- `limit 2 GEMMs`      X @ W and X.T @ G alone: the floor for any layout that reads X twice (a
                       row-blocked one reads X from memory once and can beat it)

Before timing, every contender's (loss, dW, db) is checked against the generated one. After
timing, the peak extra memory of one NumPy call (tracemalloc) is reported relative to the size of
the n x K logits. Ratios are what to read; absolute times are for orientation only.

    python benchmarks/bench_loss_and_grad.py            # all sizes, float32 and float64
    python benchmarks/bench_loss_and_grad.py --quick    # fewer rounds (< 1 min)
    python benchmarks/bench_loss_and_grad.py --sizes batch 2000x100x20
    python benchmarks/bench_loss_and_grad.py --threads 1 --without torch

Where OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set, prefix `env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE` (benchmarks only). Until `derive emit` has written the generated module, the
best layout from `layouts.py` stands in for it (and the output says so).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _timing import (
    Contender,
    Timing,
    blas_env_note,
    blas_info,
    format_table,
    time_interleaved,
)
from layouts import SIZES, fused, make_inputs

REPO = Path(__file__).resolve().parent.parent
Array = NDArray[np.floating]
Result = tuple[float, Array, Array]
LossAndGrad = Callable[..., Any]

GENERATED = "generated"
NOCHECK = "generated nocheck"
NAIVE = "naive d2l"
RULE = "layouts.fused"
TORCH = "torch eager"
JAX = "jax jit"
LIMIT = "limit 2 GEMMs"


# --------------------------------------------------------------------------- contenders
def load_subject() -> tuple[LossAndGrad, str]:
    """The generated `loss_and_grad`, or the layouts.py stand-in while it does not exist."""
    if (REPO / "generated" / "softmax_regression.py").is_file():
        from derive.output.loader import load_generated

        try:
            m: ModuleType = load_generated("softmax_regression")
            return m.loss_and_grad, "generated/softmax_regression.py"
        except Exception as e:  # a half-written module: say so loudly, measure the stand-in
            why = f"generated/softmax_regression.py does not import: {e!r}"
    else:
        why = "generated/softmax_regression.py not found"

    def stand_in(X: Array, y: NDArray[np.intp], W: Array, b: Array, check: bool = True) -> Result:
        if check:
            n, d = X.shape
            if W.shape[0] != d or b.shape != (W.shape[1],) or y.shape != (n,):
                raise ValueError("shapes")
            if y.min() < 0 or y.max() >= W.shape[1]:
                raise ValueError("labels")
            if not (np.isfinite(W).all() and np.isfinite(b).all() and np.isfinite(X).all()):
                raise ValueError("non-finite")
        return fused(X, y, W, b)

    return stand_in, f"STAND-IN layouts.fused ({why})"


def naive_d2l(X: Array, y: NDArray[np.intp], W: Array, b: Array) -> Result:
    """Dive into Deep Learning's from-scratch version, with the textbook gradient added."""
    n, K = X.shape[0], W.shape[1]
    O = X @ W + b
    O_exp = np.exp(O)
    P = O_exp / O_exp.sum(axis=1, keepdims=True)
    loss = float(np.mean(-np.log(P[range(n), y])))
    Y = np.eye(K, dtype=P.dtype)[y]
    G = (P - Y) / n
    return loss, X.T @ G, G.sum(axis=0)


def make_limit(X: Array, W: Array) -> Callable[[], object]:
    """Both GEMMs alone, X @ W and X.T @ G (the orientation `layouts.fused` uses)."""
    G = np.full((X.shape[0], W.shape[1]), 1e-3, dtype=np.result_type(X, W))
    return lambda: (X @ W, X.T @ G)


def make_torch(
    torch: ModuleType, X: Array, y: NDArray[np.intp], W: Array, b: Array
) -> Callable[[], Result]:
    F = torch.nn.functional
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    Wt = torch.from_numpy(W.copy()).requires_grad_(True)
    bt = torch.from_numpy(b.copy()).requires_grad_(True)

    def run() -> Result:
        loss = F.cross_entropy(Xt @ Wt + bt, yt)
        gW, gb = torch.autograd.grad(loss, (Wt, bt))
        return float(loss.item()), gW.numpy(), gb.numpy()

    return run


def make_jax(
    jax: ModuleType, X: Array, y: NDArray[np.intp], W: Array, b: Array
) -> Callable[[], Result]:
    jnp = jax.numpy

    def loss_fn(W: Any, b: Any, X: Any, y: Any) -> Any:
        logp = jax.nn.log_softmax(X @ W + b, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    f = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
    args = tuple(jax.device_put(a) for a in (W, b, X, y.astype(np.int64)))

    def run() -> Result:
        v, (gW, gb) = f(*args)
        jax.block_until_ready((v, gW, gb))
        return float(v), np.asarray(gW), np.asarray(gb)

    return run


def import_frameworks(
    without: set[str], threads: int | None
) -> tuple[ModuleType | None, ModuleType | None, list[str]]:
    """torch and jax (x64 enabled, CPU), each None with a note when missing or excluded.

    `threads` (if given) caps torch's intra-op threads, and with 1 also XLA's CPU thread pool
    (XLA has no finer knob); NumPy's BLAS is capped by the caller with threadpoolctl.
    """
    notes: list[str] = []
    torch_mod: ModuleType | None = None
    jax_mod: ModuleType | None = None
    if "torch" in without:
        notes.append("torch: excluded by --without")
    else:
        try:
            import torch

            if threads is not None:
                torch.set_num_threads(threads)
            torch_mod = torch
        except ImportError as e:
            notes.append(f"torch: not installed, skipped ({e})")
    if "jax" in without:
        notes.append("jax: excluded by --without")
    else:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        if threads == 1:
            flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
        elif threads is not None:
            notes.append(f"jax: --threads {threads} not applied to XLA (only 1 is)")
        try:
            import jax

            jax.config.update("jax_enable_x64", True)
            jax_mod = jax
        except ImportError as e:
            notes.append(f"jax: not installed, skipped ({e})")
    return torch_mod, jax_mod, notes


# --------------------------------------------------------------------------- measurements
def as_result(out: Any) -> Result:
    loss, dW, db = out
    return float(loss), np.asarray(dW), np.asarray(db)


def max_rel_err(ref: Result, got: Result) -> float:
    """Largest error over (loss, dW, db), each relative to the max magnitude of the reference."""
    errs = []
    for r, g in zip(ref, got, strict=True):
        r64, g64 = np.asarray(r, np.float64), np.asarray(g, np.float64)
        if r64.shape != g64.shape:
            return float("inf")
        errs.append(float(np.max(np.abs(r64 - g64)) / max(float(np.max(np.abs(r64))), 1e-30)))
    return max(errs)


def peak_extra_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes allocated (NumPy buffers included) during one call, beyond those live before."""
    fn()
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del out
    return peak - before


@dataclass
class SizeResult:
    label: str
    timings: dict[str, Timing]
    agree: dict[str, float]
    mem: dict[str, float]
    logits_bytes: int


def bench_size(
    label: str,
    shape: tuple[int, int, int],
    dtype: type[np.floating],
    subject: LossAndGrad,
    subject_is_generated: bool,
    torch: ModuleType | None,
    jax: ModuleType | None,
    rounds: int,
    block_s: float,
    min_calls: int,
    gap_s: float,
) -> SizeResult:
    n, d, K = shape
    X, y, W, b = make_inputs(n, d, K, dtype)
    fns: dict[str, Callable[[], object]] = {
        GENERATED: lambda: subject(X, y, W, b),
        NOCHECK: lambda: subject(X, y, W, b, check=False),
        NAIVE: lambda: naive_d2l(X, y, W, b),
    }
    if subject_is_generated:
        fns[RULE] = lambda: fused(X, y, W, b)
    if torch is not None:
        fns[TORCH] = make_torch(torch, X, y, W, b)
    if jax is not None:
        fns[JAX] = make_jax(jax, X, y, W, b)
    ref = as_result(fns[GENERATED]())
    agree = {k: max_rel_err(ref, as_result(f())) for k, f in fns.items() if k != GENERATED}
    fns[LIMIT] = make_limit(X, W)
    timings = time_interleaved(
        [Contender(k, f) for k, f in fns.items()],
        rounds=rounds,
        block_s=block_s,
        min_calls=min_calls,
        max_calls=100,
        gap_s=gap_s,
    )
    logits = n * K * np.dtype(dtype).itemsize
    mem = {k: peak_extra_bytes(f) / logits for k, f in fns.items() if k not in (TORCH, JAX)}
    return SizeResult(f"{label} {np.dtype(dtype).name}", timings, agree, mem, logits)


# --------------------------------------------------------------------------- report
def size_table(r: SizeResult) -> str:
    base = r.timings[GENERATED].median
    rows = [
        [
            name,
            f"{t.median * 1e3:.3f}",
            f"{t.spread * 100:.0f}%",
            f"{t.median / base:.2f}",
            f"{r.agree[name]:.1e}" if name in r.agree else "-",
            f"{r.mem[name]:.2f} ({r.mem[name] * r.logits_bytes / 2**20:.2f} MiB)"
            if name in r.mem
            else "-",
        ]
        for name, t in r.timings.items()
    ]
    head = ["contender", "median ms", "IQR", "x generated", "max rel err", "peak mem / logits"]
    mib = r.logits_bytes / 2**20
    return f"{r.label} (logits n x K: {mib:.2f} MiB)\n{format_table(head, rows)}"


def summary_table(results: list[SizeResult], stat: str = "median") -> str:
    """Each contender's time / generated's, by the median or (`stat="best"`) the fastest call,
    which is robust to other processes on a shared machine (interference only adds time)."""
    names = [k for k in (NOCHECK, NAIVE, RULE, TORCH, JAX, LIMIT) if k in results[0].timings]
    rows = []
    for r in results:

        def t(k: str, r: SizeResult = r) -> float:
            return float(getattr(r.timings[k], stat))

        base = t(GENERATED)
        row = [r.label, f"{base * 1e3:.2f}"]
        row += [f"{t(k) / base:.2f}" if k in r.timings else "-" for k in names]
        row += [f"{base / t(NOCHECK):.2f}", f"{r.mem[GENERATED]:.2f}"]
        rows.append(row)
    head = ["size dtype", f"generated ms ({stat})", *names, "check overhead"]
    return format_table([*head, "gen peak mem / logits"], rows)


def parse_size(s: str) -> tuple[str, tuple[int, int, int]]:
    if s in SIZES:
        n, d, K = SIZES[s]
        return f"{s} {n}x{d}x{K}", SIZES[s]
    try:
        n, d, K = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size {s!r}: expected one of {sorted(SIZES)} or NxDxK, e.g. 2000x100x20"
        ) from None
    return f"{n}x{d}x{K}", (n, d, K)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 short rounds instead of 7 (< 1 min)")
    p.add_argument(
        "--sizes",
        nargs="+",
        type=parse_size,
        default=[parse_size(s) for s in SIZES],
        help=f"named sizes {sorted(SIZES)} or NxDxK (default: all named)",
    )
    p.add_argument("--dtypes", nargs="+", choices=["float32", "float64"])
    p.add_argument("--without", nargs="+", choices=["torch", "jax"], default=[])
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="cap NumPy's BLAS, torch and (with 1) XLA to this many threads; default: their own",
    )
    a = p.parse_args(argv)
    if a.threads is None:
        return run(a)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=a.threads):
        return run(a)


def run(a: argparse.Namespace) -> int:
    # (rounds, seconds per block, min timed calls per block, pause before each block)
    rounds, block_s, min_calls, gap_s = (2, 0.02, 2, 0.05) if a.quick else (7, 0.1, 3, 0.2)
    dtypes = [np.dtype(x).type for x in (a.dtypes or ["float32", "float64"])]

    subject, source = load_subject()
    is_gen = not source.startswith("STAND-IN")
    torch, jax, notes = import_frameworks(set(a.without), a.threads)
    print(f"subject: {source}")
    versions = [f"numpy {np.__version__}"]
    versions += [f"{m.__name__} {m.__version__}" for m in (torch, jax) if m is not None]
    print("versions:", ", ".join(versions))
    for note in notes:
        print("note:", note)
    if env_note := blas_env_note():
        print(env_note)
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.2f} on {os.cpu_count()} CPUs")
    if load > 0.5 * (os.cpu_count() or 1):
        print(
            "note: other processes are busy; multi-threaded BLAS calls stall when a core is "
            "taken, so expect noisy medians (on a shared machine run under `nice -n -10`)"
        )

    results = []
    for label, shape in a.sizes:
        for dt in dtypes:
            t0 = time.perf_counter()
            r = bench_size(
                label, shape, dt, subject, is_gen, torch, jax, rounds, block_s, min_calls, gap_s
            )
            took = time.perf_counter() - t0
            print(f"\n{size_table(r)}\n({took:.1f} s)", flush=True)
            results.append(r)
    # After the frameworks ran, so their own BLAS / OpenMP pools are listed too.
    print("\nBLAS / thread pools:", *blas_info(), sep="\n  ")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print("\nSummary: median time of each contender / generated (>1 = generated is faster);")
    print("check overhead = generated / generated nocheck; peak mem in units of n*K logits.\n")
    print(summary_table(results))
    print("\nThe same by the fastest call of each contender (min over all timed calls):\n")
    print(summary_table(results, "best"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
