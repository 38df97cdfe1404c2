"""Template contexts for the framework targets: PyTorch, JAX and the array API standard.

The same checked final forms as the NumPy module prints (the ends of the derivation's accurate
chains, `code_*`: max-shifted logits `z`, complements, ...), printed by each target's printer
(`derive.output.printers.framework_vectors.PRINTERS`); the templates `torch.py.j2`, `jax.py.j2` and
`array_api.py.j2` lay the printed statements out inside an autograd `Function`, `custom_jvp`
rules or array-API functions, and hold no formula.

What each target gets, per loss:
- the per-sample loss, its gradient `dl/do` and (where the model derives second order) the
  Hessian-vector product `H v`, for probability/real targets `Y` (n, K);
- for integer labels (softmax-family losses), the derivation's label forms: the loss, and the
  gradient as `A_j` for every class plus the label's term `B` (`code_gradient_labels`,
  `code_gradient_at_label`), so that no one-hot matrix is built (the array API has no
  integer-array indexing: it picks the label's entries with a boolean mask);
- the prediction, and the weight-decay penalty with its gradient and Hessian-vector product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sympy as sp

from derive import notation as S
from derive.losses.derivation.symbols import YHAT, ell_rows
from derive.losses.model import LossModel
from derive.output.codegen import (
    decay_view,
    declared_view,
    equations,
    mean_view,
    objective_view,
    source_step,
    unstable_shapes,
)
from derive.output.notes import environment, one_trailing_newline
from derive.output.printers.code_format import formatted
from derive.output.printers.framework_vectors import PRINTERS
from derive.output.printers.vector import VectorPrinter, print_assignments, vectorised
from derive.symbolic.steps import CheckedDerivation

#: Emit targets besides NumPy, and their templates.
TEMPLATES: dict[str, str] = {
    "torch": "torch.py.j2",
    "jax": "jax.py.j2",
    "array-api": "array_api.py.j2",
}

ARRAYS = {"o": "O", "z": "Z", "y": "Y", "v": "V", "w": "Vc"}


def _lines(
    printer: Any,
    name: str | list[tuple[str, sp.Expr]],
    expr: sp.Expr | None,
    copy: str | None,
    params: list[str],
    also: frozenset[str] = frozenset(),
) -> list[str]:
    """`name = expr` (or several `(name, expr)` at once, sharing their common subexpressions
    and one exp pass for softmax and log-sum-exp) as statements; a result that is an input
    array itself is copied (`copy`), because the label term is added to it in place. The
    parameters and the class count the statements use (the symbols the printer printed) are
    bound first (from the `params` tuple and the logits' shape), with those in `also` (used by
    a statement the template adds, such as the label's term)."""
    outputs = name if isinstance(name, list) else [(name, expr)]
    printer.symbols_printed = set()
    lines = print_assignments(printer, outputs)
    inputs = set(printer.arrays.values())
    out = []
    for line in lines:
        target, _, value = line.partition(" = ")
        out.append(f"{target} = {value}{copy}" if copy and value in inputs else line)
    printed = printer.symbols_printed | also
    used = [(i, p) for i, p in enumerate([S.K.name, *params]) if p in printed]
    bind = [f"{p} = O.shape[-1]" if i == 0 else f"{p} = params[{i - 1}]" for i, p in used]
    return bind + out


def _label_term(printer: Any, term: sp.Expr) -> tuple[dict[str, Any], frozenset[str]]:
    """`B`, the label column's value, printed (`row`: whether it varies by sample), and the
    symbols it uses (the block before it binds them)."""
    printer.symbols_printed = set()
    printed = formatted(printer.doprint(vectorised(term)))
    row = bool(term.atoms(sp.Indexed) | term.atoms(sp.Function))
    return {"code": printed, "row": row}, frozenset(printer.symbols_printed)


def _labels_block(
    printer: Any,
    name: str,
    every: sp.Expr,
    at_label: sp.Expr | None,
    copy: str | None,
    params: list[str],
    loss: sp.Expr | None = None,
) -> dict[str, Any]:
    """A per-class quantity for integer labels, `A_j` off the label's column and `B` on it (the
    derivation's `code_gradient_labels` and `code_gradient_at_label`, whose composition
    `Derivation.final_compositions` checks): the statements of `A` (and, with `loss`, of the
    per-sample loss `loss_rows`) and `B`, which the template assigns to the label's column. A `B`
    that uses the logits is computed by the same statements (`_gc`, where the shifted logits are
    in scope)."""
    outputs = [("loss_rows", loss)] if loss is not None else []
    outputs.append((name, every))
    if at_label is None:  # the same at every class, the label's included
        return {"lines": _lines(printer, outputs, None, copy, params), "term": None}
    also: frozenset[str] = frozenset()
    if at_label.has(S.o, S.z):
        outputs.append(("_gc", at_label))
        term: dict[str, Any] = {"code": "_gc", "row": True}
    else:
        term, also = _label_term(printer, at_label)
    return {"lines": _lines(printer, outputs, None, copy, params, also), "term": term}


def _hvp_labels(hvp: sp.Expr) -> tuple[sp.Expr, None]:
    """The HVP for integer labels: the derivation emits second order only where the Hessian does
    not depend on the targets, so it is the same form, with nothing apart at the label."""
    if hvp.has(S.y):
        raise NotImplementedError(f"a Hessian-vector product that depends on the targets: {hvp}")
    return hvp, None


def _mean_view(
    forms: dict[str, Any], printer_class: type[VectorPrinter], eq: Callable[..., str]
) -> dict[str, str]:
    """The batch mean of the per-sample losses `rows` (step `mean_loss`: `whole` for
    `reduction="mean"`, its row sum `ell^T 1` for "sum") and its gradient (step
    `batch_gradient_O`, `dL/dO = c G`): `grad` in the rows `G` of the per-sample gradient,
    `of_grad` its factor `c` applied to an incoming gradient `grad` (torch's backward); the
    two steps' equations for docstrings."""
    view = mean_view(
        forms["mean_loss"], forms["batch_rows"], printer_class({ell_rows.name: "rows"})
    )
    _, matrices = forms["dO"].as_coeff_matrices()
    if tuple(matrices) != (S.Gm,):
        raise NotImplementedError(f"{forms['dO']}: expected dL/dO = c G")
    return {
        "whole": view["whole"],
        "row_sum": view["row_sum"],
        "grad": formatted(printer_class({S.Gm.name: "G"}).doprint(forms["dO"])),
        # `c grad`: dL/dO = c G with the incoming gradient in place of G (torch multiplies the
        # rows of G by it, the factor applied once to the scalar).
        "of_grad": formatted(printer_class({S.Gm.name: "grad"}).doprint(forms["dO"])),
        "latex": eq("mean_loss"),
        "grad_latex": eq("dO"),
    }


def framework_context(checked: CheckedDerivation, target: str) -> dict[str, Any]:
    """Everything the target's template needs, printed; the template adds layout only."""
    d = checked.derivation
    model: LossModel = d.model
    forms = d.final_forms
    eq = equations(checked)
    printer_class = PRINTERS[target]
    chain_arrays = {"X": "X", "G": "G", "W": "W"}
    dW = "objective_grad" if model.decay_symbol is not None else "dW"
    soft = printer_class(ARRAYS)
    # The printed forms are the ends of the derivation's accurate chains (checked steps), as in
    # the NumPy module.
    loss, gradient = forms["code_loss"], forms["code_gradient"]
    prediction = forms["code_prediction"]
    second_order = "code_hvp" in forms
    declared = declared_view(d)
    call_params = declared["call_params"]
    names = [p["name"] for p in call_params]
    context: dict[str, Any] = {
        **declared,
        "template": TEMPLATES[target],
        "name": d.name,
        "title": d.title("en"),
        "targets": model.targets,
        "second_order": second_order,
        "loss": {"lines": _lines(soft, "loss_rows", loss, None, names), "latex": eq("code_loss")},
        "grad": {"lines": _lines(soft, "G", gradient, None, names), "latex": eq("code_gradient")},
        # The loss and the gradient from one set of statements (torch's forward pass computes
        # both when the logits require grad: one exp pass instead of two).
        "fused": {"lines": _lines(soft, [("loss_rows", loss), ("G", gradient)], None, None, names)},
        "prediction": {
            "lines": _lines(soft, "P", prediction, None, []),
            "latex": eq("code_prediction"),
        },
        # `predict(X, W, b)`: the linear layer, the prediction and the decision rule, each
        # printed from its step, as in the NumPy module.
        "logits": printer_class({"X": "X", "W": "W", "b": "b"}).doprint(forms["logits"]),
        "decision": {
            "code": formatted(printer_class({YHAT.label.name: "P"}).doprint(forms["decision"])),
            "latex": eq("decision"),
            # Whether the rule calls the array library (a real output is its own decision).
            "calls": bool(forms["decision"].atoms(sp.Function)),
        },
        # The mean over the batch (step `mean_loss`) and its gradient (`batch_gradient_O`).
        "mean": _mean_view(forms, printer_class, eq),
        # The array-API module's `loss_and_grad`: the chain rule through the layer (with a
        # weight decay, the objective's gradient: step `objective_gradient_W`).
        "chain": {
            "dW": formatted(printer_class(chain_arrays).doprint(forms[dW])),
            "db": formatted(printer_class(chain_arrays).doprint(forms["db"])),
            "dW_latex": eq(dW),
            "db_latex": eq("db"),
        },
        "logits_latex": eq("logits"),
        "labels": None,
        "decay": None,
        "objective": None,
        "objective_latex": None,
    }
    if second_order:
        hvp = forms["code_hvp"]
        context["hvp"] = {"lines": _lines(soft, "HV", hvp, None, names), "latex": eq("code_hvp")}
    if model.targets == "distribution":
        labels = printer_class(ARRAYS, gather="onehot" if target == "array-api" else "labels")
        copy = ".clone()" if target == "torch" else None
        loss_c = forms["code_loss_labels"]
        every, at_label = forms["code_gradient_labels"], forms["code_gradient_at_label"]
        context["labels"] = {
            "loss": {
                "lines": _lines(labels, "loss_rows", loss_c, None, names),
                "latex": eq("code_loss_labels"),
            },
            "grad": _labels_block(labels, "G", every, at_label, copy, names),
            "fused": _labels_block(labels, "G", every, at_label, copy, names, loss_c),
            "hvp": _labels_block(labels, "HV", *_hvp_labels(forms["code_hvp"]), copy, names)
            if second_order
            else None,
            # The step whose rhs the two printed parts make up, as the notes show it.
            "grad_latex": eq("code_gradient_labels", source_step(d, "code_gradient_labels").rhs),
        }
    if model.decay_symbol is not None:
        context["decay"] = decay_view(forms, printer_class({"W": "W", "V": "V"}), eq)
        context["objective"] = objective_view(forms, printer_class({"W": "W"}))["value"]
        context["objective_latex"] = eq("objective")
    unstable = unstable_shapes(d)
    context |= {"stable": not unstable, "unstable_shapes": ", ".join(unstable)}
    used = set(soft.kernels_used)
    if context["labels"] is not None:
        used |= labels.kernels_used
    context["kernels"] = sorted(used)
    return context


def emit_framework_module(checked: CheckedDerivation, target: str) -> str:
    """The target module's source text: deterministic for a given derivation."""
    context = framework_context(checked, target)
    text = environment().get_template(context["template"]).render(context)
    return one_trailing_newline(text)
