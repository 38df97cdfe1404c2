"""The `derive train` command: arguments, progress reporting, summary, outputs.

Contract: turns parsed arguments into a fit and its report; user mistakes raise `DeriveError`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from derive.errors import DeriveError, OutputDirError, os_error_text
from derive.train import dask_engine
from derive.train import data as datasets
from derive.train.compare import compare_with_sklearn, l2_for_C
from derive.train.dask_engine import DaskData
from derive.train.data import Dataset, DatasetError, FloatArray, IntArray
from derive.train.objective import (
    INSTALL_HINT,
    OBJECTIVE_TEXT,
    BatchWrapper,
    EpochRecord,
    FitResult,
    Monitor,
    SoftmaxModel,
    TrainConfig,
    check_weight_decay,
    confusion_matrix,
    evaluate,
    load_model,
)
from derive.train.optimizers import blas_threads, fit
from derive.train.plots import plot_training

T = TypeVar("T")


def _number(text: str, kind: Callable[[str], T], expected: str) -> T:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _int(text: str) -> int:
    return _number(text, int, "an integer")


def _positive_float(text: str) -> float:
    value = _number(text, float, "a finite number > 0")
    if not (value > 0.0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _nonnegative_float(text: str) -> float:
    value = _number(text, float, "a finite number >= 0")
    if not (value >= 0.0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _l2(text: str) -> float | str:
    if text == "auto":
        return text
    return _nonnegative_float(text)


#: What the optimizer flags default to; an explicit flag wins over its preset.
PRESETS: dict[str, dict[str, Any]] = {
    # scikit-learn's LogisticRegression() objective (C = 1), solved by L-BFGS as it does.
    "sklearn": {"optimizer": "lbfgs", "epochs": 10, "batch_size": 256, "lr": 0.1, "l2": "auto"},
    # d2l 4.4 (softmax regression from scratch): minibatch SGD, no weight decay.
    "d2l": {"optimizer": "sgd", "epochs": 10, "batch_size": 256, "lr": 0.1, "l2": 0.0},
}


def train_config(args: argparse.Namespace, n_train: int, n_classes: int) -> TrainConfig:
    """The fit's settings: each flag as given, else its `--preset` value; `l2 = auto` is the
    penalty equivalent to scikit-learn's default C = 1 on this training set."""
    preset = PRESETS[args.preset]
    value = {k: preset[k] if getattr(args, k) is None else getattr(args, k) for k in preset}
    if value["l2"] == "auto":
        value["l2"] = l2_for_C(1.0, n_train, n_classes)
    return TrainConfig(
        optimizer=value["optimizer"],
        epochs=value["epochs"],
        batch_size=value["batch_size"],
        lr=value["lr"],
        l2=value["l2"],
        seed=args.seed,
        max_iter=args.max_iter,
        tol=args.tol,
    )


