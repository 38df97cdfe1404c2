"""Each template rendered on its own with a tiny, hand-made context: exact pieces of the output.

The templates hold layout only (DESIGN.md): every formula arrives as a printed string. Here the
"formulas" are markers (`LOSS_ROWS`, `GRAD_SOFT`, ...) so a test sees exactly where the template
puts what it was given, and nothing it typed itself; a missing key is refused (StrictUndefined).
"""

from __future__ import annotations

import ast
import re
from typing import Any

import jinja2
import pytest

from derive.output.codegen import KERNEL_CALLS, Printed, kernels_to_emit
from derive.output.notes import environment

ENV = environment()


def render(template: str, context: dict[str, Any]) -> str:
    return ENV.get_template(template).render(context)


def block(*lines: str, latex: str = "TEX") -> Printed:
    return Printed(list(lines), latex)


def module_context(labels: bool) -> dict[str, Any]:
    """The smallest context module.py.j2 renders: one class of targets, no parameters, first
    order, no weight decay, no references."""
    ctx: dict[str, Any] = {
        "template": "module.py.j2",
        "name": "tiny",
        "title": "Tiny",
        "targets": "distribution" if labels else "real",
        "labels_allowed": labels,
        "stable": True,
        "params": [],
        "call_params": [],
        "catalogue_loss": False,
        "weight_decay_param": "None",
        "reference_loss": '"REF_LOSS"',
        "reference_prediction": '"REF_PRED"',
        "block_rows": 7,
        "loss_soft": block("loss_rows = LOSS_SOFT"),
        "grad_soft": block("G = GRAD_SOFT"),
        "fused_soft": block("loss_rows = FUSED_LOSS", "G = FUSED_GRAD"),
        "second_order": False,
        "prediction": block("P = PRED"),
        "decision": {"code": "DECIDE(P)", "latex": "DECISION_TEX"},
        "logits": "LOGITS",
        "logits_latex": "LOGITS_TEX",
        "logits_inplace": ["O = GEMM", "O += BIAS"],
        "chain": {
            "dW": "CHAIN_W",
            "db": "CHAIN_B",
            "mean": ["MEAN_SCALE_1", "MEAN_SCALE_2"],
            "sum": ["SUM_SCALE"],
        },
        "mean_loss": {
            "whole": "MEAN_LOSS",
            "row_sum": "ROW_SUM",
            "of_total": "MEAN_OF_TOTAL",
            "sum_of_total": "SUM_OF_TOTAL",
            "latex": "MEAN_TEX",
        },
        "grad_mean": "GRAD_MEAN",
        "grad_mean_latex": "DO_TEX",
        "chain_W_latex": "CW",
        "chain_b_latex": "CB",
        "decay": None,
        "objective": None,
        "public_kernels": False,
        "uses_K": False,
        "reference": [],
        "emit": kernels_to_emit(set()),
    }
    if labels:
        ctx |= {
            "loss_labels": block("loss_rows = LOSS_LABELS"),
            "grad_labels": block("G = GRAD_LABELS"),
            "fused_labels": block("loss_rows = FUSED_LOSS_C", "G = FUSED_GRAD_C"),
            "grad_label_term": "TERM",
            "grad_labels_latex": "GL",
        }
    return ctx


def test_module_without_labels_prints_each_block_where_it_belongs() -> None:
    text = render("module.py.j2", module_context(labels=False))
    ast.parse(text)  # layout only, but valid Python around the markers
    assert (
        '    _, Y = _targets("y", y, n, K, O.dtype)\n'
        "    assert Y is not None\n"
        "    loss_rows = LOSS_SOFT\n"
        "    return O.dtype.type(" in text
    )
    assert "    assert Y is not None\n    G = GRAD_SOFT\n    out: Array = GRAD_MEAN\n" in text
    assert (
        "        assert Y is not None\n"
        "        Y_all = Y\n"
        "        Y = Y_all[start:stop]\n"
        "        loss_rows = FUSED_LOSS\n"
        "        G = FUSED_GRAD\n"
        "        Y = Y_all\n"
        "        total += " in text
    )
    assert "    P = predict_proba(X, W, b)\n    out: Array = DECIDE(P)\n" in text
    assert "DECISION_TEX" in text
    assert "labels" not in text.split("def loss(")[1].split("def grad_logits")[0]
    # The batch mean is printed from its steps: no division by n typed in the template.
    assert "    return O.dtype.type(MEAN_LOSS)\n" in text
    assert "        total += float(ROW_SUM)\n" in text
    # The row sums are scaled once, by statements printed from the forms' factor (no `/= n`).
    assert (
        '    if reduction == "sum":\n'
        "        SUM_SCALE\n"
        "        return X.dtype.type(SUM_OF_TOTAL), dW, db\n"
        "    MEAN_SCALE_1\n"
        "    MEAN_SCALE_2\n"
        "    return X.dtype.type(MEAN_OF_TOTAL), dW, db\n" in text
    )
    assert "        dW += CHAIN_W\n        db += CHAIN_B\n" in text
    assert "MEAN_TEX" in text and "DO_TEX" in text
    assert "/ n" not in text
    assert "0.5" not in text and "argmax" not in text  # no rule typed in the template


