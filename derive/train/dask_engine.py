"""`derive train --engine dask`: the emitted module's gradient as a map-reduce over row chunks.

The derivation proves (step "batch_sum") that `n L`, `n dL/dW` and `n dL/db` are sums over the
rows, which add up over any split of the rows. So each chunk of rows calls the emitted
`loss_and_grad(..., reduction="sum")`, Dask's tree reduction adds the chunk results, and the client
divides by n: the same objective and gradient as in memory, up to the order of the additions.

As in dask-ml's `lbfgs`: one pass over the chunked data per objective evaluation, the data
persisted in the workers' memory when it fits (`--persist auto`), and SciPy's L-BFGS-B on the
client, where the parameters (d*K + K numbers) live. Minibatch SGD runs one task per chunk, in a
shuffled order each epoch, on the worker holding the chunk: only W and b travel.

Contract: `DaskBackend` exposes what `derive train` needs (the data's description, `fit`,
`evaluate`, `confusion`); user mistakes raise `DatasetError`/`DeriveError` before anything is
written. The emitted module's source is sent to the workers (no shared file system needed).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np

from derive.errors import DeriveError
from derive.train.data import Dataset, DatasetError, FloatArray, IntArray, stratified_split
from derive.train.objective import (
    BatchWrapper,
    EpochRecord,
    FitResult,
    Monitor,
    TrainConfig,
    weight_decay,
)
from derive.train.optimizers import run_lbfgs
from derive.train.shards import (
    as_index,
    chunk_rows_for,
    lazy_features,
    open_shards,
    pair_shards,
    read_labels,
)

if TYPE_CHECKING:
    import dask.array as da
    from distributed import Client

#: Default chunk size: large enough that a chunk's two GEMMs dwarf a task's overhead (about
#: 1 ms in the scheduler), small enough that a few chunks per worker fit any sensible limit.
CHUNK_BYTES: Final = 32 * 2**20

#: `--persist auto` keeps the data in the workers' memory when it takes at most this fraction of
#: their combined limit (the rest is for the chunks' temporaries and Dask's own bookkeeping).
PERSIST_FRACTION: Final = 0.5

#: Chunk results added per node of the tree reduction.
SPLIT_EVERY: Final = 8


class DaskEngineError(DeriveError):
    """The Dask engine could not start or reach its cluster."""


# ---------------------------------------------------------------------------------------------
# The emitted module on the workers
# ---------------------------------------------------------------------------------------------

_MODULES: dict[str, ModuleType] = {}


def _module(source: str) -> Any:
    """The emitted module compiled from `source`, once per worker process (keyed by its hash)."""
    key = hashlib.sha256(source.encode()).hexdigest()
    module = _MODULES.get(key)
    if module is None:
        module = ModuleType(f"_derive_emitted_{key[:12]}")
        exec(compile(source, f"<emitted module {key[:12]}>", "exec"), module.__dict__)
        _MODULES[key] = module
    return module


def _split_theta(theta: FloatArray, d: int, k: int) -> tuple[FloatArray, FloatArray]:
    return theta[: d * k].reshape(d, k), theta[d * k :]


def chunk_sums(
    X: FloatArray,
    y: IntArray,
    theta: FloatArray,
    source: str,
    d: int,
    k: int,
    l2: float = 0.0,
) -> FloatArray:
    """One chunk's `[sum of losses, sum dW (flat), sum db]` as a (1, 1 + dK + K) block, the
    module's weight decay `l2` included (its row sums add up to n times the penalty)."""
    W, b = _split_theta(theta, d, k)
    y = np.ravel(y)  # (n, 1): labels come as a column so that their blocks align with X's
    module = _module(source)
    decay = weight_decay(module, l2)
    loss, dW, db = module.loss_and_grad(X, y, W, b, check=False, reduction="sum", **decay)
    out = np.empty((1, 1 + d * k + k))
    out[0, 0] = loss
    out[0, 1 : 1 + d * k] = np.ravel(dW)
    out[0, 1 + d * k :] = db
    return out


