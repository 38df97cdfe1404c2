"""The losses the tool knows, by name: each maps to the derivation that checks it."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from derive.errors import UnknownLossError
from derive.softmax_regression import softmax_regression
from derive.steps import CheckedDerivation, Derivation

CATALOGUE: dict[str, Callable[[], Derivation]] = {
    "softmax_regression": softmax_regression,
}


def names() -> list[str]:
    return list(CATALOGUE)


@cache
def checked(name: str) -> CheckedDerivation:
    """The derivation of `name`, every step checked (once per process)."""
    if name not in CATALOGUE:
        raise UnknownLossError(f"loss {name!r}: unknown; expected one of {', '.join(CATALOGUE)}")
    return CATALOGUE[name]().check()