def test_module_with_labels_uses_one_branch_for_the_three_functions() -> None:
    text = render("module.py.j2", module_context(labels=True))
    ast.parse(text)
    assert (
        '    labels, Y = _targets("y", y, n, K, O.dtype)\n'
        "    if labels is not None:\n"
        "        _rows = np.arange(n)\n"
        "        loss_rows = LOSS_LABELS\n"
        "    else:\n"
        "        assert Y is not None\n"
        "        loss_rows = LOSS_SOFT\n"
        "    return O.dtype.type(" in text
    )
    assert (
        "        _rows = np.arange(n)\n"
        "        G = GRAD_LABELS\n"
        "        G[_rows, labels] = TERM\n"
        "    else:\n"
        "        assert Y is not None\n"
        "        G = GRAD_SOFT\n"
        "    out: Array = GRAD_MEAN\n" in text
    )
    assert (
        "        if labels is not None:\n"
        "            labels_all = labels\n"
        "            labels = labels_all[start:stop]\n"
        "            _rows = np.arange(stop - start)\n"
        "            loss_rows = FUSED_LOSS_C\n"
        "            G = FUSED_GRAD_C\n"
        "            G[_rows, labels] = TERM\n"
        "            labels = labels_all\n"
        "        else:\n"
        "            assert Y is not None\n"
        "            Y_all = Y\n"
        "            Y = Y_all[start:stop]\n"
        "            loss_rows = FUSED_LOSS\n"
        "            G = FUSED_GRAD\n"
        "            Y = Y_all\n"
        "        total += " in text
    )
    assert '        labels, Y = _targets("y", y, X.shape[0], W.shape[1], X.dtype)\n' in text


def test_module_second_order_and_decay_pieces() -> None:
    ctx = module_context(labels=False) | {
        "second_order": True,
        "hessian": block("H = HESS"),
        "hvp": block("HV = HVP"),
        "hvp_W": {
            "direction": "DIRECTION",
            "chain": "CHAIN_HV",
            "latex": "HVW_TEX",
            "direction_latex": "DIR_TEX",
            "rows_latex": "ROWS_TEX",
        },
        "decay": {
            "loss": "PENALTY",
            "grad": "PENALTY_GRAD",
            "hvp": "PENALTY_HVP",
            "latex": "R_TEX",
            "hvp_latex": "RV_TEX",
        },
        "objective": {
            "value": "OBJECTIVE",
            "sum": "OBJECTIVE_SUM",
            "grad": "OBJECTIVE_GRAD",
            "sum_grad": "OBJECTIVE_SUM_GRAD",
            "latex": "J_TEX",
            "grad_latex": "DJ_TEX",
        },
    }
    text = render("module.py.j2", ctx)
    ast.parse(text)
    assert (
        "    n = Xb.shape[0]\n"
        "    HV = hvp_logits(O, DIRECTION)\n"
        "    out: Array = CHAIN_HV\n"
        "    out += PENALTY_HVP\n"
        "    return out\n" in text
    )
    # The objective and its gradient are printed (codegen.objective_view), nothing composed.
    assert "    R = float(PENALTY)\n" in text
    assert "        total = OBJECTIVE_SUM\n        dW += OBJECTIVE_SUM_GRAD\n" in text
    assert "    dW += OBJECTIVE_GRAD\n    L = MEAN_OF_TOTAL\n" in text
    assert "    return X.dtype.type(OBJECTIVE), dW, db\n" in text
    assert "PENALTY_GRAD" not in text.split("def loss_and_grad")[1].split("def predict")[0]