def chunk_metrics(
    X: FloatArray,
    y: IntArray,
    theta: FloatArray,
    source: str,
    d: int,
    k: int,
    l2: float = 0.0,
) -> FloatArray:
    """One chunk's `[sum of losses, the same with weight decay l2, confusion counts (K*K, row =
    true class)]`, (1, 2 + K*K)."""
    W, b = _split_theta(theta, d, k)
    y = np.ravel(y)
    module = _module(source)
    loss = module.loss_and_grad(X, y, W, b, False, reduction="sum", **weight_decay(module, 0.0))[0]
    objective = (
        module.loss_and_grad(X, y, W, b, False, reduction="sum", **weight_decay(module, l2))[0]
        if l2
        else loss
    )
    pred = np.asarray(module.predict(X, W, b), dtype=np.int64)
    out = np.empty((1, 2 + k * k))
    out[0, 0] = loss
    out[0, 1] = objective
    out[0, 2:] = np.bincount(y * k + pred, minlength=k * k)
    return out


def sgd_chunk(
    X: FloatArray,
    y: IntArray,
    state: tuple[FloatArray, FloatArray],
    source: str,
    lr: float,
    l2: float,
    batch_size: int,
    seed: int,
) -> tuple[FloatArray, FloatArray]:
    """Minibatch SGD steps over one chunk's rows in shuffled order, as the in-memory loop does."""
    module = _module(source)
    decay = weight_decay(module, l2)  # the module's own L2 term and gradient
    W, b = state[0].copy(), state[1].copy()
    order = np.random.default_rng(seed).permutation(X.shape[0])
    for i in range(0, X.shape[0], batch_size):
        batch = order[i : i + batch_size]
        _, dW, db = module.loss_and_grad(X[batch], y[batch], W, b, check=False, **decay)
        W -= lr * dW
        b -= lr * db
    return W, b


def _check_chunk(X: FloatArray) -> FloatArray:
    """A (1, 1) block per chunk: reading the chunk (with its checks) is the point."""
    return np.zeros((1, 1))


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass
class DaskData:
    """A train/test split as Dask arrays chunked by rows (labels chunked like the features).

    Has the attributes of `Dataset` that the report and `--json` read.
    """

    name: str
    split: str
    classes: tuple[str, ...]
    X_train: da.Array
    y_train: da.Array
    X_test: da.Array
    y_test: da.Array
    #: X_train and X_test read with the checks (NaN, inf) on: read once, before fitting, or
    #: persisted; the fit then reads X_train and X_test, without them. None: no checks needed.
    checked: tuple[da.Array, da.Array] | None = None

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.X_train, self.y_train, self.X_test, self.y_test)))


def _take(block: FloatArray, rows: IntArray) -> FloatArray:
    return block[rows]


def take_rows(X: da.Array, rows: IntArray) -> da.Array:
    """The sorted `rows` of X, chunk by chunk: each result chunk comes from one chunk of X.

    (`X[rows]` would rechunk the result evenly, so that a task concatenates pieces of several
    source chunks, possibly from several workers.)
    """
    import dask.array as da

    bounds = np.cumsum((0, *X.chunks[0]))
    parts = []
    for i in range(X.numblocks[0]):
        lo, hi = np.searchsorted(rows, [bounds[i], bounds[i + 1]])
        if hi > lo:
            local = rows[lo:hi] - bounds[i]
            parts.append(
                X.blocks[i].map_blocks(
                    _take, rows=local, chunks=((hi - lo,), (X.shape[1],)), dtype=X.dtype
                )
            )
    return da.concatenate(parts, axis=0)


def _labels_like(y: IntArray, X: da.Array) -> da.Array:
    import dask.array as da

    return da.from_array(y, chunks=(X.chunks[0],))


