"""The derivation of the notes' story, step by step: from one-hot labels to a convex loss.

It follows the student's notes (d2l's softmax-regression chapter) in order and answers their two
open questions: where the loss comes from (maximum likelihood), and why the gradient is taken
w.r.t. `o_j` first (the loss reaches `W` and `b` only through `o`). Every claim carries the checks
that prove it; the gradient, Hessian and matrix forms are *derived* from `model.loss` by
`derive.calculus`, not typed here, so the same steps hold for any loss model.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from derive import notation as S
from derive.losses.derivation.core import core_steps, linear_model_step
from derive.losses.derivation.final import final_forms, results
from derive.losses.derivation.forms import derive_forms
from derive.losses.derivation.labels import LABEL_GRADIENT
from derive.losses.derivation.symbols import LOSS, YHAT, as_vector
from derive.losses.derivation.wording import Wording
from derive.losses.model import SOFTMAX_CROSS_ENTROPY, LossModel, class_sum, softmax_expr
from derive.symbolic.functions import stabilize
from derive.symbolic.rewrites import (
    canonical_sums,
    expand_in_sums,
    expand_logs,
    factor_exponentials,
    factor_shift,
    probabilities_sum_to_one,
    refine_indices,
    split_sums,
)
from derive.symbolic.steps import (
    ConcreteK,
    Definitions,
    Derivation,
    GeneralK,
    Positive,
    Prose,
    Question,
    Step,
)


def _cross_entropy(model: LossModel) -> sp.Expr:
    """`-sum_k y_k log yhat_k` in the defined `yhat`, where that *is* the model's loss once
    `yhat` is unfolded (softmax regression); otherwise the model's loss as written."""
    in_yhat = -class_sum(S.y[S.k] * sp.log(YHAT[S.k]))
    unfolded = Definitions().define(YHAT[S.j], model.prediction).unfold(in_yhat)
    return in_yhat if unfolded == model.loss else model.loss


