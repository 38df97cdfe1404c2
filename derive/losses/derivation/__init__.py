"""The steps every loss goes through, from its definition to its Hessian, each with its checks.

`loss_derivation(model)` is the derivation of a catalogue or user loss: its definitions, the
linear layer and the shared steps (`core.core_steps`). The softmax-regression story
(`derive.losses.softmax_regression`) adds the notes' own steps around the shared ones and tells
them in its own words (`wording.Wording`). The modules, lowest first (each imports only the ones
before it; tests/test_layers.py checks the order):

- `symbols`: the names the steps display; a per-sample formula as a vector.
- `wording`: how each shared step is titled and explained (prose, never a formula).
- `chains`: the accurate rewrites of each printed expression, and each link's wording and proof.
- `forms`: the derived loss, gradient, Hessian, HVP in the logits; references for verify.
- `binding`: what each displayed matrix symbol means for explicit n, d, K (the elementwise checks).
- `decision`: the prediction rule, defined and proved.
- `labels`: the integer-label forms and the composition the gradient's is checked against.
- `core`: the shared steps, in order.
- `final`: the printed forms with their source steps, and the closing results.
"""

from __future__ import annotations

from derive import notation as S
from derive.losses.derivation.core import core_steps, linear_model_step
from derive.losses.derivation.final import final_forms, results
from derive.losses.derivation.forms import derive_forms
from derive.losses.derivation.labels import LABEL_GRADIENT
from derive.losses.derivation.symbols import LOSS
from derive.losses.model import LossModel
from derive.symbolic.steps import Derivation, Prose, Step


def loss_derivation(model: LossModel) -> Derivation:
    """The derivation of any loss model: its definitions, the linear layer, the shared steps."""
    forms = derive_forms(model)
    definition = Step(
        "loss_definition",
        Prose("The loss", "损失函数"),
        model.description,
        LOSS,
        model.loss,
        definition=True,
    )
    prediction = Step(
        "prediction_definition",
        Prose("The model's output", "模型的输出"),
        Prose(
            "What `predict_proba` returns for each class.",
            "`predict_proba` 对每个类别返回的值。",
        ),
        S.yhat[S.j],
        model.prediction,
        definition=True,
    )
    linear = linear_model_step(
        Prose("The linear layer", "线性层"),
        Prose(
            "Each sample's logits are $o = W^T x + b$; a batch $X$ ($n \\times d$) stacks them "
            "into rows.",
            "每个样本的输出为 $o = W^T x + b$；一个批量 $X$（$n \\times d$）把它们按行堆叠。",
        ),
    )
    shared = core_steps(model, forms)
    by_name = {"loss_definition": definition, "prediction_definition": prediction, **shared}
    by_name["linear_model"] = linear
    steps = (definition, prediction, linear, *shared.values())
    forms_out, sources = final_forms(model, forms, by_name)
    compositions = {"gradient_labels": LABEL_GRADIENT} if "gradient_labels" in by_name else {}
    return Derivation(
        name=model.name,
        title=model.title,
        intro=Prose(
            f"A machine-checked derivation of the gradient of the {model.title.en} loss.",
            f"{model.title.zh}损失梯度的机器验证推导。",
        ),
        steps=steps,
        final_forms=forms_out,
        model=model,
        results=results(shared),
        final_sources=sources,
        final_compositions=compositions,
    )
