"""derive.datasets: the IDX reader against files written here (valid and damaged), the MNIST
loader's checks and messages, the stratified split, and the user-array loader."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from derive.errors import DeriveError
from derive.train.data import (
    IDX_FILES,
    DatasetError,
    load_digits_dataset,
    load_idx_dataset,
    load_npy_dataset,
    parse_idx,
    read_idx,
    stratified_split,
)

TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: npt.NDArray[np.generic]) -> bytes:
    """Encode `array` as IDX (independently of the reader: struct for the header)."""
    header = struct.pack(">BBBB", 0, 0, TYPE_CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: npt.NDArray[np.generic], *, gz: bool) -> Path:
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)
    return path


def write_mnist(
    folder: Path, n_train: int = 30, n_test: int = 10, side: int = 4, gz: bool = True
) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    return {key: write_idx(folder / IDX_FILES[key], a, gz=gz) for key, a in arrays.items()}


# --- parse_idx / read_idx ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(TYPE_CODES), ids=str)
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_read_idx_round_trips_every_type(
    tmp_path: Path, dtype: np.dtype[np.generic], gz: bool
) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3", array, gz=gz)
    got = read_idx(path)
    assert got.dtype == dtype and got.dtype.isnative
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, array)
    got[0, 0, 0] = 1  # a writable copy, not a view of the file's bytes


def test_gzip_is_detected_by_content_not_suffix(tmp_path: Path) -> None:
    array = np.arange(5, dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte"  # gzip data without .gz
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(path), array)


GOOD = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "only 0 bytes"),
        (b"\x00\x00", "only 2 bytes"),
        (b"\x08\x03" + GOOD[2:], "bad IDX magic number 0x0803"),
        (b"\x00\x01" + GOOD[2:], "bad IDX magic number"),
        (GOOD[:2] + b"\x07" + GOOD[3:], "unknown IDX type byte 0x07"),
        (GOOD[:3] + b"\x00" + GOOD[4:], "0 dimensions"),
        (GOOD[:9], "truncated IDX header"),
        (GOOD[:-1], "truncated IDX data"),
        (GOOD + b"\x00\x00", "2 unexpected bytes after"),
        (GOOD[:4] + struct.pack(">II", 2**31, 2**31), "implausible IDX shape"),
    ],
    ids=[
        "empty",
        "short",
        "magic-unsigned-byte-first",
        "magic-nonzero",
        "type",
        "ndim0",
        "header-cut",
        "data-cut",
        "trailing",
        "huge",
    ],
)
def test_corrupt_idx_is_refused_with_the_file_name(
    tmp_path: Path, data: bytes, fragment: str
) -> None:
    path = tmp_path / "broken-idx2-ubyte"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=fragment) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, DeriveError)


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))[:-12])
    with pytest.raises(DatasetError, match="corrupt or truncated gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_parse_idx_names_its_source() -> None:
    with pytest.raises(DatasetError, match=r"^somewhere: "):
        parse_idx(b"\x01\x02\x03\x04", source="somewhere")


# --- MNIST-format folders ----------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_load_idx_dataset_reads_official_split(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, n_train=30, n_test=10, side=4, gz=gz)
    data = load_idx_dataset("fashion-mnist", tmp_path)
    assert data.X_train.shape == (30, 16) and data.X_test.shape == (10, 16)
    assert data.X_train.dtype == np.float64
    assert data.X_train.min() >= 0.0 and data.X_train.max() <= 1.0
    np.testing.assert_array_equal(data.y_train, np.arange(30) % 10)
    assert data.classes[9] == "ankle boot" and data.split == "official train/t10k"


def test_missing_files_are_named_with_their_source(tmp_path: Path) -> None:
    paths = write_mnist(tmp_path)
    paths["test_images"].unlink()
    with pytest.raises(DatasetError) as info:
        load_idx_dataset("fashion-mnist", tmp_path)
    message = str(info.value)
    assert "missing fashion-mnist file(s) t10k-images-idx3-ubyte" in message
    assert "zalandoresearch/fashion-mnist" in message
    for stem in IDX_FILES.values():
        assert stem in message


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no such directory.*yann\.lecun\.com"):
        load_idx_dataset("mnist", tmp_path / "nowhere")


def test_label_count_must_match_image_count(tmp_path: Path) -> None:
    paths = write_mnist(tmp_path)
    write_idx(tmp_path / IDX_FILES["train_labels"], np.zeros(29, dtype=np.uint8), gz=True)
    with pytest.raises(
        DatasetError, match=r"29 labels but train-images-idx3-ubyte\.gz has 30"
    ) as info:
        load_idx_dataset("mnist", tmp_path)
    assert str(paths["train_labels"]) in str(info.value)


def test_images_and_labels_swapped_is_caught(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / IDX_FILES["train_images"], np.zeros(30, dtype=np.uint8), gz=True)
    with pytest.raises(
        DatasetError, match=r"expected unsigned-byte images of shape \(n, rows, cols\)"
    ):
        load_idx_dataset("mnist", tmp_path)


def test_label_out_of_range(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / IDX_FILES["test_labels"], np.full(10, 10, dtype=np.uint8), gz=True)
    with pytest.raises(DatasetError, match=r"label 10 out of range \(expected 0..9\)"):
        load_idx_dataset("mnist", tmp_path)


def test_corrupt_member_file_is_named(tmp_path: Path) -> None:
    paths = write_mnist(tmp_path, gz=False)
    paths["test_images"].write_bytes(paths["test_images"].read_bytes()[:-5])
    with pytest.raises(DatasetError, match="truncated IDX data") as info:
        load_idx_dataset("mnist", tmp_path)
    assert str(paths["test_images"]) in str(info.value)


# --- split, digits, user arrays ----------------------------------------------------------------


def test_stratified_split_is_proportional_disjoint_and_reproducible() -> None:
    y = np.repeat(np.arange(4), [40, 30, 20, 10])
    train, test = stratified_split(y, 0.25, seed=3)
    assert len(test) == 25 and len(train) == 75
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    np.testing.assert_array_equal(np.bincount(y[test]), [10, 8, 5, 2])  # 7.5 -> 8 by remainder
    again = stratified_split(y, 0.25, seed=3)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(test, again[1])
    assert not np.array_equal(test, stratified_split(y, 0.25, seed=4)[1])


def test_split_counts_test_samples_like_sklearn() -> None:
    # ceil(0.25 * 1797) = 450, as sklearn's train_test_split would give.
    data = load_digits_dataset(0.25, seed=0)
    assert data.X_test.shape == (450, 64) and data.X_train.shape == (1347, 64)
    assert np.bincount(data.y_test).min() >= 43
    assert data.X_train.min() == 0.0 and data.X_train.max() == 1.0


@pytest.mark.parametrize(
    ("y", "test_size", "fragment"),
    [
        ([0, 0, 1, 1], 1.0, "strictly between 0 and 1"),
        ([0, 0, 0, 1], 0.5, "has a single sample"),
        ([0, 0, 1, 1, 2, 2], 0.1, "cannot be split"),
    ],
)
def test_split_refuses_impossible_requests(y: list[int], test_size: float, fragment: str) -> None:
    with pytest.raises(DatasetError, match=fragment):
        stratified_split(np.array(y), test_size, seed=0)


def test_npy_labels_of_any_kind_map_to_0_k(tmp_path: Path) -> None:
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.array(["cat", "dog"] * 10)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    data = load_npy_dataset(tmp_path / "X.npy", tmp_path / "y.npy", 0.25, seed=0)
    assert data.classes == ("cat", "dog") and data.name == "X"
    assert data.X_train.dtype == np.float64 and data.X_train.shape == (15, 2)
    assert set(data.y_test.tolist()) == {0, 1}


@pytest.mark.parametrize(
    ("X", "y", "fragment"),
    [
        (np.ones((4, 2)), np.zeros(3), "3 labels but X has 4 rows"),
        (np.ones(4), np.zeros(4), "expected a non-empty 2-D array"),
        (np.array([[np.nan, 1.0]] * 4), np.array([0, 1, 0, 1]), "4 NaN or infinite"),
        (np.ones((4, 2)), np.array([0.5, 1, 0, 1]), "whole numbers"),
        (np.ones((4, 2)), np.zeros(4), "at least 2 classes"),
        (np.ones((4, 2)), np.zeros((4, 1)), "expected a 1-D array of labels"),
    ],
    ids=["length", "X-1d", "nan", "float-labels", "one-class", "y-2d"],
)
def test_npy_problems_are_named(
    tmp_path: Path, X: npt.NDArray[np.float64], y: npt.NDArray[np.float64], fragment: str
) -> None:
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(DatasetError, match=fragment):
        load_npy_dataset(tmp_path / "X.npy", tmp_path / "y.npy")


def test_npy_objects_are_not_unpickled(tmp_path: Path) -> None:
    np.save(tmp_path / "X.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.zeros(4))
    with pytest.raises(DatasetError, match=r"not a readable \.npy array"):
        load_npy_dataset(tmp_path / "X.npy", tmp_path / "y.npy")


def test_npy_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_npy_dataset(tmp_path / "X.npy", tmp_path / "y.npy")
