"""Time the torch and array-API (CuPy) targets against F.cross_entropy on CUDA (see the .sh).

Forward + backward of the mean cross-entropy w.r.t. the logits, integer labels, n = 60000 and
1e6, K = 10 and 1000, float32 and float64; CUDA events around 20 calls after 3 warm-ups, the
median of 5 repetitions. The array-API module returns the gradient directly (`grad_logits`,
with the loss from `loss`), so its row is forward + gradient, not autograd.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from derive.output.loader import load_module_from_path

GEN = Path(__file__).resolve().parent.parent / "generated"


def _time(fn: Any, reps: int = 5, calls: int = 20) -> float:
    for _ in range(3):
        fn()
    out = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        stop.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(stop) / calls)
    return statistics.median(out)


def main() -> None:
    tmod = load_module_from_path(GEN / "torch" / "softmax_regression.py")
    amod = load_module_from_path(GEN / "array_api" / "softmax_regression.py")
    try:
        import cupy as cp
    except ImportError:
        cp = None
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    print(f"{'n':>8} {'K':>5} {'dtype':>8} {'F.ce ms':>9} {'torch/F':>8} {'cupy/F':>8}")
    for n in (60000, 1_000_000):
        for K in (10, 1000):
            for dtype in (torch.float32, torch.float64):
                if n * K * (4 if dtype == torch.float32 else 8) > 8e9:
                    continue
                O = torch.randn(n, K, device="cuda", dtype=dtype, requires_grad=True)
                y = torch.randint(0, K, (n,), device="cuda")
                ref = _time(lambda O=O, y=y: torch.autograd.grad(F.cross_entropy(O, y), O))
                ours = _time(lambda O=O, y=y: torch.autograd.grad(tmod.loss(O, y), O))
                row = f"{n:>8} {K:>5} {str(dtype)[6:]:>8} {ref:>9.3f} {ours / ref:>8.2f}"
                if cp is not None:
                    Oc, yc = cp.asarray(O.detach()), cp.asarray(y)
                    arr = _time(lambda Oc=Oc, yc=yc: (amod.loss(Oc, yc), amod.grad_logits(Oc, yc)))
                    row += f" {arr / ref:>8.2f}"
                print(row, flush=True)


if __name__ == "__main__":
    main()
