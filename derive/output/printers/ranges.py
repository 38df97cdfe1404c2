"""A parameter's declared range printed as the Python condition the emitted module checks.

A loss model declares each parameter's range as a SymPy `Interval` (`derive.losses.model`); the
emitted modules refuse a value outside it with one clear error. `print_range_check` prints the
interval as a condition on the parameter's name (`0.0 <= eps < 1.0`), its float ends exactly as
declared (`repr`, never rounded to 15 digits), so the check and the declaration cannot disagree.
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from derive import notation as S


class RangePrinter(PythonCodePrinter):
    """Plain Python for a parameter's range check; a float end prints as the float itself
    (`repr`), never rounded to 15 digits."""

    def _print_Float(self, expr: sp.Float) -> str:
        return repr(float(expr))


def print_range_check(interval: sp.Interval, name: str) -> str:
    """`interval` as a Python condition on the finite real `name`: a chained comparison
    (`0.0 <= eps < 1.0`), the name first where only one end is finite (`lam >= 0.0`), `True` for
    the whole line."""
    value = S.checked_name(name, "parameter name")
    ends = RangePrinter()
    low = None if interval.start.is_infinite else ends.doprint(interval.start)
    high = None if interval.end.is_infinite else ends.doprint(interval.end)
    below = "<" if interval.left_open else "<="
    above = "<" if interval.right_open else "<="
    if low is not None and high is not None:
        return f"{low} {below} {value} {above} {high}"
    if low is not None:
        return f"{value} {'>' if interval.left_open else '>='} {low}"
    if high is not None:
        return f"{value} {above} {high}"
    return "True"
