"""The exceptions users can cause, in one place (as latexify does).

Every message names the thing at fault and what was expected, so that a failing pipeline or a bad
argument can be fixed without reading a traceback.
"""

from __future__ import annotations


class DeriveError(Exception):
    """Base class of every error softmax-derive raises on purpose."""


class StepCheckError(DeriveError):
    """A derivation step's equation could not be confirmed: the pipeline stops here."""

    def __init__(self, step: str, lhs: str, rhs: str, detail: str) -> None:
        self.step = step
        super().__init__(
            f"step {step!r} failed its check ({detail}):\n  lhs = {lhs}\n  rhs = {rhs}"
        )


class StaleOutputError(DeriveError):
    """`generated/` differs from what the tool would write now."""


class OutputDirError(DeriveError):
    """The output directory cannot be created or written."""


class UnknownLossError(DeriveError):
    """A loss name that is not in the catalogue."""


class ModelDefinitionError(DeriveError):
    """A model definition is malformed: bad names, ranges or expressions."""


class FormulaParseError(DeriveError):
    """A formula string was refused by the restricted parser."""


class ModuleLoadError(DeriveError):
    """An emitted module could not be found or imported."""


class FrameworkMissing(DeriveError):
    """A framework target was asked for but its framework is not installed."""


class LatexEngineMissing(DeriveError):
    """`--pdf` was asked for but no TeX engine is installed."""
