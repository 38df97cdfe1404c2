"""What `predict` returns: the decision's definition and the rule the code prints.

Contract: `decision_steps(model, steps)` adds `decision_definition` (the outcome with the least
expected 0-1 loss under the model's probabilities; for real targets the output itself) and, where
there is one, `decision_rule`, proved from the definition by `derive.symbolic.decision.decide`.
"""

from __future__ import annotations

import sympy as sp

from derive import notation as S
from derive.losses.derivation.symbols import YHAT
from derive.losses.model import LossModel
from derive.symbolic.decision import OUTCOME, ArgMax, ArgMin, Exceeds, decide
from derive.symbolic.steps import (
    GeneralK,
    Prose,
    Step,
)

#: The decision's outcome (a class, or 0/1 for a binary output) and its display names.
_C_HAT = sp.Symbol(r"\hat{c}")
_T_HAT = sp.IndexedBase(r"\hat{t}")


def decision_steps(model: LossModel, steps: dict[str, Step]) -> None:
    """What `predict` returns: defined as the outcome with the least expected 0-1 loss under the
    model's probabilities (for real targets: the output itself), and the rule the code prints,
    proved from that definition (`decide`)."""
    t, m = OUTCOME, S.m
    if model.targets == "distribution":
        lhs: sp.Basic = _C_HAT
        risk = sp.Sum(YHAT[m] * (1 - sp.KroneckerDelta(m, t)), (m, 1, S.K))
        defined: sp.Basic = ArgMin(risk, t, sp.Integer(1), S.K)
        rule: sp.Basic = ArgMax(YHAT[t], t, sp.Integer(1), S.K)
        words = DECISION_WORDS["distribution"]
    elif model.targets == "binary":
        lhs = _T_HAT[S.j]
        p = YHAT[S.j]
        defined = ArgMin(p * (1 - t) + (1 - p) * t, t, sp.Integer(0), sp.Integer(1))
        rule = Exceeds(p, sp.Rational(1, 2))
        words = DECISION_WORDS["binary"]
    else:
        lhs, defined, rule = _T_HAT[S.j], YHAT[S.j], None
        words = DECISION_WORDS["real"]
    title, reason = words[0]
    steps["decision_definition"] = Step(
        "decision_definition", title, reason, lhs, defined, definition=True
    )
    if rule is None:
        return
    title, reason = words[1]
    steps["decision_rule"] = Step(
        "decision_rule", title, reason, lhs, rule, (GeneralK((decide,), size="K"),)
    )


DECISION_WORDS: dict[str, tuple[tuple[Prose, Prose], ...]] = {
    "distribution": (
        (
            Prose("The predicted class", "预测的类别"),
            Prose(
                "`predict` returns the class with the least expected 0-1 loss under the model's "
                "probabilities: the probability that any other class is the true one.",
                "`predict` 返回在模型概率下期望 0-1 损失最小的类别：即真实类别是其他类别的概率"
                "最小。",
            ),
        ),
        (
            Prose("The predicted class is the most probable one", "预测的类别是概率最大的类别"),
            Prose(
                "The delta picks out $\\hat{y}_t$ from the sum, and a term or a positive factor "
                "that does not depend on $t$ does not move an argmax: this is what the code "
                "computes.",
                "$\\delta$ 从求和中取出 $\\hat{y}_t$，与 $t$ 无关的项和正因子不改变 argmax 的位置："
                "代码计算的就是这个式子。",
            ),
        ),
    ),
    "binary": (
        (
            Prose("The predicted outcome", "预测的结果"),
            Prose(
                "For each output, `predict` returns the outcome $t \\in \\{0, 1\\}$ with the least "
                "expected 0-1 loss when the model gives 1 the probability $\\hat{y}_j$.",
                "对每个输出，`predict` 返回期望 0-1 损失最小的结果 $t \\in \\{0, 1\\}$，其中模型给 "
                "1 的概率为 $\\hat{y}_j$。",
            ),
        ),
        (
            Prose("A probability above one half", "概率大于二分之一"),
            Prose(
                "The expected loss is affine in $t$, so the smaller one is at $t = 1$ exactly "
                "when its slope $1 - 2 \\hat{y}_j$ is negative (a tie predicts 0): this is what "
                "the code computes.",
                "期望损失对 $t$ 是仿射的，所以当且仅当斜率 $1 - 2 \\hat{y}_j$ 为负时 $t = 1$ 更小"
                "（相等时预测 0）：代码计算的就是这个式子。",
            ),
        ),
    ),
    "real": (
        (
            Prose("The prediction", "预测值"),
            Prose(
                "For real-valued targets `predict` returns the model's output itself.",
                "对实数目标，`predict` 返回模型的输出本身。",
            ),
        ),
    ),
}
