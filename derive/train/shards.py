"""Data on disk for the Dask engine: `.npy` files, folders or globs of `.npy` shards, Zarr arrays.

Contract: `open_shards(spec, what)` resolves what the user named into shards, reading headers
only; `lazy_features(shards, chunk_rows)` is a Dask array of float64 rows whose chunks are read
inside their tasks (memory-mapped `.npy`, or Zarr) and never span two shards; `read_labels` reads
the labels, which are small, on the client. Everything wrong with the input raises `DatasetError`
naming the shard and, where one row is at fault, the row (in the shard and in the whole data set),
before anything is fitted or written: headers and labels here, features in `check_features`.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from derive.train.data import DatasetError, FloatArray, IntArray

if TYPE_CHECKING:
    import dask.array as da

GLOB_CHARS: Final = frozenset("*?[")


@dataclass(frozen=True)
class Shard:
    """One file (or Zarr array) of rows: where it is, its shape, and its first row in the data."""

    path: str
    kind: str  # "npy" or "zarr"
    shape: tuple[int, ...]
    dtype: str
    first_row: int

    @property
    def rows(self) -> int:
        return self.shape[0]


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or any(
        (path / meta).is_file() for meta in (".zarray", "zarr.json")
    )


def _paths(spec: str, what: str) -> list[tuple[Path, str]]:
    """The shard files `spec` names, in sorted order, each with its kind."""
    path = Path(spec)
    if GLOB_CHARS & set(spec):
        found = sorted(Path(p) for p in glob.glob(spec))
        if not found:
            raise DatasetError(f"--data {what} {spec!r}: the pattern matches no file")
        return [(p, "zarr" if _is_zarr(p) else "npy") for p in found]
    if not path.exists():
        raise DatasetError(f"--data {what} {spec!r}: no such file or folder")
    if path.is_dir() and _is_zarr(path):
        return [(path, "zarr")]
    if path.is_dir():
        found = sorted(path.glob("*.npy"))
        if not found:
            raise DatasetError(f"--data {what} {spec!r}: the folder holds no .npy file")
        return [(p, "npy") for p in found]
    return [(path, "npy")]


def _open(path: str, kind: str) -> Any:
    """The array of one shard without reading it: a read-only memory map, or a Zarr array."""
    if kind == "zarr":
        import zarr

        return zarr.open_array(path, mode="r")
    # NOTE: np.load with mmap_mode never unpickles (object arrays raise ValueError).
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _header(path: Path, kind: str, what: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    try:
        array = _open(str(path), kind)
    except ImportError as exc:
        raise DatasetError(
            f"--data {what} {str(path)!r}: reading Zarr needs the zarr package "
            "(pip install 'softmax-derive[dask]')"
        ) from exc
    except Exception as exc:
        # NOTE: broad on purpose: NumPy and Zarr raise a dozen types for a damaged file.
        raise DatasetError(
            f"--data {what} {str(path)!r}: not a readable {kind} array ({exc})"
        ) from exc
    return tuple(int(s) for s in array.shape), np.dtype(array.dtype)


def open_shards(spec: str, what: str) -> list[Shard]:
    """The shards of `spec` (a file, a folder of .npy files, a glob, a .zarr), headers checked.

    `what` is "X" (2-D real numbers, every shard as wide as the first) or "y" (1-D labels).
    """
    shards: list[Shard] = []
    first_row = 0
    for path, kind in _paths(spec, what):
        shape, dtype = _header(path, kind, what)
        name = f"--data {what} shard {str(path)!r}"
        if what == "X":
            if len(shape) != 2 or shape[1] == 0:
                raise DatasetError(f"{name}: expected a 2-D array (rows, features), got {shape}")
            if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(
                dtype, np.complexfloating
            ):
                raise DatasetError(f"{name}: expected real numbers, got dtype {dtype}")
            if shards and shape[1] != shards[0].shape[1]:
                raise DatasetError(
                    f"{name}: row 0 (row {first_row} of the data) has {shape[1]} columns, but "
                    f"the rows of shard {shards[0].path!r} have {shards[0].shape[1]}: all shards "
                    "must have the same width"
                )
        elif len(shape) != 1:
            raise DatasetError(f"{name}: expected a 1-D array of labels, got shape {shape}")
        shards.append(Shard(str(path), kind, shape, str(dtype), first_row))
        first_row += shape[0]
    if first_row == 0:
        raise DatasetError(f"--data {what} {spec!r}: 0 rows")
    return shards


def pair_shards(X: list[Shard], y: list[Shard]) -> None:
    """X and y shards must pair up one to one with equal row counts (same sorted order)."""
    if len(X) != len(y):
        raise DatasetError(
            f"--data: {len(X)} X shard(s) but {len(y)} y shard(s); they pair up in sorted order"
        )
    for xs, ys in zip(X, y, strict=True):
        if xs.rows != ys.rows:
            raise DatasetError(
                f"--data y shard {ys.path!r}: {ys.rows} labels but X shard {xs.path!r} has "
                f"{xs.rows} rows"
            )


def read_labels(shards: list[Shard], n_classes: int | None) -> tuple[IntArray, int]:
    """All labels as int64 `0 … K-1`, and K (`n_classes`, or the largest label + 1).

    Labels must be whole numbers in range; without `n_classes`, every class below the largest
    label must occur, so that one stray large label is reported instead of becoming a class.
    """
    parts: list[IntArray] = []
    for shard in shards:
        name = f"--data y shard {shard.path!r}"
        raw = np.asarray(_open(shard.path, shard.kind)[:])
        if np.issubdtype(raw.dtype, np.floating):
            whole = np.isfinite(raw) & (raw == np.round(raw))
            if not whole.all():
                row = int(np.argmin(whole))
                raise DatasetError(
                    f"{name}: row {row} (row {shard.first_row + row} of the data): label "
                    f"{raw[row]!r} is not a whole number"
                )
        elif not (np.issubdtype(raw.dtype, np.integer) or raw.dtype == np.bool_):
            raise DatasetError(f"{name}: expected integer class labels, got dtype {raw.dtype}")
        labels = raw.astype(np.int64)
        low = labels < 0
        high = labels >= n_classes if n_classes is not None else np.zeros_like(low)
        if low.any() or high.any():
            row = int(np.argmax(low | high))
            allowed = "0 or more" if n_classes is None else f"0..{n_classes - 1}"
            raise DatasetError(
                f"{name}: row {row} (row {shard.first_row + row} of the data): label "
                f"{int(labels[row])} out of range (expected {allowed})"
            )
        parts.append(labels)
    y = np.concatenate(parts)
    K = n_classes if n_classes is not None else int(y.max()) + 1
    counts = np.bincount(y, minlength=K)
    if n_classes is None and (counts == 0).any():
        top = int(y.max())
        at = int(np.argmax(y == top))
        shard = next(s for s in reversed(shards) if s.first_row <= at)
        missing = np.flatnonzero(counts == 0)
        raise DatasetError(
            f"--data y shard {shard.path!r}: row {at - shard.first_row} (row {at} of the data): "
            f"label {top} makes {K} classes, but {len(missing)} of them never occur (first: "
            f"{int(missing[0])}); pass --n-classes if that is intended"
        )
    if K < 2:
        raise DatasetError(f"--data y: need at least 2 classes, found {K}")
    return y, K


def read_rows(
    path: str, kind: str, start: int, stop: int, first_row: int, check: bool
) -> FloatArray:
    """Rows `start:stop` of one shard as float64, copied out of the map (runs in a task).

    With `check`, a row holding NaN or inf is an error naming the shard and the row.
    """
    block: FloatArray = np.array(_open(path, kind)[start:stop], dtype=np.float64)
    if check:
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise DatasetError(
                f"--data X shard {path!r}: row {row} (row {first_row + row} of the data) holds "
                "NaN or inf"
            )
    return block


def lazy_features(shards: list[Shard], chunk_rows: int, check: bool) -> da.Array:
    """The rows of all shards as one Dask array (n, d) of float64, chunked by rows per shard."""
    import dask
    import dask.array as da

    d = shards[0].shape[1]
    pieces = []
    for shard in shards:
        for start in range(0, shard.rows, chunk_rows):
            stop = min(start + chunk_rows, shard.rows)
            task = dask.delayed(read_rows, pure=True)(
                shard.path, shard.kind, start, stop, shard.first_row, check
            )
            pieces.append(da.from_delayed(task, shape=(stop - start, d), dtype=np.float64))
    return da.concatenate(pieces, axis=0)


def chunk_rows_for(d: int, target_bytes: int) -> int:
    """Rows per chunk so that one float64 chunk is about `target_bytes`."""
    return max(1, target_bytes // (8 * d))


def as_index(values: npt.ArrayLike) -> IntArray:
    """Sorted int64 row indices (a split's rows in file order: chunks are read in order)."""
    return np.sort(np.asarray(values, dtype=np.int64))
