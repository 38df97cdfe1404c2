"""The loss catalogue: each entry is a `LossModel`, i.e. data, and goes through the same pipeline.

Losses are written the way a textbook writes them (naively: `log` of a softmax, `1/(1+exp(-z))`);
the derivation simplifies them and the printer finds the stable kernels, so nothing here is
tuned for numerics.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from derive import notation as S
from derive.losses.model import (
    SOFTMAX_CROSS_ENTROPY,
    LossModel,
    Param,
    class_sum,
    softmax_expr,
)
from derive.symbolic.functions import sigmoid_expr
from derive.symbolic.steps import Prose

eps = sp.Symbol("eps", nonnegative=True)
T = sp.Symbol("T", positive=True)
o, y, k, j = S.o, S.y, S.k, S.j


def _softmax_of(row_scale: sp.Expr, index: sp.Symbol) -> sp.Expr:
    return sp.exp(o[index] / row_scale) / sp.Sum(sp.exp(o[S.m] / row_scale), (S.m, 1, S.K))


LABEL_SMOOTHING = LossModel(
    name="label_smoothing",
    title=Prose("Label-smoothed cross-entropy", "标签平滑交叉熵"),
    loss=-class_sum(((1 - eps) * y[k] + eps / S.K) * sp.log(softmax_expr(k))),
    prediction=softmax_expr(j),
    targets="distribution",
    params=(
        Param(
            eps,
            0.1,
            low=0.0,
            high=1.0,
            doc="smoothing: the target mixes in eps/K",
            role="smoothing",
        ),
    ),
    description=Prose(
        "cross-entropy against the target mixed with the uniform distribution, "
        "$(1 - \\varepsilon) y + \\varepsilon / K$",
        "与均匀分布混合后的目标 $(1 - \\varepsilon) y + \\varepsilon / K$ 之间的交叉熵",
    ),
)

TEMPERATURE = LossModel(
    name="temperature_softmax",
    title=Prose("Temperature-scaled softmax cross-entropy", "带温度的 softmax 交叉熵"),
    loss=-class_sum(y[k] * sp.log(_softmax_of(T, k))),
    prediction=_softmax_of(T, j),
    targets="distribution",
    params=(
        Param(
            T,
            2.0,
            low=0.0,
            low_inclusive=False,
            doc="temperature: logits are divided by T",
            role="temperature",
        ),
    ),
    description=Prose(
        "cross-entropy of $\\operatorname{softmax}(o / T)$ against the target",
        "$\\operatorname{softmax}(o / T)$ 与目标之间的交叉熵",
    ),
)

_sigmoid = sigmoid_expr(o[k])
LOGISTIC = LossModel(
    name="logistic_regression",
    title=Prose("Sigmoid and binary cross-entropy", "sigmoid 与二元交叉熵"),
    loss=class_sum(-y[k] * sp.log(_sigmoid) - (1 - y[k]) * sp.log(1 - _sigmoid)),
    prediction=sigmoid_expr(o[j]),
    targets="binary",
    description=Prose(
        "binary cross-entropy of $\\sigma(o_k)$ against targets $y_k \\in [0, 1]$, one per "
        "output (logistic regression for $K = 1$, multi-label for $K > 1$)",
        "$\\sigma(o_k)$ 与目标 $y_k \\in [0, 1]$ 之间的二元交叉熵，每个输出一个"
        "（$K = 1$ 时即逻辑回归，$K > 1$ 时为多标签）",
    ),
)

SQUARED_ERROR = LossModel(
    name="squared_error",
    title=Prose("Squared error (linear regression)", "平方误差（线性回归）"),
    loss=class_sum((o[k] - y[k]) ** 2 / 2),
    prediction=o[j],
    targets="real",
    description=Prose(
        "half the squared distance between the outputs and real targets",
        "输出与实数目标之间平方距离的一半",
    ),
)


def with_weight_decay(model: LossModel, name: str | None = None) -> LossModel:
    """`model` plus the penalty `lam/2 ||W||^2` on the weights (the bias is not penalised).

    The strength is the parameter with role "weight_decay", named `lam` unless the model
    already has a parameter of that name (then `weight_decay`)."""
    taken = {prm.symbol.name for prm in model.params}
    symbol = S.lam if S.lam.name not in taken else sp.Symbol("weight_decay", nonnegative=True)
    strength = Param(symbol, 1e-4, low=0.0, doc="weight decay strength", role="weight_decay")
    return replace(
        model,
        name=name or f"{model.name}_l2",
        title=Prose(model.title.en + " with weight decay", model.title.zh + "（带权重衰减）"),
        params=(*model.params, strength),
    )


CATALOGUE_MODELS: tuple[LossModel, ...] = (
    SOFTMAX_CROSS_ENTROPY,
    LABEL_SMOOTHING,
    TEMPERATURE,
    LOGISTIC,
    SQUARED_ERROR,
    with_weight_decay(SOFTMAX_CROSS_ENTROPY),
)
