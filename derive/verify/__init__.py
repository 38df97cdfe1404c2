"""Numerical checks of an emitted module; imports nothing of the symbolic layers above it.

`run(module)` runs every row of `CHECKS` and `table(results)` lays the results out; each row is a
function `Subject -> Result`. The modules, lowest first (each imports only those before it):

- `subject`: the module under test (`Subject`), a row's `Result`, the shared bounds and helpers.
- `references`: the loss, the prediction and the softmax kernels evaluated with mpmath.
- `accuracy`: the adversarial input families and the error bound each is measured against.
- `rows`: the rows of the table, one module per kind of evidence; `CHECKS` in the table's order.
- `runner`: `run` and `table`.
- `frameworks`: the accuracy rows on a torch, JAX or array-API module, through a NumPy view.
"""

from derive.verify.references import reference_mean_loss, reference_prediction
from derive.verify.rows import CHECKS
from derive.verify.rows.refusals import bad_inputs
from derive.verify.runner import run, table
from derive.verify.subject import Check, Result, Subject

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
