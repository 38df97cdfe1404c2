"""The printed forms for integer labels: the loss and the gradient with a one-hot target.

Contract: `label_steps(model, forms, steps)` adds `loss_labels` and `gradient_labels`;
`gradient_labels`' rhs is `LABEL_GRADIENT` composed of the printed forms named in
`LABEL_PARTS`, and `Derivation.check` confirms that composition.
"""

from __future__ import annotations

import sympy as sp

from derive import notation as S
from derive.losses.derivation.forms import Forms
from derive.losses.model import LossModel
from derive.symbolic.functions import to_raw
from derive.symbolic.rewrites import (
    canonical_sums,
    expand_logs,
    factor_exponentials,
    factor_shift,
    refine_indices,
    split_sums,
)
from derive.symbolic.steps import (
    ConcreteK,
    FirstOf,
    GeneralK,
    Prose,
    Step,
)

#: The forms the code prints for the gradient at integer labels: `A` for every class and `B`
#: assigned at the label's column, and how they make up the rhs of step `gradient_labels`:
#: `(1 - delta_jc) A + delta_jc B`, in placeholders named after the printed forms. The step
#: is built from it and `Derivation.check` confirms that its rhs is exactly that composition of
#: the printed forms (not only that it contains them).
LABEL_PARTS = ("gradient_labels", "gradient_at_label")
LABEL_GRADIENT = (1 - sp.KroneckerDelta(S.j, S.c)) * sp.Symbol("code_gradient_labels") + (
    sp.KroneckerDelta(S.j, S.c) * sp.Symbol("code_gradient_at_label")
)


def compose(composition: sp.Basic, forms: dict[str, sp.Basic]) -> sp.Basic:
    """`composition` with each placeholder replaced by the form of that name."""
    return composition.xreplace(
        {s: forms[s.name] for s in composition.free_symbols if s.name in forms}
    )


def label_steps(model: LossModel, forms: Forms, steps: dict[str, Step]) -> None:
    """The printed forms for integer labels: the target one-hot at the label c."""
    onehot = {
        a: sp.KroneckerDelta(a.indices[0], S.c)
        for a in (forms.loss.atoms(sp.Indexed) | forms.gradient.atoms(sp.Indexed))
        if a.base == S.y
    }
    general = (
        refine_indices(S.c),
        to_raw,
        factor_shift,
        expand_logs,
        split_sums,
        canonical_sums,
    )
    proof = FirstOf(
        (GeneralK(general), ConcreteK(Ks=model.concrete_Ks, prepare=(factor_exponentials,)))
    )
    chains = forms.chains
    printed = {f"code_{name}": chains[name][-1][1] for name in LABEL_PARTS}
    for name, lhs, rhs, title in (
        (
            "loss_labels",
            forms.loss.xreplace(onehot),
            chains["loss_labels"][-1][1],
            Prose("The loss for an integer label", "整数标签下的损失"),
        ),
        (
            "gradient_labels",
            forms.gradient.xreplace(onehot),
            compose(LABEL_GRADIENT, printed),
            Prose("The gradient for an integer label", "整数标签下的梯度"),
        ),
    ):
        steps[name] = Step(
            name,
            title,
            Prose(
                "With a one-hot target $y_k = \\delta_{kc}$ the sums over the targets pick out "
                "the label's term, so labels need no one-hot matrix; the printed form is the "
                "accurate one above.",
                "目标为独热向量 $y_k = \\delta_{kc}$ 时，对目标的求和只留下标签那一项，"
                "所以整数标签不需要独热矩阵；打印的是上面的精确形式。",
            ),
            lhs,
            rhs,
            (proof,),
        )