def from_dataset(data: Dataset, chunk_rows: int) -> DaskData:
    """An in-memory split (digits, IDX files) as Dask arrays: the same rows, chunked."""
    import dask.array as da

    X_train = da.from_array(data.X_train, chunks=(chunk_rows, data.n_features))
    X_test = da.from_array(data.X_test, chunks=(chunk_rows, data.n_features))
    return DaskData(
        data.name,
        data.split,
        data.classes,
        X_train,
        _labels_like(data.y_train, X_train),
        X_test,
        _labels_like(data.y_test, X_test),
    )


def from_files(
    x_spec: str,
    y_spec: str,
    test_size: float,
    seed: int,
    chunk_rows: int | None,
    n_classes: int | None,
) -> DaskData:
    """Shards on disk, split as `load_npy_dataset` splits (same rows for the same seed).

    Labels are read on the client (they are 1/d of the data); the features stay lazy. The split's
    rows are taken in file order, so each chunk task reads one contiguous stretch of a shard.
    """
    X_shards = open_shards(x_spec, "X")
    y_shards = open_shards(y_spec, "y")
    pair_shards(X_shards, y_shards)
    y, K = read_labels(y_shards, n_classes)
    d = X_shards[0].shape[1]
    rows = chunk_rows or default_chunk_rows(d)
    X = lazy_features(X_shards, rows, check=False)
    X_checked = lazy_features(X_shards, rows, check=True)
    train, test = (as_index(part) for part in stratified_split(y, test_size, seed))
    X_train, X_test = take_rows(X, train), take_rows(X, test)
    checked = (take_rows(X_checked, train), take_rows(X_checked, test))
    name = X_shards[0].path if len(X_shards) == 1 else x_spec
    split = f"stratified {1 - test_size:g}/{test_size:g}, seed {seed}"
    return DaskData(
        str(name),
        split,
        tuple(str(k) for k in range(K)),
        X_train,
        _labels_like(y[train], X_train),
        X_test,
        _labels_like(y[test], X_test),
        checked,
    )


# ---------------------------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------------------------


@contextmanager
def start_client(
    scheduler: str | None,
    workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = "auto",
) -> Iterator[Client]:
    """A client on `scheduler`, or on a new `LocalCluster` of worker processes (closed after)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise DaskEngineError(f"--scheduler {scheduler!r}: cannot connect ({exc})") from exc
        with client:
            yield client
        return
    # NOTE: processes, not threads: the memory limit is only enforced for worker processes, and
    # the GEMMs then do not contend for one interpreter. The HTTP server takes a free port (8787,
    # the default, may be another cluster's).
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=":0",
            # A bad chunk is reported once, on the client, as one line: not by every worker.
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def total_memory_limit(client: Client) -> int:
    """The workers' memory limits added up (0 when any worker has none)."""
    limits = [int(w.get("memory_limit") or 0) for w in client.scheduler_info()["workers"].values()]
    return 0 if not limits or 0 in limits else sum(limits)


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


