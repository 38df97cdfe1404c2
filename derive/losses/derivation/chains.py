"""The accurate rewrites of every printed expression, and how each link is told and proved.

Contract: `accurate_chains(model, ...)` gives, for each expression the code prints, the chain of
`(rule, result)` pairs from the derived form to the printed one (`derive.symbolic.accurate`);
`rule_wording` and `rule_proof` say how the step of one link is titled and which checks prove it.
`core_steps` makes one checked step per link.
"""

from __future__ import annotations

import sympy as sp

from derive import notation as S
from derive.losses.derivation.wording import Wording
from derive.losses.model import LossModel
from derive.symbolic.accurate import (
    accurate_chain,
    exponentiated,
    labels_form,
    per_class,
    split_label_delta,
    tanh_as_exp,
)
from derive.symbolic.functions import to_raw
from derive.symbolic.rewrites import (
    canonical_sums,
    expand_logs,
    factor_exponentials,
    factor_shift,
    split_sums,
    targets_sum_to_one,
)
from derive.symbolic.steps import (
    ConcreteK,
    FirstOf,
    GeneralK,
    Prose,
)

Chain = tuple[tuple[str, sp.Expr], ...]


def accurate_chains(
    model: LossModel,
    loss: sp.Expr,
    gradient: sp.Expr,
    hessian: sp.Expr | None,
    hvp: sp.Expr | None,
) -> dict[str, Chain]:
    """The accurate rewrites of every printed expression.

    The loss and the gradient are computed together in the fused loop: when the loss is
    evaluated at the shifted logits, so is the gradient (one shifted array for both).
    """
    t = model.targets
    chains = {"loss": tuple(accurate_chain(loss, t))}
    pair = True if chains["loss"][-1][0] == "shifted" else None
    chains["gradient"] = tuple(accurate_chain(gradient, t, shift=pair))
    chains["prediction"] = tuple(accurate_chain(model.prediction, t, shift=False))
    if hessian is not None and hvp is not None:
        chains["hessian"] = tuple(accurate_chain(hessian, t))
        chains["hvp"] = tuple(accurate_chain(hvp, t))
    if model.simplex_targets:
        rest, at_label = split_label_delta(labels_form(gradient))
        chains["loss_labels"] = tuple(accurate_chain(labels_form(loss), t, shift=pair))
        chains["gradient_labels"] = tuple(accurate_chain(rest, t, shift=pair))
        # The column of the label is assigned its own value (A + B at j = c), so that the
        # complement rule sees `p_c - 1` whole (adding B to a rounded p_c would lose it).
        at_c = rest.xreplace({S.j: S.c}) + at_label
        chains["gradient_at_label"] = tuple(accurate_chain(at_c, t, shift=pair))
    return chains


_WHAT = {
    "loss": Prose("the loss", "损失"),
    "gradient": Prose("the gradient", "梯度"),
    "hessian": Prose("the Hessian", "Hessian"),
    "hvp": Prose("the Hessian-vector product", "Hessian 与向量之积"),
    "prediction": Prose("the prediction", "预测"),
    "gradient_at_label": Prose("the gradient at the label", "标签处的梯度"),
}