def _defined_functions(text: str) -> list[str]:
    return [n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)]


def test_kernels_template_emits_only_the_kernels_asked_for() -> None:
    text = render("kernels.py.j2", {"emit": kernels_to_emit({"_sigmoid"})})
    assert _defined_functions(text) == ["_sigmoid"]
    every = render("kernels.py.j2", {"emit": kernels_to_emit({"_softmax", "_log_softmax"})})
    assert _defined_functions(every) == [
        "_row_max", "_shifted_exp", "_log_of_shifted_sum", "_softmax", "_log_softmax",
    ]  # fmt: skip


@pytest.mark.parametrize("kernel", sorted(KERNEL_CALLS))
def test_each_kernel_comes_with_every_kernel_it_calls(kernel: str) -> None:
    """`KERNEL_CALLS` is the template's own call graph: a kernel emitted alone (with what it
    calls) defines every `_name` its body calls, and each kernel named is defined once."""
    text = render("kernels.py.j2", {"emit": kernels_to_emit({kernel})})
    tree = ast.parse(text)
    defined = _defined_functions(text)
    assert kernel in defined and len(defined) == len(set(defined))
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert {c for c in called if c.startswith("_")} <= set(defined)
    assert set(defined) - {kernel} == set(KERNEL_CALLS[kernel]) | {
        k for c in KERNEL_CALLS[kernel] for k in KERNEL_CALLS[c]
    }


@pytest.mark.parametrize("K", [4, 100])  # either side of `_FEW_CLASSES` (`_row_sums`)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_complement_at_kernel_is_accurate_at_a_saturated_label_and_leaves_p_as_it_was(
    K: int, dtype: str
) -> None:
    """`_complement_at` (the label's `1 - p`, summed from the other entries) against mpmath
    (50 digits) on rows of correctly rounded probabilities: a saturated lead (p rounds to 1, so
    `1 - p` is 0 where the others' sum is ~e^-60), a tie, a masked class, random rows with the
    label at the top or not. Bound: 8 units in the last place, as the kernels' ties test (a
    dropped or double-counted term is off by O(1)). P must be unchanged on return: the kernel
    zeroes the label's entry while it sums."""
    import mpmath
    import numpy as np

    ns: dict[str, Any] = {"np": np, "Array": np.ndarray, "Any": Any}
    exec(render("kernels.py.j2", {"emit": kernels_to_emit({"_complement_at"})}), ns)
    rng = np.random.default_rng(3)
    O = rng.normal(scale=3.0, size=(12, K))
    O[0, 0] = 60.0
    O[1] = 2.0
    O[2, 1] = -np.inf
    labels = np.where(np.arange(12) % 2 == 0, np.argmax(O, axis=-1), rng.integers(0, K, 12))
    labels[1], labels[2] = K - 1, 1
    with mpmath.workdps(50):
        terms = [[mpmath.exp(v) if np.isfinite(v) else mpmath.mpf(0) for v in r] for r in O]
        probs = [[t / mpmath.fsum(r) for t in r] for r in terms]
    P = np.array([[float(p) for p in r] for r in probs], dtype=dtype)
    before = P.copy()
    got = ns["_complement_at"](P, labels)
    assert got.shape == (12, 1) and got.dtype == P.dtype
    assert np.array_equal(P, before)
    eps = float(np.finfo(dtype).eps)
    for r, c in enumerate(labels):
        want = float(mpmath.fsum(p for k, p in enumerate(probs[r]) if k != c))
        assert abs(float(got[r, 0]) - want) <= 8 * eps * want, (r, c, float(got[r, 0]), want)


def test_an_unknown_kernel_is_refused() -> None:
    with pytest.raises(NotImplementedError, match="_erf"):
        kernels_to_emit({"_erf"})


