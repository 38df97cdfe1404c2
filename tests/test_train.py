"""`derive train` (derive/train.py), driven through `add_train_arguments` + `run_train` as the CLI
does, on digits with a 25% stratified test split, seed 0.

Acceptance tolerances, and why they are what they are:
- SGD vs scikit-learn test accuracy: within 1 point (0.01), the issue's criterion. The test set has
  450 samples, so one point is 4.5 samples; SGD with a fixed step ends near, not at, the optimum.
  `test_d2l_budget_is_too_short_for_digits` shows the same assertion failing when SGD is given
  too few steps, so it can fail.
- L-BFGS vs scikit-learn objective: relative 1e-6, the issue's criterion. Both stop at
  gtol = 1e-8, where the objective is within ~1e-12 of the optimum (measured gap ~1e-13), so
  1e-6 leaves room for BLAS rounding differences yet is far below what a wrong penalty scaling
  gives (`test_wrong_C_is_detected`: ~1e-1).
- L-BFGS vs scikit-learn accuracy: equal. At relative objective gap 1e-13 the two weight matrices
  agree to ~1e-6 and no digits test sample sits that close to a decision boundary.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from derive.cli import main
from derive.output.loader import GENERATED_DIR
from derive.train.cli import add_train_arguments, run_train
from derive.train.compare import fit_sklearn, sklearn_C
from derive.train.data import load_digits_dataset
from derive.train.objective import TrainConfig, load_model, objective_and_grad
from derive.train.optimizers import blas_threads, fit_lbfgs

MODULE = GENERATED_DIR / "softmax_regression_l2.py"


def write_mnist(folder: Path, n_train: int, n_test: int, side: int) -> None:
    """Four gzipped IDX files of random images, labels cycling through 0..9."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for name, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
            header += struct.pack(f">{array.ndim}I", *array.shape)
            (folder / f"{prefix}-{name}.gz").write_bytes(gzip.compress(header + array.tobytes()))


@pytest.fixture(scope="module")
def module_path() -> str:
    if not MODULE.is_file():
        pytest.skip(f"{MODULE} not emitted yet (run `derive emit`)")
    return str(MODULE)


def train(module_path: str, *argv: str) -> int:
    """`derive train` as the command runs it: user errors are one line and exit code 2."""
    return main(["train", "--module", module_path, "--quiet", *argv])


def train_json(module_path: str, tmp_path: Path, *argv: str) -> dict[str, Any]:
    out = tmp_path / "summary.json"
    assert train(module_path, *argv, "--json", str(out)) == 0
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


# --- acceptance: digits, 25% stratified, seed 0 -------------------------------------------------


@pytest.mark.slow
def test_sgd_reaches_sklearn_accuracy(module_path: str, tmp_path: Path) -> None:
    # d2l's lr; a smaller batch and more epochs, since digits has 1347 training samples where
    # Fashion-MNIST has 60000 (10 epochs of 256 = 60 steps here, against 2350 there).
    args = ["--optimizer", "sgd", "--epochs", "100", "--batch-size", "32", "--compare-sklearn"]
    doc = train_json(module_path, tmp_path, *args)
    cmp = doc["sklearn_comparison"]
    assert cmp["derive"]["test_acc"] >= cmp["sklearn"]["test_acc"] - 0.01
    assert doc["final"]["test_acc"] == cmp["derive"]["test_acc"]
    assert cmp["sklearn"]["converged"]


def test_d2l_budget_is_too_short_for_digits(module_path: str, tmp_path: Path) -> None:
    doc = train_json(module_path, tmp_path, "--preset", "d2l", "--compare-sklearn")
    assert doc["config"] | {"seed": 0} == {
        "optimizer": "sgd",
        "epochs": 10,
        "batch_size": 256,
        "lr": 0.1,
        "l2": 0.0,
        "seed": 0,
        "max_iter": 1000,
        "tol": 1e-8,
    }
    cmp = doc["sklearn_comparison"]
    assert cmp["derive"]["test_acc"] < cmp["sklearn"]["test_acc"] - 0.01
    assert [r["step"] for r in doc["history"]] == list(range(1, 11))


def test_a_flag_wins_over_its_preset(module_path: str, tmp_path: Path) -> None:
    doc = train_json(module_path, tmp_path, "--preset", "d2l", "--epochs", "2", "--l2", "1e-3")
    assert doc["config"]["optimizer"] == "sgd" and doc["config"]["epochs"] == 2
    assert doc["config"]["l2"] == 1e-3


def test_defaults_are_within_a_point_of_sklearn_on_digits(module_path: str, tmp_path: Path) -> None:
    """No flags: test accuracy within 1 point of scikit-learn's LogisticRegression() with its
    own defaults, fitted here independently on the same split."""
    from sklearn.linear_model import LogisticRegression

    doc = train_json(module_path, tmp_path)
    data = load_digits_dataset(0.25, 0)
    with blas_threads(1):
        reference = LogisticRegression().fit(data.X_train, data.y_train)
    theirs = float(reference.score(data.X_test, data.y_test))
    assert doc["config"]["optimizer"] == "lbfgs"
    assert doc["config"]["l2"] == pytest.approx(1 / 1347, rel=1e-15)  # C = 1 on 1347 rows
    assert abs(doc["final"]["test_acc"] - theirs) <= 0.01, (doc["final"]["test_acc"], theirs)


