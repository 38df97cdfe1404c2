"""The notation, in one place: symbols, indices, shapes and how they are displayed.

d2l's notation is used throughout: a sample `x` (d features) maps to logits `o = W^T x + b`
(`W` is d x K), a batch `X` (n x d) to `O = X W + 1 b^T`. Class indices run from 1 to a *symbolic*
K so that the derivation holds for every number of classes; concrete checks substitute K = 2..8.

One meaning per letter (`tests/test_printing.py` checks that no two scalar symbols share a
name): j, k, m class indices (m is also what a clashing bound index is renamed to), i the sample,
a the feature, c the true class, s the shift, K/n/d the sizes; o, y, yhat, p, v per-class vectors.

Names here reach generated code through SymPy's printers, which copy names verbatim, so every name
is validated as a plain identifier (`checked_name`).
"""

from __future__ import annotations

import keyword

import sympy as sp

from derive.errors import ModelDefinitionError


def checked_name(name: str, what: str = "name") -> str:
    """Return `name` if it is safe to print into code: an identifier, no keyword, no dunder."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ModelDefinitionError(
            f"{what} {name!r}: expected a plain Python identifier",
            "the name is printed into generated code",
            "use letters, digits and _, not starting with a digit (e.g. my_loss)",
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ModelDefinitionError(f"{what} {name!r}: a Python keyword cannot name generated code")
    if name.startswith("__") or name.endswith("__"):
        raise ModelDefinitionError(f"{what} {name!r}: dunder names are refused")
    return name


# Sizes: classes, batch, features.
K = sp.Symbol("K", integer=True, positive=True)
n = sp.Symbol("n", integer=True, positive=True)
d = sp.Symbol("d", integer=True, positive=True)

# Class indices (1..K), a sample index (1..n), a feature index (1..d), and the true class c.
j = sp.Symbol("j", integer=True, positive=True)
k = sp.Symbol("k", integer=True, positive=True)
m = sp.Symbol("m", integer=True, positive=True)
i = sp.Symbol("i", integer=True, positive=True)
a = sp.Symbol("a", integer=True, positive=True)
c = sp.Symbol("c", integer=True, positive=True)

# Per-sample vectors, indexed by class (or feature for x).
o = sp.IndexedBase("o", real=True)  # logits
y = sp.IndexedBase("y", real=True)  # target distribution (one-hot or soft)
v = sp.IndexedBase("v", real=True)  # a direction, for Hessian-vector products
x = sp.IndexedBase("x", real=True)  # one sample's features
W = sp.IndexedBase("W", real=True)  # weights, d x K
b = sp.IndexedBase("b", real=True)  # bias, K
w = sp.IndexedBase("w", real=True)  # a direction minus its entry at the row's largest logit
z = sp.IndexedBase("z", real=True)  # logits minus their row max (the accurate, shifted logits)
p = sp.IndexedBase("p", positive=True)  # a probability vector (used in the PSD argument)
yhat = sp.IndexedBase("yhat", positive=True)  # the prediction softmax(o), printed \hat{y}
# A batch entry by entry: row i of Y is the label of sample i, row i of Yhat its prediction.
Y_entries = sp.IndexedBase("Y", real=True)
Yhat_entries = sp.IndexedBase("Yhat", positive=True)
P = sp.IndexedBase("P", positive=True)  # per-sample likelihoods P(y_i | x_i)

#: The arrays the accurate forms compute besides the inputs, as a docstring defines them beside a
#: formula that uses them (the notes say why in the step that introduces each); `t` is the class
#: of the row's largest logit, the one both are centred at.
AUXILIARY: dict[sp.IndexedBase, str] = {
    w: r"w_{k} = v_{k} - v_{t}",
    z: r"z_{k} = o_{k} - o_{t}",
}
LEADING_CLASS = r"t = \operatorname{argmax}_{k} o_{k}"

# The constant subtracted from every logit (shift invariance; `max_k o_k` in the code). Not `c`:
# `c` is the true class, and one letter has one meaning in the notes.
shift = sp.Symbol("s", real=True)
lam = sp.Symbol("lam", nonnegative=True)  # weight decay strength, printed as lambda

# Matrices, for the batch forms (display and the elementwise proofs).
Xm = sp.MatrixSymbol("X", n, d)
Wm = sp.MatrixSymbol("W", d, K)
bm = sp.MatrixSymbol("b", K, 1)
Om = sp.MatrixSymbol("O", n, K)
Ym = sp.MatrixSymbol("Y", n, K)
Gm = sp.MatrixSymbol("G", n, K)  # dL/dO
Vm = sp.MatrixSymbol("V", d, K)  # a direction in weight space
Yhat = sp.MatrixSymbol(r"\hat{Y}", n, K)
ones_n = sp.MatrixSymbol(r"\mathbf{1}", n, 1)


# What the class indices range over, as SymPy assumptions for `refine`.
def class_index_range(*indices: sp.Symbol) -> sp.Basic:
    """`1 <= idx <= K` for each index: lets `refine` drop the Piecewise guards of delta sums."""
    conds = [sp.Q.le(1, idx) & sp.Q.le(idx, K) for idx in indices]
    return sp.And(*conds)


#: How parameter names are written in the notes (code keeps the plain identifier).
LATEX_NAMES: dict[str, str] = {
    "eps": r"\varepsilon",
    "lam": r"\lambda",
}
