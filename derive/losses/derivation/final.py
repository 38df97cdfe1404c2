"""What a derivation hands on: the forms the code prints, each with its source step, and the
closing results.

Contract: `final_forms` names, for every printed form, the step whose rhs it is
(`Derivation.check` confirms every pair); `results` picks the closing summary's steps.
"""

from __future__ import annotations

import sympy as sp

from derive import notation as S
from derive.losses.derivation.forms import Forms, reference_forms
from derive.losses.derivation.labels import LABEL_PARTS
from derive.losses.derivation.symbols import LOSS, mean_factor
from derive.losses.model import LossModel
from derive.symbolic.steps import (
    Prose,
    Result,
    Step,
)


def final_forms(
    model: LossModel,
    derived: Forms,
    steps: dict[str, Step],
    prediction: str = "prediction_definition",
) -> tuple[dict[str, sp.Basic], dict[str, str]]:
    """The forms the code generator prints, each the right-hand side of a named step, and the
    name of that step (`Derivation.check` confirms every pair)."""
    sources = {
        "loss": "loss_in_logits" if "loss_in_logits" in steps else "loss_definition",
        "gradient": "gradient_logits",
        "prediction": prediction,
        "logits": "linear_model",
        # The chain rule through the linear layer, with G = dL/dO: what the fused code computes
        # per block of rows.
        "mean_loss": "mean_loss",
        "dO": "batch_gradient_O",
        "dW": "batch_gradient_W",
        "db": "batch_gradient_b",
        "hessian": "hessian_logits",
        "hvp": "hessian_vector_product",
        "decay_loss": "weight_decay_penalty",
        "decay_grad": "weight_decay",
        "decay_hvp": "weight_decay_hvp",
        "objective": "objective",
        "objective_grad": "objective_gradient_W",
        "hvp_direction": "logit_direction",
        "hvp_W": "hessian_vector_product_W",
        "decision": "decision_rule" if "decision_rule" in steps else "decision_definition",
    }
    present = {name: src for name, src in sources.items() if src in steps}
    forms = {name: steps[src].rhs for name, src in present.items()}
    # The code computes the rows of G (the per-sample gradient, whatever the notes show for
    # it) and prints the chain rule in G with the mean's factor: checked equal to the batch
    # steps' displayed rhs.
    forms |= batch_forms(steps["mean_loss"].rhs)
    if "objective_gradient_W" in steps:
        # In G as well: the batch term the loop accumulates, plus the penalty's gradient.
        penalty = [
            t for t in steps["objective_gradient_W"].rhs.args if t != steps["batch_gradient_W"].rhs
        ]
        forms["objective_grad"] = sp.MatAdd(forms["dW"], *penalty)
    # A size, not a formula: the code's sums over rows are divided by it (step "batch_sum").
    forms["batch_rows"] = S.n
    # What the code prints: the last link of each accurate chain (all of them checked steps).
    for name, chain in derived.chains.items():
        form = forms[f"code_{name}"] = chain[-1][1]
        # Its source: the step whose rhs it is; the labels' parts A and B come from the step
        # whose rhs is their composition (`LABEL_GRADIENT`, checked by `Derivation.check`).
        exact = [n for n, st in steps.items() if st.rhs == form]
        if name in LABEL_PARTS and "gradient_labels" in steps:
            present[f"code_{name}"] = "gradient_labels"
        elif exact:
            present[f"code_{name}"] = exact[-1]
    # References for verify (raw forms and their derivatives, evaluated in high precision):
    # not printed as code, so they need no source step.
    forms |= {f"reference_{name}": e for name, e in reference_forms(model, derived).items()}
    return forms, present


def batch_forms(mean: sp.MatrixExpr) -> dict[str, sp.MatrixExpr]:
    """The chain rule through the mean `L = c ell^T 1` (step `mean_loss`'s rhs) in G, the rows of
    the per-sample gradient: `dO = c G`, `dW = c X^T G`, `db = c G^T 1`, the forms the code
    prints (each checked equal to its batch step's rhs)."""
    c = mean_factor(mean)
    return {
        "dO": sp.MatMul(c, S.Gm),
        "dW": sp.MatMul(c, S.Xm.T, S.Gm),
        "db": sp.MatMul(c, S.Gm.T, S.ones_n),
    }


def results(steps: dict[str, Step]) -> tuple[Result, ...]:
    """The closing summary: the gradient (in its stable form where there is one), the batch
    gradients and the Hessian, each the right side of the step that proved it."""
    o, j, k = S.o, S.j, S.k
    wanted = (
        (Prose("Gradient w.r.t. the logits", "对输出 $o$ 的梯度"), sp.Derivative(LOSS, o[j]),
         ("gradient_stable", "gradient_logits")),
        (Prose("Batch gradient for $W$", "批量上 $W$ 的梯度"), None, ("batch_gradient_W",)),
        (Prose("Batch gradient for $b$", "批量上 $b$ 的梯度"), None, ("batch_gradient_b",)),
        (Prose("Hessian w.r.t. the logits", "对输出 $o$ 的 Hessian"),
         sp.Derivative(LOSS, o[j], o[k]), ("hessian_stable", "hessian_logits")),
    )  # fmt: skip
    out = []
    for label, lhs, names in wanted:
        name = next((n for n in names if n in steps), None)
        if name is not None:
            out.append(Result(label, steps[name].lhs if lhs is None else lhs, name))
    return tuple(out)
