"""Shared fixtures (the checked derivation and the committed module, built once per session) and
the split between the default run and the slow pass.

The default `python -m pytest` is what a contributor runs after every edit, so it keeps one
representative of each kind of check: a test parametrised over the catalogue runs for the story's
loss (`softmax_regression`) by default and for every other catalogue loss in CI's slow pass
(`-m slow`). Each of those cases repeats the same check on another derivation or module, and some
take a minute (JAX compiles several XLA programs per loss).
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from derive.losses import catalogue
from derive.output.loader import load_generated
from derive.symbolic.steps import CheckedDerivation
from derive.verify import frameworks

#: The loss every per-loss test keeps in the default run: the one the notes tell the story of.
REPRESENTATIVE = "softmax_regression"
OTHER_LOSSES = frozenset(catalogue.names()) - {REPRESENTATIVE}

#: The framework targets as test parameters: each skips, with a reason, where its library is absent.
FRAMEWORK_TARGETS = [
    pytest.param(
        target,
        marks=pytest.mark.skipif(
            importlib.util.find_spec(frameworks.FRAMEWORKS[target][0]) is None,
            reason=f"{frameworks.FRAMEWORKS[target][0]} not installed",
        ),
    )
    for target in frameworks.FRAMEWORKS
]
#: The same, marked `slow`: a test over every target keeps its NumPy case in the default run.
SLOW_FRAMEWORK_TARGETS = [
    pytest.param(*p.values, marks=[*p.marks, pytest.mark.slow]) for p in FRAMEWORK_TARGETS
]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every case parametrised with a catalogue loss (its name or its model) other than
    the representative."""
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is None:
            continue
        names = (getattr(v, "name", v) for v in spec.params.values())
        if any(isinstance(n, str) and n in OTHER_LOSSES for n in names):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def checked() -> CheckedDerivation:
    return catalogue.checked(REPRESENTATIVE)


@pytest.fixture(scope="session")
def module() -> ModuleType:
    return load_generated("softmax_regression")
