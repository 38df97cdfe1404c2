"""The exceptions users can cause, and the one way they are shown (as latexify, pip and ruff do).

Every message has three parts: what is wrong, why, and what to do; the command prints it as one
line, `derive: error: <what> (<why>; <what to do>)`, on stderr, and exits with `USER_ERROR`. A
refusal lists what is allowed. No traceback is shown for a user's mistake (`DERIVE_DEBUG=1`
re-raises, for bug reports).
"""

from __future__ import annotations

import sys
from typing import TextIO

#: Exit codes, documented in the README and the same in every subcommand.
SUCCESS = 0
CHECK_FAILED = 1
USER_ERROR = 2
INTERRUPTED = 130  # the shell's convention for SIGINT (128 + 2)


class DeriveError(Exception):
    """Base class of every error softmax-derive raises on purpose: a user's mistake.

    `DeriveError(what, why, fix)`; a single argument is a complete message. The text is always
    one line (newlines in an embedded detail become spaces).
    """

    def __init__(self, what: str, why: str = "", fix: str = "") -> None:
        self.what, self.why, self.fix = what, why, fix
        super().__init__(self.line())

    def line(self) -> str:
        detail = "; ".join(part for part in (self.why, self.fix) if part)
        text = f"{self.what} ({detail})" if detail else self.what
        return " ".join(text.split())


class UsageError(DeriveError):
    """Bad command-line arguments (argparse's refusals, re-raised as one line)."""


class StepCheckError(DeriveError):
    """A derivation step's equation could not be confirmed: the pipeline stops here."""

    def __init__(self, step: str, lhs: str, rhs: str, detail: str) -> None:
        self.step = step
        self.detail = detail
        self._args = (step, lhs, rhs, detail)
        super().__init__(
            f"step {step!r} failed its check ({detail}):\n  lhs = {lhs}\n  rhs = {rhs}"
        )

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:
        """Picklable (checks run in worker processes send their failures back)."""
        return (type(self), self._args)


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


def print_error(exc: DeriveError | str, file: TextIO | None = None) -> None:
    """The one printer: `derive: error: ...` as a single line on stderr."""
    text = exc.line() if isinstance(exc, DeriveError) else " ".join(str(exc).split())
    print(f"derive: error: {text}", file=file or sys.stderr)


def os_error_text(exc: OSError) -> str:
    """An `OSError`'s reason without the path repeated (`Permission denied`, `Is a directory`)."""
    return exc.strerror or type(exc).__name__
