"""Template contexts and rendering for the notes (Markdown and LaTeX, English and Chinese).

Templates receive plain, already-printed data: step titles and reasons in the chosen language,
the LaTeX of each side (from `derive.printing.to_latex`), the words for how each step was checked.
They hold layout only; nothing here or there types a formula.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jinja2

from derive import resources
from derive.output.printing import code_block, latex_sides
from derive.symbolic.steps import CheckedDerivation, CheckedStep, Prose

LANGS = ("en", "zh")

RELATION_LATEX = {"=": "=", ">": ">", ">=": r"\ge"}

#: Words the templates put around the steps, per language.
CHROME: dict[str, Prose] = {
    "checked": Prose("Checked", "验证"),
    "definition": Prose("Definition: nothing to prove.", "定义：无需证明。"),
    "numeric_only": Prose(
        "Only numeric evidence: no symbolic proof was reached for this step.",
        "仅有数值证据：此步骤未能得到符号证明。",
    ),
    "summary": Prose(
        "Every step below was checked by SymPy when this file was generated; the pipeline stops "
        "at the first step whose check fails.",
        "以下每一步都在生成本文件时由 SymPy 检验过；任何一步检验失败，整个流程就会停止。",
    ),
    "step": Prose("Step", "步骤"),
    "contents": Prose("Steps", "步骤一览"),
}


def _template_source(name: str) -> str | None:
    """A template's text, read through `importlib.resources` (checkout and wheel alike)."""
    path = resources.templates() / name
    return path.read_text(encoding="utf-8") if path.is_file() else None


def environment() -> jinja2.Environment:
    """The one Jinja environment: strict, no autoescape (the output is code and TeX, not HTML)."""
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template_source),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["code"] = code_block
    return env


@dataclass(frozen=True)
class StepView:
    number: int
    name: str
    title: str
    reason: str
    equation: str
    checks: list[str]
    definition: bool
    numeric_only: bool


_CODE_SPAN = re.compile(r"`([^`]*)`")
_TEX_SPECIAL = {"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#"}


def prose(text: str, fmt: str) -> str:
    """Prose as the format needs it: `code` spans become \texttt{} (escaped) in LaTeX."""
    if fmt != "tex":
        return text

    def texttt(m: re.Match[str]) -> str:
        return r"\texttt{" + "".join(_TEX_SPECIAL.get(ch, ch) for ch in m.group(1)) + "}"

    return _CODE_SPAN.sub(texttt, text)


def step_view(number: int, checked: CheckedStep, lang: str, fmt: str = "md") -> StepView:
    step = checked.step
    lhs, rhs = latex_sides(step.lhs, step.rhs)
    equation = f"{lhs} {RELATION_LATEX[step.relation]} {rhs}"
    return StepView(
        number=number,
        name=step.name,
        title=prose(step.title(lang), fmt),
        reason=prose(step.reason(lang), fmt),
        equation=equation,
        checks=[o.text(lang) for o in checked.outcomes],
        definition=step.definition,
        numeric_only=not checked.proved,
    )


def context(
    checked: CheckedDerivation, lang: str, template: str, fmt: str = "md"
) -> dict[str, Any]:
    if lang not in LANGS:
        raise ValueError(f"lang {lang!r}: expected one of {', '.join(LANGS)}")
    d = checked.derivation
    return {
        "template": template,
        "lang": lang,
        "title": prose(d.title(lang), fmt),
        "intro": prose(d.intro(lang), fmt),
        "steps": [step_view(i, s, lang, fmt) for i, s in enumerate(checked.steps, start=1)],
        "words": {key: text(lang) for key, text in CHROME.items()},
        "cjk": lang == "zh",
    }


def render(checked: CheckedDerivation, lang: str, fmt: str) -> str:
    """The notes as Markdown (`fmt="md"`) or a standalone LaTeX article (`fmt="tex"`)."""
    template = f"notes.{fmt}.j2"
    return one_trailing_newline(
        environment().get_template(template).render(context(checked, lang, template, fmt))
    )


def one_trailing_newline(text: str) -> str:
    """Generated files end in exactly one newline, whatever the template's last loop left."""
    return text.rstrip("\n") + "\n"


def render_markdown(checked: CheckedDerivation, lang: str) -> str:
    return render(checked, lang, "md")


def latex_fragment(checked: CheckedDerivation) -> str:
    """The equations alone, one `align*` block: what Jupyter's `_repr_latex_` shows."""
    rows = [step_view(i, s, "en") for i, s in enumerate(checked.steps, start=1)]
    body = r" \\ ".join(
        r"&\text{" + r.title.replace("$", "") + r"}:\quad " + r.equation for r in rows
    )
    return r"$\begin{aligned}" + body + r"\end{aligned}$"
