"""Dask engine vs in-memory: time per L-BFGS iteration, peak memory, and where the time goes.

For each size, synthetic softmax data (float64, K = 10) is written to disk as `.npy` shards, then
each contender runs the same L-BFGS fit for `--iters` iterations in a fresh process:

- `memory`: `derive train`'s in-memory engine on the arrays loaded into the process, BLAS on
  `--threads` threads (default: 1 and 2, the second using as many cores as the two workers);
- `dask`: a LocalCluster of `--workers` processes with 1 thread each and `--memory-limit` each,
  the data persisted when it fits in half of the limits (`--persist auto`), else re-read from
  the memory-mapped shards on every pass.

Reported: seconds per L-BFGS iteration (fit time / iterations; each iteration is about one
objective evaluation, one pass), the ratio dask / memory, peak resident memory (the in-memory
process; each worker), and for Dask the breakdown of one pass from the task stream: reading
(`read_rows`, `_take`), compute (`chunk_sums`), the reduction (`sum`), each as busy seconds per
worker, and the rest of the wall time (scheduler round trip, serialisation, idle workers).

    python benchmarks/bench_dask.py                      # n=60000 and n=200000 at d=784
    python benchmarks/bench_dask.py --sizes 60000 --iters 10 --memory-limit 1GiB

The machine is shared: the load average is printed at the start and the end; read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

D, K, SHARD_ROWS, L2 = 784, 10, 20_000, 1e-3


def write_data(folder: Path, n: int, seed: int = 0) -> None:
    """Shards of SHARD_ROWS rows, labels from a softmax model with Gumbel noise."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(D, K)) / np.sqrt(D)
    (folder / "X").mkdir(parents=True)
    (folder / "y").mkdir()
    for i, start in enumerate(range(0, n, SHARD_ROWS)):
        rows = min(SHARD_ROWS, n - start)
        X = rng.random(size=(rows, D))  # pixel-like [0, 1)
        y = np.argmax((X - 0.5) @ W * 4 + rng.gumbel(size=(rows, K)), axis=1)
        np.save(folder / "X" / f"part{i:04d}.npy", X)
        np.save(folder / "y" / f"part{i:04d}.npy", y)


def child_memory(folder: Path, iters: int, threads: int) -> dict[str, Any]:
    from derive.train.dask_engine import peak_rss
    from derive.train.data import load_npy_dataset
    from derive.train.objective import TrainConfig, load_model
    from derive.train.optimizers import blas_threads, fit

    X = np.concatenate([np.load(p) for p in sorted((folder / "X").glob("*.npy"))])
    y = np.concatenate([np.load(p) for p in sorted((folder / "y").glob("*.npy"))])
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    del X, y
    data = load_npy_dataset(folder / "X.npy", folder / "y.npy", 0.25, 0)
    (folder / "X.npy").unlink()
    config = TrainConfig(optimizer="lbfgs", l2=L2, max_iter=iters, tol=1e-12)
    with blas_threads(threads):
        result = fit(load_model(), data, config)
    return {
        "seconds": result.seconds,
        "n_iter": result.n_iter,
        "peak_rss": peak_rss(),
    }


def child_dask(folder: Path, iters: int, workers: int, memory_limit: str) -> dict[str, Any]:
    from distributed import Client, LocalCluster, get_task_stream

    from derive.output.loader import GENERATED_DIR
    from derive.train import dask_engine
    from derive.train.objective import TrainConfig

    source = (GENERATED_DIR / "softmax_regression_l2.py").read_text(encoding="utf-8")
    limit = dask_engine.memory_limit_arg(memory_limit)
    data = dask_engine.from_files(str(folder / "X"), str(folder / "y"), 0.25, 0, None, None)
    config = TrainConfig(optimizer="lbfgs", l2=L2, max_iter=iters, tol=1e-12)
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            memory_limit=limit,
            dashboard_address=":0",
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        start = time.perf_counter()
        backend = dask_engine.DaskBackend(client, source, data)
        prepare = time.perf_counter() - start
        passes_before = backend.passes
        result = backend.fit(config)
        passes = backend.passes - passes_before
        # One more pass, recorded task by task, unfused so that each step is its own task.
        theta = np.concatenate([result.W.ravel(), result.b])
        backend.optimize_graph = False
        with get_task_stream(client) as stream:
            t0 = time.perf_counter()
            backend.objective(theta, L2)
            wall = time.perf_counter() - t0
        busy: dict[str, float] = {}
        for task in stream.data:
            key = task["key"][0] if isinstance(task["key"], tuple) else str(task["key"])
            name = key.rsplit("-", 1)[0]
            kind = (
                "compute"
                if name == "chunk_sums"
                else "reduce"
                if name.startswith(("sum", "finalize"))
                else "read"  # read_rows, _take, concatenate, the labels' from-value/getitem
            )
            for ss in task["startstops"]:
                if ss["action"] == "compute":
                    busy[kind] = busy.get(kind, 0.0) + ss["stop"] - ss["start"]
                else:
                    busy["transfer"] = busy.get("transfer", 0.0) + ss["stop"] - ss["start"]
        peaks = client.run(dask_engine.peak_rss)
        worker_limit = dask_engine.total_memory_limit(client) // workers
        logs = "\n".join(
            msg
            for entries in client.get_worker_logs(n=10_000, nanny=True).values()
            for _, msg in entries
        )
    return {
        "seconds": result.seconds,
        "n_iter": result.n_iter,
        "passes": passes,
        "persisted": backend.persisted,
        "prepare_seconds": prepare,
        "chunks": int(data.X_train.numblocks[0]),
        "pass_wall": wall,
        "busy_per_worker": {k: v / workers for k, v in busy.items()},
        "peak_rss_workers": sorted(peaks.values()),
        "worker_limit": worker_limit,
        "restarts_in_logs": sum(w in logs.lower() for w in ("restarting", "killed", "budget")),
    }