class DaskBackend:
    """The emitted module, the data and the client: objective, metrics and both optimizers."""

    def __init__(self, client: Client, source: str, data: DaskData, persist: str = "auto"):
        self.client, self.source, self.data = client, source, data
        self.d, self.k = data.n_features, data.n_classes
        self.persisted = persist == "yes" or (
            persist == "auto"
            and (
                (limit := total_memory_limit(client)) == 0
                or data.nbytes <= PERSIST_FRACTION * limit
            )
        )
        self.passes = 0
        #: False keeps every step its own task (for profiling: reading, compute and reduction
        #: then show up separately); True lets Dask fuse them, as it should when fitting.
        self.optimize_graph = True
        self._prepare()

    def _prepare(self) -> None:
        """Read every chunk once with its checks; keep the arrays in memory if they fit.

        Errors in the data (NaN, inf) surface here, before any fitting or writing.
        """
        import dask

        data = self.data
        checked = data.checked or (data.X_train, data.X_test)
        if self.persisted:
            (data.X_train, data.y_train, data.X_test, data.y_test) = self.client.persist(
                [checked[0], data.y_train, checked[1], data.y_test]
            )
            checked = (data.X_train, data.X_test)
        # NOTE: one compute for both splits: their chunks share the reading tasks (same keys).
        checks = [
            x.map_blocks(_check_chunk, chunks=((1,) * x.numblocks[0], (1,)), dtype=np.float64)
            for x in checked
        ]
        # Raises the first failing chunk's own exception (a DatasetError naming shard and row).
        dask.compute(*checks)

    # -------------------------------------------------------------------- passes over the data

    def _reduce(
        self,
        fn: Callable[..., FloatArray],
        X: da.Array,
        y: da.Array,
        theta: FloatArray,
        width: int,
        l2: float = 0.0,
    ) -> FloatArray:
        """`fn` on every chunk, added up by Dask's tree reduction, one pass over X."""
        blocks = X.map_blocks(
            fn,
            y[:, None],
            theta=theta,
            source=self.source,
            d=self.d,
            k=self.k,
            l2=l2,
            chunks=((1,) * X.numblocks[0], (width,)),
            dtype=np.float64,
        )
        self.passes += 1
        total = blocks.sum(axis=0, split_every=SPLIT_EVERY)
        return np.asarray(total.compute(optimize_graph=self.optimize_graph))

    def sums(self, theta: FloatArray, l2: float = 0.0) -> tuple[float, FloatArray, FloatArray]:
        """Mean loss over the training rows and its gradients, with the module's weight decay."""
        d, k = self.d, self.k
        total = self._reduce(
            chunk_sums, self.data.X_train, self.data.y_train, theta, 1 + d * k + k, l2
        )
        n = self.data.X_train.shape[0]
        return float(total[0]) / n, total[1 : 1 + d * k].reshape(d, k) / n, total[1 + d * k :] / n

    def objective(self, theta: FloatArray, l2: float) -> tuple[float, FloatArray]:
        """F(theta) and its gradient, flat: the mean loss plus (l2 / 2) ||W||^2 (as in memory)."""
        loss, dW, db = self.sums(theta, l2)
        return loss, np.concatenate([np.ravel(dW), db])

    def _metrics(
        self, theta: FloatArray, X: da.Array, y: da.Array, l2: float = 0.0
    ) -> tuple[float, float, IntArray]:
        k = self.k
        total = self._reduce(chunk_metrics, X, y, theta, 2 + k * k, l2)
        confusion = np.rint(total[2:]).astype(np.int64).reshape(k, k)
        return float(total[0]) / X.shape[0], float(total[1]) / X.shape[0], confusion

    def evaluate(self, W: FloatArray, b: FloatArray, l2: float, step: int) -> EpochRecord:
        """Losses and accuracies on both splits: one pass over each."""
        theta = np.concatenate([np.ravel(W), b])
        train = self.data.X_train, self.data.y_train
        train_loss, train_objective, train_cm = self._metrics(theta, *train, l2)
        test_loss, _, test_cm = self._metrics(theta, self.data.X_test, self.data.y_test)
        return EpochRecord(
            step=step,
            train_loss=train_loss,
            train_objective=train_objective,
            train_acc=float(np.trace(train_cm)) / max(int(train_cm.sum()), 1),
            test_loss=test_loss,
            test_acc=float(np.trace(test_cm)) / max(int(test_cm.sum()), 1),
        )

    def confusion(self, W: FloatArray, b: FloatArray) -> IntArray:
        theta = np.concatenate([np.ravel(W), b])
        return self._metrics(theta, self.data.X_test, self.data.y_test)[2]

    # -------------------------------------------------------------------- optimizers

    def fit_lbfgs(self, config: TrainConfig, monitor: Monitor | None = None) -> FitResult:
        """Full-batch L-BFGS-B from zero, one pass over the data per objective evaluation."""
        size = self.d * self.k + self.k
        return run_lbfgs(
            lambda theta: self.objective(theta, config.l2),
            np.zeros(size),
            self.d,
            self.k,
            config,
            monitor,
        )

    def fit_sgd(
        self,
        config: TrainConfig,
        monitor: Monitor | None = None,
        wrap_batches: BatchWrapper | None = None,
    ) -> FitResult:
        """Minibatch SGD, chunks in a new random order each epoch, rows shuffled in each chunk."""
        import dask

        rng = np.random.default_rng(config.seed)
        W: FloatArray = rng.normal(0.0, 0.01, size=(self.d, self.k))
        b: FloatArray = np.zeros(self.k)
        xs = self.data.X_train.to_delayed().ravel()
        ys = self.data.y_train.to_delayed().ravel()
        seconds = 0.0
        for epoch in range(1, config.epochs + 1):
            start = time.perf_counter()
            state: Any = (W, b)
            order = rng.permutation(len(xs))
            seeds = rng.integers(0, 2**63 - 1, size=len(xs))
            for i in order:
                state = dask.delayed(sgd_chunk, pure=True)(
                    xs[i],
                    ys[i],
                    state,
                    self.source,
                    config.lr,
                    config.l2,
                    config.batch_size,
                    int(seeds[i]),
                )
            W, b = cast(tuple[FloatArray, FloatArray], dask.compute(state)[0])
            self.passes += 1
            seconds += time.perf_counter() - start
            if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
                return FitResult(
                    W, b, seconds, epoch, False, f"diverged in epoch {epoch}: lower --lr"
                )
            if monitor is not None:
                monitor(epoch, W, b)
        return FitResult(W, b, seconds, config.epochs, True, "all epochs done")

    def fit(
        self,
        config: TrainConfig,
        monitor: Monitor | None = None,
        wrap_batches: BatchWrapper | None = None,
    ) -> FitResult:
        if config.optimizer == "lbfgs":
            return self.fit_lbfgs(config, monitor)
        if config.optimizer == "sgd":
            return self.fit_sgd(config, monitor, wrap_batches)
        raise DeriveError(f"--optimizer {config.optimizer!r}: expected 'sgd' or 'lbfgs'")


