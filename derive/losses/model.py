"""Loss definitions as data: a per-sample loss in the logits `o` and the target `y`.

Everything downstream (derivation steps, notes, code, verify, `check`) works from a `LossModel`
alone, which is what lets a loss the templates have never seen go through the same pipeline.
A loss is written with class-indexed symbols (`o[k]`, `y[k]`) and Sums over `k = 1..K` for a
symbolic K, the form in which the derivation holds for any number of classes and which the code
printer maps to whole-array NumPy operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import sympy as sp

from derive import notation as S
from derive.errors import ModelDefinitionError
from derive.symbolic.steps import CONCRETE_KS, Prose

TargetKind = Literal["distribution", "binary", "real"]
#: The kinds of target a loss may declare (the values of `TargetKind`), in this order.
TARGET_KINDS: tuple[str, ...] = get_args(TargetKind)


@dataclass(frozen=True)
class Param:
    """A scalar hyper-parameter of a loss (smoothing, temperature, weight decay...)."""

    symbol: sp.Symbol
    default: float
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = False
    doc: str = ""
    #: What the parameter does, where the pipeline must know it: "weight_decay" (the strength
    #: of the penalty on W: not an argument of the per-sample functions), "temperature",
    #: "smoothing"; "" for any other parameter. Never inferred from the name.
    role: str = ""

    def __post_init__(self) -> None:
        S.checked_name(self.symbol.name, "parameter name")
        if not self.admits(self.default):
            raise ModelDefinitionError(
                f"parameter {self.symbol.name}: default {self.default:g} is outside its range "
                f"{self.range_text()}",
                "",
                "choose a default inside the range",
            )

    @property
    def interval(self) -> sp.Interval:
        """The valid range, the one definition of it: `admits` asks it, and the emitted modules'
        checks are printed from it (`derive.output.printers.ranges.print_range_check`). The ends are
        the declared floats exactly (`sp.Float` keeps their 53 bits)."""
        return sp.Interval(
            -sp.oo if self.low is None else sp.Float(self.low),
            sp.oo if self.high is None else sp.Float(self.high),
            left_open=not self.low_inclusive,
            right_open=not self.high_inclusive,
        )

    def admits(self, value: float) -> bool:
        """Whether `value` (a finite real) lies in the parameter's range."""
        if not math.isfinite(value):
            return False
        return bool(self.interval.contains(sp.Float(value)))

    def range_text(self) -> str:
        lo = "(-inf" if self.low is None else ("[" if self.low_inclusive else "(") + repr(self.low)
        hi = (
            "inf)" if self.high is None else repr(self.high) + ("]" if self.high_inclusive else ")")
        )
        return f"{lo}, {hi}"


@dataclass(frozen=True)
class LossModel:
    """A differentiable loss on logits, sitting on the linear layer `O = X W + 1 b^T`.

    `loss` is the per-sample loss in `o[k]`, `y[k]` and the parameters; `prediction` is the
    model's output `yhat_j` (in `o[j]`), which `predict_proba` returns. `targets` says what `y` is:
    a probability vector (`sum_j y_j = 1`, integer labels allowed), independent binary targets in
    [0, 1], or real values.
    """

    name: str
    title: Prose
    loss: sp.Expr
    prediction: sp.Expr
    targets: TargetKind
    params: tuple[Param, ...] = ()
    description: Prose = field(default_factory=lambda: Prose(en="", zh=""))
    #: The concrete class counts every symbolic step is also proved for. Large, generic losses
    #: may ask for fewer (their expressions grow fast with K); the notes say which were done.
    concrete_Ks: tuple[int, ...] = CONCRETE_KS
    #: Derive (and emit) the Hessian w.r.t. the logits and its vector products.
    second_order: bool = True

    def __post_init__(self) -> None:
        S.checked_name(self.name, "loss name")
        allowed = {S.K, *(prm.symbol for prm in self.params)}
        roles = [prm.role for prm in self.params if prm.role]
        if len(roles) != len(set(roles)):
            raise ModelDefinitionError(f"{self.name}: a role is declared twice: {roles}")
        if len({prm.symbol.name for prm in self.params}) != len(self.params):
            raise ModelDefinitionError(f"{self.name}: two parameters share a name")
        if self.targets not in TARGET_KINDS:
            raise ModelDefinitionError(
                f"targets of {self.name}: {self.targets!r}; expected distribution, binary or real"
            )
        for expr, what in ((self.loss, "loss"), (self.prediction, "prediction")):
            for sym in expr.free_symbols:
                if isinstance(sym, sp.Symbol):
                    S.checked_name(sym.name.lstrip("_"), f"symbol in {what}")
            bases = {ind.base.label.name for ind in expr.atoms(sp.Indexed)}
            if not bases <= {"o", "y"}:
                raise ModelDefinitionError(
                    f"{what} of {self.name}: only o[k] and y[k] may be indexed, got {sorted(bases)}"
                )
            symbols = {s for s in expr.free_symbols if isinstance(s, sp.Symbol)}
            stray = symbols - allowed - {S.j} - _indexed_labels(expr)
            if stray:
                raise ModelDefinitionError(
                    f"{what} of {self.name}: undeclared symbols {sorted(map(str, stray))}"
                )

    @property
    def simplex_targets(self) -> bool:
        return self.targets == "distribution"

    def role(self, role: str) -> Param | None:
        """The parameter declared with `role`, if any."""
        found = [prm for prm in self.params if prm.role == role]
        return found[0] if found else None

    @property
    def decay_symbol(self) -> sp.Symbol | None:
        """The weight-decay strength, where the model declares one (role "weight_decay")."""
        prm = self.role("weight_decay")
        return prm.symbol if prm is not None else None


def _indexed_labels(expr: sp.Expr) -> set[sp.Basic]:
    out: set[sp.Basic] = set()
    for ind in expr.atoms(sp.Indexed):
        out.add(ind.base.label)
        out |= set(ind.indices)
    for s in expr.atoms(sp.Sum):
        out |= {lim[0] for lim in s.limits}
    return out


def softmax_expr(index: sp.Symbol, logits: sp.IndexedBase = S.o) -> sp.Expr:
    """`exp(o_index) / sum_m exp(o_m)`: the definition, the raw form the derivation works on."""
    return sp.exp(logits[index]) / sp.Sum(sp.exp(logits[S.m]), (S.m, 1, S.K))


def class_sum(expr: sp.Expr) -> sp.Sum:
    """`sum_{k=1}^{K} expr`."""
    return sp.Sum(expr, (S.k, 1, S.K))


SOFTMAX_CROSS_ENTROPY = LossModel(
    name="softmax_regression",
    title=Prose(en="Softmax regression", zh="softmax 回归"),
    loss=-class_sum(S.y[S.k] * sp.log(softmax_expr(S.k))),
    prediction=softmax_expr(S.j),
    targets="distribution",
    description=Prose(
        en="cross-entropy of the softmax of the logits against a target distribution",
        zh="logits 的 softmax 与目标分布之间的交叉熵损失",
    ),
)
