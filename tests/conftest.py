"""Shared fixtures: the checked derivation and the committed module, built once per session."""

from __future__ import annotations

from types import ModuleType

import pytest

from derive.losses import catalogue
from derive.output.loader import load_generated
from derive.symbolic.steps import CheckedDerivation


@pytest.fixture(scope="session")
def checked() -> CheckedDerivation:
    return catalogue.checked("softmax_regression")


@pytest.fixture(scope="session")
def module() -> ModuleType:
    return load_generated("softmax_regression")