def test_lbfgs_reaches_sklearn_objective_and_accuracy(module_path: str, tmp_path: Path) -> None:
    args = ["--optimizer", "lbfgs", "--l2", "1e-3", "--compare-sklearn"]
    doc = train_json(module_path, tmp_path, *args)
    cmp = doc["sklearn_comparison"]
    ours, theirs = cmp["derive"], cmp["sklearn"]
    assert doc["fit"]["converged"] and theirs["converged"]
    assert abs(cmp["relative_objective_gap"]) < 1e-6
    # Both objectives at both solutions: each solution is optimal for both objectives.
    rel = abs(ours["objective_sklearn"] - theirs["objective_sklearn"]) / theirs["objective_sklearn"]
    assert rel < 1e-6
    assert ours["test_acc"] == theirs["test_acc"]
    assert ours["train_acc"] == theirs["train_acc"]
    assert cmp["C"] == pytest.approx(1 / (1347 * 1e-3), rel=1e-15)


def test_wrong_C_is_detected(module_path: str) -> None:
    """The objective check can fail: C = 1/l2 (forgetting n) gives a clearly worse F."""
    model = load_model(module_path)
    data = load_digits_dataset(0.25, 0)
    X, y, l2 = data.X_train, data.y_train, 1e-3
    with blas_threads(1):
        right = fit_sklearn(X, y, 10, l2)
        wrong = fit_sklearn(X, y, 10, l2, C=1 / l2)
    f_right = objective_and_grad(model, X, y, right.W, right.b, l2)[0]
    f_wrong = objective_and_grad(model, X, y, wrong.W, wrong.b, l2)[0]
    assert (f_wrong - f_right) / f_right > 1e-2


def test_two_classes_use_sklearns_binary_C(module_path: str, tmp_path: Path) -> None:
    """K = 2: scikit-learn fits one vector, so the equivalent C doubles (see sklearn_C)."""
    digits = load_digits_dataset(0.25, 0)
    keep = np.isin(digits.y_train, [3, 8])
    np.save(tmp_path / "X.npy", digits.X_train[keep])
    np.save(tmp_path / "y.npy", digits.y_train[keep])
    args = ["--data", str(tmp_path / "X.npy"), str(tmp_path / "y.npy"), "--optimizer", "lbfgs"]
    doc = train_json(module_path, tmp_path, *args, "--l2", "1e-2", "--compare-sklearn")
    cmp = doc["sklearn_comparison"]
    assert abs(cmp["relative_objective_gap"]) < 1e-6
    assert cmp["C"] == pytest.approx(sklearn_C(1e-2, cmp["n_train"], 2))
    assert cmp["C"] == pytest.approx(2 / (cmp["n_train"] * 1e-2))

    model = load_model(module_path)
    data = (digits.X_train[keep], (digits.y_train[keep] == 8).astype(np.int64))
    with blas_threads(1):
        multinomial_C = fit_sklearn(*data, 2, 1e-2, C=1 / (len(data[1]) * 1e-2))
    f_wrong = objective_and_grad(model, *data, multinomial_C.W, multinomial_C.b, 1e-2)[0]
    assert (f_wrong - doc["final"]["train_objective"]) / f_wrong > 1e-3


def test_training_goes_through_the_module(module_path: str, tmp_path: Path) -> None:
    """A module whose gradient lacks the 1/n factor no longer reaches scikit-learn's optimum."""
    broken = tmp_path / "broken.py"
    broken.write_text(
        "from derive.output.loader import load_module_from_path\n"
        f"_m = load_module_from_path({module_path!r}, '_train_test_real')\n"
        "predict = _m.predict\n"
        "def loss_and_grad(X, y, W, b, check=True, *, lam=0.0):\n"
        "    loss, dW, db = _m.loss_and_grad(X, y, W, b, check=check, lam=lam)\n"
        "    return loss, dW * X.shape[0], db * X.shape[0]\n"
    )
    doc = train_json(str(broken), tmp_path, "--optimizer", "lbfgs", "--compare-sklearn")
    assert abs(doc["sklearn_comparison"]["relative_objective_gap"]) > 1e-6


# --- behaviour of the command ------------------------------------------------------------------