@pytest.mark.parametrize(
    ("targets", "present", "absent"),
    [
        ("distribution", "pass class labels in [0, {K})", "binary targets must lie"),
        ("binary", "binary targets must lie in [0, 1]", "class labels"),
        ("real", '"""Real targets: shape (n, K), finite -> (None, Y)."""', "binary targets"),
    ],
)
def test_validation_template_per_kind_of_target(targets: str, present: str, absent: str) -> None:
    text = render("validation.py.j2", {"targets": targets, "stable": True})
    ast.parse(text)
    assert present in text and absent not in text
    assert "_refuse_overflow" not in text


def test_validation_template_refuses_overflow_only_where_the_loss_is_unstable() -> None:
    context = {"targets": "real", "stable": False, "unstable_shapes": "exp(o[j])"}
    text = render("validation.py.j2", context)
    ast.parse(text)
    assert "def _refuse_overflow(" in text
    assert 'no overflow-free form for "\n                "exp(o[j]) (STABLE = False)' in text


def _notes_context(cjk: bool | None) -> dict[str, Any]:
    words = {
        key: key.upper()
        for key in [
            "summary",
            "questions",
            "questions_intro",
            "proved_in",
            "colon",
            "semicolon",
            "period",
            "step",
            "title_sep",
            "definition",
            "checked",
            "numeric_only",
            "results",
            "results_intro",
            "open",
            "close",
        ]
    }
    step = {
        "number": 1,
        "name": "first",
        "title": "STEP_TITLE",
        "reason": "STEP_REASON",
        "equation": "A = B",
        "lines": ["A = B"],
        "checks": ["CHECK_ONE", "CHECK_TWO"],
        "definition": False,
        "numeric_only": False,
    }
    ctx = {
        "template": "notes",
        "title": "NOTES_TITLE",
        "intro": "INTRO",
        "words": words,
        "questions": [],
        "results": [],
        "steps": [step],
    }
    if cjk is not None:
        ctx["cjk"] = cjk
    return ctx


def test_markdown_notes_lay_out_a_step() -> None:
    text = render("notes.md.j2", _notes_context(None))
    assert (
        '<a id="step-1"></a>\n'
        "## STEP 1TITLE_SEPSTEP_TITLE\n\n"
        "STEP_REASON\n\n"
        "$$\nA = B\n$$\n\n"
        "*CHECKEDCOLONCHECK_ONESEMICOLONCHECK_TWOPERIOD*\n" in text
    )


def test_latex_notes_lay_out_a_step() -> None:
    text = render("notes.tex.j2", _notes_context(False))
    assert "\\subsection*{STEP 1TITLE_SEPSTEP_TITLE}\nSTEP_REASON\n" in text
    assert "\\noindent\\emph{CHECKEDCOLONCHECK_ONESEMICOLONCHECK_TWOPERIOD}" in text
    assert "\\title{NOTES_TITLE}" in text


def _framework_context(template: str) -> dict[str, Any]:
    def printed(name: str) -> dict[str, Any]:
        return {"lines": [f"{name} = {name.upper()}_FORM"], "latex": "TEX"}

    torch_only = {"fused": printed("fused")} if template == "torch.py.j2" else {}
    array_api_only = (
        {
            "chain": {"dW": "DW_FORM", "db": "DB_FORM", "dW_latex": "DW_TEX", "db_latex": "DB_TEX"},
            "objective": None,
            "objective_latex": None,
            "logits_latex": "LOGITS_TEX",
        }
        if template == "array_api.py.j2"
        else {}
    )
    mean = {"whole": "MEAN_WHOLE", "row_sum": "MEAN_ROW_SUM"}
    mean |= {"grad": "MEAN_GRAD", "of_grad": "MEAN_OF_GRAD"}
    mean |= {"latex": "MEAN_TEX", "grad_latex": "DO_TEX"}
    return (
        torch_only
        | array_api_only
        | {
            "template": template,
            "name": "tiny",
            "title": "Tiny",
            "targets": "real",
            "second_order": False,
            "stable": True,
            "params": [],
            "call_params": [],
            "decay": None,
            "decay_param": None,
            "mean": mean,
            "labels": None,
            "hvp": None,
            "loss": printed("loss_rows"),
            "grad": printed("G"),
            "prediction": printed("P"),
            "logits": "LOGITS_FORM",
            "decision": {"code": "DECISION_FORM", "latex": "TEX", "calls": True},
            "catalogue_loss": False,
            "weight_decay_param": "None",
            "reference_loss": '"REF_LOSS"',
            "reference_prediction": '"REF_PRED"',
            "reference": [],
            "kernels": [],
        }
    )


