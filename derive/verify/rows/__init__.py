"""The rows of `derive verify`'s table, one module per kind of evidence, in the table's order.

Each row compares the emitted module with something independent of it: central finite
differences in float64, the loss's and the prediction's own definitions evaluated with mpmath to
50 digits and more, `scipy.special` for the softmax kernels, properties over random shapes. It
reports its worst error next to its bound, and a row that does not apply says so ("skip")
instead of passing silently. Rows adapt to what the module says it is (`LOSS`, `TARGETS`,
`STABLE`). The modules (none imports another; each imports `derive.verify.subject` and, for the
mpmath rows, `derive.verify.references`):

- `differences`: gradients and Hessians against central finite differences.
- `definitions`: the loss and the prediction against their definitions (mpmath).
- `consistency`: the module against itself (unchecked path, float32, blocks, summed chunks).
- `extremes`: the softmax kernels against SciPy and mpmath, to logits of +-1e4 and -inf.
- `properties`: identities over random shapes and shifts (Hypothesis).
- `families`: one accuracy row per adversarial input family of `derive.verify.accuracy`.
- `refusals`: every bad input is refused with ValueError/TypeError.

`CHECKS` is the table's order, written out once here.
"""

from __future__ import annotations

from derive.verify.rows import families
from derive.verify.rows.consistency import blocks, dtypes, summed_chunks, unchecked_path
from derive.verify.rows.definitions import prediction, reference_loss
from derive.verify.rows.differences import fd_hessian, fd_logits, fd_parameters
from derive.verify.rows.extremes import (
    extreme_float32,
    extreme_float64,
    extreme_training,
    softmax_kernels,
)
from derive.verify.rows.properties import properties
from derive.verify.rows.refusals import bad_inputs
from derive.verify.subject import Check

#: Every row, in the order of the table.
CHECKS: list[Check] = [
    fd_logits,
    fd_parameters,
    fd_hessian,
    reference_loss,
    prediction,
    unchecked_path,
    softmax_kernels,
    extreme_float64,
    extreme_float32,
    extreme_training,
    dtypes,
    blocks,
    summed_chunks,
    properties,
    *families.ROWS,
    bad_inputs,
]
