"""Numerical checks of an emitted module; imports nothing of the symbolic layers above it.

`run(module)` runs every check in `CHECKS` and `table(results)` lays the results out; each check
is a function `Subject -> Result` (see `derive.verify.checks`).
"""

from derive.verify.checks import (
    CHECKS,
    Check,
    Result,
    Subject,
    bad_inputs,
    reference_mean_loss,
    reference_prediction,
    run,
    table,
)

__all__ = [
    "CHECKS",
    "Check",
    "Result",
    "Subject",
    "bad_inputs",
    "reference_mean_loss",
    "reference_prediction",
    "run",
    "table",
]
