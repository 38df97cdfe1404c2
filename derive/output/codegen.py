"""Template context and rendering for the emitted NumPy module.

Every formula in the module is printed here from the checked derivation's final forms (the loss,
`d loss / d o`, the Hessian and its vector product, the prediction, and the chain rule through the
linear layer) by `printers.vector.VectorPrinter`; the template `module.py.j2` only lays the
printed statements out inside signatures, validation and docstrings. A different loss model gives
different printed statements and therefore different, still correct, code.

Integer labels are handled by substituting `y_k = delta_{kc}` into the derived forms and
splitting the gradient into `A_j + delta_{jc} B`: the code computes `A` for all classes and adds
`B` at the label's column, so no one-hot matrix is ever built.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sympy as sp
from sympy.printing.pycode import MpmathPrinter

from derive import notation as S
from derive.losses.definitions import CATALOGUE_MODELS
from derive.losses.derivation.symbols import MEAN_LOSS, PENALTY, YHAT, G_dot, ell_rows
from derive.losses.model import LossModel
from derive.output.notes import displays, environment, one_trailing_newline
from derive.output.printers.code_format import formatted
from derive.output.printers.latex import latex_sides
from derive.output.printers.ranges import print_range_check
from derive.output.printers.reference import print_reference
from derive.output.printers.vector import (
    VectorPrinter,
    names_class_count,
    print_assignments,
    print_matrix,
    vectorised,
)
from derive.symbolic.steps import CheckedDerivation, Derivation, Step

TEMPLATE = "module.py.j2"

#: Rows of X per block in the fused `loss_and_grad`: both GEMMs then read a block of X while it
#: is still in cache. Chosen by measurement (benchmarks/layouts.py); see benchmarks/README.md.
BLOCK_ROWS = 4096

ARRAYS = {"o": "O", "z": "Z", "y": "Y", "v": "V", "w": "Vc"}


@dataclass(frozen=True)
class Printed:
    """A printed statement block and the LaTeX of the formula it implements (for docstrings)."""

    lines: list[str]
    latex: str


def _block(
    printer: VectorPrinter,
    outputs: list[tuple[str, sp.Expr]],
    latex: str,
    logits_are_scratch: bool = False,
) -> Printed:
    lines = print_assignments(printer, outputs, logits_are_scratch=logits_are_scratch)
    # An output that is an input array itself (a gradient of exactly `o`, say) must be a copy:
    # the code updates outputs in place and never modifies its inputs.
    inputs = set(printer.arrays.values())
    lines = [
        f"{name} = {value}.copy()" if value in inputs else line
        for line in lines
        for name, _, value in [line.partition(" = ")]
    ]
    return Printed(lines, latex)


def _in_place_sum(name: str, expr: sp.Basic, printer: VectorPrinter) -> list[str]:
    terms = list(expr.args) if isinstance(expr, sp.MatAdd) else [expr]
    first, *rest = sorted(
        terms, key=lambda t: not isinstance(t, sp.MatMul) or t.args[0] == S.ones_n
    )
    return [
        f"{name} = {printer.doprint(first)}",
        *(f"{name} += {printer.doprint(t)}" for t in rest),
    ]


def _scale_in_place(name: str, factor: sp.Expr, printer: VectorPrinter) -> list[str]:
    """Statements that multiply the array `name` by `factor` in place: `*=` its numerator, `/=`
    its denominator (a division, as `X.T @ G / n` prints, not a rounded reciprocal); none for 1."""
    num, den = sp.fraction(factor)
    lines = [f"{name} *= {formatted(printer.doprint(num))}"] if num != 1 else []
    return lines + ([f"{name} /= {formatted(printer.doprint(den))}"] if den != 1 else [])


def chain_view(forms: dict[str, Any], printer: VectorPrinter) -> dict[str, Any]:
    """The chain rule through the layer as the fused loop computes it: the row sums `X^T G` and
    `G^T 1` it adds up block by block (`dW`, `db` without their factor), and the statements that
    scale those sums once at the end: by the forms' factor `c` (the mean's, step `mean_loss`)
    for the mean, by `n c` for `reduction="sum"` (n times the mean, step `batch_sum`; nothing
    to do where `c = 1/n`)."""
    rows = forms["batch_rows"]
    out: dict[str, Any] = {"mean": [], "sum": []}
    for key in ("dW", "db"):
        coeff, matrices = forms[key].as_coeff_matrices()
        out[key] = printer.doprint(sp.MatMul(*matrices))
        out["mean"] += _scale_in_place(key, coeff, printer)
        out["sum"] += _scale_in_place(key, rows * coeff, printer)
    return out


def mean_view(
    form: sp.MatrixExpr, rows: sp.Expr, printer: VectorPrinter | None = None
) -> dict[str, str]:
    """The mean loss `c ell^T 1` (step `mean_loss`) of the per-sample losses, printed whole
    (`loss()`), as its row sum `ell^T 1` (what the fused loop adds up per block; a framework's
    `reduction="sum"`), as the factor `c` applied to that sum's running `total`, and as `n`
    times that (the fused loop's `reduction="sum"`). The NumPy module's `printer` (the default)
    names the losses `loss_rows` and adds them up in float64."""
    if printer is None:
        printer = VectorPrinter({ell_rows.name: "loss_rows"}, sum_dtype="np.float64")
    coeff, matrices = form.as_coeff_matrices()
    total = sp.Symbol("total")
    return {
        "whole": formatted(printer.doprint(form)),
        "row_sum": printer.doprint(sp.MatMul(*matrices)),
        "of_total": formatted(printer.doprint(coeff * total)),
        "sum_of_total": formatted(printer.doprint(rows * coeff * total)),
    }


def objective_view(forms: dict[str, Any], decay: VectorPrinter) -> dict[str, str]:
    """The objective `J = L + R` (step `objective`) and the penalty's part of its gradient in W
    (step `objective_gradient_W`: the batch term is what the loop accumulates), printed for the
    fused loop: `value` in the names `L` (the mean loss) and `R` (the penalty); `sum` and
    `sum_grad` are `n` times them with `L` the row sum `total` over `n` (`reduction="sum"`, step
    `batch_sum`), `grad` the penalty's gradient the mean adds."""
    rows = forms["batch_rows"]
    coeff, _ = forms["mean_loss"].as_coeff_matrices()
    objective: sp.Expr = forms["objective"]
    if not ({MEAN_LOSS, PENALTY} <= objective.free_symbols):
        raise NotImplementedError(f"{objective}: expected an objective in L and R")
    penalty = [t for t in forms["objective_grad"].args if t != forms["dW"]]
    if len(penalty) != len(forms["objective_grad"].args) - 1:
        raise NotImplementedError(f"{forms['objective_grad']}: expected dL/dW plus a penalty")
    grad = sp.MatAdd(*penalty)
    total = sp.Symbol("total")
    as_sum = sp.expand(rows * objective.xreplace({MEAN_LOSS: coeff * total}))
    return {
        "value": formatted(decay.doprint(objective)),
        "sum": formatted(decay.doprint(as_sum)),
        "grad": formatted(decay.doprint(grad)),
        "sum_grad": formatted(decay.doprint(sp.MatMul(rows, grad).doit())),
    }


def param_views(model: LossModel) -> list[dict[str, Any]]:
    """Each loss parameter as the templates print it: name, default, range, doc (every target's
    signatures and validation)."""
    return [
        {
            "name": prm.symbol.name,
            "default": repr(float(prm.default)),
            "low": "None" if prm.low is None else repr(float(prm.low)),
            "high": "None" if prm.high is None else repr(float(prm.high)),
            "low_inclusive": prm.low_inclusive,
            "high_inclusive": prm.high_inclusive,
            "range": prm.range_text(),
            # The range check the NumPy module runs, printed from the same declared interval
            # `Param.admits` asks.
            "inside": print_range_check(prm.interval, prm.symbol.name),
            "doc": prm.doc,
        }
        for prm in model.params
    ]


#: The forms the NumPy module prints as the loss, its gradient, the prediction and second order.
PRINTED_FORMS = ("code_loss", "code_gradient", "code_prediction", "code_hessian", "code_hvp")


def unstable_shapes(d: Derivation) -> list[str]:
    """The exponentials no stable kernel or accurate rewrite absorbed: shapes the emitter knows
    no overflow-free form for (the module then says `STABLE = False` and refuses a non-finite
    result instead of returning it)."""
    exps = {a for f in PRINTED_FORMS if f in d.final_forms for a in d.final_forms[f].atoms(sp.exp)}
    return sorted({sp.sstr(e) for e in exps})


def module_context(checked: CheckedDerivation) -> dict[str, Any]:
    """Everything the module template needs, printed; the template adds layout only."""
    d = checked.derivation
    model: LossModel = d.model
    forms = d.final_forms
    eq = equations(checked)
    # The printed forms are the ends of the derivation's accurate chains (checked steps).
    loss = forms["code_loss"]
    gradient = forms["code_gradient"]
    second_order = "code_hessian" in forms
    prediction = forms["code_prediction"]

    soft = VectorPrinter(ARRAYS)
    labels = VectorPrinter(ARRAYS, gather="labels")
    one = VectorPrinter({"o": "o", "z": "z"}, axes={S.j: "[:, None]", S.k: "[None, :]"})
    chain = VectorPrinter({"X": "Xb", "W": "W", "b": "b", "G": "G"})

    distribution = model.targets == "distribution"
    declared = declared_view(d)
    context: dict[str, Any] = {
        **declared,
        "template": TEMPLATE,
        "name": d.name,
        "title": d.title("en"),
        "targets": model.targets,
        # Integer labels are accepted (and a labels branch printed) for distribution targets.
        "labels_allowed": distribution,
        "block_rows": BLOCK_ROWS,
        "loss_soft": _block(soft, [("loss_rows", loss)], eq("code_loss")),
        "grad_soft": _block(soft, [("G", gradient)], eq("code_gradient")),
        # In the fused loop the logits block is a temporary: kernels may overwrite it.
        "fused_soft": _block(
            soft, [("loss_rows", loss), ("G", gradient)], eq("code_gradient"), True
        ),
        "second_order": second_order,
        "prediction": _block(soft, [("P", prediction)], eq("code_prediction")),
        "logits": chain.doprint(forms["logits"]),
        "logits_latex": eq("logits"),
        # The same sum, as statements: the GEMM's fresh result, then `+=` the other terms, so the
        # fused loop allocates no second n x K array per block.
        "logits_inplace": _in_place_sum("O", forms["logits"], chain),
        # The loop sums over rows and applies the proved factor once (`scale`).
        "chain": chain_view(forms, chain),
        # The mean of the per-sample losses and `dL/dO` (steps `mean_loss`, `batch_gradient_O`):
        # `loss()` and `grad_logits()` return them; the fused loop adds up the mean's row sum
        # block by block and applies its factor to the total.
        "mean_loss": mean_view(forms["mean_loss"], forms["batch_rows"])
        | {"latex": eq("mean_loss")},
        "grad_mean": formatted(chain.doprint(forms["dO"])),
        "grad_mean_latex": eq("dO"),
        "chain_W_latex": eq("dW"),
        "chain_b_latex": eq("db"),
        "decay": None,
        "objective": None,
        # softmax / log_softmax / logsumexp belong to the API of every softmax-family module.
        "public_kernels": distribution,
    }
    if second_order:
        hessian, hvp = forms["code_hessian"], forms["code_hvp"]
        context["hessian"] = Printed(print_matrix(one, "H", hessian), eq("code_hessian"))
        context["hvp"] = _block(soft, [("HV", hvp)], eq("code_hvp"))
    unstable = unstable_shapes(d)
    context |= {"stable": not unstable, "unstable_shapes": ", ".join(unstable)}
    if distribution:
        loss_c = forms["code_loss_labels"]
        grad_all, grad_at_label = forms["code_gradient_labels"], forms["code_gradient_at_label"]
        # The label's column gets the gradient's value there. One that uses the logits is computed
        # in the block (where the logits, shifted or not, are in scope); a constant one is
        # printed where it is assigned.
        term_out = [("_gc", grad_at_label)] if grad_at_label.has(S.o, S.z) else []
        # The step whose rhs the two printed parts make up, as the notes show it.
        grad_labels_latex = eq("code_gradient_labels", source_step(d, "code_gradient_labels").rhs)
        context |= {
            "loss_labels": _block(labels, [("loss_rows", loss_c)], eq("code_loss_labels")),
            "grad_labels": _block(labels, [("G", grad_all), *term_out], grad_labels_latex),
            "fused_labels": _block(
                labels,
                [("loss_rows", loss_c), ("G", grad_all), *term_out],
                grad_labels_latex,
                True,
            ),
            # G[rows, labels] is (n,): a per-sample term (n, 1) is flattened to match.
            "grad_label_term": "np.ravel(_gc)"
            if term_out
            else formatted(
                labels.doprint(vectorised(grad_at_label))
                if not grad_at_label.free_symbols - {S.K, *(p.symbol for p in model.params)}
                else f"np.ravel({labels.doprint(vectorised(grad_at_label))})"
            ),
            "grad_labels_latex": grad_labels_latex,
        }
    if second_order:
        # The Hessian in W along V: the logits' direction and the chain rule back to W, each
        # printed from its step (`HV` holds the rows of G-dot, `hvp_logits` along the direction).
        along = VectorPrinter({"X": "Xb", "V": "V", G_dot.name: "HV"})
        context["hvp_W"] = {
            "direction": along.doprint(forms["hvp_direction"]),
            "chain": along.doprint(forms["hvp_W"]),
            "latex": eq("hvp_W"),
            "direction_latex": eq("hvp_direction"),
            # The name of the HVP's rows in the logits (step `hessian_vector_product_W`).
            "rows_latex": latex_sides(G_dot)[0],
        }
    decide = VectorPrinter({YHAT.label.name: "P"})
    context["decision"] = {
        "code": formatted(decide.doprint(forms["decision"])),
        "latex": eq("decision"),
    }
    if model.decay_symbol is not None:
        context["decay"] = decay_view(forms, VectorPrinter({"W": "W", "V": "V"}), eq)
        context["objective"] = objective_view(forms, VectorPrinter({"W": "W"})) | {
            "latex": eq("objective"),
            "grad_latex": eq("objective_grad"),
        }
    # The fused loop defines `K` only where a form it prints names the class count.
    fused = ["code_loss", "code_gradient"]
    if distribution:
        fused += ["code_loss_labels", "code_gradient_labels", "code_gradient_at_label"]
    context["uses_K"] = any(names_class_count(forms[name]) for name in fused)
    used = soft.kernels_used | labels.kernels_used | one.kernels_used | chain.kernels_used
    context["emit"] = kernels_to_emit(used | (PUBLIC_KERNELS if distribution else set()))
    return context


#: The kernels `kernels.py.j2` defines, in its order, each with the kernels its body calls.
KERNEL_CALLS: dict[str, tuple[str, ...]] = {
    "_row_max": (),
    "_subtract_row_max": (),
    "_row_sums": (),
    "_column_sums": (),
    "_shifted_exp": ("_row_max",),
    "_log_of_shifted_sum": (),
    "_logsumexp": ("_shifted_exp", "_log_of_shifted_sum"),
    "_softmax": ("_shifted_exp",),
    "_softmax_and_logsumexp": ("_shifted_exp", "_log_of_shifted_sum"),
    "_softmax_and_logsumexp_inplace": ("_row_sums",),
    "_softmax_and_logsumexp_shifted": ("_row_sums",),
    "_log_softmax": ("_shifted_exp", "_log_of_shifted_sum"),
    "_complement": (),
    "_complement_at": ("_row_sums",),
    "_log_ratio": (),
    "_complement_power": (),
    "_target_mul": (),
    "_sigmoid": (),
    "_softplus": (),
}
#: What the public `softmax`, `log_softmax` and `logsumexp` of a softmax-family module call.
PUBLIC_KERNELS = frozenset({"_softmax", "_log_softmax", "_logsumexp"})


def kernels_to_emit(called: set[str]) -> dict[str, bool]:
    """For each kernel of `kernels.py.j2` (by name without its underscore), whether the module
    defines it: the kernels `called` and, transitively, those they call."""
    unknown = called - KERNEL_CALLS.keys()
    if unknown:
        raise NotImplementedError(f"no NumPy kernel for {', '.join(sorted(unknown))}")
    needed, todo = set(), list(called)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(KERNEL_CALLS[name])
    return {name.removeprefix("_"): name in needed for name in KERNEL_CALLS}


def declared_view(d: Derivation) -> dict[str, Any]:
    """What every target's module declares about itself, for `derive verify` and its users: the
    parameters (`params`; `call_params` without the weight decay, which belongs to the layer, not
    to the per-sample functions of the logits), the weight-decay parameter by its role, whether
    the loss is the catalogue's, the loss and prediction *as defined* (for mpmath), and the
    `reference()` factories of the derived forms (printed by SymPy)."""
    model: LossModel = d.model
    params = param_views(model)
    decay_name = model.decay_symbol.name if model.decay_symbol is not None else None
    call_params = [p for p in params if p["name"] != decay_name]
    names = [p["name"] for p in call_params]
    reference = MpmathPrinter({"fully_qualified_modules": False})
    return {
        "params": params,
        "call_params": call_params,
        "decay_param": next((p for p in params if p["name"] == decay_name), None),
        "weight_decay_param": json.dumps(decay_name) if decay_name else "None",
        "catalogue_loss": any(model is known for known in CATALOGUE_MODELS),
        "reference_loss": json.dumps(reference.doprint(model.loss)),
        "reference_prediction": json.dumps(reference.doprint(model.prediction)),
        "reference": [
            {"key": key.removeprefix("reference_"), "lines": print_reference(f"_{key}", e, names)}
            for key, e in d.final_forms.items()
            if key.startswith("reference_")
        ],
    }


def emit_module(checked: CheckedDerivation) -> str:
    """The module's source text: deterministic for a given derivation."""
    text = environment().get_template(TEMPLATE).render(module_context(checked))
    return one_trailing_newline(text)


def source_step(d: Derivation, form: str) -> Step:
    """The step a final form is printed from (for a form printed in parts, the step whose rhs
    the parts make up)."""
    return next(s for s in d.steps if s.name == d.final_sources[form])


def named_sides(checked: CheckedDerivation) -> dict[str, sp.Basic]:
    """Each step's left side by name, for docstrings: as the notes show it (`displays`: `ell`,
    `d ell / d o_j`, where an earlier step named the side), a defined quantity by its name
    (`yhat_j`), and a longer side with every named side inside it shown by its name (the
    Hessian-vector product's `sum_k v_k d2 ell / d o_j d o_k`); each named side names the
    right side it equals in turn."""
    names: dict[sp.Basic, sp.Basic] = {}
    out: dict[str, sp.Basic] = {}
    for checked_step, shown in zip(checked.steps, displays(checked.steps), strict=True):
        step = checked_step.step
        lhs = shown.lhs if shown.lhs != step.lhs else step.lhs.xreplace(names)
        out[step.name] = lhs
        if step.relation == "=" and (lhs != step.lhs or step.definition):
            names.setdefault(step.rhs, lhs)
    return out


def equations(checked: CheckedDerivation) -> Callable[..., str]:
    """`eq(form)`: `lhs = rhs` in LaTeX for a docstring, the printed form (or `rhs`, for a form
    printed in parts) under its source step's left side by name (`named_sides`)."""
    d = checked.derivation
    named = named_sides(checked)

    def eq(form: str, rhs: sp.Basic | None = None) -> str:
        step = source_step(d, form)
        shown = named.get(step.name, step.lhs)
        value = d.final_forms[form] if rhs is None else rhs
        lhs, printed = latex_sides(shown, value)
        # An auxiliary array the printed form computes (`w`, `z`) is defined beside it.
        defined = [latex for base, latex in S.AUXILIARY.items() if value.has(base)]
        where = rf", \quad {', '.join(defined)}, \; {S.LEADING_CLASS}" if defined else ""
        return f"{lhs} = {printed}{where}"

    return eq


def decay_view(
    forms: dict[str, Any], decay: VectorPrinter, eq: Callable[[str], str]
) -> dict[str, str]:
    """The weight-decay penalty, its gradient and its HVP (each a step's rhs), printed by
    `decay` (any target's printer), for the template's layer functions, and the penalty's
    and its HVP's equations (`eq`, from `equations`) for their docstrings."""
    return {
        "loss": formatted(decay.doprint(forms["decay_loss"])),
        "grad": formatted(decay.doprint(forms["decay_grad"])),
        "hvp": formatted(decay.doprint(forms["decay_hvp"])),
        "latex": eq("decay_loss"),
        "hvp_latex": eq("decay_hvp"),
    }
