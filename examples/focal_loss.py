"""A loss no catalogue entry covers: the focal loss (Lin et al., 2017), as a user model.

    derive emit --model examples/focal_loss.py --out focal/

checks its derivation, writes the notes (en/zh) and a NumPy module to `focal/`, and verifies
the module (finite differences, extreme logits, bad inputs). The loss down-weights classes the
model already predicts well: `-sum_k y_k (1 - p_k)^gamma log p_k`, with `p = softmax(o)`; with
`gamma = 0` it is the cross-entropy.

This file is trusted code (like a conftest.py): it builds the model with the public API.
"""

import sympy as sp

from derive import notation as S
from derive.losses.model import LossModel, Param, class_sum, softmax_expr
from derive.symbolic.steps import Prose

gamma = sp.Symbol("gamma", nonnegative=True)
p_k = softmax_expr(S.k)

MODEL = LossModel(
    name="focal_loss",
    title=Prose("Focal loss", "焦点损失（Focal loss）"),
    loss=-class_sum(S.y[S.k] * (1 - p_k) ** gamma * sp.log(p_k)),
    prediction=softmax_expr(S.j),
    targets="distribution",
    params=(Param(gamma, 2.0, low=0.0, doc="focusing: larger gamma down-weights easy classes"),),
    # Its expressions grow quickly with K: prove the concrete cases for K = 2 and 3 (the
    # symbolic-K proofs and the numeric checks at K = 5 still cover every step).
    concrete_Ks=(2, 3),
    # Its Hessian is a page of nested sums; this example stops at the gradient.
    second_order=False,
    description=Prose(
        "cross-entropy with each class weighted by $(1 - \\hat{y}_k)^\\gamma$, where "
        "$\\hat{y} = \\operatorname{softmax}(o)$",
        "每个类别按 $(1 - \\hat{y}_k)^\\gamma$ 加权的交叉熵，其中 "
        "$\\hat{y} = \\operatorname{softmax}(o)$",
    ),
)
