"""Run the verify rows on a module and lay the results out as the table `derive verify` prints.

`run` calls each row of `derive.verify.rows.CHECKS` (or a selection: the framework targets run
the accuracy rows) with warnings as errors and NumPy's floating-point flags raising; a row that
raises is one FAIL row with the exception, under the row's title. `table` is the fixed-width
table: check, worst error, bound, pass/FAIL/skip and a note.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np

from derive.verify.rows import CHECKS
from derive.verify.subject import FP_ERRORS_RAISE, TITLES, Check, Result, Subject


def run(
    module: ModuleType,
    selected: list[Check] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Result]:
    """Run every check on `module`; valid input must raise no warning anywhere. `progress(done,
    total, next check)` is called before each check and once at the end.

    Checks run with warnings as errors and NumPy's overflow/divide/invalid flags raising, so a
    module that computes on unvalidated numbers fails here on every CPU, not only on those whose
    BLAS kernel happens to report the flags (OpenBLAS's SkylakeX kernel does; Haswell's does not).
    `selected` runs only those checks (the framework targets run the accuracy checks).
    """
    subject = Subject(module)
    results = []
    checks = CHECKS if selected is None else selected
    for done, chk in enumerate(checks):
        if progress is not None:
            progress(done, len(checks), chk.__name__)
        with warnings.catch_warnings(), np.errstate(**FP_ERRORS_RAISE):  # type: ignore[arg-type]
            warnings.simplefilter("error")
            try:
                results.append(chk(subject))
            except Exception as exc:
                title = TITLES.get(chk.__name__, chk.__name__)
                results.append(Result(title, math.inf, 0.0, "FAIL", f"{type(exc).__name__}: {exc}"))
    if progress is not None:
        progress(len(checks), len(checks), "done")
    return results


def table(results: list[Result]) -> str:
    """The results as a fixed-width table: check, worst error, bound, pass/fail/skip."""
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  {'worst':>10}  {'bound':>10}  result", "-" * (width + 32)]
    for r in results:
        worst = "-" if math.isnan(r.worst) else f"{r.worst:.2e}"
        line = f"{r.name:<{width}}  {worst:>10}  {r.bound:>10.1e}  {r.status}"
        lines.append(line + (f"  ({r.note})" if r.note else ""))
    return "\n".join(lines)