def softmax_regression(model: LossModel = SOFTMAX_CROSS_ENTROPY) -> Derivation:
    """The notes' derivation for `model` (softmax cross-entropy by default)."""
    j, k, c, K = S.j, S.k, S.c, S.K
    o = S.o
    yhat_j = YHAT[j]
    lse = sp.log(sp.Sum(sp.exp(o[S.m]), (S.m, 1, K)))
    forms = derive_forms(model)
    concrete = ConcreteK()
    story_before = (
        Step(
            "one_hot",
            Prose("One-hot labels", "独热编码"),
            Prose(
                "The label of a sample is a vector with a single 1, at the true class $c$: "
                "$y_j = \\delta_{jc}$. Its entries sum to 1, so $y$ is a probability "
                "distribution; every step below that uses $\\sum_j y_j = 1$ therefore also holds "
                "for soft labels.",
                "输出为向量，用独热编码表示标签：只有真实类别 $c$ 的位置为 1，其余为 0，即 "
                "$y_j = \\delta_{jc}$。各分量之和为 1，所以 $y$ 是一个概率分布；下文凡是用到 "
                "$\\sum_j y_j = 1$ 的步骤，对软标签同样成立。",
            ),
            sp.Sum(sp.KroneckerDelta(j, c), (j, 1, K)),
            sp.Integer(1),
            (GeneralK((refine_indices(c),)), concrete),
        ),
        linear_model_step(
            Prose("The linear model", "线性模型"),
            Prose(
                "Each sample $x$ ($d$ features) gets $K$ logits $o = W^T x + b$; for a batch "
                "$X$ ($n \\times d$) the rows stack into $O = XW + \\mathbf{1} b^T$, "
                "with $W$ of shape $d \\times K$. Entry by entry, "
                "$O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$.",
                "每个样本 $x$（$d$ 个特征）得到 $K$ 个输出 $o = W^T x + b$；一个批量 $X$"
                "（$n \\times d$）按行堆叠成 $O = XW + \\mathbf{1} b^T$，其中 $W$ 的形状为 "
                "$d \\times K$。逐元素地，$O_{rj} = \\sum_a X_{ra} W_{aj} + b_j$。",
            ),
        ),
        Step(
            "softmax_definition",
            Prose("Softmax turns logits into probabilities", "softmax 把输出变成概率"),
            Prose(
                "Exponentiate each logit and divide by the sum, so the outputs are positive and "
                "sum to 1.",
                "softmax 就是用来把输出结果变成概率（和为 1）：对每个输出取指数，再除以它们的和。",
            ),
            YHAT[j],
            model.prediction,
            definition=True,
        ),
        Step(
            "softmax_positive",
            Prose("Every probability is positive", "每个概率都为正"),
            Prose(
                "An exponential is positive, and so is a sum of exponentials.",
                "指数函数恒为正，指数之和也为正。",
            ),
            yhat_j,
            sp.Integer(0),
            (Positive(),),
            relation=">",
        ),
        Step(
            "softmax_sums_to_one",
            Prose("The probabilities sum to 1", "概率之和为 1"),
            Prose(
                "The denominator does not depend on $j$, so it comes out of the sum and cancels "
                "the numerator.",
                "分母与 $j$ 无关，可以提到求和号外面，与分子相消。",
            ),
            sp.Sum(yhat_j, (j, 1, K)),
            sp.Integer(1),
            (GeneralK((split_sums, canonical_sums)), concrete),
        ),
        Step(
            "softmax_shift_invariance",
            Prose("Shifting every logit changes nothing", "所有输出同时平移不改变结果"),
            Prose(
                "$e^{-s}$ factors out of numerator and denominator. With $s = \\max_k o_k$ every "
                "exponent is $\\le 0$, which is how the generated code computes softmax without "
                "overflow.",
                "$e^{-s}$ 可以从分子和分母中同时提出并约掉。取 $s = \\max_k o_k$ 时所有指数都 "
                "$\\le 0$，生成的代码正是这样计算 softmax 而不溢出。",
            ),
            sp.exp(o[j] - S.shift) / sp.Sum(sp.exp(o[S.m] - S.shift), (S.m, 1, K)),
            yhat_j,
            (GeneralK((factor_shift, canonical_sums)), concrete),
        ),
        Step(
            "softmax_argmax",
            Prose("The most probable class is the largest logit", "最大概率对应最大输出"),
            Prose(
                "The ratio of two probabilities is $e^{o_j - o_k}$, which exceeds 1 exactly when "
                "$o_j > o_k$; so $\\operatorname{argmax}_j \\hat{y}_j = \\operatorname{argmax}_j "
                "o_j$ and prediction needs no softmax at all.",
                "两个概率之比为 $e^{o_j - o_k}$，当且仅当 $o_j > o_k$ 时大于 1；所以 argmax "
                "返回的最大概率下标就是最大输出的下标，预测时不必计算 softmax。",
            ),
            YHAT[j] / YHAT[k],
            sp.exp(o[j] - o[k]),
            (GeneralK((softmax_for_yhat, canonical_sums, sp.powsimp)),),
        ),
        Step(
            "likelihood_one_hot",
            Prose(
                "The likelihood of a label is the probability of its class",
                "一个标签的似然就是真实类别的预测概率",
            ),
            Prose(
                "The model gives class $j$ the probability $\\hat{y}_j$, so it gives the label $y$ "
                "the probability $P(y \\mid x) = \\prod_j \\hat{y}_j^{y_j}$. For a one-hot "
                "label every factor with $y_j = 0$ is 1, and what is left is the probability "
                "predicted for the true class $c$.",
                "模型给类别 $j$ 的概率是 $\\hat{y}_j$，所以标签 $y$ 的概率是 "
                "$P(y \\mid x) = \\prod_j \\hat{y}_j^{y_j}$。对独热编码的标签，"
                "$y_j = 0$ 的因子都等于 1，剩下的就是对真实类别 $c$ 的预测概率。",
            ),
            sp.Product(YHAT[j] ** sp.KroneckerDelta(j, c), (j, 1, K)),
            YHAT[c],
            (GeneralK((product_as_exp_of_sum, refine_indices(c))), concrete),
        ),
        Step(
            "log_likelihood",
            Prose(
                "Its negative log is the cross-entropy",
                "取负对数就是交叉熵",
            ),
            Prose(
                "$-\\log$ turns the product into a sum and the powers into factors: the negative "
                "log-likelihood of one sample is the cross-entropy between the label $y$ and the "
                "prediction $\\hat{y}$. This is the loss $\\ell$; it holds for soft labels too.",
                "套上 $-\\log$，累乘变累加，指数变成系数：一个样本的负对数似然就是标签 $y$ 与预测 "
                "$\\hat{y}$ 之间的交叉熵。这就是损失 $\\ell$；对软标签同样成立。",
            ),
            -sp.log(sp.Product(YHAT[j] ** S.y[j], (j, 1, K))),
            -sp.Sum(S.y[j] * sp.log(YHAT[j]), (j, 1, K)),
            (GeneralK((expand_logs, expand_logs)), concrete),
        ),
        Step(
            "maximum_likelihood",
            Prose(
                "Maximum likelihood: the product becomes a sum of cross-entropies",
                "极大似然估计：累乘变累加，得到交叉熵之和",
            ),
            Prose(
                "Training maximises the joint probability of all labels, the product over the "
                "samples (row $i$ of $Y$ and $\\hat{Y}$ is sample $i$). Taking $-\\log$ turns the "
                "product into a sum and the maximisation into a minimisation, and each term is one "
                "sample's cross-entropy: minimising the (mean) cross-entropy loss is maximum "
                "likelihood. This is where the loss comes from.",
                "训练要最大化所有标签的联合概率，即对所有样本的累乘（$Y$ 和 $\\hat{Y}$ 的第 $i$ 行"
                "是第 $i$ 个样本）。外面套一个 $-\\log$，累乘就变成累加，最大化也变成最小化，而每一"
                "项正是一个样本的交叉熵：最小化（平均）交叉熵损失函数等价于极大似然估计。"
                "损失函数就是这样来的。",
            ),
            -sp.log(
                sp.Product(
                    sp.Product(S.Yhat_entries[S.i, j] ** S.Y_entries[S.i, j], (j, 1, K)),
                    (S.i, 1, S.n),
                )
            ),
            sp.Sum(
                -sp.Sum(S.Y_entries[S.i, j] * sp.log(S.Yhat_entries[S.i, j]), (j, 1, K)),
                (S.i, 1, S.n),
            ),
            (GeneralK((expand_logs, expand_logs, nested_sums_as_one), size="n"),),
        ),
        Step(
            "cross_entropy_one_hot",
            Prose("With one-hot labels only the true class counts", "独热标签下只有真实类别起作用"),
            Prose(
                "Terms with $y_j = 0$ are unrelated classes and vanish; what is left is $-\\log$ "
                "of the probability predicted for the true class. The larger that probability, "
                "the smaller the loss: minimising the mean cross-entropy maximises the joint "
                "probability of all labels.",
                "$y_j = 0$ 的项是无关类别，不计入损失；剩下的就是真实类别（值为 1 的位置）的预测"
                "概率取 $-\\log$。这个概率越大，损失越小：最小化交叉熵损失函数等价于最大化训练数据"
                "集所有标签类别的联合预测概率。",
            ),
            -sp.Sum(sp.KroneckerDelta(j, c) * sp.log(YHAT[j]), (j, 1, K)),
            -sp.log(YHAT[c]),
            (GeneralK((refine_indices(c),)), concrete),
        ),
        Step(
            "cross_entropy",
            Prose("The cross-entropy loss", "交叉熵损失函数"),
            Prose(
                "The loss $\\ell$ of one sample is this cross-entropy. Every later step is "
                "checked with $\\ell$ and $\\hat{y}$ replaced by their definitions.",
                "一个样本的损失 $\\ell$ 就是这个交叉熵。之后的每一步在检验时都把 $\\ell$ 和 "
                "$\\hat{y}$ 换成它们的定义。",
            ),
            LOSS,
            _cross_entropy(model),
            definition=True,
        ),
    )
    logsumexp_shift = Step(
        "logsumexp_shift",
        Prose("The stable log-sum-exp", "数值稳定的 log-sum-exp"),
        Prose(
            "The same factoring as for softmax: with $s = \\max_k o_k$ no exponential "
            "overflows, and the largest term is $e^0 = 1$, so the log never sees 0.",
            "与 softmax 相同的提取：取 $s = \\max_k o_k$ 时指数不会溢出，最大的一项是 "
            "$e^0 = 1$，所以 $\\log$ 的参数不会为 0。",
        ),
        lse,
        S.shift + sp.log(sp.Sum(sp.exp(o[S.m] - S.shift), (S.m, 1, K))),
        (
            GeneralK((factor_shift, expand_logs, canonical_sums)),
            ConcreteK(prepare=(factor_exponentials,)),
        ),
    )
    convexity = Step(
        "hessian_psd",
        Prose("The loss is convex", "损失是凸函数"),
        Prose(
            "$v^T H v$ is a variance, $\\sum_j p_j (v_j - \\sum_k p_k v_k)^2 \\ge 0$ for a "
            "probability vector $p = \\hat{y}$. So $H$ is positive semi-definite, the loss "
            "is convex in $o$, and, $o$ being linear in $W$ and $b$, convex in them too: "
            "gradient descent has no spurious local minima to get stuck in.",
            "$v^T H v$ 是一个方差：对概率向量 $p = \\hat{y}$，"
            "$\\sum_j p_j (v_j - \\sum_k p_k v_k)^2 \\ge 0$。所以 $H$ 半正定，损失对 $o$ 是凸"
            "的；$o$ 又是 $W$、$b$ 的线性函数，所以对 $W$、$b$ 也是凸的："
            "梯度下降不会陷入局部极小。",
        ),
        sp.Sum(
            S.v[j] * (S.p[j] * S.v[j] - S.p[j] * sp.Sum(S.p[k] * S.v[k], (k, 1, K))),
            (j, 1, K),
        ),
        sp.Sum(S.p[j] * (S.v[j] - sp.Sum(S.p[k] * S.v[k], (k, 1, K))) ** 2, (j, 1, K)),
        (
            GeneralK((expand_in_sums, split_sums, probabilities_sum_to_one)),
            ConcreteK(prepare=(_probability_simplex,)),
        ),
    )
    wording = {
        "loss_in_logits": Wording(
            Prose(
                "Substitute softmax and use $\\sum_j y_j = 1$",
                "代入 softmax 并利用 $\\sum_j y_j = 1$",
            ),
            Prose(
                "$\\log$ of a quotient is a difference; the $\\log \\sum_k e^{o_k}$ term does "
                "not depend on $j$ and is multiplied by $\\sum_j y_j = 1$, so it cancels down "
                "to a single term.",
                "把 $\\hat{y}$ 代入：对商取 $\\log$ 变成差；$\\log \\sum_k e^{o_k}$ 与 $j$ 无关，"
                "乘以 $\\sum_j y_j = 1$，所以直接约掉成单独一项。",
            ),
        ),
        "gradient_logits": Wording(
            Prose("The gradient with respect to the logits", "对 $o_j$ 求梯度"),
            Prose(
                "The derivative of $\\log$ is $1/x$, so the denominator is the sum inside the "
                "log; the derivative of $e^{o_j}$ is itself, and of the sum only the term "
                "$e^{o_j}$ depends on $o_j$, so the numerator is $e^{o_j}$. In the second sum "
                "only $y_j o_j$ contains $o_j$, leaving $y_j$.",
                "$\\ln$ 求导为 $1/x$，所以分母为 $\\log$ 内的函数；$\\exp$ 求导为本身，求和中只有一"
                "项含 $o_j$，其他项与之无关，导数为 0，所以分子为 $e^{o_j}$。后半部分只有 $y_j$ 与 "
                "$o_j$ 相乘，其余都是无关的常数，所以只剩下 $y_j$。",
            ),
        ),
        "gradient_stable": Wording(
            Prose("Prediction minus label", "预测减去标签"),
            Prose(
                "Written with softmax, the gradient is the prediction minus the label: "
                "this is the per-element result the whole derivation was after.",
                "用 softmax 写出来，梯度就是预测减去标签：至此，求梯度推算完成。",
            ),
        ),
        "chain_rule_W": Wording(
            Prose(
                "Why $o_j$ first: the chain rule to $W$", "为什么对 $o_j$ 求梯度：链式法则到 $W$"
            ),
            Prose(
                "The loss depends on $W$ and $b$ only through the logits $o = W^T x + b$. By the "
                "chain rule, $\\partial \\ell / \\partial W_{aj} = \\sum_k (\\partial \\ell / "
                "\\partial o_k)(\\partial o_k / \\partial W_{aj}) = x_a (\\hat{y}_j - y_j)$: "
                "$\\partial \\ell / \\partial o$ is the factor both parameter gradients share, so "
                "it is derived once, for any $K$, and the linear layer only adds $x$.",
                "损失只通过 $o = W^T x + b$ 依赖于 $W$ 和 $b$。由链式法则，$\\partial \\ell / "
                "\\partial W_{aj} = \\sum_k (\\partial \\ell / \\partial o_k)(\\partial o_k / "
                "\\partial W_{aj}) = x_a (\\hat{y}_j - y_j)$：$\\partial \\ell / \\partial o$ 是 "
                "$W$ 和 $b$ 两个梯度共有的因子，只需对任意 $K$ 推导一次，线性层只再乘上 $x$。"
                "这就是先对 $o_j$ 求梯度、而不是直接对 $W$ 和 $b$ 求的原因。",
            ),
        ),
        "chain_rule_b": Wording(
            Prose("The chain rule to $b$", "链式法则到 $b$"),
            Prose(
                "$\\partial o_k / \\partial b_j = \\delta_{kj}$, so the bias gradient is "
                "$\\partial \\ell / \\partial o$ itself.",
                "$\\partial o_k / \\partial b_j = \\delta_{kj}$，所以偏置的梯度就是 "
                "$\\partial \\ell / \\partial o$ 本身。",
            ),
        ),
        "batch_gradient_W": Wording(
            Prose("The batch gradient for $W$", "批量上 $W$ 的梯度"),
            Prose(
                "For the mean loss above, summing $x^{(i)} (\\hat{y}^{(i)} - y^{(i)})^T$ over "
                "the samples is one matrix product; row $i$ of $\\hat{Y} - Y$ is the gradient "
                "above at sample $i$.",
                "对上面的平均损失，把各样本的 $x^{(i)} (\\hat{y}^{(i)} - y^{(i)})^T$ 相加，"
                "就是一次矩阵乘法；$\\hat{Y} - Y$ 的第 $i$ 行是样本 $i$ 处的上述梯度。",
            ),
        ),
        "batch_gradient_b": Wording(
            Prose("The batch gradient for $b$", "批量上 $b$ 的梯度"),
            Prose(
                "The column sums of $\\hat{Y} - Y$, divided by $n$.",
                "$\\hat{Y} - Y$ 的列和除以 $n$。",
            ),
        ),
        "hessian_logits": Wording(
            Prose("The second derivative", "二阶导数"),
            Prose(
                "Differentiating the gradient once more; the label drops out.",
                "对梯度再求一次导；标签项消失。",
            ),
        ),
        "hessian_stable": Wording(
            Prose("The Hessian is the softmax's covariance", "Hessian 是 softmax 的协方差矩阵"),
            Prose(
                "In softmax notation, $H = \\operatorname{diag}(\\hat{y}) - \\hat{y} "
                "\\hat{y}^T$: the covariance matrix of the one-hot label drawn from $\\hat{y}$.",
                "用 softmax 表示，$H = \\operatorname{diag}(\\hat{y}) - \\hat{y}\\hat{y}^T$："
                "即按 $\\hat{y}$ 抽取的独热标签的协方差矩阵。",
            ),
        ),
        "hessian_vector_product": Wording(
            Prose("Hessian-vector product", "Hessian 与向量之积"),
            Prose(
                "Applying $H$ to a direction $v$ needs no $K \\times K$ matrix.",
                "把 $H$ 作用在方向 $v$ 上，不需要构造 $K \\times K$ 矩阵。",
            ),
        ),
    }
    # The gradient in the defined prediction: the stable gradient with softmax(o)_j written
    # as yhat_j (step "gradient_stable" states it). The chain-rule and batch steps display this
    # vector (`yhat - y`), so what they show follows the loss; the elementwise checks prove
    # those displays against the loss as defined.
    stable_gradient = stabilize(forms.gradient)
    in_prediction = stable_gradient.xreplace({stabilize(model.prediction): yhat_j})
    shows = in_prediction != stable_gradient
    shared = core_steps(
        model,
        forms,
        wording,
        per_sample=as_vector(in_prediction) if shows else None,
        batch_gradient=as_vector(in_prediction, batch=True) if shows else None,
    )
    steps = []
    for name, step in shared.items():
        if name == "gradient_stable" and shows:
            # The stable gradient written in the prediction, `yhat_j - y_j`: proved by unfolding
            # the definition of yhat (then the stable kernels' raw forms), as before.
            step = replace(step, lhs=forms.gradient, rhs=in_prediction)
        steps.append(step)
        if name == "loss_in_logits":
            steps.append(logsumexp_shift)
    steps = [*story_before, *steps, convexity]
    by_name = {step.name: step for step in steps}
    forms_out, sources = final_forms(model, forms, by_name, prediction="softmax_definition")
    compositions = {"gradient_labels": LABEL_GRADIENT} if "gradient_labels" in by_name else {}
    return Derivation(
        name=model.name,
        title=model.title,
        intro=Prose(
            "A machine-checked derivation of the gradient of softmax regression.",
            "softmax 回归梯度的机器验证推导。",
        ),
        steps=tuple(steps),
        final_forms=forms_out,
        model=model,
        questions=QUESTIONS,
        results=results(shared),
        final_sources=sources,
        final_compositions=compositions,
    )


