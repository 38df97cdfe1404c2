"""How the shared steps are told in the notes: a title and a reason per step, in English and
Chinese.

Contract: prose only, never a formula that a check does not prove: every displayed formula is a
step's own lhs and rhs. A derivation (the softmax-regression story) may tell a step in its own
words by passing its own `Wording` to `core_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass

from derive.losses.model import LossModel
from derive.symbolic.steps import (
    Prose,
)


@dataclass(frozen=True)
class Wording:
    """How a shared step is told: its title and its reason (never its formula: every displayed
    formula is the step's own, checked, lhs and rhs)."""

    title: Prose
    reason: Prose


def generic_wording(model: LossModel) -> dict[str, Wording]:
    return {
        "loss_in_logits": Wording(
            Prose("The loss in the logits", "用输出 $o$ 表示的损失"),
            Prose(
                "Logs of products and quotients are expanded and sums are split"
                + (", and $\\sum_j y_j = 1$ is used." if model.simplex_targets else "."),
                "展开乘积与商的对数并拆分求和"
                + ("，并利用 $\\sum_j y_j = 1$。" if model.simplex_targets else "。"),
            ),
        ),
        "loss_stable": Wording(
            Prose("The stable form of the loss", "损失的数值稳定形式"),
            Prose(
                "Overflow-prone shapes are rewritten as stable kernels (log-sum-exp, softplus); "
                "the check proves the rewrite changes nothing.",
                "把容易溢出的形式改写为数值稳定的核函数（log-sum-exp、softplus）；检验证明改写前后相等。",
            ),
        ),
        "gradient_logits": Wording(
            Prose("The gradient with respect to the logits", "对 $o_j$ 求梯度"),
            Prose(
                "Differentiate for a symbolic number of classes: the sums over $k$ produce "
                "$\\delta_{jk}$, which pick out the $j$-th term.",
                "对任意类别数求导：对 $k$ 的求和产生 $\\delta_{jk}$，只留下第 $j$ 项。",
            ),
        ),
        "gradient_stable": Wording(
            Prose("The gradient in stable form", "梯度的数值稳定形式"),
            Prose(
                "The same gradient written with stable kernels: what the generated code computes.",
                "用数值稳定的核函数写出同一个梯度：生成的代码就计算这个式子。",
            ),
        ),
        "chain_rule_W": Wording(
            Prose("The chain rule to $W$", "链式法则到 $W$"),
            Prose(
                "The loss reaches $W$ only through $o = W^T x + b$, so "
                "$\\partial \\ell / \\partial W_{aj} = x_a \\, \\partial \\ell / \\partial o_j$.",
                "损失只通过 $o = W^T x + b$ 依赖于 $W$，所以 "
                "$\\partial \\ell / \\partial W_{aj} = x_a \\, \\partial \\ell / \\partial o_j$。",
            ),
        ),
        "chain_rule_b": Wording(
            Prose("The chain rule to $b$", "链式法则到 $b$"),
            Prose(
                "$\\partial o_k / \\partial b_j = \\delta_{kj}$: the bias gradient is "
                "$\\partial \\ell / \\partial o$ itself.",
                "$\\partial o_k / \\partial b_j = \\delta_{kj}$：偏置的梯度就是 "
                "$\\partial \\ell / \\partial o$ 本身。",
            ),
        ),
        "mean_loss": Wording(
            Prose("The mean loss over a batch", "批量上的平均损失"),
            Prose(
                "The training loss of a batch of $n$ samples is the mean of the per-sample "
                "losses: entry $r$ of $\\boldsymbol{\\ell}$ is the loss at sample $r$.",
                "$n$ 个样本的训练损失是各样本损失的平均：$\\boldsymbol{\\ell}$ 的第 $r$ 个分量"
                "是样本 $r$ 处的损失。",
            ),
        ),
        "batch_gradient_O": Wording(
            Prose("The batch gradient for the logits", "批量上对输出 $O$ 的梯度"),
            Prose(
                "The loss of sample $r$ depends only on row $r$ of $O$, so row $r$ of "
                "$\\partial L / \\partial O$ is the gradient above at sample $r$, divided by $n$.",
                "样本 $r$ 的损失只依赖于 $O$ 的第 $r$ 行，所以 $\\partial L / \\partial O$ 的"
                "第 $r$ 行是样本 $r$ 处的上述梯度除以 $n$。",
            ),
        ),
        "batch_gradient_W": Wording(
            Prose("The batch gradient for $W$", "批量上 $W$ 的梯度"),
            Prose(
                "For the mean loss above, with $G$ the $n \\times K$ matrix whose row $r$ is "
                "the gradient above at sample $r$.",
                "对上面的批量平均损失，记 $G$ 为 $n \\times K$ 矩阵，其第 $r$ 行是样本 $r$ "
                "处的上述梯度。",
            ),
        ),
        "batch_gradient_b": Wording(
            Prose("The batch gradient for $b$", "批量上 $b$ 的梯度"),
            Prose("The column sums of $G$, divided by $n$.", "$G$ 的列和除以 $n$。"),
        ),
        "weight_decay_penalty": Wording(
            Prose("The weight-decay penalty", "权重衰减惩罚项"),
            Prose(
                "$R(W) = \\frac{\\lambda}{2} \\lVert W \\rVert^2$ is added to the mean loss "
                "(the bias is not penalised).",
                "把 $R(W) = \\frac{\\lambda}{2} \\lVert W \\rVert^2$ 加到平均损失上"
                "（偏置不受惩罚）。",
            ),
        ),
        "batch_sum": Wording(
            Prose("Sums over blocks of rows", "按行分块求和"),
            Prose(
                "$L$ is the mean of the per-sample losses, so $n L$, $n \\, \\partial L / "
                "\\partial W$ and $n \\, \\partial L / \\partial b$ are sums over the rows: "
                "for rows split into blocks $c$ of $n_c$ rows each, they are the sums of the "
                "blocks' own $n_c L_c$, $n_c \\, \\partial L_c / \\partial W$ and "
                "$n_c \\, \\partial L_c / \\partial b$. Proved for all three and an arbitrary "
                'differentiable per-sample loss. The code\'s `reduction="sum"` returns these '
                "sums (chunks of a data set too large for one machine add them up); the mean "
                "divides them by $n$.",
                "$L$ 是各样本损失的平均，所以 $n L$、$n \\, \\partial L / \\partial W$ 和 "
                "$n \\, \\partial L / \\partial b$ 都是对行的求和：把行分成若干块 $c$（每块 "
                "$n_c$ 行），它们等于各块自身的 $n_c L_c$、$n_c \\, \\partial L_c / \\partial W$ "
                "与 $n_c \\, \\partial L_c / \\partial b$ 之和。对这三者及任意可微的单样本损失"
                '证明。代码中的 `reduction="sum"` 返回这些和（一台机器放不下的数据集按块相加）；'
                "平均值再除以 $n$。",
            ),
        ),
        "weight_decay": Wording(
            Prose("Weight decay", "权重衰减"),
            Prose(
                "The penalty $\\frac{\\lambda}{2} \\lVert W \\rVert^2$ adds $\\lambda W$ to the "
                "gradient for $W$ (the bias is not penalised).",
                "惩罚项 $\\frac{\\lambda}{2} \\lVert W \\rVert^2$ 给 $W$ 的梯度加上 $\\lambda W$"
                "（偏置不受惩罚）。",
            ),
        ),
        "objective": Wording(
            Prose("The training objective", "训练目标"),
            Prose(
                "With weight decay the objective is the mean loss plus the penalty.",
                "有权重衰减时，训练目标是平均损失加上惩罚项。",
            ),
        ),
        "objective_gradient_W": Wording(
            Prose("The objective's gradient for $W$", "训练目标对 $W$ 的梯度"),
            Prose(
                "The penalty's gradient is added to the batch gradient for $W$; the gradient "
                "for $b$ is the batch gradient's (the bias is not penalised).",
                "惩罚项的梯度加到批量上 $W$ 的梯度上；$b$ 的梯度就是批量梯度（偏置不受惩罚）。",
            ),
        ),
        "hessian_logits": Wording(
            Prose("The second derivative", "二阶导数"),
            Prose("Differentiate the gradient once more.", "对梯度再求一次导。"),
        ),
        "hessian_stable": Wording(
            Prose("The Hessian in stable form", "Hessian 的数值稳定形式"),
            Prose("What `hessian_logits` computes.", "`hessian_logits` 计算的就是这个式子。"),
        ),
        "hessian_vector_product": Wording(
            Prose("Hessian-vector product", "Hessian 与向量之积"),
            Prose(
                "Applying $H$ to a direction $v$ needs no $K \\times K$ matrix.",
                "把 $H$ 作用在方向 $v$ 上，不需要构造 $K \\times K$ 矩阵。",
            ),
        ),
        "weight_decay_hvp": Wording(
            Prose("The penalty's Hessian along a direction", "惩罚项的 Hessian 作用于方向"),
            Prose(
                "$\\partial R / \\partial W$ is linear in $W$, so moving $W$ along $V$ moves it "
                "by the same map applied to $V$.",
                "$\\partial R / \\partial W$ 对 $W$ 是线性的，所以 $W$ 沿 $V$ 移动时，"
                "它的变化就是同一个线性映射作用于 $V$。",
            ),
        ),
        "logit_direction": Wording(
            Prose("The logits along a direction in $W$", "$W$ 沿某方向移动时的输出"),
            Prose(
                "Moving $W$ along a direction $V$ ($d \\times K$) moves the logits $O = XW + "
                "\\mathbf{1} b^T$ along $\\dot{O}$.",
                "$W$ 沿方向 $V$（$d \\times K$）移动时，输出 $O = XW + \\mathbf{1} b^T$ 沿 "
                "$\\dot{O}$ 移动。",
            ),
        ),
        "hessian_vector_product_W": Wording(
            Prose("The Hessian in $W$ along a direction", "对 $W$ 的 Hessian 作用于方向"),
            Prose(
                "Differentiate the batch gradient along $V$: the logits move by $\\dot{O}$, so "
                "row $r$ of $G$ moves by the Hessian-vector product above at sample $r$ applied "
                "to row $r$ of $\\dot{O}$ (row $r$ of $\\dot{G}$), and the chain rule brings "
                "it back to $W$ as for the gradient. No $dK \\times dK$ matrix is formed.",
                "沿 $V$ 对批量梯度求导：输出移动 $\\dot{O}$，所以 $G$ 的第 $r$ 行移动的量是上面的 "
                "Hessian 与向量之积在样本 $r$ 处作用于 $\\dot{O}$ 的第 $r$ 行（即 $\\dot{G}$ 的"
                "第 $r$ 行），再像梯度那样用链式法则回到 $W$。不构造 $dK \\times dK$ 矩阵。",
            ),
        ),
    }
