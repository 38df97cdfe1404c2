"""Printing: exact strings for the vectorised NumPy printer and the LaTeX printer."""

from __future__ import annotations

import pytest
import sympy as sp
from sympy.codegen.cfunctions import expm1

from derive import notation as S
from derive.errors import ModelDefinitionError
from derive.output.printers.latex import to_latex
from derive.output.printers.vector import (
    VectorPrinter,
    label_complement,
    names_class_count,
    print_assignments,
    vectorised,
)
from derive.symbolic.functions import (
    CLASS_DUMMY,
    ROW,
    LogSumExp,
    Softmax,
    SoftmaxComplement,
    stabilize,
    to_raw,
)
from derive.symbolic.steps import is_zero

ROW_O = S.o[ROW]
SUM_EXP = sp.Sum(sp.exp(S.o[S.m]), (S.m, 1, S.K))


def test_softmax_is_recognised_and_printed_as_a_stable_kernel() -> None:
    expr = stabilize(sp.exp(S.o[S.j]) / SUM_EXP - S.y[S.j])
    assert expr == Softmax(ROW_O, S.j) - S.y[S.j]
    printer = VectorPrinter({"o": "O", "y": "Y"})
    assert print_assignments(printer, [("G", expr)]) == ["G = _softmax(O) - Y"]


def test_log_sum_exp_and_target_sum_print_whole_array_code() -> None:
    loss = sp.log(SUM_EXP) - sp.Sum(S.y[S.k] * S.o[S.k], (S.k, 1, S.K))
    printer = VectorPrinter({"o": "O", "y": "Y"})
    (line,) = print_assignments(printer, [("loss_rows", stabilize(loss))])
    assert line == ("loss_rows = _logsumexp(O) - np.sum(_target_mul(Y, O), axis=-1, keepdims=True)")


def test_temperature_softmax_keeps_the_scaled_row() -> None:
    T = sp.Symbol("T", positive=True)
    expr = stabilize(sp.exp(S.o[S.j] / T) / sp.Sum(sp.exp(S.o[S.m] / T), (S.m, 1, S.K)))
    assert expr == Softmax(ROW_O / T, S.j)
    assert VectorPrinter({"o": "O"}).doprint(expr) == "_softmax(O/T)"


def test_stabilize_preserves_value() -> None:
    expr = sp.exp(S.o[S.j]) * sp.exp(S.o[S.k]) / SUM_EXP**2
    stable = stabilize(expr)
    assert stable == Softmax(ROW_O, S.j) * Softmax(ROW_O, S.k)
    assert is_zero((to_raw(stable) - expr).subs(S.K, 3).doit())


@pytest.mark.parametrize("row", [ROW_O, ROW_O / sp.Symbol("T", positive=True)], ids=["o", "o/T"])
def test_the_label_complement_is_the_complement_at_the_label(row: sp.Expr) -> None:
    """`label_complement` (how a fused block prints `1 - softmax(f)_c`) is that complement: both
    as raw formulas, for K = 3 and each label; a sign or index slip leaves a nonzero rest."""
    printed = label_complement(row, LogSumExp(row)).replace(expm1, lambda x: sp.exp(x) - 1)
    rest = to_raw(printed) - to_raw(SoftmaxComplement(row, S.c))
    for c in (1, 2, 3):
        assert is_zero(rest.subs({S.K: 3, S.c: c}).doit())
    # and it is not the complement at another class
    other = to_raw(printed) - to_raw(SoftmaxComplement(row, S.j))
    assert not is_zero(other.subs({S.K: 3, S.c: 1, S.j: 2}).doit())


def test_two_free_indices_map_to_two_axes() -> None:
    printer = VectorPrinter({"o": "o"}, axes={S.j: "[:, None]", S.k: "[None, :]"})
    expr = Softmax(ROW_O, S.j) * (sp.KroneckerDelta(S.j, S.k) - Softmax(ROW_O, S.k))
    assert printer.doprint(expr) == (
        "(np.eye(K, dtype=dtype) - _softmax(o)[None, :])*_softmax(o)[:, None]"
    )


