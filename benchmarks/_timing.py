"""Side-by-side timing shared by the benchmark scripts.

Contract (DESIGN.md, Benchmarks): contenders are timed in *blocks* of calls, each block preceded by
one untimed call, and blocks of different contenders alternate (the order rotates every round), so
every contender sees the same machine state. Results are per-call medians and ratios against a
baseline contender; absolute times are printed for orientation only and are never a target.

NOTE: the untimed call per block matters on a 2-core machine: OpenBLAS's worker threads keep
spinning for a while after a GEMM and slow whatever runs right after them, so the first call of a
block pays for its predecessor.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Contender",
    "Timing",
    "blas_env_note",
    "blas_info",
    "format_table",
    "ratio",
    "time_interleaved",
]


@dataclass(frozen=True)
class Contender:
    """A named zero-argument callable; its inputs are bound in the closure."""

    name: str
    fn: Callable[[], object]


@dataclass
class Timing:
    """Per-call times (seconds) of one contender, one sample per timed call."""

    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        """Fastest call: robust to interference from other processes, which only adds time."""
        return min(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.05 = 5 %)."""
        if len(self.samples) < 4:
            return float("nan")
        q1, _, q3 = statistics.quantiles(self.samples, n=4)
        return (q3 - q1) / self.median


def _calls_for(fn: Callable[[], object], target_s: float, min_calls: int, max_calls: int) -> int:
    """Number of calls that makes one block last about `target_s`, within [min_calls, max_calls]."""
    fn()  # first touch: imports, JIT compilation, page faults of cached buffers (never timed)
    best = float("inf")
    spent = 0.0
    for _ in range(3):  # the fastest of up to 3 calls, so one disturbed call does not decide
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > 4 * target_s:
            break
    return max(min_calls, min(max_calls, round(target_s / max(best, 1e-9))))


def time_interleaved(
    contenders: Sequence[Contender],
    *,
    rounds: int = 7,
    block_s: float = 0.05,
    min_calls: int = 1,
    max_calls: int = 200,
    gap_s: float = 0.0,
) -> dict[str, Timing]:
    """Time `contenders` side by side; return per-call samples keyed by contender name.

    Each round runs one block per contender; a block is one untimed warm-up call followed by
    `calls` individually timed calls, `calls` chosen once per contender so a block lasts about
    `block_s` (within [min_calls, max_calls]). The contender order rotates by one each round.
    `gap_s` > 0 sleeps that long before each block, so spinning BLAS / OpenMP worker threads of
    the previous contender park first (OpenBLAS spins ~0.1 s after a GEMM; libgomp spins too).
    """
    names = [c.name for c in contenders]
    if len(set(names)) != len(names):
        raise ValueError(f"contender names must be unique, got {names}")
    calls = {c.name: _calls_for(c.fn, block_s, min_calls, max_calls) for c in contenders}
    out = {c.name: Timing(c.name) for c in contenders}
    n = len(contenders)
    perf = time.perf_counter
    for r in range(rounds):
        for i in range(n):
            c = contenders[(r + i) % n]
            fn = c.fn
            if gap_s > 0:
                time.sleep(gap_s)
            fn()  # untimed: absorbs what the previous contender left behind
            samples = out[c.name].samples
            for _ in range(calls[c.name]):
                t0 = perf()
                fn()
                samples.append(perf() - t0)
    return out


def ratio(timings: dict[str, Timing], name: str, baseline: str) -> float:
    """Median time of `name` divided by that of `baseline` (>1: slower than baseline)."""
    return timings[name].median / timings[baseline].median


def blas_info() -> list[str]:
    """One line per BLAS/OpenMP library loaded in this process (threadpoolctl), or a note."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed: BLAS unknown (pip install threadpoolctl)"]
    lines = []
    for lib in threadpool_info():
        lines.append(
            f"{lib.get('internal_api')} {lib.get('version')} "
            f"arch={lib.get('architecture', '-')} threads={lib.get('num_threads')} "
            f"({os.path.basename(str(lib.get('filepath')))})"
        )
    return lines or ["no BLAS found by threadpoolctl"]


def blas_env_note() -> str | None:
    """A warning when OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE pin an older kernel, else None."""
    pinned = {
        k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
    }
    if not pinned:
        return None
    return (
        f"NOTE: {pinned} is set; it pins an older OpenBLAS kernel and slows GEMMs. For "
        "benchmarks only, run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...`."
    )


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])