#: The two `==？？？==` of the student's notes, answered on the first page.
QUESTIONS = (
    Question(
        Prose(
            "Where does the loss function come from, and why take the log of the likelihood?",
            "损失函数是从哪里来的？为什么要用极大似然估计并取对数？",
        ),
        Prose(
            "From maximum likelihood. The model gives a label $y$ the probability "
            "$\\prod_j \\hat{y}_j^{y_j}$, which for a one-hot label is just the probability it "
            "predicts for the true class. Training maximises the joint probability of all labels, "
            "a product over the samples; taking $-\\log$ turns the product into a sum and the "
            "maximum into a minimum, and each sample's term comes out as the cross-entropy. So "
            "the cross-entropy loss is not a separate choice: minimising it is maximum "
            "likelihood, which is what the equation below, proved, says.",
            "来自极大似然估计。模型给标签 $y$ 的概率是 $\\prod_j \\hat{y}_j^{y_j}$，对独热编码的"
            "标签，它就是对真实类别的预测概率。训练要最大化所有标签的联合概率，也就是对所有样本"
            "累乘；外面套一个 $-\\log$，累乘变累加，最大化变最小化，而每个样本的那一项恰好是交叉"
            "熵。所以交叉熵损失函数不是另外选定的：最小化它就是极大似然估计，下式（已证明）说的正"
            "是这一点。",
        ),
        ("likelihood_one_hot", "log_likelihood", "maximum_likelihood", "cross_entropy_one_hot"),
        shows="maximum_likelihood",
    ),
    Question(
        Prose(
            "Why is the gradient taken with respect to $o_j$ and not $W$ and $b$?",
            "为什么是对 $o_j$ 求梯度，而不是对 $W$ 和 $b$？",
        ),
        Prose(
            "Because the loss reaches $W$ and $b$ only through the logits $o = W^T x + b$. The "
            "chain rule writes each parameter's gradient as $\\partial \\ell / \\partial o$ times "
            "the derivative of $o$, which for a linear layer is just $x$ (for $W$) or 1 (for $b$). "
            "So $\\partial \\ell / \\partial o_j$ is the part worth deriving, once and for any "
            "$K$; the gradients for $W$ and $b$, for one sample and for a batch, follow from it. "
            "The gradient in $o_j$ is the first half of the gradient in $W$ and $b$, not a "
            "different question.",
            "因为损失只通过输出 $o = W^T x + b$ 依赖于 $W$ 和 $b$。由链式法则，每个参数的梯度都"
            "等于 $\\partial \\ell / \\partial o$ 乘以 $o$ 对该参数的导数，而线性层的这个导数就是 "
            "$x$（对 $W$）或 1（对 $b$）。所以真正需要推导的是 $\\partial \\ell / \\partial o_j$，"
            "对任意 $K$ 推导一次即可；$W$ 和 $b$ 的梯度（单个样本和批量）都由它得到。对 $o_j$ "
            "求梯度是对 $W$、$b$ 求梯度的前一半，而不是另一个问题。",
        ),
        ("gradient_logits", "chain_rule_W", "chain_rule_b", "batch_gradient_W"),
        shows="chain_rule_W",
    ),
)