_RULES: dict[str, tuple[Prose, Prose]] = {
    "stable": (
        Prose("in stable form", "的数值稳定形式"),
        Prose(
            "Overflow-prone shapes are rewritten as stable kernels (log-sum-exp, softmax, "
            "sigmoid, softplus); the check proves the rewrite changes nothing.",
            "把容易溢出的形式改写为数值稳定的核函数（log-sum-exp、softmax、sigmoid、softplus）；"
            "检验证明改写前后相等。",
        ),
    ),
    "endpoints": (
        Prose("split at the targets' endpoints", "按目标的端点拆分"),
        Prose(
            "Affine in each target $y \\in [0, 1]$, so $F = (1 - y) F|_{y=0} + y F|_{y=1}$: "
            "for a target of exactly 0 or 1 one term vanishes, and the other is computed "
            "without subtracting two nearly equal numbers.",
            "对每个目标 $y \\in [0, 1]$ 是仿射的，所以 $F = (1 - y) F|_{y=0} + y F|_{y=1}$："
            "目标恰为 0 或 1 时一项为零，另一项的计算不再相减两个几乎相等的数。",
        ),
    ),
    "complements": (
        Prose("with complements", "用补数表示"),
        Prose(
            "$1 - \\sigma(z) = \\sigma(-z)$ and $1 - p_j = \\sum_{m \\ne j} p_m$: the complement "
            "is computed directly, never as a difference from 1 (which rounds to 0 once "
            "$\\sigma(z)$ or $p_j$ rounds to 1).",
            "$1 - \\sigma(z) = \\sigma(-z)$：直接计算补数，而不是用 1 去减"
            "（$\\sigma(z)$ 舍入为 1 后差就成了 0）。",
        ),
    ),
    "collected": (
        Prose("with cancelling terms collected", "合并相消的项"),
        Prose(
            "Terms over the same denominator are added over it and the common factor is "
            "cancelled ($p X / (p - 1) - p^2 X / (p - 1) = -p X$), and terms that share a power "
            "$(1 - p)^{e}$ are collected under it: the code never divides by $1 - p$, which is "
            "0 once $p$ rounds to 1, and the terms that cancel meet before they are rounded.",
            "分母相同的项在该分母上相加并约去公因子（$p X / (p - 1) - p^2 X / (p - 1) = -p X$），"
            "含同一幂 $(1 - p)^{e}$ 的项合并到它之下：代码不再除以 $1 - p$"
            "（$p$ 舍入为 1 后它就是 0），相消的项在舍入之前就已相遇。",
        ),
    ),
    "log_softmax": (
        Prose("with the log-probabilities", "用对数概率表示"),
        Prose(
            "$\\operatorname{LSE}(o) - o_k = -\\log \\operatorname{softmax}(o)_k$ (sums over the "
            "same range merged first): the log of a probability is computed as such, accurate "
            "to a few ulps, instead of as a difference of two large numbers.",
            "$\\operatorname{LSE}(o) - o_k = -\\log \\operatorname{softmax}(o)_k$（先合并范围相同的"
            "求和）：概率的对数直接计算，精确到几个 ulp，而不是两个大数之差。",
        ),
    ),
    "combined": (
        Prose("with each power combined with its vanishing factor", "幂与同时趋于零的因子合并"),
        Prose(
            "$(1 - p)^{e} p \\log p = -(1 - p)^{e + 1} \\rho(p)$ with "
            "$\\rho(p) = -p \\log p / (1 - p)$, which lies between 0 and 1 (it tends to 1 as "
            "$p \\to 1$ and to 0 as $p \\to 0$), and $(1 - p) (1 - p)^{e} = (1 - p)^{e + 1}$: "
            "where $p$ rounds to 1 a power with $e < 0$ would be infinite and its factor 0, "
            "and their product NaN; combined, the code computes the finite limit.",
            "$(1 - p)^{e} p \\log p = -(1 - p)^{e + 1} \\rho(p)$，其中 "
            "$\\rho(p) = -p \\log p / (1 - p)$ 介于 0 与 1 之间（$p \\to 1$ 时趋于 1，"
            "$p \\to 0$ 时趋于 0），且 $(1 - p) (1 - p)^{e} = (1 - p)^{e + 1}$："
            "$p$ 舍入为 1 时 $e < 0$ 的幂为无穷、其因子为 0，乘积为 NaN；"
            "合并之后代码计算的是有限的极限。",
        ),
    ),
    "powered": (
        Prose("with each power of a complement from its logarithm", "补数的幂由其对数计算"),
        Prose(
            "$(1 - p)^{e} = \\exp(e \\log(1 - p))$ with $\\log(1 - p)$ from "
            "$\\operatorname{log1p}(-p)$ where $p \\le 1/2$ (from the other classes' sum "
            "elsewhere): where $p$ is small, $1 - p$ rounds with a relative error of one unit, "
            "which the power multiplies by $e$; this way it keeps its digits for any $e$.",
            "$(1 - p)^{e} = \\exp(e \\log(1 - p))$，其中 $p \\le 1/2$ 时 $\\log(1 - p)$ 由 "
            "$\\operatorname{log1p}(-p)$ 计算（否则由其余类别之和计算）：$p$ 很小时 $1 - p$ "
            "的舍入有一个单位的相对误差，幂把它放大 $e$ 倍；这样对任意 $e$ 都保留有效数字。",
        ),
    ),
    "diagonal": (
        Prose("with its diagonal apart", "对角线单独写出"),
        Prose(
            "$\\delta$ is 0 or 1, so $F = (1 - \\delta) F|_{\\delta=0} + \\delta F|_{\\delta=1}$; "
            "on the diagonal $1 - p$ is then the other classes' probability, computed without "
            "subtracting from 1.",
            "$\\delta$ 只取 0 或 1，所以 "
            "$F = (1 - \\delta) F|_{\\delta=0} + \\delta F|_{\\delta=1}$；"
            "对角线上的 $1 - p$ 于是是其余类别的概率之和，不用从 1 中减去。",
        ),
    ),
    "rationalised": (
        Prose("without a cancelling square root", "消去平方根的相减"),
        Prose(
            "$\\sqrt{A} - B = (A - B^2) / (\\sqrt{A} + B)$ for $B > 0$: where $A - B^2$ drops a "
            "constant (as $\\sqrt{1 + x^2} - 1$ does), the code no longer subtracts two nearly "
            "equal numbers, which for small $x$ loses every digit.",
            "$B > 0$ 时 $\\sqrt{A} - B = (A - B^2) / (\\sqrt{A} + B)$：当 $A - B^2$ 消去一个常数"
            "（如 $\\sqrt{1 + x^2} - 1$）时，代码不再相减两个几乎相等的数"
            "（$x$ 很小时会丢掉全部有效数字）。",
        ),
    ),
    "centred": (
        Prose("with the direction centred", "方向向量居中"),
        Prose(
            "Adding one constant to every entry of $v$ changes nothing ($H$ annihilates "
            "$\\mathbf{1}$; the check proves it for any constant), so the code uses "
            "$w_k = v_k - v_t$ with $t$ the class of the largest logit: the term "
            "$\\sum_k p_k w_k$ is then small where $p_t$ is close to 1, instead of cancelling "
            "$v_t$ against itself.",
            "给 $v$ 的每个分量加同一个常数不改变结果（$H$ 把 $\\mathbf{1}$ 映为 0；检验对任意常数"
            "证明），所以代码使用 $w_k = v_k - v_t$，$t$ 为最大 logit 的类别：$p_t$ 接近 1 时 "
            "$\\sum_k p_k w_k$ 很小，而不是 $v_t$ 与自身相消。",
        ),
    ),
    "centred_mean": (
        Prose("centred at the leading class", "以最大类别为中心"),
        Prose(
            "$A_j - \\sum_s p_s A_s = (A_j - A_t) - \\sum_s p_s (A_s - A_t)$ for any $A_t$, "
            "since $\\sum_s p_s = 1$; the code takes $t$ the class of the largest logit: "
            "where $p_t$ is close to 1 the mean is close to $A_t$ and the difference of the "
            "two would cancel, while centred the entry at $t$ is exactly 0 and the sum holds "
            "only the small probabilities of the other classes.",
            "由于 $\\sum_s p_s = 1$，对任意 $A_t$ 有 "
            "$A_j - \\sum_s p_s A_s = (A_j - A_t) - \\sum_s p_s (A_s - A_t)$；代码取 $t$ 为"
            "最大 logit 的类别：$p_t$ 接近 1 时加权平均接近 $A_t$，两者之差会相消；"
            "居中之后 $t$ 处的项恰为 0，求和中只剩其余类别的小概率。",
        ),
    ),
    "powers": (
        Prose("with powers of probabilities", "用概率的幂表示"),
        Prose(
            "$e^{q o_j} / (\\sum_k e^{o_k})^q = p_j^q$ for any real $q$: a power of a "
            "probability, bounded by 1, instead of a ratio of exponentials that overflow; "
            "$1 - p^q = -\\operatorname{expm1}(q \\log p)$, which keeps its digits where "
            "$p$ rounds to 1, and $1 - \\sum_k y_k F_k = \\sum_k y_k (1 - F_k)$ "
            "(the targets sum to 1).",
            "对任意实数 $q$，$e^{q o_j} / (\\sum_k e^{o_k})^q = p_j^q$：用不超过 1 的概率的幂，"
            "而不是会溢出的指数之比；$1 - p^q = -\\operatorname{expm1}(q \\log p)$，"
            "在 $p$ 舍入为 1 时仍保留有效数字；$1 - \\sum_k y_k F_k = \\sum_k y_k (1 - F_k)$"
            "（目标之和为 1）。",
        ),
    ),
    "logaddexp": (
        Prose("without exponentials that overflow", "不含会溢出的指数"),
        Prose(
            "$\\log(e^a + e^b) = \\operatorname{logaddexp}(a, b) = \\max(a, b) + "
            "\\log(1 + e^{-|a - b|})$, and less $\\log 2$ it is "
            "$\\frac{a + b}{2} + \\log\\cosh\\frac{a - b}{2}$ (no cancellation against "
            "$\\log 2$ where $a \\approx b$); $e^a / (e^a + e^b) = \\sigma(a - b)$ and "
            "$2 \\sigma(z) - 1 = \\tanh(z / 2)$: no exponential of a large number is formed, "
            "and nothing is subtracted from 1.",
            "$\\log(e^a + e^b) = \\operatorname{logaddexp}(a, b) = \\max(a, b) + "
            "\\log(1 + e^{-|a - b|})$，减去 $\\log 2$ 后为 "
            "$\\frac{a + b}{2} + \\log\\cosh\\frac{a - b}{2}$（$a \\approx b$ 时不与 "
            "$\\log 2$ 相消）；$e^a / (e^a + e^b) = \\sigma(a - b)$，"
            "$2 \\sigma(z) - 1 = \\tanh(z / 2)$：不计算大数的指数，也不从 1 中相减。",
        ),
    ),
    "masked": (
        Prose("with its limits at masked classes", "在被屏蔽类别处取极限"),
        Prose(
            "A class's probability times its own logit, $p_x z_x$ (from $p \\log p$), is "
            "$0 \\cdot (-\\infty)$ at a masked class; its value there is the limit "
            "$\\lim_{z \\to -\\infty} z e^{z} = 0$, so the product is computed as 0 wherever "
            "$p_x = 0$ (the convention of $x \\log x$ at 0).",
            "某类别的概率乘以它自己的 logit，$p_x z_x$（来自 $p \\log p$），在被屏蔽的类别处是 "
            "$0 \\cdot (-\\infty)$；它在那里的值是极限 "
            "$\\lim_{z \\to -\\infty} z e^{z} = 0$，所以在 $p_x = 0$ 处乘积取 0"
            "（$x \\log x$ 在 0 处的约定）。",
        ),
    ),
    "shifted": (
        Prose("at the shifted logits", "在平移后的 logits 上"),
        Prose(
            "Adding one constant to every logit changes nothing here (the check proves it for "
            "any constant), so the code uses $z_k = o_k - \\max_m o_m$: the differences of "
            "large logits are then exact before anything is combined (the loss as "
            "$-\\log \\operatorname{softmax}$).",
            "给所有 logits 加同一个常数不改变这里的值（检验对任意常数证明），所以代码使用 "
            "$z_k = o_k - \\max_m o_m$：大 logits 之差在参与运算之前就是精确的"
            "（损失即 $-\\log \\operatorname{softmax}$）。",
        ),
    ),
}