def test_outputs_plot_json_npz(
    module_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()  # an output's folder must exist: train never creates folders silently
    code = train(
        module_path,
        "--preset", "d2l",
        "--epochs", "3",
        "--plot", str(out / "fig.png"),
        "--json", str(out / "run.json"),
        "--save", str(out / "model"),
    )  # fmt: skip
    assert code == 0
    assert (out / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(out / "model", allow_pickle=False) as saved:  # name kept exactly as given
        assert saved["W"].shape == (64, 10) and saved["b"].shape == (10,)
        assert saved["classes"].tolist() == [str(k) for k in range(10)]
    doc = json.loads((out / "run.json").read_text())
    assert doc["dataset"]["n_test"] == 450 and doc["dataset"]["n_train"] == 1347
    assert doc["config"]["optimizer"] == "sgd" and doc["config"]["batch_size"] == 256
    assert np.sum(doc["confusion_matrix"]) == 450
    assert doc["sklearn_comparison"] is None
    printed = capsys.readouterr().out
    assert "epoch   1" not in printed  # --quiet: no per-epoch lines
    assert "final: " in printed


def test_one_line_per_epoch(module_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    argv = ["--module", module_path, "--preset", "d2l", "--epochs", "4"]
    assert run_train(parser.parse_args(argv)) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 4
    assert all("train loss" in x and "train acc" in x and "test acc" in x for x in lines)
    assert lines[-1].startswith("epoch   4/4")


def test_seeded_runs_are_reproducible(module_path: str, tmp_path: Path) -> None:
    def saved(seed: str, name: str) -> Any:
        assert (
            train(
                module_path,
                "--preset",
                "d2l",
                "--epochs",
                "2",
                "--seed",
                seed,
                "--save",
                str(tmp_path / name),
            )
            == 0
        )
        with np.load(tmp_path / name) as f:
            return f["W"].copy()

    np.testing.assert_array_equal(saved("0", "a.npz"), saved("0", "b.npz"))
    assert not np.array_equal(saved("0", "a.npz"), saved("1", "c.npz"))


def test_lbfgs_library_call_is_deterministic(module_path: str) -> None:
    model = load_model(module_path)
    data = load_digits_dataset(0.25, 0)
    config = TrainConfig(optimizer="lbfgs", max_iter=20)
    with blas_threads(1):
        a = fit_lbfgs(model, data.X_train, data.y_train, 10, config)
        b = fit_lbfgs(model, data.X_train, data.y_train, 10, config)
    np.testing.assert_array_equal(a.W, b.W)
    assert a.n_iter == 20 and not a.converged  # stopped by max_iter, and says so


def test_idx_dataset_from_folder(module_path: str, tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=60, n_test=20, side=5)
    doc = train_json(module_path, tmp_path, "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert doc["dataset"]["n_features"] == 25 and doc["dataset"]["n_test"] == 20
    assert doc["dataset"]["split"] == "official train/t10k"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--dataset", "fashion-mnist"], "needs --data-dir"),
        (["--dataset", "fashion-mnist", "--data-dir", "{tmp}"], "zalandoresearch/fashion-mnist"),
        (["--data", "{tmp}/X.npy", "{tmp}/y.npy"], "no such file"),
        (["--json", "{tmp}/file.txt/run.json"], "--json"),
    ],
    ids=["no-dir", "empty-dir", "no-npy", "unwritable"],
)
def test_errors_are_reported_not_raised(
    module_path: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    fragment: str,
) -> None:
    (tmp_path / "file.txt").write_text("a file where a folder should be")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert train(module_path, "--epochs", "1", *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("derive: error: ") and fragment in err and err.count("\n") == 1


def test_bad_module_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    assert train(str(tmp_path / "empty.py")) == 2
    assert "is not an emitted module (it has no function loss_and_grad" in capsys.readouterr().err


def test_missing_extra_says_what_to_install(
    module_path: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` fail
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert train(module_path, "--plot", "x.png") == 2
    err = capsys.readouterr().err
    assert 'pip install -e ".[train]"' in err
    assert "scikit-learn (for --dataset digits)" in err and "matplotlib (for --plot)" in err


@pytest.mark.parametrize(
    "argv",
    [["--lr", "0"], ["--epochs", "0"], ["--test-size", "1"], ["--l2", "-1"], ["--lr", "nan"]],
)
def test_bad_numbers_are_usage_errors(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2


@pytest.mark.slow
def test_sklearn_is_scored_with_its_own_predict() -> None:
    """A module whose `predict` is wrong (argmin) lowers only its own accuracy, not sklearn's."""
    from dataclasses import replace as dc_replace
    from types import SimpleNamespace

    from derive.train.compare import compare_with_sklearn
    from derive.train.objective import FitResult

    data = load_digits_dataset()
    real = load_model(MODULE)
    argmin = SimpleNamespace(**{n: getattr(real, n) for n in dir(real) if not n.startswith("__")})
    argmin.predict = lambda X, W, b: np.argmin(X @ W + b, axis=1)
    config = TrainConfig(optimizer="lbfgs", l2=1e-3)
    K, d = data.n_classes, data.X_train.shape[1]
    W, b = np.zeros((d, K)), np.zeros(K)
    result = FitResult(W=W, b=b, seconds=0.0, n_iter=0, converged=True, message="")
    good = compare_with_sklearn(real, data, result, config)
    bad = compare_with_sklearn(argmin, data, dc_replace(result), config)  # type: ignore[arg-type]
    assert bad["sklearn"]["test_acc"] == good["sklearn"]["test_acc"] > 0.9
