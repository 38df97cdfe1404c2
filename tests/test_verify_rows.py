"""Every row of `derive verify` is shown to fail on the defect it exists for.

Each case takes a committed module, breaks it in exactly one way (a patch appended to its source,
or one edit of it), and runs the row: it must FAIL. The slow part runs `derive verify` on each
broken module as a user would and asserts it exits 1. A row no case covers fails
`test_every_row_has_a_broken_module`.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from derive import verify
from derive.cli import main
from derive.output.loader import GENERATED_DIR, load_module_from_path

WRAP = "import numpy as _np\n"

#: row (check function name) -> (module, how it is broken, source patch or (old, new) edit).
BROKEN: dict[str, list[tuple[str, str, str | tuple[str, str]]]] = {
    "fd_logits": [
        (
            "softmax_regression",
            "grad_logits 0.1% too large",
            "_g = grad_logits\ndef grad_logits(O, y):\n    return _g(O, y) * 1.001\n",
        )
    ],
    "fd_parameters": [
        (
            "softmax_regression",
            "dL/dW 0.1% too large",
            "_lg = loss_and_grad\ndef loss_and_grad(X, y, W, b, check=True, **k):\n"
            "    L, dW, db = _lg(X, y, W, b, check, **k)\n    return L, dW * 1.001, db\n",
        )
    ],
    "fd_hessian": [
        (
            "softmax_regression",
            "Hessian 0.1% too large",
            "_h = hessian_logits\ndef hessian_logits(o):\n    return _h(o) * 1.001\n",
        )
    ],
    "reference_loss": [
        (
            "softmax_regression",
            "loss and every gradient doubled (the finite-difference rows still pass)",
            "_l, _g, _lg = loss, grad_logits, loss_and_grad\n"
            "def loss(O, y):\n    return 2 * _l(O, y)\n"
            "def grad_logits(O, y):\n    return 2 * _g(O, y)\n"
            "def loss_and_grad(X, y, W, b, check=True, **k):\n"
            "    L, dW, db = _lg(X, y, W, b, check, **k)\n    return 2 * L, 2 * dW, 2 * db\n",
        )
    ],
    "prediction": [
        (
            "temperature_softmax",
            "predict_proba ignores the temperature T",
            "def predict_proba(X, W, b, *, T=2.0):\n    return softmax(X @ W + b)\n",
        ),
        (
            "logistic_regression",
            "binary predict uses < 0.5",
            "def predict(X, W, b):\n    return (predict_proba(X, W, b) < 0.5).astype(_np.intp)\n",
        ),
        (
            "softmax_regression",
            "predict is argmin",
            "def predict(X, W, b):\n    return _np.argmin(predict_proba(X, W, b), axis=-1)\n",
        ),
    ],
    "unchecked_path": [
        (
            "softmax_regression",
            "check=False returns a gradient off by one part in 1e12",
            "_lg = loss_and_grad\ndef loss_and_grad(X, y, W, b, check=True, **k):\n"
            "    L, dW, db = _lg(X, y, W, b, check, **k)\n"
            "    return (L, dW, db) if check else (L, dW * (1 + 1e-12), db)\n",
        )
    ],
    "softmax_kernels": [
        (
            "softmax_regression",
            "softmax off by one part in 1e9",
            "_s = softmax\ndef softmax(O):\n    return _s(O) * (1 + 1e-9)\n",
        )
    ],
    "extreme_float64": [
        (
            "softmax_regression",
            "log_softmax computed naively (log of a rounded 0)",
            "def log_softmax(O):\n    return _np.log(softmax(O))\n",
        )
    ],
    "extreme_float32": [
        (
            "softmax_regression",
            "softmax returns float64 for float32 input",
            "_s = softmax\ndef softmax(O):\n    return _s(_np.asarray(O, dtype=_np.float64))\n",
        )
    ],
    "extreme_training": [
        (
            "softmax_regression",
            "fused loss computed without the max shift",
            "_lg = loss_and_grad\ndef loss_and_grad(X, y, W, b, check=True, **k):\n"
            "    O = X @ W + b\n    L = _np.mean(_np.log(_np.exp(O).sum(axis=1)))\n"
            "    return L, *_lg(X, y, W, b, check, **k)[1:]\n",
        ),
        # STABLE = False where the exact values at +-1e4 are finite: refusing them is a FAIL
        # (only a loss whose exact value overflows, exp(o) at 1e4, may skip the row)
        ("squared_error", "STABLE = False on a loss with finite values", "STABLE = False\n"),
    ],
    "dtypes": [
        (
            "softmax_regression",
            "float32 input computed and returned in float64",
            "_lg = loss_and_grad\ndef loss_and_grad(X, y, W, b, check=True, **k):\n"
            "    f = lambda a: _np.asarray(a, dtype=_np.float64)\n"
            "    return _lg(f(X), y, f(W), f(b), check, **k)\n",
        )
    ],
    "blocks": [
        (
            "softmax_regression",
            "soft targets take the wrong rows past the first block",
            "_lg = loss_and_grad\ndef loss_and_grad(X, y, W, b, check=True, **k):\n"
            "    y = _np.asarray(y)\n"
            "    if y.ndim == 2 and len(y) > _BLOCK_ROWS:\n"
            "        y = _np.roll(y, 1, axis=0)\n"
            "        y[:_BLOCK_ROWS] = _np.roll(y[:_BLOCK_ROWS], -1, axis=0)\n"
            "    return _lg(X, y, W, b, check, **k)\n",
        )
    ],
    "summed_chunks": [
        (
            "softmax_regression",
            "reduction='sum' returns the mean",
            "_lg = loss_and_grad\ndef loss_and_grad(X, y, W, b, check=True, **k):\n"
            "    k.pop('reduction', None)\n    return _lg(X, y, W, b, check, **k)\n",
        )
    ],
    "properties": [
        (
            "softmax_regression",
            "dL/db off by 1e-9 (no longer the column sums of dL/dO)",
            "_lg = loss_and_grad\ndef loss_and_grad(X, y, W, b, check=True, **k):\n"
            "    L, dW, db = _lg(X, y, W, b, check, **k)\n    return L, dW, db + 1e-9\n",
        )
    ],
    "bad_inputs": [
        (
            "softmax_regression",
            "target rows within 0.05 of summing to 1 accepted",
            ("tol = 1000 * np.finfo(dtype).eps", "tol = 0.05"),
        ),
        (
            "softmax_regression",
            "NaN in X answered instead of refused",
            "_lg = loss_and_grad\ndef loss_and_grad(X, y, W, b, check=True, **k):\n"
            "    X = _np.nan_to_num(_np.asarray(X, dtype=float))\n"
            "    return _lg(X, y, W, b, check, **k)\n",
        ),
    ],
    "accuracy_random": [
        (
            "softmax_regression",
            "grad_logits one part in 1e9 too large",
            "_g = grad_logits\ndef grad_logits(O, y):\n    return _g(O, y) * (1 + 1e-9 * (True))\n",
        )
    ],
    "accuracy_offset_1e4": [
        (
            "softmax_regression",
            "loss as LSE(o) - o_c on the raw logits: a common offset cancels after rounding",
            "def loss(O, y):\n"
            "    O = _np.asarray(O)\n    m = O.max(axis=-1, keepdims=True)\n"
            "    lse = m + _np.log(_np.exp(O - m).sum(axis=-1, keepdims=True))\n"
            "    y = _np.asarray(y)\n"
            "    Y = _np.eye(O.shape[-1], dtype=O.dtype)[y] if y.ndim == 1 else y\n"
            "    return O.dtype.type(_np.mean(_np.sum(Y * (lse - O), axis=-1)))\n",
        )
    ],
    "accuracy_offset_1e8": [
        (
            "softmax_regression",
            "loss as LSE(o) - o_c on the raw logits: a common offset cancels after rounding",
            "def loss(O, y):\n"
            "    O = _np.asarray(O)\n    m = O.max(axis=-1, keepdims=True)\n"
            "    lse = m + _np.log(_np.exp(O - m).sum(axis=-1, keepdims=True))\n"
            "    y = _np.asarray(y)\n"
            "    Y = _np.eye(O.shape[-1], dtype=O.dtype)[y] if y.ndim == 1 else y\n"
            "    return O.dtype.type(_np.mean(_np.sum(Y * (lse - O), axis=-1)))\n",
        )
    ],
    "accuracy_offset_1e12": [
        (
            "softmax_regression",
            "loss as LSE(o) - o_c on the raw logits: a common offset cancels after rounding",
            "def loss(O, y):\n"
            "    O = _np.asarray(O)\n    m = O.max(axis=-1, keepdims=True)\n"
            "    lse = m + _np.log(_np.exp(O - m).sum(axis=-1, keepdims=True))\n"
            "    y = _np.asarray(y)\n"
            "    Y = _np.eye(O.shape[-1], dtype=O.dtype)[y] if y.ndim == 1 else y\n"
            "    return O.dtype.type(_np.mean(_np.sum(Y * (lse - O), axis=-1)))\n",
        )
    ],
    "accuracy_saturated__lead_20": [
        (
            "softmax_regression",
            "Hessian diagonal as p - p^2 (1 - p rounds away in a saturated row)",
            "def hessian_logits(o):\n"
            "    p = softmax(_np.asarray(o))\n    return _np.diag(p) - _np.outer(p, p)\n",
        )
    ],
    "accuracy_saturated__lead_40": [
        (
            "softmax_regression",
            "Hessian diagonal as p - p^2 (1 - p rounds away in a saturated row)",
            "def hessian_logits(o):\n"
            "    p = softmax(_np.asarray(o))\n    return _np.diag(p) - _np.outer(p, p)\n",
        )
    ],
    "accuracy_saturated__lead_800": [
        (
            "softmax_regression",
            "loss as -log(softmax(o)_c) (the log of an underflowed 0 for a class 800 behind)",
            "def loss(O, y):\n"
            "    P = softmax(_np.asarray(O))\n    y = _np.asarray(y)\n"
            "    Y = _np.eye(P.shape[-1], dtype=P.dtype)[y] if y.ndim == 1 else y\n"
            "    return P.dtype.type(-_np.mean(_np.sum(Y * _np.log(P), axis=-1)))\n",
        )
    ],
    "accuracy_masked_classes": [
        (
            "softmax_regression",
            "masked (-inf) logits clamped to -20 (a masked class keeps probability e^-23)",
            "_l = loss\ndef loss(O, y):\n    return _l(_np.maximum(O, -20.0), y)\n",
        )
    ],
    "accuracy_parameters_at_their_ends": [
        (
            "label_smoothing",
            "eps clamped to at most 0.99 (wrong at the end of its range, eps -> 1)",
            "_g = grad_logits\ndef grad_logits(O, y, *, eps=0.1):\n"
            "    return _g(O, y, eps=min(eps, 0.99))\n",
        )
    ],
    "accuracy_targets_near_1e8": [
        (
            "squared_error",
            "squared error expanded: sum o^2/2 - sum o y + sum y^2/2 (every digit lost near 1e8)",
            "def loss(O, y):\n"
            "    O = _np.asarray(O)\n    y = _np.asarray(y, dtype=O.dtype)\n"
            "    r = 0.5 * (O * O).sum(axis=-1) - (O * y).sum(axis=-1)\n"
            "    r += 0.5 * (y * y).sum(axis=-1)\n"
            "    return O.dtype.type(_np.mean(r))\n",
        )
    ],
    "accuracy_sigmoid_tails": [
        (
            "logistic_regression",
            "gradient as sigmoid(x) - y (0 instead of -sigmoid(-x) for y = 1, x = 37)",
            "def grad_logits(O, y):\n"
            "    O = _np.asarray(O)\n    y = _np.asarray(y, dtype=O.dtype)\n"
            "    return (1 / (1 + _np.exp(-O)) - y) / O.shape[0]\n",
        )
    ],
    "accuracy_K___1": [
        (
            "softmax_regression",
            "a single class's loss is log 2, not 0",
            "_l = loss\ndef loss(O, y):\n"
            "    return _l(O, y) + (_np.log(2.0) if _np.shape(O)[-1] == 1 else 0.0)\n",
        )
    ],
    "accuracy_K___2": [
        (
            "softmax_regression",
            "grad_logits one part in 1e9 too large for two classes",
            "_g = grad_logits\ndef grad_logits(O, y):\n"
            "    return _g(O, y) * (1 + 1e-9 * (_np.shape(O)[-1] == 2))\n",
        )
    ],
    "accuracy_K___1000": [
        (
            "softmax_regression",
            "grad_logits one part in 1e9 too large for more than 100 classes",
            "_g = grad_logits\ndef grad_logits(O, y):\n"
            "    return _g(O, y) * (1 + 1e-9 * (_np.shape(O)[-1] > 100))\n",
        )
    ],
}

CASES = [(row, *case) for row, cases in BROKEN.items() for case in cases]


def broken_module(tmp_path: Path, name: str, patch: str | tuple[str, str]) -> Path:
    source = (GENERATED_DIR / f"{name}.py").read_text(encoding="utf-8")
    if isinstance(patch, tuple):
        old, new = patch
        assert old in source, f"{name}: the edit's target is gone: {old!r}"
        source = source.replace(old, new)
    else:
        source += "\n\n" + WRAP + patch
    path = tmp_path / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    return path


def _row(module: ModuleType, row: str) -> verify.Result:
    check = next(c for c in verify.CHECKS if c.__name__ == row)
    (result,) = verify.run(module, [check])
    return result


def test_every_row_has_a_broken_module() -> None:
    assert sorted(c.__name__ for c in verify.CHECKS) == sorted(BROKEN)


#: K = 1000 takes seconds per run (the reference sums 1000 classes): in the slow pass.
SLOW_ROWS = ("accuracy_K___1000",)
ROW_CASES = [pytest.param(*c, marks=pytest.mark.slow) if c[0] in SLOW_ROWS else c for c in CASES]


@pytest.mark.parametrize(("row", "name", "defect", "patch"), ROW_CASES, ids=lambda v: str(v)[:40])
def test_the_row_fails_on_its_defect(
    tmp_path: Path, row: str, name: str, defect: str, patch: str | tuple[str, str]
) -> None:
    module = load_module_from_path(broken_module(tmp_path, name, patch))
    result = _row(module, row)
    assert result.status == "FAIL", f"{row} passed a module with {defect}: {result}"
    # The same row passes on the module as committed (the defect is what it caught).
    intact = load_module_from_path(GENERATED_DIR / f"{name}.py")
    assert _row(intact, row).status == "pass"


def test_a_doubled_module_passes_the_finite_differences_but_not_the_reference(
    tmp_path: Path,
) -> None:
    (_, patch) = BROKEN["reference_loss"][0][1:]
    module = load_module_from_path(broken_module(tmp_path, "softmax_regression", patch))
    for row in ("fd_logits", "fd_parameters"):
        assert _row(module, row).status == "pass", row
    assert _row(module, "reference_loss").status == "FAIL"


#: The command's exit status, for one classic and one accuracy row: that each row FAILs on its
#: defect is `test_the_row_fails_on_its_defect`; this shows a FAIL row makes `derive verify` exit 1
#: (each run takes every row: tens of seconds, so not once per row).
CLI_CASES = [c for c in CASES if c[0] in ("fd_logits", "accuracy_offset_1e8")]


@pytest.mark.slow
@pytest.mark.parametrize(("row", "name", "defect", "patch"), CLI_CASES, ids=lambda v: str(v)[:40])
def test_derive_verify_exits_1_on_the_defect(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    row: str,
    name: str,
    defect: str,
    patch: str | tuple[str, str],
) -> None:
    path = broken_module(tmp_path, name, patch)
    assert main(["verify", "--module", str(path)]) == 1, defect
    out = capsys.readouterr().out
    assert "FAIL" in out and "some checks FAILED" in out


def test_reference_evaluates_the_definition_not_the_module() -> None:
    """The mpmath reference of softmax regression at one row, against the textbook value."""
    module = load_module_from_path(GENERATED_DIR / "softmax_regression.py")
    s = verify.Subject(module)
    O = np.array([[1.0, 2.0, 3.0]])
    expected = math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 2.0
    assert verify.reference_mean_loss(s, O, np.array([1])) == pytest.approx(expected, rel=1e-15)


def test_a_row_that_raises_is_reported_under_its_title(tmp_path: Path) -> None:
    # A reference that raises: the accuracy row crashes inside the check, and the table says
    # which row (its title), not the check function's name.
    patch = "def reference(*args, **kwargs):\n    raise RuntimeError('broken reference')\n"
    module = load_module_from_path(broken_module(tmp_path, "squared_error", patch))
    result = _row(module, "accuracy_random")
    assert result.status == "FAIL" and "broken reference" in result.note, result
    assert result.name == "accuracy vs mpmath: random [units of the bound]", result
