"""The shared middle of every derivation, as checked steps.

Contract: `core_steps(model, forms)` returns, by name and in order: the loss in logits, its
gradient w.r.t. the logits (derived for a symbolic K), one step per accurate rewrite of each
printed form, the chain rule to `W` and `b` (per sample, then for the batch), the sum over
blocks of rows, the weight decay where the model has one, the decision, the integer-label forms,
the Hessian and its vector products. `linear_model_step` is the linear layer `O = X W + 1 b^T`.
"""

from __future__ import annotations

import itertools

import sympy as sp

from derive import notation as S
from derive.losses.derivation.binding import (
    MEANING,
    MEANING_DIRECTION,
    MEANING_G,
    MEANING_HVP_W,
    MEANING_LINEAR,
    MEANING_R,
    MEANING_R_V,
    MEANING_SUM,
    batch_sum_binding,
    binding,
    linear_only,
)
from derive.losses.derivation.chains import rule_proof, rule_wording
from derive.losses.derivation.decision import decision_steps
from derive.losses.derivation.forms import Forms
from derive.losses.derivation.labels import label_steps
from derive.losses.derivation.symbols import (
    BATCH_SUM_LHS,
    BATCH_SUM_RHS,
    LOSS,
    MEAN_DEFINITION,
    MEAN_LOSS,
    OBJECTIVE,
    PENALTY,
    G_dot,
    O_dot,
    d2L_dW2_V,
    d2R_dW2_V,
    dJ_dW,
    dL_db,
    dl_db,
    dL_dO,
    dL_dW,
    dl_dW,
    dR_dW,
    grad_vec,
    mean_factor,
    x_vec,
)
from derive.losses.derivation.wording import Wording, generic_wording
from derive.losses.model import LossModel
from derive.symbolic.rewrites import (
    expand_logs,
    refine_indices,
    split_sums,
    targets_sum_to_one,
)
from derive.symbolic.steps import (
    CONCRETE_KS,
    ConcreteK,
    Elementwise,
    GeneralK,
    Numeric,
    Prose,
    Step,
)

BATCH_SHAPES = ((2, 2, 2), (3, 2, 3))
HVP_W_SHAPES = ((2, 2, 2), (3, 1, 2))
#: Every log argument here is positive (probabilities, sums of exponentials): logs of products
#: and quotients may be expanded, as in the concrete-K checks.
LOGS = (expand_logs,)
FULL_KS = CONCRETE_KS


def linear_model_step(title: Prose, reason: Prose) -> Step:
    """`O = X W + 1 b^T`, proved against `O_rj = sum_a X_ra W_aj + b_j`."""
    return Step(
        "linear_model",
        title,
        reason,
        S.Om,
        sp.MatAdd(S.Xm * S.Wm, S.ones_n * S.bm.T),
        (Elementwise(linear_only, shapes=((2, 2, 2), (3, 2, 4)), meaning=MEANING_LINEAR),),
    )


