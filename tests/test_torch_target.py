"""The PyTorch target: gradcheck/gradgradcheck, PyTorch's own losses, verify, torch.compile.

Skipped with a reason when torch is not installed (`pip install -e ".[torch]"`).

Tolerances: gradcheck's defaults in float64 (atol 1e-5, rtol 1e-3 against central differences
with eps 1e-6; its nondeterminism check is off). Against PyTorch's own losses: 1e-12 relative
(both are max-shifted float64 kernels that round a handful of times; 1e-12 leaves ~4000 ulp for
sums over K classes and n samples, and a wrong formula is off by far more).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from derive.cli import main
from derive.losses import catalogue
from derive.output.loader import GENERATED_DIR
from derive.verify import frameworks, runner

torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install -e '.[torch]'")
F = torch.nn.functional

REL = 1e-12
#: verify rows that check the softmax kernels (skipped where the module has none).
SOFTMAX_ROWS = {"softmax_kernels", "extreme_float64", "extreme_float32"}


def _load(name: str) -> ModuleType:
    return frameworks.load(GENERATED_DIR / "torch" / f"{name}.py", "torch")


def _targets(m: ModuleType, n: int, K: int, seed: int = 0) -> list[Any]:
    g = torch.Generator().manual_seed(seed)
    if m.TARGETS == "distribution":
        labels = torch.randint(0, K, (n,), generator=g)
        probs = torch.softmax(torch.randn(n, K, generator=g, dtype=torch.float64), -1)
        return [labels, probs]
    if m.TARGETS == "binary":
        return [torch.rand(n, K, generator=g, dtype=torch.float64)]
    return [torch.randn(n, K, generator=g, dtype=torch.float64)]


def _logits(n: int, K: int, scale: float = 1.0, seed: int = 1) -> Any:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, K, generator=g, dtype=torch.float64) * scale).requires_grad_(True)


@pytest.mark.parametrize("name", catalogue.names())
#: `mean` by default; `sum` and `none` (the same backward, other scalings) in the slow pass.
@pytest.mark.parametrize(
    "reduction", ["mean", *(pytest.param(r, marks=pytest.mark.slow) for r in ("sum", "none"))]
)
def test_gradcheck_and_gradgradcheck(name: str, reduction: str) -> None:
    m = _load(name)
    O = _logits(5, 4)
    for target in _targets(m, 5, 4):
        f = lambda o, t=target: m.loss(o, t, reduction)  # noqa: E731
        assert torch.autograd.gradcheck(f, (O,))
        if m.SECOND_ORDER:
            assert torch.autograd.gradgradcheck(f, (O,))


def test_weight_decay_gradcheck() -> None:
    m = _load("softmax_regression_l2")
    W = _logits(3, 4)
    f = lambda w: m.weight_decay(w, 0.3)  # noqa: E731
    assert torch.autograd.gradcheck(f, (W,)) and torch.autograd.gradgradcheck(f, (W,))


def _rel(a: Any, b: Any) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _against(ours: Any, theirs: Any, O: Any) -> None:
    """Values and gradients w.r.t. the logits agree to REL."""
    assert _rel(ours, theirs) <= REL
    (g_ours,) = torch.autograd.grad(ours.sum(), O)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), O)
    assert _rel(g_ours, g_theirs) <= REL


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_cross_entropy_losses_match_torch(reduction: str, scale: float) -> None:
    O = _logits(64, 10, scale)
    smoothing, temperature = _load("label_smoothing"), _load("temperature_softmax")
    for target in _targets(_load("softmax_regression"), 64, 10):
        cases = [
            (
                _load("softmax_regression").loss(O, target, reduction),
                F.cross_entropy(O, target, reduction=reduction),
            ),
            (
                smoothing.loss(O, target, reduction, eps=0.2),
                F.cross_entropy(O, target, reduction=reduction, label_smoothing=0.2),
            ),
            (
                temperature.loss(O, target, reduction, T=3.0),
                F.cross_entropy(O / 3.0, target, reduction=reduction),
            ),
        ]
        for ours, theirs in cases:
            _against(ours, theirs, O)


def test_binary_and_squared_losses_match_torch() -> None:
    O = _logits(32, 3, 20.0)
    (Y,) = _targets(_load("logistic_regression"), 32, 3)
    # Ours sums the K per-output terms of a sample; PyTorch's "none" keeps them: sum over K.
    ours = _load("logistic_regression").loss(O, Y, "none")
    theirs = F.binary_cross_entropy_with_logits(O, Y, reduction="none").sum(dim=-1)
    _against(ours, theirs, O)
    (Y,) = _targets(_load("squared_error"), 32, 3)
    ours = _load("squared_error").loss(O, Y, "none")
    theirs = F.mse_loss(O, Y, reduction="none").sum(dim=-1) / 2
    _against(ours, theirs, O)


def test_labels_and_one_hot_rows_give_the_same_loss_and_derivatives() -> None:
    """The label forms (y_k = delta_kc substituted) against the probability forms at one-hot y."""
    for name in ("softmax_regression", "label_smoothing", "temperature_softmax"):
        m = _load(name)
        O = _logits(16, 5, 5.0)
        labels = _targets(m, 16, 5)[0]
        onehot = F.one_hot(labels, 5).to(torch.float64)
        a, b = m.loss(O, labels), m.loss(O, onehot)
        assert _rel(a, b) <= REL
        (ga,) = torch.autograd.grad(a, O, create_graph=True)
        (gb,) = torch.autograd.grad(b, O, create_graph=True)
        assert _rel(ga, gb) <= REL
        V = torch.randn_like(O)
        (ha,) = torch.autograd.grad(ga, O, V)
        (hb,) = torch.autograd.grad(gb, O, V)
        assert _rel(ha, hb) <= REL


@pytest.mark.slow
@pytest.mark.parametrize("name", catalogue.names())
def test_verify_accuracy_checks_pass(name: str) -> None:
    m = _load(name)
    results = frameworks.run(m, "torch")
    failed = [r for r in results if not r.passed]
    assert not failed, runner.table(results)
    # Every row runs (the loss-reference row too: the module carries its definition), except
    # the softmax-kernel rows of a module without softmax kernels and the accuracy families that
    # do not apply to the loss (masked classes for real targets, say: the same as for NumPy).
    skipped = {
        c for c, r in zip(frameworks.ACCURACY_CHECKS, results, strict=True) if r.status == "skip"
    }
    allowed = {c for c in skipped if c.startswith("accuracy_")}
    allowed |= set() if m.TARGETS == "distribution" else SOFTMAX_ROWS
    assert "reference_loss" not in skipped and skipped <= allowed, runner.table(results)


def test_module_wrapper_and_bad_inputs() -> None:
    m = _load("label_smoothing")
    O = _logits(4, 3)
    labels = torch.tensor([0, 2, 1, 0])
    assert torch.equal(
        m.Loss(reduction="sum", eps=0.1)(O, labels), m.loss(O, labels, "sum", eps=0.1)
    )
    bad = [
        lambda: m.loss(O, torch.tensor([0, 3, 1, 0])),
        lambda: m.loss(O, torch.tensor([0, -1, 1, 0])),
        lambda: m.loss(O, labels[:3]),
        lambda: m.loss(O, labels, "average"),
        lambda: m.loss(O, labels, eps=1.5),
        lambda: m.loss(O, labels, eps=float("nan")),
        lambda: m.loss(O[0], labels),
        lambda: m.loss(O.to(torch.int64), labels),
        lambda: m.loss(O, torch.rand(4, 3, dtype=torch.float64, requires_grad=True)),
    ]
    for call in bad:
        with pytest.raises((ValueError, TypeError)):
            call()


@pytest.mark.slow
def test_once_differentiable_where_no_second_order(tmp_path: Path) -> None:
    """The focal example derives no Hessian: double backward says so instead of guessing."""
    example = Path(__file__).resolve().parents[1] / "examples" / "focal_loss.py"
    argv = ["emit", "--model", str(example), "--target", "torch", "--out", str(tmp_path)]
    assert main(argv) == 0
    m = frameworks.load(tmp_path / "torch" / "focal_loss.py", "torch")
    assert not m.SECOND_ORDER
    O = _logits(6, 4)
    labels, probs = _targets(m, 6, 4)
    for target in (labels, probs):
        assert torch.autograd.gradcheck(lambda o, t=target: m.loss(o, t), (O,))
    # gamma = 0 is the cross-entropy
    _against(m.loss(O, labels, gamma=0.0), F.cross_entropy(O, labels), O)
    (g,) = torch.autograd.grad(m.loss(O, labels), O, create_graph=True)
    with pytest.raises(RuntimeError, match="derives no second order"):
        torch.autograd.grad(g.sum(), O)


# Dynamo itself instantiates the Function class while tracing it (torch 2.13 warns about that).
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
def test_torch_compile() -> None:
    """The autograd Function traces under torch.compile (no graph break), forward and backward."""
    m = _load("softmax_regression")
    O = _logits(32, 10)
    labels = _targets(m, 32, 10)[0]
    compiled = torch.compile(m.loss, backend="aot_eager", fullgraph=True)
    ours = compiled(O, labels)
    _against(ours, F.cross_entropy(O, labels), O)
