"""The NumPy code generator's own logic (derive/output/codegen.py), on tiny inputs with exact
expectations: how the fused loop scales its row sums, how the mean and the objective are printed
from their steps, which kernels a module gets, and what each parameter's views say. The templates
that lay these strings out are tested in tests/test_templates.py; the whole modules in
tests/test_golden.py and tests/test_follows.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import sympy as sp

from derive import notation as S
from derive.losses import catalogue
from derive.losses.definitions import LABEL_SMOOTHING
from derive.output import codegen
from derive.output.printers.vector import VectorPrinter
from derive.symbolic.steps import CheckedDerivation

PRINTER = VectorPrinter({})


@pytest.fixture(scope="module")
def forms() -> dict[str, Any]:
    """The printed forms of the catalogue loss with weight decay (mean, objective, chain rule),
    as its derivation hands them on (printing needs no check; the full runs check them)."""
    return dict(catalogue.CATALOGUE["softmax_regression_l2"]().final_forms)


@pytest.mark.parametrize(
    ("factor", "statements"),
    [
        (1 / S.n, ["dW /= n"]),
        (sp.Rational(1, 2) / S.n, ["dW /= 2 * n"]),
        (sp.Integer(3), ["dW *= 3"]),
        (sp.Rational(3, 2), ["dW *= 3", "dW /= 2"]),
        (sp.Integer(1), []),
    ],
)
def test_a_factor_scales_in_place_by_its_numerator_and_denominator(
    factor: sp.Expr, statements: list[str]
) -> None:
    """A division stays a division (`/= n`, as `X.T @ G / n` prints), never a rounded 1/n."""
    assert codegen._scale_in_place("dW", factor, PRINTER) == statements


def test_the_chain_rule_sums_are_scaled_by_the_means_factor(forms: dict[str, Any]) -> None:
    """c = 1/n: the mean divides each row sum by n; the sum (n times the mean) leaves them."""
    view = codegen.chain_view(forms, PRINTER)
    assert view["mean"] == ["dW /= n", "db /= n"]
    assert view["sum"] == []
    assert (view["dW"], view["db"]) == ("(G.T @ X).T", "_column_sums(G)")


def test_a_different_mean_changes_both_reductions_scaling(forms: dict[str, Any]) -> None:
    """With the mean defined as (1/(2n)) ell^T 1 the chain-rule forms carry 1/(2n): the mean
    divides by 2n, the sum (n times the mean) by 2."""
    halved = forms | {k: sp.MatMul(sp.Rational(1, 2), forms[k]).doit() for k in ("dW", "db")}
    view = codegen.chain_view(halved, PRINTER)
    assert view["mean"] == ["dW /= 2 * n", "db /= 2 * n"]
    assert view["sum"] == ["dW /= 2", "db /= 2"]


def test_the_mean_is_printed_whole_as_a_row_sum_and_from_the_running_total(
    forms: dict[str, Any],
) -> None:
    view = codegen.mean_view(forms["mean_loss"], forms["batch_rows"])
    assert view == {
        "whole": "np.sum(loss_rows, dtype=np.float64) / n",
        "row_sum": "np.sum(loss_rows, dtype=np.float64)",
        "of_total": "total / n",
        "sum_of_total": "total",
    }


def test_the_objective_and_its_penalty_gradient_are_printed(forms: dict[str, Any]) -> None:
    """J = L + R; for reduction="sum" n J with L = total / n; the penalty's part of dJ/dW."""
    view = codegen.objective_view(forms, PRINTER)
    assert view == {
        "value": "L + R",
        "sum": "R * n + total",
        "grad": "W * lam",
        "sum_grad": "W * lam * n",
    }


def test_an_objective_without_the_mean_loss_is_refused(forms: dict[str, Any]) -> None:
    with pytest.raises(NotImplementedError, match="expected an objective in L and R"):
        codegen.objective_view(forms | {"objective": sp.Symbol("R")}, PRINTER)


def test_a_parameter_view_prints_its_declared_range_once() -> None:
    (eps,) = codegen.param_views(LABEL_SMOOTHING)
    assert (eps["name"], eps["default"], eps["range"]) == ("eps", "0.1", "[0.0, 1.0)")
    assert eps["inside"] == "0.0 <= eps < 1.0"


def test_a_kernel_comes_with_the_kernels_it_calls() -> None:
    emit = codegen.kernels_to_emit({"_logsumexp"})
    assert {k for k, on in emit.items() if on} == {
        "logsumexp",
        "shifted_exp",
        "row_max",  # called by shifted_exp: the closure is transitive
        "log_of_shifted_sum",
    }
    assert list(emit) == [k.removeprefix("_") for k in codegen.KERNEL_CALLS]


def test_an_unknown_kernel_is_refused_by_name() -> None:
    with pytest.raises(NotImplementedError, match="no NumPy kernel for _nope"):
        codegen.kernels_to_emit({"_softmax", "_nope"})


def test_unstable_shapes_are_the_exponentials_left_in_printed_forms(
    checked: CheckedDerivation,
) -> None:
    """Only the printed forms count: an exponential in a reference form is for mpmath."""
    d = SimpleNamespace(
        final_forms={
            "code_loss": sp.log(1 + sp.exp(S.o[S.j])),
            "reference_loss": sp.exp(S.o[S.k]),
        }
    )
    assert codegen.unstable_shapes(d) == ["exp(o[j])"]  # type: ignore[arg-type]
    assert codegen.unstable_shapes(checked.derivation) == []


def test_a_docstring_equation_defines_the_auxiliary_arrays_it_uses(
    checked: CheckedDerivation,
) -> None:
    """The centred direction `w` of the printed HVP is defined beside it; a form without an
    auxiliary array gets no definition."""
    eq = codegen.equations(checked)
    assert checked.derivation.final_forms["code_hvp"].has(S.w)
    assert "w_{k} = v_{k} - v_{t}" in eq("code_hvp")
    assert eq("code_hvp").endswith(r"\; t = \operatorname{argmax}_{k} o_{k}")
    assert not checked.derivation.final_forms["hvp"].has(S.w)
    assert "argmax" not in eq("hvp")