def peak_rss() -> int:
    """This process's peak resident memory in bytes (run on each worker with `client.run`).

    NOTE: Linux's VmHWM, the high-water mark of this address space. `ru_maxrss` would be wrong
    here: it survives fork and exec, so a worker would report its parent's peak if larger.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def default_chunk_rows(d: int) -> int:
    """Rows per chunk of about `CHUNK_BYTES` of float64."""
    return chunk_rows_for(d, CHUNK_BYTES)


def module_source(model: object) -> str:
    """The text of an emitted module, to be compiled on the workers."""
    path = getattr(model, "__file__", None)
    if path is None:
        raise DeriveError("--engine dask: the emitted module has no file to send to the workers")
    return Path(path).read_text(encoding="utf-8")


@contextmanager
def open_backend(
    model: object,
    scheduler: str | None,
    workers: int,
    memory_limit: str | int | None,
    persist: str,
    make_data: Callable[[int | None], DaskData],
    chunk_rows: int | None = None,
) -> Iterator[DaskBackend]:
    """Start (or reach) the cluster, open the data, read and check it once; closed after."""
    from distributed import KilledWorker

    source = module_source(model)
    data = make_data(chunk_rows)
    with start_client(scheduler, workers, 1, memory_limit) as client:
        try:
            yield DaskBackend(client, source, data, persist)
        except KilledWorker as exc:
            raise DaskEngineError(
                f"a Dask worker died while running {exc.task!r} (out of memory? raise "
                "--memory-limit, lower --chunk-rows, or --persist no)"
            ) from exc


def memory_limit_arg(text: str) -> str | int | None:
    """`--memory-limit`: 'auto', '0'/'none' (no limit) or a size such as '2GiB'."""
    if text.lower() in ("0", "none"):
        return None
    if text == "auto":
        return text
    from dask.utils import parse_bytes

    try:
        value = int(parse_bytes(text))
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"--memory-limit {text!r}: expected a size such as 2GiB") from exc
    if value <= 0 or not math.isfinite(value):
        raise DatasetError(f"--memory-limit {text!r}: expected a positive size")
    return value
