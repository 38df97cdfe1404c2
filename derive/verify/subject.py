"""What every verify row shares: the module under test, a row's result, and the bounds.

`Subject` wraps an emitted module and reads what it declares about itself (`LOSS`, `TARGETS`,
`WEIGHT_DECAY`, its parameters' defaults); a row is a `Check`, a function `Subject -> Result`,
that reports its worst error next to its bound (`result` sets pass/FAIL from the two). `rel` is
the relative error the rows measure (max abs error / max |reference|); `seeded` gives each row
its own fixed random stream, so the table is the same on every run.

The bounds shared by several rows, and why:
- `FD_BOUND`, finite differences: central differences with step h have truncation error
  O(h^2 f''') and rounding error O(eps |f| / h); with h = 1e-6 on O(1) inputs both are ~1e-10,
  so the bound on the relative error is 1e-7, three orders above the noise.
- `IDENTITY_BOUND`, references and identities in float64: 1e-12 relative (a few hundred ulps for
  sums of many terms).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

Array = np.ndarray[Any, Any]
Status = Literal["pass", "FAIL", "skip"]

FD_BOUND = 1e-7
IDENTITY_BOUND = 1e-12


@dataclass(frozen=True)
class Result:
    name: str
    worst: float
    bound: float
    status: Status
    note: str = ""

    @property
    def passed(self) -> bool:
        """A skipped check is not a failure (the table says it was skipped, and why)."""
        return self.status != "FAIL"


def result(name: str, worst: float, bound: float, note: str = "") -> Result:
    return Result(name, worst, bound, "pass" if worst <= bound else "FAIL", note)


@dataclass(frozen=True)
class Subject:
    """An emitted module and what it declares about itself."""

    m: ModuleType

    @property
    def loss_name(self) -> str:
        return str(getattr(self.m, "LOSS", "?"))

    @property
    def targets(self) -> str:
        return str(getattr(self.m, "TARGETS", "distribution"))

    @property
    def softmax_api(self) -> bool:
        return hasattr(self.m, "softmax")

    @property
    def params(self) -> dict[str, float]:
        """The loss parameters of `loss_and_grad` at their defaults (weight decay included)."""
        sig = inspect.signature(self.m.loss_and_grad)
        return {
            n: float(p.default)
            for n, p in sig.parameters.items()
            if p.kind is p.KEYWORD_ONLY and isinstance(p.default, float)
        }

    @property
    def decay(self) -> float:
        """The weight-decay strength at its default: the parameter the module names in
        `WEIGHT_DECAY` (its declared role), never guessed from a name."""
        name = getattr(self.m, "WEIGHT_DECAY", None)
        return self.params[name] if name is not None else 0.0

    @property
    def loss_params(self) -> dict[str, float]:
        """The parameters of the per-sample loss (all but the weight decay)."""
        name = getattr(self.m, "WEIGHT_DECAY", None)
        return {k: v for k, v in self.params.items() if k != name}

    @property
    def reference(self) -> bool:
        return hasattr(self.m, "REFERENCE_LOSS")

    def targets_for(self, rng: np.random.Generator, n: int, K: int, soft: bool) -> Array:
        if self.targets == "distribution":
            if soft:
                Y: Array = rng.random(size=(n, K)) + 0.01
                out: Array = Y / Y.sum(axis=1, keepdims=True)
                return out
            return rng.integers(0, K, size=n)
        if self.targets == "binary":
            return rng.random(size=(n, K)) if soft else rng.integers(0, 2, size=(n, K)) * 1.0
        return rng.normal(size=(n, K))

    def problem(
        self, rng: np.random.Generator, n: int, d: int, K: int, soft: bool, dtype: type = np.float64
    ) -> tuple[Array, Array, Array, Array]:
        X: Array = rng.normal(size=(n, d)).astype(dtype)
        W: Array = rng.normal(size=(d, K)).astype(dtype)
        b: Array = rng.normal(size=K).astype(dtype)
        y = self.targets_for(rng, n, K, soft)
        return X, (y.astype(dtype) if y.dtype.kind == "f" else y), W, b

    def loss(self, O: Array, y: Array) -> float:
        return float(self.m.loss(O, y))


def seeded(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def rel(a: Array, ref: Array) -> float:
    scale = max(float(np.max(np.abs(ref))), 1e-300)
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - ref))) / scale


Check = Callable[[Subject], Result]
#: A check's row title where it is known before the check runs (by the check's function name):
#: a check that raises is reported under it, not under its function's name.
TITLES: dict[str, str] = {}

#: Floating-point errors that turn into exceptions during every check. Underflow is left out:
#: `exp` of a logit far below the row max rounds to 0 by design (softmax's tail).
FP_ERRORS_RAISE = {"over": "raise", "divide": "raise", "invalid": "raise", "under": "ignore"}
