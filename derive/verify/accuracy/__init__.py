"""Accuracy of an emitted module: every function against a high-precision value of its derivation.

The module carries its own reference: `reference()` returns the derived forms (as derived, before
the accurate rewrites) and their first partial derivatives as mpmath functions, printed by SymPy
from the same expressions. This package imports nothing of the symbolic layers: it evaluates those
functions at 50 digits or more (doubling the precision until two evaluations agree to 30 digits,
which cancellation at a lead of 800 needs) and compares each emitted function with them.

The bound, per output entry F, in the precision of the call (unit roundoff u):

    |computed - exact| <= C * u * (|F| + sum_v s_v |dF/dv|) + C * tiny

`s_v` is the scale the function really depends on: for a function invariant under a common shift
of the logits (tested on the reference), the logit's gap to its row max; for real targets the
residual |o - y| (logits and targets); else |o|; |y| for soft targets and 0 for exact 0/1 targets
(and labels); |v| for a direction; |p| for a parameter. `tiny` is the smallest normal number
(values that underflow). C = 32: each emitted formula rounds a handful of times (the shift, exp,
a class sum whose pairwise rounding grows like log2 K, a log, a division, the 1/n), each at most
u relative to a term bounded by the sensitivity sum; 32 covers about ten such roundings with
margin, and is small enough that a lost digit fails (cancellation of an offset of 1e8 costs
1e8 units, a complement rounded to 0 costs 1/u).

The package, in order: `cases` (what a family is made of), `reference` (the exact values),
`families` (the adversarial inputs), `measure` (the comparison).
"""

from derive.verify.accuracy.cases import Case, Family, Module
from derive.verify.accuracy.families import FAMILIES
from derive.verify.accuracy.measure import INFINITE_LOSS, OVERFLOWS, C, measure

__all__ = ["FAMILIES", "INFINITE_LOSS", "OVERFLOWS", "C", "Case", "Family", "Module", "measure"]
