"""The derived expressions of a model: loss, gradient, Hessian and its vector product in the
logits, each with its accurate chain, and the raw references verify evaluates.

Contract: `derive_forms(model)` differentiates the model (`derive.losses.calculus`); nothing here
is trusted until the steps built from it are checked. `reference_forms` gives the raw forms and
their first derivatives for `derive verify` (they size an error bound; no step of their own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from derive import notation as S
from derive.losses.calculus import (
    hessian_vector_product,
    logit_gradient,
    logit_hessian,
    loss_in_logits,
)
from derive.losses.derivation.chains import Chain, accurate_chains
from derive.losses.model import LossModel
from derive.symbolic.functions import LogRatio, to_raw
from derive.symbolic.rewrites import (
    refine_indices,
)


@dataclass(frozen=True)
class Forms:
    """The derived expressions of a model (what the checks confirm), and for each expression the
    code prints, its chain of accurate rewrites (`derive.symbolic.accurate`): `(rule, result)`
    pairs from the derived form to the printed one, every link a checked step."""

    loss: sp.Expr
    gradient: sp.Expr
    hessian: sp.Expr | None
    hvp: sp.Expr | None
    chains: dict[str, Chain] = field(default_factory=dict)


def derive_forms(model: LossModel) -> Forms:
    loss = loss_in_logits(model)
    gradient = logit_gradient(loss)
    hessian = hvp = None
    if model.second_order:
        hessian = logit_hessian(gradient)
        # NOTE: `hessian_logits(o)` takes the logits only; a Hessian that depends on the targets
        # (a quartic, log-cosh) is not emitted: the module is first-order, and `derive emit`
        # says so, rather than failing in the printer.
        if any(a.base == S.y for a in hessian.atoms(sp.Indexed)):
            hessian = None
        else:
            hvp = hessian_vector_product(hessian)
    return Forms(loss, gradient, hessian, hvp, accurate_chains(model, loss, gradient, hessian, hvp))


def _without_removable(chain: Chain, derived: sp.Expr) -> sp.Expr:
    """The derived form, or where its chain removes a removable singularity (`combined`: a
    `(1 - p)^g / (1 - p)` that is 0/0 at K = 1), the chain's form at that link: every link up to
    it a checked step, and `rho(p)` kept a function whose reference takes its limit."""
    rules = [rule for rule, _ in chain]
    if "combined" not in rules:
        return derived
    out: sp.Expr = chain[rules.index("combined")][1]
    return out


def reference_forms(model: LossModel, forms: Forms) -> dict[str, sp.Expr]:
    """The derived forms as raw formulas (exp/log only) and their first partial derivatives.

    What `derive verify` evaluates in high precision: the value of each emitted function as
    derived (before any accurate rewrite, so the rewrites are checked numerically too), and the
    sensitivities its error bound is scaled by. The derivatives only size a bound (a factor of
    two would not matter), so they are differentiated here without a step of their own.
    """
    exprs: dict[str, sp.Expr] = {"loss": forms.loss, "gradient": forms.gradient}
    if forms.hessian is not None and forms.hvp is not None:
        exprs |= {"hessian": forms.hessian, "hvp": forms.hvp}
    exprs = {name: _without_removable(forms.chains.get(name, ()), e) for name, e in exprs.items()}
    params = [p.symbol for p in model.params if p.symbol != S.lam]
    out: dict[str, sp.Expr] = {}
    for name, expr in exprs.items():
        raw = to_raw(expr, keep=(LogRatio,))
        out[name] = raw
        variables = [("o", S.o[S.m]), ("y", S.y[S.m])] + (
            [("v", S.v[S.m])] if name == "hvp" else []
        )
        for label, var in variables:
            out[f"{name}_d{label}"] = refine_indices(S.m)(sp.diff(raw, var))
        for prm in params:
            out[f"{name}_d{prm.name}"] = sp.diff(raw, prm)
    return out