def core_steps(
    model: LossModel,
    forms: Forms,
    wording: dict[str, Wording] | None = None,
    per_sample: sp.MatrixExpr | None = None,
    batch_gradient: sp.MatrixExpr | None = None,
) -> dict[str, Step]:
    """The shared steps, by name, in order; `wording` tells some of them in other words.

    `per_sample` (a K-vector) and `batch_gradient` (n x K) are `dl/do` and `n dL/dO` as a
    derivation displays them (the story: `yhat - y` and `Yhat - Y`, from its step that proves
    the substitution); by default they are shown as `dl/do` and `G = dL/dO`. Either way the
    elementwise checks prove the displayed formula against the loss as defined.
    """
    words = generic_wording(model) | (wording or {})
    j, k, o = S.j, S.k, S.o
    Ks = model.concrete_Ks
    # A model that asks for fewer concrete proofs (a large user loss) gets fewer numeric points.
    points = 20 if Ks == FULL_KS else 6
    concrete = ConcreteK(Ks=Ks, targets_simplex=model.simplex_targets, prepare=(expand_logs,))
    bind = binding(model, forms)
    K_max = 3 if model.concrete_Ks == FULL_KS else 2
    sample_shapes = ((1, 2, 2), (1, 3, 3)) if K_max >= 3 else ((1, 2, 2),)
    # A model that asks for fewer concrete proofs gets the smallest batch with two samples.
    batch_shapes = BATCH_SHAPES if K_max >= 3 else ((2, 2, 2),)

    def step(name: str, lhs: sp.Basic, rhs: sp.Basic, checks: tuple[object, ...]) -> Step:
        w = words[name]
        return Step(name, w.title, w.reason, lhs, rhs, checks)  # type: ignore[arg-type]

    steps: dict[str, Step] = {}

    def accurate_steps(name: str) -> None:
        """One step per link of the chain of `name` (its rewrites into the printed form)."""
        chain = forms.chains.get(name, ())
        for (_, before), (rule, after) in itertools.pairwise(chain):
            label = f"{name}_{rule}"
            words.setdefault(label, rule_wording(name, rule))
            steps[label] = step(label, before, after, (rule_proof(rule, model),))

    if forms.loss != model.loss:
        simplex = (targets_sum_to_one,) if model.simplex_targets else ()
        rewrites = (expand_logs, split_sums, *simplex)
        # The rhs was produced by these rewrites (`loss_in_logits`): the concrete-K proof, on
        # explicit sums, is the independent one.
        steps["loss_in_logits"] = step(
            "loss_in_logits", LOSS, forms.loss, (GeneralK(rewrites, replays=True), concrete)
        )
    accurate_steps("loss")
    loss_shown = forms.loss if "loss_in_logits" in steps else LOSS
    steps["gradient_logits"] = step(
        "gradient_logits",
        sp.Derivative(loss_shown, o[j]),
        forms.gradient,
        (
            GeneralK((refine_indices(j),), replays=True),
            ConcreteK(Ks=Ks, prepare=(expand_logs,)),
            Numeric(points=points, targets_simplex=model.simplex_targets),
        ),
    )
    accurate_steps("gradient")
    sample = per_sample if per_sample is not None else grad_vec
    steps["chain_rule_W"] = step(
        "chain_rule_W",
        dl_dW,
        x_vec * sample.T,
        (Elementwise(bind, shapes=sample_shapes, meaning=MEANING, prepare=LOGS),),
    )
    steps["chain_rule_b"] = step(
        "chain_rule_b",
        dl_db,
        sample,
        (Elementwise(bind, shapes=sample_shapes, meaning=MEANING, prepare=LOGS),),
    )
    # The batch gradients carry the factor of the mean (step `mean_loss`, below).
    c = mean_factor(MEAN_DEFINITION)
    if batch_gradient is not None:
        dO, dW, db, meaning = (
            sp.MatMul(c, batch_gradient),
            sp.MatMul(c, S.Xm.T, batch_gradient),
            sp.MatMul(c, batch_gradient.T, S.ones_n),
            MEANING,
        )
    else:
        dO, dW, db, meaning = (
            sp.MatMul(c, S.Gm),
            sp.MatMul(c, S.Xm.T, S.Gm),
            sp.MatMul(c, S.Gm.T, S.ones_n),
            MEANING_G,
        )
    # The mean over the batch: a definition, which the batch gradients' checks differentiate
    # (change it and they fail) and the code prints as the mean of its per-sample losses.
    w = words["mean_loss"]
    steps["mean_loss"] = Step(
        "mean_loss",
        w.title,
        w.reason,
        MEAN_LOSS,
        MEAN_DEFINITION,
        definition=True,
    )
    steps["batch_gradient_O"] = step(
        "batch_gradient_O",
        dL_dO,
        dO,
        (Elementwise(bind, shapes=batch_shapes, meaning=meaning, prepare=LOGS),),
    )
    steps["batch_gradient_W"] = step(
        "batch_gradient_W",
        dL_dW,
        dW,
        (Elementwise(bind, shapes=batch_shapes, meaning=meaning, prepare=LOGS),),
    )
    steps["batch_gradient_b"] = step(
        "batch_gradient_b",
        dL_db,
        db,
        (Elementwise(bind, shapes=batch_shapes, meaning=meaning, prepare=LOGS),),
    )
    steps["batch_sum"] = step(
        "batch_sum",
        BATCH_SUM_LHS,
        BATCH_SUM_RHS,
        (Elementwise(batch_sum_binding, shapes=((2, 2, 2), (3, 2, 3)), meaning=MEANING_SUM),),
    )
    decay = model.decay_symbol
    if decay is not None:
        w = words["weight_decay_penalty"]
        steps["weight_decay_penalty"] = Step(
            "weight_decay_penalty",
            w.title,
            w.reason,
            PENALTY,
            decay / 2 * sp.Trace(S.Wm.T * S.Wm),
            definition=True,
        )
        steps["weight_decay"] = step(
            "weight_decay",
            dR_dW,
            decay * S.Wm,
            (Elementwise(bind, shapes=((1, 2, 2), (1, 3, 2)), meaning=MEANING_R),),
        )
        # The objective trained: a definition, which the gradient's check differentiates
        # (change the penalty or the sum and it fails) and the code prints.
        w = words["objective"]
        steps["objective"] = Step(
            "objective",
            w.title,
            w.reason,
            OBJECTIVE,
            MEAN_LOSS + PENALTY,
            definition=True,
        )
        steps["objective_gradient_W"] = step(
            "objective_gradient_W",
            dJ_dW,
            sp.MatAdd(dW, decay * S.Wm),
            (Elementwise(bind, shapes=batch_shapes, meaning=meaning, prepare=LOGS),),
        )
        steps["weight_decay_hvp"] = step(
            "weight_decay_hvp",
            d2R_dW2_V,
            decay * S.Vm,
            (Elementwise(bind, shapes=((1, 2, 2), (1, 3, 2)), meaning=MEANING_R_V),),
        )
    accurate_steps("prediction")
    decision_steps(model, steps)
    if model.simplex_targets:
        label_steps(model, forms, steps)
    if forms.hessian is None or forms.hvp is None:
        return steps
    steps["hessian_logits"] = step(
        "hessian_logits",
        sp.Derivative(forms.gradient, o[k]),
        forms.hessian,
        (
            GeneralK((refine_indices(j, k),), replays=True),
            ConcreteK(Ks=Ks),
            Numeric(points=points),
        ),
    )
    accurate_steps("hessian")
    steps["hessian_vector_product"] = step(
        "hessian_vector_product",
        sp.Sum(forms.hessian * S.v[k], (k, 1, S.K)),
        forms.hvp,
        (GeneralK((refine_indices(j),), replays=True), ConcreteK(Ks=Ks)),
    )
    accurate_steps("hvp")
    steps["logit_direction"] = step(
        "logit_direction",
        O_dot,
        S.Xm * S.Vm,
        (Elementwise(bind, shapes=batch_shapes, meaning=MEANING_DIRECTION),),
    )
    steps["hessian_vector_product_W"] = step(
        "hessian_vector_product_W",
        d2L_dW2_V,
        sp.MatMul(1 / S.n, S.Xm.T, G_dot),
        # NOTE: second derivatives of explicit entries grow fast with n, d and K (n=3, d=2,
        # K=3 takes ~30 s for softmax regression): a square and a non-square shape suffice for
        # the chain rule; the Hessian-vector product itself is proved for symbolic K above.
        (Elementwise(bind, shapes=HVP_W_SHAPES, meaning=MEANING_HVP_W, prepare=LOGS),),
    )
    return steps
