"""The losses the tool knows, by name: each maps to the derivation that checks it."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from derive.errors import UnknownLossError
from derive.losses.definitions import CATALOGUE_MODELS
from derive.losses.derivation import loss_derivation
from derive.losses.model import SOFTMAX_CROSS_ENTROPY, LossModel
from derive.losses.softmax_regression import softmax_regression
from derive.symbolic.steps import CheckedDerivation, Derivation


def _factory(model: LossModel) -> Callable[[], Derivation]:
    """Softmax cross-entropy tells the notes' whole story; other losses the shared steps."""
    if model is SOFTMAX_CROSS_ENTROPY:
        return softmax_regression
    return lambda: loss_derivation(model)


CATALOGUE: dict[str, Callable[[], Derivation]] = {m.name: _factory(m) for m in CATALOGUE_MODELS}
MODELS: dict[str, LossModel] = {m.name: m for m in CATALOGUE_MODELS}


def names() -> list[str]:
    return list(CATALOGUE)


@cache
def checked(name: str, workers: int = 1) -> CheckedDerivation:
    """The derivation of `name`, every step checked (once per process)."""
    if name not in CATALOGUE:
        raise UnknownLossError(f"loss {name!r}: unknown; expected one of {', '.join(CATALOGUE)}")
    return CATALOGUE[name]().check(workers)