def softmax_for_yhat(expr: sp.Expr) -> sp.Expr:
    """Substitute the definition `yhat_t = e^{o_t} / sum_m e^{o_m}` (step `softmax_definition`)."""
    out: sp.Expr = expr.replace(
        lambda t: isinstance(t, sp.Indexed) and t.base == YHAT,
        lambda t: softmax_expr(t.indices[0]),
    )
    return out


def product_as_exp_of_sum(expr: sp.Expr) -> sp.Expr:
    """`prod_j a_j = exp(sum_j log a_j)` for positive factors (every `yhat_j` is positive)."""
    out: sp.Expr = expr.replace(
        lambda t: isinstance(t, sp.Product),
        lambda t: sp.exp(sp.Sum(expand_logs(sp.log(t.function)), *t.limits)),
    )
    return out


def nested_sums_as_one(expr: sp.Expr) -> sp.Expr:
    """`sum_i (-sum_j f) = -sum_{i,j} f`: constants out of sums, nested sums as one double sum.

    (Not `canonical_sums`, which would give the inner and outer index one name.)
    """

    def pull(s: sp.Sum) -> sp.Expr:
        f = s.function
        if f.could_extract_minus_sign():
            return -pull(sp.Sum(-f, *s.limits))
        if isinstance(f, sp.Sum):
            return sp.Sum(f.function, *f.limits, *s.limits)
        return s

    out: sp.Expr = expr.replace(lambda t: isinstance(t, sp.Sum), pull)
    return out


def _probability_simplex(expr: sp.Expr) -> sp.Expr:
    """Substitute `p_K = 1 - sum_{j<K} p_j` for the largest index present (a probability vector)."""
    idx = sorted(int(t.indices[0]) for t in expr.atoms(sp.Indexed) if t.base == S.p)
    if not idx:
        return expr
    top = idx[-1]
    out: sp.Expr = expr.subs(S.p[top], 1 - sum(S.p[t] for t in range(1, top)))
    return out
