"""The stable form the framework targets print: `stable(expr)` rewrites a final form into stable
kernels (`stabilize`; the derivation's `*_stable` steps check that this rewrite is an identity).

The integer-label forms (`labels_form`, `split_label_delta`) live with the other accuracy rules in
`derive.symbolic.accurate`, where the derivation's label steps use them too.
"""

from __future__ import annotations

import sympy as sp

from derive.symbolic.functions import stabilize


def stable(expr: sp.Expr) -> sp.Expr:
    """`expr` in stable kernels (value unchanged)."""
    return stabilize(expr)