def _fraction(text: str) -> float:
    value = _number(text, float, "a fraction strictly between 0 and 1")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a fraction strictly between 0 and 1, got {text}"
        )
    return value


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `derive train` flags to `parser` (the CLI wires `run_train` to it)."""
    data = parser.add_argument_group("data")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        choices=["digits", "mnist", "fashion-mnist"],
        # NOTE: None, not "digits": argparse does not see a conflict with --data when the value
        # given equals the default.
        help="built-in dataset (default: digits, from scikit-learn; mnist and fashion-mnist are "
        "read from the IDX files in --data-dir)",
    )
    source.add_argument(
        "--data",
        nargs=2,
        metavar=("X.npy", "y.npy"),
        help="your own arrays: features (n, d) and labels (n,); with --engine dask each may also "
        "be a folder or a quoted glob of .npy shards (paired in sorted order) or a .zarr array",
    )
    data.add_argument("--data-dir", metavar="PATH", help="folder with the four IDX files")
    data.add_argument(
        "--test-size",
        type=_fraction,
        default=0.25,
        help="stratified test fraction for digits and --data (default: 0.25; IDX datasets use "
        "their official test set)",
    )
    opt = parser.add_argument_group("optimizer")
    opt.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="sklearn",
        help="defaults for the five flags below: sklearn (default) is L-BFGS on scikit-learn's "
        "default objective (C = 1, i.e. l2 = 1/n); d2l is d2l's softmax regression (SGD, 10 "
        "epochs of batch 256, lr 0.1, no weight decay). A flag given explicitly wins",
    )
    opt.add_argument(
        "--optimizer", choices=["sgd", "lbfgs"], help="lbfgs (full batch) or sgd (minibatch)"
    )
    opt.add_argument("--epochs", type=_positive_int, help="SGD epochs (default: 10)")
    opt.add_argument("--batch-size", type=_positive_int, help="SGD minibatch (default: 256)")
    opt.add_argument("--lr", type=_positive_float, help="SGD step (default: 0.1)")
    opt.add_argument(
        "--l2",
        type=_l2,
        help="L2 strength in the objective mean CE + l2/2 ||W||^2, bias unpenalised, from the "
        "emitted module's weight decay: a number >= 0, or auto = scikit-learn's default C = 1 "
        "(1/n_train; 2/n_train for two classes) (default: auto; d2l: 0)",
    )
    opt.add_argument("--seed", type=_int, default=0, help="split, init and shuffling (default: 0)")
    opt.add_argument(
        "--max-iter", type=_positive_int, default=1000, help="L-BFGS iterations (default: 1000)"
    )
    opt.add_argument(
        "--tol",
        type=_positive_float,
        default=1e-8,
        help="L-BFGS projected-gradient tolerance, also given to scikit-learn (default: 1e-8)",
    )
    opt.add_argument(
        "--blas-threads",
        type=_positive_int,
        default=1,
        help="BLAS/OpenMP threads while fitting, for both derive and scikit-learn (default: 1; "
        "pools of several libraries spinning at once slow small fits by 10-50x)",
    )
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--engine",
        choices=["memory", "dask"],
        default="memory",
        help="memory: NumPy arrays in this process (default); dask: data in row chunks on a "
        "Dask cluster, read lazily from disk (needs the [dask] extra)",
    )
    engine.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="dask: the scheduler to use, e.g. tcp://host:8786 (default: a new LocalCluster)",
    )
    engine.add_argument(
        "--workers",
        type=_positive_int,
        default=2,
        help="dask: LocalCluster worker processes (default: 2)",
    )
    engine.add_argument(
        "--memory-limit",
        default="auto",
        metavar="SIZE",
        help="dask: LocalCluster memory limit per worker, e.g. 2GiB (default: auto, the "
        "machine's memory shared out; none: no limit)",
    )
    engine.add_argument(
        "--chunk-rows",
        type=_positive_int,
        metavar="N",
        help="dask: rows per chunk (default: about 32 MiB of float64 per chunk)",
    )
    engine.add_argument(
        "--persist",
        choices=["auto", "yes", "no"],
        default="auto",
        help="dask: keep the data in the workers' memory (auto: when it takes at most half of "
        "their limit; otherwise every pass reads it from disk)",
    )
    engine.add_argument(
        "--n-classes",
        type=_positive_int,
        metavar="K",
        help="dask with --data: labels are 0..K-1 (default: the largest label + 1, every class "
        "below it present)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--compare-sklearn", action="store_true", help="fit LogisticRegression too")
    out.add_argument("--plot", metavar="PNG", help="loss/accuracy curves and confusion matrix")
    out.add_argument("--json", metavar="PATH", help="write a JSON summary")
    out.add_argument("--save", metavar="NPZ", help="write W, b and class names (.npz)")
    out.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    out.add_argument(
        "--module",
        metavar="PY",
        help="emitted module to train with (default: generated/softmax_regression_l2.py; its "
        "weight decay lam is --l2; a module without one trains with --l2 0 only)",
    )


def _missing_extras(args: argparse.Namespace) -> list[str]:
    """The optional packages this particular run needs but cannot import, with the reason."""
    needed: list[tuple[str, str, str]] = []
    if args.data is None and args.dataset in (None, "digits"):
        needed.append(("sklearn", "scikit-learn", "--dataset digits"))
    if args.compare_sklearn:
        needed.append(("sklearn", "scikit-learn", "--compare-sklearn"))
    if args.plot:
        needed.append(("matplotlib", "matplotlib", "--plot"))
    if not args.quiet:
        needed.append(("tqdm", "tqdm", "the progress bar; --quiet skips it"))
    if args.engine == "dask":
        needed.append(("dask.array", "dask[array]", "--engine dask"))
        needed.append(("distributed", "distributed", "--engine dask"))
    missing: list[str] = []
    for module, package, why in needed:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(f"{package} (for {why})")
    return missing


def load_dataset(args: argparse.Namespace) -> Dataset:
    """The dataset the flags ask for."""

    if args.data is not None:
        return datasets.load_npy_dataset(args.data[0], args.data[1], args.test_size, args.seed)
    if args.dataset in (None, "digits"):
        return datasets.load_digits_dataset(args.test_size, args.seed)
    if args.data_dir is None:
        files = ", ".join(datasets.IDX_FILES.values())
        raise DatasetError(
            f"--dataset {args.dataset} needs --data-dir, a folder holding {files} "
            f"(each optionally .gz), published at {datasets.IDX_SOURCES[args.dataset]}"
        )
    return datasets.load_idx_dataset(args.dataset, args.data_dir)


class Backend(Protocol):
    """Where the data lives and how passes over it run: in memory, or on a Dask cluster."""

    @property
    def data(self) -> Dataset | DaskData: ...

    def fit(
        self, config: TrainConfig, monitor: Monitor | None, wrap_batches: BatchWrapper | None
    ) -> FitResult: ...

    def evaluate(self, W: FloatArray, b: FloatArray, l2: float, step: int) -> EpochRecord: ...

    def confusion(self, W: FloatArray, b: FloatArray) -> IntArray: ...


class MemoryBackend:
    """The in-memory engine: NumPy arrays in this process."""

    def __init__(self, model: SoftmaxModel, data: Dataset):
        self.model, self._data = model, data

    @property
    def data(self) -> Dataset:
        return self._data

    def fit(
        self, config: TrainConfig, monitor: Monitor | None, wrap_batches: BatchWrapper | None
    ) -> FitResult:
        if wrap_batches is None:
            return fit(self.model, self._data, config, monitor=monitor)
        return fit(self.model, self._data, config, monitor=monitor, wrap_batches=wrap_batches)

    def evaluate(self, W: FloatArray, b: FloatArray, l2: float, step: int) -> EpochRecord:
        return evaluate(self.model, self._data, W, b, l2, step)

    def confusion(self, W: FloatArray, b: FloatArray) -> IntArray:
        data = self._data
        return confusion_matrix(data.y_test, self.model.predict(data.X_test, W, b), data.n_classes)


class _Reporter:
    """Progress bar and one line per epoch (or per 10 L-BFGS iterations) on the console."""

    def __init__(self, backend: Backend, config: TrainConfig, quiet: bool):
        self.backend, self.config, self.quiet = backend, config, quiet
        self.history: list[EpochRecord] = []
        self.show_bar = not quiet and sys.stderr.isatty()
        self._bar: Any = None

    def _line(self, record: EpochRecord) -> str:
        if self.config.optimizer == "sgd":
            head = f"epoch {record.step:>3}/{self.config.epochs}"
        else:
            head = f"iter {record.step:>4}"
        return (
            f"{head}  train loss {record.train_loss:.4f}  objective "
            f"{record.train_objective:.6f}  train acc {record.train_acc:.4f}  test acc "
            f"{record.test_acc:.4f}"
        )

    def wrap_batches(self, iterable: Iterable[int], total: int, desc: str) -> Iterable[int]:
        if not self.show_bar:
            return iterable
        from tqdm import tqdm

        return cast(
            Iterable[int],
            tqdm(iterable, total=total, desc=desc, leave=False, unit="batch", file=sys.stderr),
        )

    def __call__(self, step: int, W: FloatArray, b: FloatArray) -> None:
        record = self.backend.evaluate(W, b, self.config.l2, step)
        self.history.append(record)
        if self.config.optimizer == "lbfgs":
            if self.show_bar:
                self._lbfgs_bar().update(1)
            if step != 1 and step % 10 != 0:
                return
        self.print_line(record)

    def _lbfgs_bar(self) -> Any:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.config.max_iter, desc="L-BFGS", leave=False, unit="it", file=sys.stderr
            )
        return self._bar

    def print_line(self, record: EpochRecord) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(self._line(record), file=sys.stdout)
        else:
            print(self._line(record))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.config.optimizer == "lbfgs" and self.history:
            last = self.history[-1]
            if last.step != 1 and last.step % 10 != 0:
                self.print_line(last)


def _comparison_table(cmp: dict[str, Any]) -> str:
    ours, theirs = cmp["derive"], cmp["sklearn"]
    left = f"derive ({ours['optimizer']})"
    right = f"sklearn (lbfgs, C={cmp['C']:.6g})"

    def fmt(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    rows = [
        ("test accuracy", "test_acc", ".4f"),
        ("train accuracy", "train_acc", ".4f"),
        ("objective F (emitted module)", "objective_F", ".12g"),
        ("objective C*sum CE + |W|^2/2", "objective_sklearn", ".12g"),
        ("fit seconds", "fit_seconds", ".3f"),
        ("iterations (sgd: epochs)", "n_iter", "d"),
    ]
    lines = [f"{'':<30}{left:>22}{right:>32}"]
    for label, key, spec in rows:
        lines.append(f"{label:<30}{fmt(ours[key], spec):>22}{fmt(theirs[key], spec):>32}")
    lines.append(
        f"relative objective gap (F_derive - F_sklearn) / F_sklearn: "
        f"{cmp['relative_objective_gap']:.3g}"
    )
    if not theirs["converged"]:
        lines.append("note: scikit-learn stopped at --max-iter without converging")
    return "\n".join(lines)


def _prepare_output(path_text: str, what: str) -> Path:
    """The path of an output file whose folder exists: folders are never created silently."""
    path = Path(path_text)
    folder = path.parent
    if path.is_dir():
        raise OutputDirError(f"{what} {path_text!r} is a folder", "expected a file name")
    if not folder.is_dir():
        reason = "is a file" if folder.exists() else "does not exist"
        raise OutputDirError(
            f"{what} {path_text!r}: the folder {str(folder)!r} {reason}",
            "",
            f"create it first with mkdir -p {folder}, or choose another path",
        )
    return path


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse bad output paths before the fit, not after minutes of it."""
    for flag in ("plot", "json", "save"):
        value = getattr(args, flag)
        if value:
            _prepare_output(value, f"--{flag}")


