"""Time the torch and array-API (CuPy) targets against F.cross_entropy on CUDA (see the .sh).

Forward + backward of the mean cross-entropy w.r.t. the logits, integer labels, n = 60000 and
1e6, K = 10 and 1000, float32 and float64; CUDA events around 20 calls after 3 warm-ups, the
median and the fastest of 5 repetitions. The array-API module returns the gradient directly
(`grad_logits`, with the loss from `loss`), so its row is forward + gradient, not autograd.
Before timing, each contender's gradient is checked against F.cross_entropy's (float64:
1e-12 relative, float32: 1e-5). A size whose arrays would not fit in the free device memory
(about eight n x K arrays at once) is skipped with a line that says so.

`--dry-run` runs the same code on the CPU at small sizes (NumPy arrays for the array-API
module, `time.perf_counter` for the clock): a check that the script works, not a measurement.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from derive.output.loader import load_module_from_path

GEN = Path(__file__).resolve().parent.parent / "generated"


def _time(fn: Any, device: str, reps: int = 5, calls: int = 20) -> tuple[float, float]:
    """(median, fastest) milliseconds per call over `reps` blocks of `calls` calls."""
    for _ in range(3):
        fn()
    out = []
    for _ in range(reps):
        if device == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                fn()
            stop.record()
            torch.cuda.synchronize()
            out.append(start.elapsed_time(stop) / calls)
        else:
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            out.append((time.perf_counter() - t0) * 1e3 / calls)
    return statistics.median(out), min(out)


def _rel(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-300))


def _row(n: int, K: int, dtype: torch.dtype, device: str, xp: Any) -> list[str]:
    """One row of the table: F.cross_entropy's time and the targets' ratios to it."""
    tmod = load_module_from_path(GEN / "torch" / "softmax_regression.py")
    amod = load_module_from_path(GEN / "array_api" / "softmax_regression.py")
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    O = torch.randn(n, K, device=device, dtype=dtype, requires_grad=True)
    y = torch.randint(0, K, (n,), device=device)
    (ref_g,) = torch.autograd.grad(F.cross_entropy(O, y), O)
    (our_g,) = torch.autograd.grad(tmod.loss(O, y), O)
    assert _rel(our_g.cpu(), ref_g.cpu()) <= tol, "torch target disagrees"
    ref = _time(lambda O=O, y=y: torch.autograd.grad(F.cross_entropy(O, y), O), device)
    ours = _time(lambda O=O, y=y: torch.autograd.grad(tmod.loss(O, y), O), device)
    cells = [str(n), str(K), str(dtype)[6:], f"{ref[0]:.3f}"]
    cells += [f"{ours[0] / ref[0]:.2f}", f"{ours[1] / ref[1]:.2f}"]
    if xp is not None:
        Oc, yc = xp.asarray(O.detach()), xp.asarray(y)
        got = amod.grad_logits(Oc, yc)
        got = got.get() if hasattr(got, "get") else got
        assert _rel(got, ref_g.cpu()) <= tol, "array-API target disagrees"
        arr = _time(lambda Oc=Oc, yc=yc: (amod.loss(Oc, yc), amod.grad_logits(Oc, yc)), device)
        cells += [f"{arr[0] / ref[0]:.2f}", f"{arr[1] / ref[1]:.2f}"]
    return cells


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, small sizes: a script check")
    args = ap.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    if args.dry_run:
        torch.set_num_threads(1)  # a 2-thread CPU run on a shared machine is noise
    elif not torch.cuda.is_available():
        print(
            f"gpu_frameworks: torch {torch.__version__} sees no CUDA device (a CPU build?); "
            "install the CUDA build of torch to time the GPU",
            file=sys.stderr,
        )
        sys.exit(1)
    began = time.perf_counter()
    sizes = [(256, 10), (2000, 100)] if args.dry_run else [(60000, 10), (60000, 1000)]
    sizes += [] if args.dry_run else [(1_000_000, 10), (1_000_000, 1000)]
    xp: Any
    if args.dry_run:
        xp = np
    else:
        try:
            import cupy as xp
        except ImportError:
            xp = None
            print("gpu_frameworks: CuPy is not installed; no array-API columns", file=sys.stderr)
    name = "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name()
    array_lib = f"{getattr(xp, '__name__', 'no CuPy')} {getattr(xp, '__version__', '')}"
    print(name, "torch", torch.__version__, "array API on", array_lib)
    head = ["n", "K", "dtype", "F.ce ms", "torch/F", "torch/F min", "xp/F", "xp/F min"]
    print(" ".join(f"{h:>11}" for h in head))
    for n, K in sizes:
        for dtype in (torch.float32, torch.float64):
            size = n * K * (4 if dtype == torch.float32 else 8)
            free = torch.cuda.mem_get_info()[0] if device == "cuda" else 8 * size
            if 8 * size > free:
                print(f"{n} x {K} {str(dtype)[6:]}: skipped, needs ~{8 * size / 1e9:.0f} GB free")
                continue
            print(" ".join(f"{c:>11}" for c in _row(n, K, dtype, device, xp)), flush=True)
            if device == "cuda":  # the row's arrays are gone: hand their memory back
                torch.cuda.empty_cache()
                if xp is not None:
                    xp.get_default_memory_pool().free_all_blocks()
    print(f"ratio = target / F.cross_entropy (< 1: faster); {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