def test_label_index_prints_as_a_gather() -> None:
    printer = VectorPrinter({"o": "O"}, gather="labels")
    assert printer.doprint(LogSumExp(ROW_O) - S.o[S.c]) == (
        "_logsumexp(O) - O[_rows, labels][:, None]"
    )


def test_a_scratch_block_shifted_in_place_hands_the_top_column_to_the_fused_kernel() -> None:
    """The fused loop's block (`logits_are_scratch`): the shift binds each row's top column and
    the fused kernel takes it instead of a second argmax; where the kernel does not take it (a
    scaled row, `z / T`) the shift is the plain `O -= max`; an input's logits are never
    overwritten (`Z = O - max`)."""
    T = sp.Symbol("T", positive=True)

    def printed(row: sp.Expr, scratch: bool) -> list[str]:
        printer = VectorPrinter({"o": "O", "z": "Z"}, gather="labels")
        outputs = [("loss_rows", LogSumExp(row) - S.z[S.c]), ("G", Softmax(row, S.j))]
        return print_assignments(printer, outputs, logits_are_scratch=scratch)

    assert printed(S.z[ROW], True) == [
        "_top = _subtract_row_max(O)",
        "_h0 = O[_rows, labels][:, None]",
        "_p0, _l0 = _softmax_and_logsumexp_shifted(O, _top)",
        "loss_rows = -_h0 + _l0",
        "G = _p0",
    ]
    assert printed(S.z[ROW] / T, True)[:2] == [
        "O -= _row_max(O)",
        "_p0, _l0 = _softmax_and_logsumexp(O / T)",
    ]
    assert printed(S.z[ROW], False)[:2] == [
        "Z = O - _row_max(O)",
        "_p0, _l0 = _softmax_and_logsumexp(Z)",
    ]


@pytest.mark.parametrize("base", [S.z, S.o], ids=["shifted", "unshifted"])
def test_a_fused_block_prints_the_label_complement_from_its_own_lse_on_shifted_rows_only(
    base: sp.IndexedBase,
) -> None:
    """With the softmax and the log-sum-exp of a shifted row in one block, `1 - p_c` is
    `-expm1(z_c - LSE(z))` (no pass over P); on an unshifted row the top's `o_c - LSE(o)`
    would cancel (`m - (m + log1p(r))` rounds a tiny r away), so the complement kernel stays."""
    printer = VectorPrinter({"o": "O", "z": "Z"}, gather="labels")
    row = base[ROW]
    outputs = [("L", LogSumExp(row)), ("G", Softmax(row, S.j)), ("g", SoftmaxComplement(row, S.c))]
    text = "\n".join(print_assignments(printer, outputs))
    assert ("np.expm1(" in text) is (base == S.z)
    assert ("_complement_at(" in text) is (base == S.o)


def test_chain_rule_prints_the_measured_gemm_layout() -> None:
    printer = VectorPrinter({"X": "Xb", "G": "G", "W": "W", "b": "b"})
    assert printer.doprint(S.Xm.T * S.Gm) == "(G.T @ Xb).T"
    assert printer.doprint(S.Gm.T * S.ones_n) == "_column_sums(G)"
    assert printer.kernels_used == {"_column_sums"}
    assert printer.doprint(S.Xm * S.Wm + S.ones_n * S.bm.T) == "Xb @ W + b"


def test_a_symbol_name_that_is_code_is_refused() -> None:
    evil = sp.Symbol('__import__("os").getcwd()')
    with pytest.raises(ModelDefinitionError):
        VectorPrinter({"o": "O"}).doprint(evil * S.o[CLASS_DUMMY])


def test_latex_uses_the_notes_notation() -> None:
    assert to_latex(Softmax(ROW_O, S.j) - S.y[S.j]) == (
        r"\operatorname{softmax}\left(\mathbf{o}\right)_{j} - y_{j}"
    )
    assert to_latex(sp.Sum(S.y[CLASS_DUMMY], (CLASS_DUMMY, 1, S.K))) == r"\sum_{k=1}^{K} y_{k}"