def rule_wording(name: str, rule: str) -> Wording:
    what = _WHAT[name]
    how, why = _RULES[rule]
    return Wording(Prose(f"{what.en[0].upper()}{what.en[1:]} {how.en}", f"{what.zh}{how.zh}"), why)


def rule_proof(rule: str, model: LossModel) -> FirstOf:
    """How a rewrite is proved: raw forms, then the identities the rule relies on."""
    Ks = model.concrete_Ks
    simplex = model.simplex_targets
    if rule == "shifted":
        sums_to_one = (targets_sum_to_one,) if simplex else ()
        general = (to_raw, factor_shift, expand_logs, split_sums, *sums_to_one, canonical_sums)
        concrete = ConcreteK(Ks=Ks, targets_simplex=simplex, prepare=(factor_exponentials,))
        return FirstOf((GeneralK(general), concrete))
    if rule == "stable":
        return FirstOf((GeneralK((to_raw, canonical_sums)), ConcreteK(Ks=Ks)))
    if rule == "powers":
        # p^q = exp(q log p) (the zero test's), and for 1 - sum y F the targets sum to 1.
        sums_to_one = (targets_sum_to_one,) if simplex else ()
        general = (to_raw, split_sums, *sums_to_one, canonical_sums)
        concrete = ConcreteK(Ks=Ks, targets_simplex=simplex)
        return FirstOf((GeneralK(general), concrete))
    if rule == "logaddexp":
        # Identities of exponentials and their logs: per class, exponentiated (exp(d) = 1).
        steps = (to_raw, tanh_as_exp, split_sums, canonical_sums, per_class, exponentiated)
        concrete = ConcreteK(Ks=Ks, prepare=(to_raw, tanh_as_exp, exponentiated))
        return FirstOf((GeneralK(steps), concrete))
    return FirstOf((GeneralK((to_raw, split_sums, canonical_sums)), ConcreteK(Ks=Ks)))