@pytest.mark.parametrize("template", ["torch.py.j2", "jax.py.j2", "array_api.py.j2"])
def test_framework_templates_emit_the_power_kernels_only_where_used(template: str) -> None:
    """`_log_ratio` and `_complement_power` (the focal loss's) only in a module that calls them:
    every other framework module stays as it was."""

    def defined(context: dict[str, Any]) -> set[str]:
        tree = ast.parse(render(template, context))
        return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}

    extra = {"_log_ratio", "_complement_power"}
    assert not extra & defined(_framework_context(template))
    asked = _framework_context(template) | {"kernels": sorted(extra)}
    assert extra <= defined(asked)


@pytest.mark.parametrize("template", ["torch.py.j2", "jax.py.j2", "array_api.py.j2"])
def test_framework_templates_place_the_printed_forms(template: str) -> None:
    text = render(template, _framework_context(template))
    ast.parse(text)
    for marker in ("loss_rows = LOSS_ROWS_FORM", "G = G_FORM", "P = P_FORM", "DECISION_FORM"):
        assert marker in text, marker
    assert 'REFERENCE_LOSS = "REF_LOSS"' in text


@pytest.mark.parametrize(
    ("template", "context"),
    [
        ("module.py.j2", module_context(labels=True)),
        ("kernels.py.j2", {"emit": kernels_to_emit({"_softmax"})}),
        ("validation.py.j2", {"targets": "binary", "stable": True}),
        ("notes.md.j2", _notes_context(None)),
        ("notes.tex.j2", _notes_context(True)),
        ("torch.py.j2", _framework_context("torch.py.j2")),
        ("jax.py.j2", _framework_context("jax.py.j2")),
        ("array_api.py.j2", _framework_context("array_api.py.j2")),
    ],
)
def test_a_missing_key_is_refused(template: str, context: dict[str, Any]) -> None:
    render(template, context)  # the whole context renders...
    for key in context:
        smaller = {k: v for k, v in context.items() if k != key}
        try:
            render(template, smaller)
        except jinja2.UndefinedError:
            continue
        # A key the template reads only on another branch (e.g. labels when there are none).
        assert key in UNUSED_ON_THIS_BRANCH.get(template, set()), f"{template} ignored {key}"


#: Keys of the tiny contexts above that their template does not read on the branch rendered.
UNUSED_ON_THIS_BRANCH: dict[str, set[str]] = {
    # Read only on the branches not rendered here: a weight decay, a second-order model.
    "torch.py.j2": {"decay_param", "hvp"},
    "jax.py.j2": {"decay_param", "hvp"},
    "array_api.py.j2": {"decay_param", "hvp", "objective", "objective_latex"},
}


#: A parameter as `codegen.param_views` gives it (the range check `inside` printed).
EPS = {
    "name": "eps",
    "range": "RANGE",
    "inside": "INSIDE(eps)",
    "default": "0.1",
    "doc": "DOC",
    "low": "0.0",
    "high": "1.0",
    "low_inclusive": True,
    "high_inclusive": False,
}


def test_param_template_calls_the_printed_check() -> None:
    """`param.py.j2`: the call and the tuple lay out the printed check and range text; the
    function itself compares nothing (it calls `inside`)."""
    macros = ENV.get_template("param.py.j2").module
    call = '_param("eps", eps, "RANGE", lambda eps: INSIDE(eps))'
    assert str(macros.param_call(EPS)) == call
    assert str(macros.param_tuple([])) == "()"
    assert str(macros.param_tuple([EPS])) == f"({call},)"
    two = [EPS, {"name": "T", "range": "R2", "inside": "IN2"}]
    assert str(macros.param_tuple(two)) == f'({call}, _param("T", T, "R2", lambda T: IN2))'
    body = render("param.py.j2", {})
    assert "if not inside(value):" in body
    assert not any(op in body for op in (" < ", " > ", "<=", ">=", "low", "high"))