def test_latex_reads_in_textbook_order() -> None:
    """Prediction minus label, the target first in a product, the true class last in a delta."""
    sum_yo = sp.Sum(S.o[S.k] * S.y[S.k], (S.k, 1, S.K))
    assert to_latex(sp.log(SUM_EXP) - sum_yo) == (
        r"\log{\left(\sum_{m=1}^{K} e^{o_{m}} \right)} - \sum_{k=1}^{K} y_{k} o_{k}"
    )
    assert to_latex(-S.y[S.j] + S.p[S.j]) == r"p_{j} - y_{j}"
    assert to_latex(sp.KroneckerDelta(S.c, S.j)) == r"\delta_{jc}"


def test_a_delta_at_the_label_under_a_nonlinearity_is_the_labels_one_hot() -> None:
    """`sum_k (o_k - delta_kc)^2` with integer labels: the delta becomes the labels' one-hot rows
    in the logits' dtype (it once printed `np.eye(K, dtype=dtype)`: a NameError, and the wrong
    matrix). Evaluated, not compared as text: the value must be the one-hot's."""
    import numpy as np

    expr = sp.Sum((S.o[S.k] - sp.KroneckerDelta(S.k, S.c)) ** 2, (S.k, 1, S.K))
    printer = VectorPrinter({"o": "O"}, gather="labels")
    lines = print_assignments(printer, [("L", expr)])
    O = np.array([[0.5, 2.0, -1.0], [3.0, 0.0, 1.0]], dtype=np.float32)
    labels = np.array([1, 0])
    scope = {"np": np, "O": O, "labels": labels, "_rows": np.arange(2)}
    exec("\n".join(lines), scope)
    expected = ((O - np.eye(3, dtype=np.float32)[labels]) ** 2).sum(axis=-1, keepdims=True)
    assert scope["L"].dtype == np.float32
    np.testing.assert_array_equal(scope["L"], expected)


@pytest.mark.parametrize(
    ("factor", "printed"),
    [(1 / S.n, "G / n"), (1 / (2 * S.n), "G / (2*n)"), (3 / S.n, "G * 3 / n")],
)
def test_a_scalar_factor_of_a_matrix_product_keeps_its_denominator_whole(
    factor: sp.Expr, printed: str
) -> None:
    """`(1/(2n)) G` is `G / (2*n)`: the denominator is one operand (not `G / 2*n`)."""
    assert VectorPrinter({"G": "G"}).doprint(sp.MatMul(factor, S.Gm)) == printed


def test_the_total_of_a_column_vector_is_one_scalar_sum() -> None:
    """`l^T 1` over an (n, 1) column is a scalar (an (n, K) matrix's `G^T 1` is its column
    sums); a mean loss accumulates it in float64 where the printer is told to."""
    ell = sp.MatrixSymbol("ell", S.n, 1)
    assert VectorPrinter({"ell": "rows"}).doprint(ell.T * S.ones_n) == "np.sum(rows)"
    wide = VectorPrinter({"ell": "rows"}, sum_dtype="np.float64")
    assert wide.doprint(ell.T * S.ones_n) == "np.sum(rows, dtype=np.float64)"
    assert wide.doprint(S.Gm.T * S.ones_n) == "_column_sums(G)"


@pytest.mark.parametrize(
    ("expr", "names_K"),
    [
        (sp.Sum(S.o[S.k], (S.k, 1, S.K)), False),  # a class sum: a reduction over the axis
        (S.o[S.j] / S.K, True),
        (sp.Sum(S.o[S.k] / S.K, (S.k, 1, S.K)), True),  # K in the summand is printed
        (sp.KroneckerDelta(S.j, S.k), True),  # eye(K)
        (sp.KroneckerDelta(S.j, S.c) * S.o[S.j], False),  # the label's column
    ],
)
def test_the_class_count_is_named_where_the_printed_code_needs_it(
    expr: sp.Expr, names_K: bool
) -> None:
    assert names_class_count(expr) is names_K
    if not expr.has(sp.KroneckerDelta):
        code = VectorPrinter({"o": "O"}).doprint(vectorised(expr))
        assert ("K" in code.replace("keepdims", "")) is names_K, code