def _write(path_text: str, what: str, writer: Callable[[Path], object]) -> None:
    path = _prepare_output(path_text, what)
    # The temporary name keeps the suffix: matplotlib picks the image format from it.
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputDirError(
            f"{what} {path_text!r}: cannot write it", os_error_text(exc), "choose another path"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _save_npz(path: Path, result: FitResult, classes: Sequence[str]) -> None:
    # An open file keeps the name exactly as given (np.savez appends ".npz" to bare names).
    with path.open("wb") as fh:
        np.savez(fh, W=result.W, b=result.b, classes=np.array(classes, dtype=str))


def summary(
    data: Dataset | DaskData,
    config: TrainConfig,
    result: FitResult,
    history: list[EpochRecord],
    confusion: IntArray,
    comparison: dict[str, Any] | None,
) -> dict[str, Any]:
    """The `--json` document (plain types only; keys sorted when written)."""
    final = history[-1] if history else None
    return {
        "dataset": {
            "name": data.name,
            "split": data.split,
            "n_train": int(data.X_train.shape[0]),
            "n_test": int(data.X_test.shape[0]),
            "n_features": data.n_features,
            "classes": list(data.classes),
        },
        "config": asdict(config),
        "objective": OBJECTIVE_TEXT,
        "fit": {
            "seconds": result.seconds,
            "n_iter": result.n_iter,
            "converged": result.converged,
            "message": result.message,
        },
        "final": None if final is None else asdict(final),
        "history": [asdict(r) for r in history],
        "confusion_matrix": confusion.tolist(),
        "sklearn_comparison": comparison,
    }


def run_train(args: argparse.Namespace) -> int:
    """Run `derive train` for parsed `args`; 0 on success. A user's mistake raises `DeriveError`
    (the command prints it as one line and exits 2)."""
    missing = _missing_extras(args)
    if missing:
        raise DeriveError(
            f"derive train needs optional packages that are not installed: {'; '.join(missing)}",
            "",
            f"install them with {INSTALL_HINT}",
        )
    _run(args)
    return 0


def _run(args: argparse.Namespace) -> None:
    check_outputs(args)
    model = load_model(args.module)
    l2 = PRESETS[args.preset]["l2"] if args.l2 is None else args.l2
    # Before minutes of data loading; auto (1/n_train) is never 0.
    check_weight_decay(
        model, 1.0 if l2 == "auto" else l2, "auto (the default)" if l2 == "auto" else None
    )
    if args.engine == "memory":
        _fit_and_report(args, MemoryBackend(model, load_dataset(args)))
        return
    if args.compare_sklearn:
        raise DeriveError("--compare-sklearn: needs the in-memory engine (drop --engine dask)")
    with dask_engine.open_backend(
        model,
        args.scheduler,
        args.workers,
        dask_engine.memory_limit_arg(args.memory_limit),
        args.persist,
        lambda rows: _dask_data(args, rows),
        args.chunk_rows,
    ) as backend:
        _fit_and_report(args, backend)


def _dask_data(args: argparse.Namespace, chunk_rows: int | None) -> DaskData:
    """The data for `--engine dask`: shards read lazily, or a built-in set chunked in memory."""
    if args.data is not None:
        return dask_engine.from_files(
            args.data[0], args.data[1], args.test_size, args.seed, chunk_rows, args.n_classes
        )
    data = load_dataset(args)
    rows = chunk_rows or dask_engine.default_chunk_rows(data.n_features)
    return dask_engine.from_dataset(data, rows)


def _fit_and_report(args: argparse.Namespace, backend: Backend) -> None:
    data = backend.data
    config = train_config(args, data.X_train.shape[0], data.n_classes)
    print(
        f"{data.name}: {data.X_train.shape[0]} train / {data.X_test.shape[0]} test, "
        f"{data.n_features} features, {data.n_classes} classes ({data.split})"
    )
    reporter = _Reporter(backend, config, args.quiet)
    try:
        with blas_threads(args.blas_threads):
            result = backend.fit(config, reporter, reporter.wrap_batches)
    finally:
        reporter.close()
    history = reporter.history
    if not history or history[-1].step != result.n_iter:
        history.append(backend.evaluate(result.W, result.b, config.l2, result.n_iter))
    final = history[-1]
    unit = "epochs" if config.optimizer == "sgd" else "iterations"
    status = "" if result.converged else "NOT converged: "
    print(
        f"{config.optimizer}: {result.n_iter} {unit} in {result.seconds:.3f} s "
        f"({status}{result.message})"
    )
    print(
        f"final: train loss {final.train_loss:.6f}  objective {final.train_objective:.10g}  "
        f"train acc {final.train_acc:.4f}  test acc {final.test_acc:.4f}"
    )
    confusion = backend.confusion(result.W, result.b)
    comparison = None
    if args.compare_sklearn and isinstance(backend, MemoryBackend):
        with blas_threads(args.blas_threads):
            comparison = compare_with_sklearn(backend.model, backend.data, result, config)
        print(_comparison_table(comparison))
    if args.plot:
        title = f"{data.name}, {config.optimizer}, l2={config.l2:g}: test acc {final.test_acc:.2%}"
        xlabel = "epoch" if config.optimizer == "sgd" else "L-BFGS iteration"
        ref = None if comparison is None else float(comparison["sklearn"]["test_acc"])
        _write(
            args.plot,
            "--plot",
            lambda p: plot_training(p, history, confusion, data.classes, title, xlabel, ref),
        )
    if args.json:
        doc = summary(data, config, result, history, confusion, comparison)
        text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=True) + "\n"
        _write(args.json, "--json", lambda p: p.write_text(text, encoding="utf-8"))
    if args.save:
        _write(args.save, "--save", lambda p: _save_npz(p, result, data.classes))
