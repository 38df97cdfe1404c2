"""The framework targets against the frameworks' own fused losses, side by side (issue 13).

Forward + backward of the mean cross-entropy of logits O (n, K) with integer labels, gradient
w.r.t. O, in one process with `_timing.time_interleaved` (alternating blocks; the ratio of the
medians and the ratio of the fastest calls, which is robust to other processes on a shared
machine, since interference only adds time):

- torch: `generated/torch/softmax_regression.py` `loss` + `torch.autograd.grad`, against
  `F.cross_entropy` + `torch.autograd.grad` (both eager); the row "torch floor" times
  `torch_floor.accurate_cross_entropy`, the least an accurate gradient costs in eager PyTorch,
  against the same `F.cross_entropy`;
- jax:   `generated/jax/softmax_regression.py` `loss` under `jax.jit(jax.grad(...))`, against
  `optax.softmax_cross_entropy_with_integer_labels(...).mean()` under the same `jit(grad)`.

Threads: `--threads N` sets torch's intra-op threads and XLA's (`--xla_cpu_multi_thread_eigen`
with `intra_op_parallelism_threads`) alike, and NumPy/BLAS through threadpoolctl; pin with
`taskset -c 0` for one core. Each contender's value and gradient are checked against its
reference before timing. Ratios are what to read (ours / theirs; < 1 is faster).

    python benchmarks/bench_frameworks.py                       # both threads, float32 and float64
    taskset -c 0 python benchmarks/bench_frameworks.py --threads 1
    python benchmarks/bench_frameworks.py --sizes 256x10 60000x10 --dtypes float32
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(REPO))


def _set_threads(threads: int | None) -> None:
    """Before torch/jax are imported: XLA reads its flags once, at backend start."""
    if threads is None:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = flags.strip()
    os.environ["OMP_NUM_THREADS"] = str(threads)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["256x10", "60000x10", "10000x1000"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=None, help="threads for every framework")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--without", nargs="*", default=[], choices=["torch", "jax"])
    args = ap.parse_args(argv)
    _set_threads(args.threads)

    import numpy as np
    from _timing import Contender, format_table, ratio, time_interleaved

    from derive.output.loader import GENERATED_DIR, load_module_from_path

    rows: list[list[str]] = []
    rng = np.random.default_rng(0)
    torch = jax = None
    if "torch" not in args.without:
        try:
            import torch

            if args.threads is not None:
                torch.set_num_threads(args.threads)
            from torch_floor import accurate_cross_entropy

            tmod = load_module_from_path(GENERATED_DIR / "torch" / "softmax_regression.py")
        except ImportError:
            print("torch not installed: skipped")
            torch = None
    if "jax" not in args.without:
        try:
            import jax
            import optax

            jax.config.update("jax_enable_x64", True)
            jmod = load_module_from_path(GENERATED_DIR / "jax" / "softmax_regression.py")
        except ImportError:
            print("jax/optax not installed: skipped")
            jax = None
    threads = f"threads={args.threads}" if args.threads else "threads=default"
    print(f"{threads}; cores visible: {len(os.sched_getaffinity(0))}; load: {os.getloadavg()}")
    if torch is not None:
        print(f"torch {torch.__version__}, intra-op threads {torch.get_num_threads()}")
    if jax is not None:
        print(f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    for size in args.sizes:
        n, K = (int(v) for v in size.split("x"))
        for dtype in args.dtypes:
            O_np = (rng.normal(size=(n, K)) * 3).astype(dtype)
            y_np = rng.integers(0, K, n)
            contenders: list[Contender] = []
            pairs: list[tuple[str, str, str]] = []
            if torch is not None:
                O = torch.from_numpy(O_np).requires_grad_(True)
                y = torch.from_numpy(y_np)
                F = torch.nn.functional

                def t_ours(O: Any = O, y: Any = y) -> Any:
                    return torch.autograd.grad(tmod.loss(O, y), O)[0]

                def t_theirs(O: Any = O, y: Any = y, F: Any = F) -> Any:
                    return torch.autograd.grad(F.cross_entropy(O, y), O)[0]

                def t_floor(O: Any = O, y: Any = y) -> Any:
                    return torch.autograd.grad(accurate_cross_entropy(O, y), O)[0]

                for other in (t_ours, t_floor):
                    err = float((other() - t_theirs()).abs().max() / t_theirs().abs().max())
                    assert err < (1e-5 if dtype == "float32" else 1e-12), err
                contenders += [
                    Contender("torch target", t_ours),
                    Contender("F.cross_entropy", t_theirs),
                    Contender("accurate by hand", t_floor),
                ]
                pairs.append(("torch", "torch target", "F.cross_entropy"))
                pairs.append(("torch floor", "accurate by hand", "F.cross_entropy"))
            if jax is not None:
                Oj, yj = jax.numpy.asarray(O_np), jax.numpy.asarray(y_np)
                g_ours = jax.jit(jax.grad(lambda o, t: jmod.loss(o, t)))
                g_theirs = jax.jit(
                    jax.grad(
                        lambda o, t: optax.softmax_cross_entropy_with_integer_labels(o, t).mean()
                    )
                )

                def j_ours(O: Any = Oj, y: Any = yj, g: Any = g_ours) -> Any:
                    return g(O, y).block_until_ready()

                def j_theirs(O: Any = Oj, y: Any = yj, g: Any = g_theirs) -> Any:
                    return g(O, y).block_until_ready()

                a, b = np.asarray(j_ours()), np.asarray(j_theirs())
                err = float(np.abs(a - b).max() / np.abs(b).max())
                assert err < (1e-5 if dtype == "float32" else 1e-12), err
                contenders += [Contender("jax target", j_ours), Contender("optax jit", j_theirs)]
                pairs.append(("jax", "jax target", "optax jit"))
            timings = time_interleaved(contenders, rounds=args.rounds, block_s=0.05, gap_s=0.05)
            for fw, ours, theirs in pairs:
                a, b = timings[ours], timings[theirs]
                rows.append(
                    [
                        fw,
                        f"{n}x{K}",
                        dtype,
                        f"{a.median * 1e3:.3f}",
                        f"{b.median * 1e3:.3f}",
                        f"{ratio(timings, ours, theirs):.2f}",
                        f"{a.best / b.best:.2f}",
                        f"{max(a.spread, b.spread):.0%}",
                    ]
                )
    print(f"load average at end: {os.getloadavg()}")
    head = ["framework", "n x K", "dtype", "ours ms", "theirs ms", "ratio median", "ratio min"]
    print(format_table([*head, "IQR"], rows))
    print("ratio = ours / theirs (< 1: the target is faster); min = fastest call of each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
