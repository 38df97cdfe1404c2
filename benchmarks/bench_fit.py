"""L-BFGS fit time: `derive train --optimizer lbfgs` against scikit-learn's LogisticRegression.

Both minimise the same objective (mean cross-entropy + l2/2 ||W||^2, bias unpenalised; scikit-learn
with C = 1/(n l2)) with the same L-BFGS-B stopping rule (gtol = --tol, ftol = 64 eps, maxls = 50)
from W = 0, so the comparison is of the cost per iteration and of the iterations each needs, not of
how loosely one of them stops. The objective each reaches is printed next to its time.

Timing follows DESIGN.md: contenders alternate in blocks of calls, each block after one untimed
call, blocks interleaved over repetitions (the order flipped every repetition); medians are
reported, with the BLAS in use. Absolute times are machine noise; read the ratio.

    python benchmarks/bench_fit.py                 # digits + synthetic, BLAS on 1 thread
    python benchmarks/bench_fit.py --threads 0     # library default threading
    python benchmarks/bench_fit.py --module /path/to/emitted.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from derive.train.compare import fit_sklearn
from derive.train.data import FloatArray, IntArray, load_digits_dataset
from derive.train.objective import SoftmaxModel, TrainConfig, load_model, objective_and_grad
from derive.train.optimizers import blas_threads, fit_lbfgs


@dataclass(frozen=True)
class Problem:
    name: str
    X: FloatArray
    y: IntArray
    n_classes: int
    l2: float


def digits_problem() -> Problem:
    data = load_digits_dataset(test_size=0.25, seed=0)
    return Problem("digits 1347x64, K=10", data.X_train, data.y_train, 10, 1e-3)


def synthetic_problem(n: int = 20000, d: int = 100, k: int = 10, seed: int = 0) -> Problem:
    """Overlapping Gaussian classes: not separable, so the optimum is well inside the penalty."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 0.2, size=(k, d))
    y = rng.integers(0, k, size=n).astype(np.int64)
    X = means[y] + rng.normal(0.0, 1.0, size=(n, d))
    return Problem(f"synthetic {n}x{d}, K={k}", X, y, k, 1e-4)


def time_blocks(
    contenders: dict[str, Callable[[], float]], reps: int, block: int
) -> dict[str, list[float]]:
    """Per-call seconds for each contender, alternating blocks as DESIGN.md prescribes."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            contenders[name]()  # untimed: wakes the thread pools this contender uses
            for _ in range(block):
                start = time.perf_counter()
                contenders[name]()
                times[name].append(time.perf_counter() - start)
    return times


def run_problem(model: SoftmaxModel, problem: Problem, tol: float, reps: int, block: int) -> None:
    config = TrainConfig(optimizer="lbfgs", l2=problem.l2, tol=tol, max_iter=10000)
    X, y, k = problem.X, problem.y, problem.n_classes

    ours = fit_lbfgs(model, X, y, k, config)
    theirs = fit_sklearn(X, y, k, problem.l2, tol=tol, max_iter=10000)
    f_ours = objective_and_grad(model, X, y, ours.W, ours.b, problem.l2)[0]
    f_theirs = objective_and_grad(model, X, y, theirs.W, theirs.b, problem.l2)[0]

    def run_ours() -> float:
        return fit_lbfgs(model, X, y, k, config).seconds

    def run_theirs() -> float:
        return fit_sklearn(X, y, k, problem.l2, tol=tol, max_iter=10000).seconds

    times = time_blocks({"derive": run_ours, "sklearn": run_theirs}, reps, block)
    med_ours = statistics.median(times["derive"])
    med_theirs = statistics.median(times["sklearn"])
    print(f"\n{problem.name}, l2={problem.l2:g}, tol={tol:g}")
    print(f"  {'':<8}{'median s':>10}{'iters':>8}{'objective F':>22}")
    print(f"  {'derive':<8}{med_ours:>10.4f}{ours.n_iter:>8}{f_ours:>22.14g}")
    print(f"  {'sklearn':<8}{med_theirs:>10.4f}{theirs.n_iter:>8}{f_theirs:>22.14g}")
    print(f"  relative objective gap {(f_ours - f_theirs) / abs(f_theirs):.2e}")
    print(
        f"  ratio derive / sklearn = {med_ours / med_theirs:.2f}  "
        f"(per iteration {(med_ours / ours.n_iter) / (med_theirs / theirs.n_iter):.2f}; "
        f"< 1: derive faster)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--module", help="emitted module (default generated/softmax_regression_l2.py)"
    )
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads, 0 = default")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions")
    parser.add_argument("--block", type=int, default=3, help="timed calls per block")
    parser.add_argument("--tol", type=float, default=1e-8, help="gtol for both (default 1e-8)")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_info

    model = load_model(args.module)
    problems = [digits_problem()]
    if not args.skip_synthetic:
        problems.append(synthetic_problem())
    with blas_threads(args.threads or None):
        print("threads:", "library defaults" if args.threads == 0 else args.threads)
        for lib in threadpool_info():
            print(
                f"  {lib.get('internal_api')} {lib.get('version')} "
                f"({Path(str(lib.get('filepath'))).name}): {lib.get('num_threads')} threads"
            )
        for problem in problems:
            run_problem(model, problem, args.tol, args.reps, args.block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
