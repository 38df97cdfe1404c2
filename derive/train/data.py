"""Datasets for `derive train`: digits, MNIST / Fashion-MNIST IDX files, and the user's own arrays.

Contract: every loader returns a `Dataset` of float features scaled to a small range and integer
labels `0 … K-1`, already split into train and test parts. Anything wrong with the input (missing or
corrupt files, mismatched lengths, NaN, too few samples to split) raises `DatasetError` naming the
file or argument at fault; a loader never returns garbage and never lets a bare `struct.error`,
`EOFError` or `zlib.error` escape.

The IDX reader is written here rather than taken from torchvision/keras so that training on
MNIST-format files needs nothing beyond NumPy, and so that each way a file can be damaged has a
message a user can act on (see `read_idx`).
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from derive.errors import DeriveError

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.int64]


class DatasetError(DeriveError):
    """A dataset could not be found, read or split; the message names the file or argument."""


@dataclass(frozen=True)
class Dataset:
    """A train/test split ready for training.

    `classes[k]` is the display name of label `k`; labels are always `0 … K-1` so they can index the
    columns of the weight matrix directly.
    """

    name: str
    X_train: FloatArray
    y_train: IntArray
    X_test: FloatArray
    y_test: IntArray
    classes: tuple[str, ...]
    split: str

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------------------------
# IDX files (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS FOR THE MNIST DATABASE")
# ---------------------------------------------------------------------------------------------

# Type byte -> big-endian NumPy dtype, as the format defines them.
IDX_DTYPES: Final[dict[int, np.dtype[np.generic]]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# NOTE: a bound on the element count declared in a header, so that a corrupt header such as
# 0xFFFFFFFF x 0xFFFFFFFF is reported as corrupt instead of being trusted for an allocation.
# Full MNIST training images are 47 million bytes; this leaves two orders of magnitude of room.
MAX_IDX_ELEMENTS: Final = 2**32

GZIP_MAGIC: Final = b"\x1f\x8b"

IDX_FILES: Final[dict[str, str]] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Where the four files of each IDX dataset are published (named in the "files missing" error).
IDX_SOURCES: Final[dict[str, str]] = {
    "mnist": (
        "http://yann.lecun.com/exdb/mnist/ (mirror used by torchvision: "
        "https://ossci-datasets.s3.amazonaws.com/mnist/)"
    ),
    "fashion-mnist": (
        "https://github.com/zalandoresearch/fashion-mnist (files: "
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/)"
    ),
}

IDX_CLASSES: Final[dict[str, tuple[str, ...]]] = {
    "mnist": tuple(str(k) for k in range(10)),
    "fashion-mnist": (
        "t-shirt/top",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    ),
}


def _read_bytes(path: Path) -> bytes:
    """Read a file, transparently gunzipping it when it starts with the gzip magic.

    The gzip check looks at the content, not the suffix, so `x.gz` that was already unpacked by a
    browser (a common accident) still reads.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def parse_idx(data: bytes, source: str = "<bytes>") -> npt.NDArray[np.generic]:
    """Decode the bytes of one IDX file into an array of its declared type and shape.

    Layout: two zero bytes, a type byte, a byte giving the number of dimensions `ndim`, then `ndim`
    big-endian uint32 sizes, then the data in C order, big-endian. Everything is checked against
    the header before the data is interpreted: a bad magic, an unknown type, a header cut short,
    data shorter (truncated download) or longer (wrong file glued on) than the header says.
    """
    if len(data) < 4:
        raise DatasetError(f"{source}: not an IDX file (only {len(data)} bytes, header needs 4)")
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(
            f"{source}: bad IDX magic number 0x{data[:4].hex()} "
            "(expected 0x0000 followed by a type byte and a dimension count)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DatasetError(f"{source}: unknown IDX type byte 0x{type_code:02X} (known: {known})")
    if ndim == 0:
        raise DatasetError(f"{source}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DatasetError(
            f"{source}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need "
            f"{header_len})"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = math.prod(shape)
    if count > MAX_IDX_ELEMENTS:
        raise DatasetError(f"{source}: implausible IDX shape {shape} (corrupt header?)")
    dtype = IDX_DTYPES[type_code]
    expected = header_len + count * dtype.itemsize
    if len(data) < expected:
        raise DatasetError(
            f"{source}: truncated IDX data: header declares shape {shape} "
            f"({expected} bytes with header) but the file has {len(data)} bytes"
        )
    if len(data) > expected:
        raise DatasetError(
            f"{source}: {len(data) - expected} unexpected bytes after the IDX data of shape "
            f"{shape} (wrong or concatenated file?)"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=header_len)
    # Native byte order, writable copy: the buffer belongs to `data`.
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def read_idx(path: str | Path) -> npt.NDArray[np.generic]:
    """Read an IDX file (gzip-compressed or not); errors name the file."""
    path = Path(path)
    return parse_idx(_read_bytes(path), source=str(path))


def find_idx_file(data_dir: Path, stem: str) -> Path | None:
    """The file for `stem` in `data_dir`: `stem.gz` or `stem`, whichever exists (gz first)."""
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    return None


def _idx_pair(images_path: Path, labels_path: Path, n_classes: int) -> tuple[FloatArray, IntArray]:
    """Read and cross-check one images/labels pair; scale pixels from 0..255 to [0, 1]."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(
            f"{images_path}: expected unsigned-byte images of shape (n, rows, cols), got "
            f"{images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(
            f"{labels_path}: expected unsigned-byte labels of shape (n,), got {labels.dtype} "
            f"of shape {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{labels_path}: {labels.shape[0]} labels but {images_path.name} has "
            f"{images.shape[0]} images"
        )
    if labels.size and int(labels.max()) >= n_classes:
        raise DatasetError(
            f"{labels_path}: label {int(labels.max())} out of range (expected 0..{n_classes - 1})"
        )
    X = images.reshape(images.shape[0], -1).astype(np.float64) / 255.0
    return X, labels.astype(np.int64)


def load_idx_dataset(name: str, data_dir: str | Path) -> Dataset:
    """MNIST or Fashion-MNIST from the four standard IDX files in `data_dir`.

    Uses the official train / t10k split (not `--test-size`): results then compare with published
    numbers for these datasets.
    """
    if name not in IDX_SOURCES:
        raise DatasetError(
            f"dataset {name!r}: not an IDX dataset (expected one of {sorted(IDX_SOURCES)})"
        )
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(
            f"--data-dir {str(data_dir)!r}: no such directory; it should hold the {name} files "
            f"{', '.join(IDX_FILES.values())} (each optionally .gz), published at "
            f"{IDX_SOURCES[name]}"
        )
    found = {key: find_idx_file(data_dir, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] for key, path in found.items() if path is None]
    if missing:
        raise DatasetError(
            f"--data-dir {str(data_dir)!r}: missing {name} file(s) {', '.join(missing)} "
            f"(each as `<name>.gz` or `<name>`); the four files "
            f"{', '.join(IDX_FILES.values())} are published at {IDX_SOURCES[name]}"
        )
    paths = {key: path for key, path in found.items() if path is not None}
    classes = IDX_CLASSES[name]
    X_train, y_train = _idx_pair(paths["train_images"], paths["train_labels"], len(classes))
    X_test, y_test = _idx_pair(paths["test_images"], paths["test_labels"], len(classes))
    if X_train.shape[1] != X_test.shape[1]:
        raise DatasetError(
            f"{paths['test_images']}: images have {X_test.shape[1]} pixels but the training "
            f"images have {X_train.shape[1]}"
        )
    if X_train.shape[0] == 0 or X_test.shape[0] == 0:
        raise DatasetError(f"--data-dir {str(data_dir)!r}: the train or test file holds 0 images")
    return Dataset(name, X_train, y_train, X_test, y_test, classes, split="official train/t10k")


# ---------------------------------------------------------------------------------------------
# Splitting, digits, user arrays
# ---------------------------------------------------------------------------------------------


def stratified_split(y: npt.ArrayLike, test_size: float, seed: int) -> tuple[IntArray, IntArray]:
    """Indices `(train, test)` with each class represented in proportion, reproducibly.

    The number of test samples is `ceil(test_size * n)` (as scikit-learn counts it); it is
    shared out between the classes by largest remainder, so per-class counts differ from
    `test_size * n_c` by less than one. Written here so `--data` and the IDX datasets need no
    scikit-learn, and so the split depends only on `(y, test_size, seed)`.
    """
    labels = np.asarray(y)
    n = labels.shape[0]
    if not 0.0 < test_size < 1.0:
        raise DatasetError(f"--test-size {test_size}: expected a fraction strictly between 0 and 1")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    n_test = math.ceil(test_size * n)
    if n_test < len(classes) or n - n_test < len(classes):
        raise DatasetError(
            f"--test-size {test_size}: {n} samples of {len(classes)} classes cannot be split "
            f"into {n - n_test} train / {n_test} test with every class on both sides"
        )
    if counts.min() < 2:
        rare = classes[np.argmin(counts)]
        raise DatasetError(
            f"labels: class {rare!r} has a single sample; a stratified split needs at least 2"
        )
    quota = counts * (n_test / n)
    per_class = np.floor(quota).astype(np.int64)
    # Largest remainder; ties go to the lower class index (stable sort) for determinism.
    order = np.argsort(-(quota - per_class), kind="stable")
    per_class[order[: n_test - int(per_class.sum())]] += 1
    per_class = np.clip(per_class, 1, counts - 1)
    rng = np.random.default_rng(seed)
    train_parts: list[IntArray] = []
    test_parts: list[IntArray] = []
    for k in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == k))
        test_parts.append(members[: per_class[k]])
        train_parts.append(members[per_class[k] :])
    # Shuffle so that consumers taking a prefix (or plotting) do not see class-sorted blocks.
    train = rng.permutation(np.concatenate(train_parts)).astype(np.int64)
    test = rng.permutation(np.concatenate(test_parts)).astype(np.int64)
    return train, test


def _split(
    name: str,
    X: FloatArray,
    y: IntArray,
    classes: Sequence[str],
    test_size: float,
    seed: int,
) -> Dataset:
    train, test = stratified_split(y, test_size, seed)
    split = f"stratified {1 - test_size:g}/{test_size:g}, seed {seed}"
    return Dataset(name, X[train], y[train], X[test], y[test], tuple(classes), split=split)


def load_digits_dataset(test_size: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1797 samples, 64 features), pixels scaled from 0..16 to [0, 1]."""
    from sklearn.datasets import load_digits  # optional extra `train`

    bunch = load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    return _split("digits", X, y, [str(k) for k in range(10)], test_size, seed)


def _load_npy(path: Path, what: str) -> npt.NDArray[np.generic]:
    try:
        # NOTE: allow_pickle=False: an .npy of objects could run code on load.
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise DatasetError(f"--data {what} {str(path)!r}: no such file") from exc
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(
            f"--data {what} {str(path)!r}: not a readable .npy array ({exc})"
        ) from exc
    if not isinstance(array, np.ndarray):
        raise DatasetError(f"--data {what} {str(path)!r}: expected a single .npy array, not .npz")
    return array


def load_npy_dataset(
    x_path: str | Path, y_path: str | Path, test_size: float = 0.25, seed: int = 0
) -> Dataset:
    """The user's own `X.npy` (n, d) of numbers and `y.npy` (n,) of class labels.

    Labels may be any integers or strings; they are mapped to `0 … K-1` in sorted order and the
    original values kept as class names. Features are used as given (scale them yourself): the
    loader cannot know what range is meaningful.
    """
    x_path, y_path = Path(x_path), Path(y_path)
    X_raw = _load_npy(x_path, "X")
    y = _load_npy(y_path, "y")
    if X_raw.ndim != 2 or X_raw.shape[0] == 0 or X_raw.shape[1] == 0:
        raise DatasetError(
            f"--data X {str(x_path)!r}: expected a non-empty 2-D array, got shape {X_raw.shape}"
        )
    if not (np.issubdtype(X_raw.dtype, np.number) or X_raw.dtype == np.bool_) or np.iscomplexobj(
        X_raw
    ):
        raise DatasetError(
            f"--data X {str(x_path)!r}: expected real numbers, got dtype {X_raw.dtype}"
        )
    X: FloatArray = X_raw.astype(np.float64)
    if not np.all(np.isfinite(X)):
        bad = int(np.count_nonzero(~np.isfinite(X)))
        raise DatasetError(f"--data X {str(x_path)!r}: {bad} NaN or infinite value(s)")
    if y.ndim != 1:
        raise DatasetError(
            f"--data y {str(y_path)!r}: expected a 1-D array of labels, got shape {y.shape}"
        )
    if y.shape[0] != X.shape[0]:
        raise DatasetError(
            f"--data y {str(y_path)!r}: {y.shape[0]} labels but X has {X.shape[0]} rows"
        )
    if np.issubdtype(y.dtype, np.floating):
        y_float = np.asarray(y, dtype=np.float64)
        if not np.all(np.isfinite(y_float)) or not np.all(y_float == np.round(y_float)):
            raise DatasetError(f"--data y {str(y_path)!r}: float labels must be whole numbers")
        y = y_float.astype(np.int64)
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype.kind in "USb"):
        raise DatasetError(
            f"--data y {str(y_path)!r}: expected integer or string labels, got dtype {y.dtype}"
        )
    values, y_idx = np.unique(y, return_inverse=True)
    if len(values) < 2:
        raise DatasetError(
            f"--data y {str(y_path)!r}: need at least 2 classes, found {len(values)}"
        )
    classes = [str(v) for v in values.tolist()]
    return _split(x_path.stem, X, y_idx.astype(np.int64), classes, test_size, seed)