def run_child(args: list[str]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def mib(x: float) -> str:
    return f"{x / 2**20:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60_000, 200_000])
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="512MiB")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, folder, *rest = args.child
        if kind == "memory":
            doc = child_memory(Path(folder), int(rest[0]), int(rest[1]))
        else:
            doc = child_dask(Path(folder), int(rest[0]), int(rest[1]), rest[2])
        print(json.dumps(doc))
        return
    print(f"load average at start: {os.getloadavg()}  (2 cores; other jobs share the machine)")
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench_dask_") as tmp:
            folder = Path(tmp)
            write_data(folder, n)
            mem = {t: run_child(["memory", tmp, str(args.iters), str(t)]) for t in args.threads}
            dsk = run_child(["dask", tmp, str(args.iters), str(args.workers), args.memory_limit])
        x_mb = n * D * 8 / 2**20
        per_it = {t: m["seconds"] / m["n_iter"] for t, m in mem.items()}
        dask_it = dsk["seconds"] / dsk["n_iter"]
        busy = dsk["busy_per_worker"]
        rest = dsk["pass_wall"] - sum(busy.get(k, 0.0) for k in ("read", "compute", "reduce"))
        rows.append((n, x_mb, per_it, mem, dask_it, dsk, busy, rest))
        print(f"n={n}: done", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    print()
    head = (
        f"{'n x d':<12}{'X MiB':>7}  {'engine':<24}{'s/iter':>8}{'ratio':>7}"
        f"{'peak MiB':>16}  breakdown of one Dask pass (s per worker)"
    )
    print(head)
    print("-" * len(head))
    for n, x_mb, per_it, mem, dask_it, dsk, busy, rest in rows:
        label = f"{n}x{D}"
        for t, m in mem.items():
            print(
                f"{label:<12}{x_mb:>7.0f}  {f'memory, {t} BLAS thread(s)':<24}"
                f"{per_it[t]:>8.3f}{1.0:>7.2f}{mib(m['peak_rss']):>16}"
            )
        ref = min(per_it.values())
        persisted = "persisted" if dsk["persisted"] else "from disk"
        peaks = "/".join(mib(p) for p in dsk["peak_rss_workers"])
        print(
            f"{label:<12}{x_mb:>7.0f}  {f'dask {args.workers}x1, {persisted}':<24}"
            f"{dask_it:>8.3f}{dask_it / ref:>7.2f}{peaks:>16}  "
            f"pass {dsk['pass_wall']:.3f}: read {busy.get('read', 0):.3f}, compute "
            f"{busy.get('compute', 0):.3f}, reduce {busy.get('reduce', 0):.3f}, transfer "
            f"{busy.get('transfer', 0):.3f}, rest (scheduler, idle) {rest:.3f}"
        )
        print(
            f"{'':<12}{'':>7}  worker limit {mib(dsk['worker_limit'])} MiB, {dsk['chunks']} "
            f"train chunks, {dsk['passes']} passes for {dsk['n_iter']} iterations, first read "
            f"and check {dsk['prepare_seconds']:.1f} s, restarts in logs: "
            f"{dsk['restarts_in_logs']}"
        )
    print(
        "\nratio = s/iter over the fastest in-memory run; the breakdown is of one extra pass "
        "with Dask's task fusion off (so its wall time is above the fitted passes')"
    )


if __name__ == "__main__":
    main()