@pytest.mark.parametrize("template", ["torch.py.j2", "jax.py.j2", "array_api.py.j2"])
def test_every_target_defines_the_same_param_check(template: str) -> None:
    """One way to check a parameter: each framework module's `_param` is the NumPy module's,
    and its loss passes the printed check on (no range logic of its own)."""

    def param_def(text: str) -> str:
        (node,) = [
            n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == "_param"
        ]
        return ast.unparse(node)

    numpy_text = render("module.py.j2", module_context(labels=False))
    ctx = _framework_context(template) | {"params": [EPS], "call_params": [EPS]}
    text = render(template, ctx)
    assert param_def(text) == param_def(numpy_text)
    assert 'params = (_param("eps", eps, "RANGE", lambda eps: INSIDE(eps)),)' in text


@pytest.mark.parametrize("template", ["torch.py.j2", "jax.py.j2", "array_api.py.j2"])
def test_framework_templates_print_the_batch_mean(template: str) -> None:
    """The reductions and the mean's gradient factor arrive printed (`frameworks._mean_view`,
    from steps `mean_loss` and `batch_gradient_O`): no mean, sum or `/ n` typed."""
    text = render(template, _framework_context(template))
    assert 'MEAN_ROW_SUM if reduction == "sum" else MEAN_WHOLE' in text
    if template == "torch.py.j2":
        assert text.count('MEAN_OF_GRAD if ctx.reduction == "mean" else grad') == 2
    if template == "array_api.py.j2":
        assert "    return MEAN_GRAD\n" in text  # grad_logits
        assert "    L = MEAN_WHOLE\n" in text and "    return L, dW, db\n" in text
        assert "    dW = DW_FORM\n    db = DB_FORM\n" in text
    for typed in ("/ n", ".mean(", "mean(rows", ".sum()", "/ O.shape"):
        assert typed not in text, typed


def _declared_context(params: bool) -> dict[str, Any]:
    p = {
        "name": "PNAME",
        "low": "LOW",
        "high": "HIGH",
        "low_inclusive": "LOW_IN",
        "high_inclusive": "HIGH_IN",
    }
    return {
        "params": [p] if params else [],
        "catalogue_loss": "IS_CATALOGUE",
        "weight_decay_param": "DECAY_NAME",
        "reference_loss": "REF_LOSS",
        "reference_prediction": "REF_PRED",
        "reference": [],
    }


@pytest.mark.parametrize("params", [True, False])
def test_declared_template_places_what_it_is_given(params: bool) -> None:
    text = render("declared.py.j2", _declared_context(params))
    ranges = '    "PNAME": (LOW, HIGH, LOW_IN, HIGH_IN),\n' if params else ""
    assert ("{\n" + ranges + "}") in text if params else "] = {}\n" in text
    for line in (
        "CATALOGUE_LOSS = IS_CATALOGUE",
        "WEIGHT_DECAY = DECAY_NAME",
        "REFERENCE_LOSS = REF_LOSS",
        "REFERENCE_PREDICTION = REF_PRED",
    ):
        assert line in text.splitlines()


def test_reference_template_lays_out_each_factory_and_nothing_without_one() -> None:
    assert render("reference.py.j2", {"reference": []}).strip() == ""
    ctx = {
        "reference": [
            {"key": "loss", "lines": ["def _reference_loss(o, y, v, K):", "    return LOSS_REF"]},
            {"key": "gradient", "lines": ["def _reference_gradient(o, y, v, K):", "    return G"]},
        ]
    }
    text = render("reference.py.j2", ctx)
    assert "    def _reference_loss(o, y, v, K):\n        return LOSS_REF\n" in text
    assert '        "loss": _reference_loss,\n        "gradient": _reference_gradient,\n' in text


@pytest.mark.parametrize(
    "template", ["module.py.j2", "torch.py.j2", "jax.py.j2", "array_api.py.j2"]
)
def test_every_formula_in_a_code_template_arrives_printed(template: str) -> None:
    """A docstring's math is a printed equation (`${{ ... }}$`, both sides from a step:
    `codegen.equations`); the template types no `$...$` of its own, no left side such as
    `\\ell =` or `H_{jk}`, and no `dl/do`-style names."""
    source = ENV.loader.get_source(ENV, template)[0]
    rest = re.sub(r"\$\{\{[^}]*\}\}\$", "", source)
    assert "$" not in rest
    for typed in ("dl/d", "dL/d", "H_{", "\\ell =", "\\partial"):
        assert typed not in source, typed
