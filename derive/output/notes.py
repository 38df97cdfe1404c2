"""Template contexts and rendering for the notes (Markdown and LaTeX, English and Chinese).

Templates receive plain, already-printed data: step titles and reasons in the chosen language,
the LaTeX of each side (from `printers.latex`), the words for how each step was checked.
They hold layout only; nothing here or there types a formula.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jinja2
import sympy as sp

from derive import notation as S
from derive import resources
from derive.output.layout import break_lines
from derive.output.printers.code_format import code_block
from derive.output.printers.latex import latex_sides, latex_terms, names_in_use
from derive.symbolic.functions import to_raw
from derive.symbolic.rewrites import canonical_sums
from derive.symbolic.steps import CheckedDerivation, CheckedStep, Prose, Step

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
    "questions": Prose("The two questions", "两个问题"),
    "questions_intro": Prose(
        "The study notes this derivation answers left two questions open (marked ??? there). "
        "Each answer below names the steps that prove it.",
        "这份推导所回答的学习笔记留下了两个问题（笔记中标着 ？？？）。"
        "下面每个回答都注明了证明它的步骤。",
    ),
    "proved_in": Prose("Proved in", "证明见"),
    "results": Prose("Results", "结果汇总"),
    "results_intro": Prose(
        "The final results, each printed from the step that proved it.",
        "最终结果，每一个都直接取自证明它的步骤。",
    ),
    # Punctuation around the steps: full-width in Chinese.
    "colon": Prose(": ", "："),
    "semicolon": Prose("; ", "；"),
    "period": Prose(".", "。"),
    "title_sep": Prose(". ", "　"),
    "open": Prose(" (", "（"),
    "close": Prose(")", "）"),
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
    #: The equation in display lines (one unless it is too wide for the page).
    lines: list[str]
    checks: list[str]
    definition: bool
    numeric_only: bool


@dataclass(frozen=True)
class Display:
    """How a step's equation is shown: its left side by name where an earlier step named it, and
    whether the softmax of the logits prints as the prediction it was defined to be."""

    lhs: sp.Basic
    softmax_as: sp.IndexedBase | None


def _defines_prediction(step: Step) -> bool:
    """`yhat_j = exp(o_j) / sum_m exp(o_m)`: from here on, softmax(o)_j may print as yhat_j."""
    if step.lhs != S.yhat[S.j] or step.relation != "=":
        return False
    softmax = sp.exp(S.o[S.j]) / sp.Sum(sp.exp(S.o[S.m]), (S.m, 1, S.K))
    return bool(canonical_sums(to_raw(step.rhs)) == canonical_sums(softmax))


def displays(steps: tuple[CheckedStep, ...]) -> list[Display]:
    """The display of each step, in order.

    A side an earlier step has equated with a name (`ell = ...`, then `ell` = its form in the
    logits, and so on) is shown by that name on the left, and a derivative of it as
    `d ell / d o_j`: the reader has just seen the long form on the previous line. Only exact
    equality with a proved (or defining) step's side counts.
    """
    known: dict[sp.Basic, sp.Basic] = {}
    softmax_as: sp.IndexedBase | None = None
    out = []
    for checked in steps:
        step = checked.step
        lhs = known.get(step.lhs)
        if lhs is None and isinstance(step.lhs, sp.Derivative) and step.lhs.expr in known:
            lhs = sp.Derivative(known[step.lhs.expr], *step.lhs.variable_count)
        out.append(Display(step.lhs if lhs is None else lhs, softmax_as))
        if step.relation == "=":
            if lhs is not None:
                known.setdefault(step.rhs, lhs)
            elif isinstance(step.lhs, sp.Symbol):
                known.setdefault(step.rhs, step.lhs)
        if _defines_prediction(step):
            softmax_as = S.yhat
    return out


def equation_lines(step: Step, shown: Display) -> tuple[str, list[str]]:
    """The equation on one line (Markdown) and broken to fit the page (LaTeX)."""
    lhs, rhs = latex_sides(shown.lhs, step.rhs, softmax_as=shown.softmax_as)
    relation = RELATION_LATEX[step.relation]
    taken = names_in_use(shown.lhs, step.rhs)
    return f"{lhs} {relation} {rhs}", break_lines(
        lhs,
        relation,
        latex_terms(step.rhs, taken, shown.softmax_as),
        lhs_terms=latex_terms(shown.lhs, taken, shown.softmax_as),
    )


_CODE_SPAN = re.compile(r"`([^`]*)`")
_TEX_SPECIAL = {"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#"}


#: Math (`$...$`) and code spans: left exactly as written in any language.
_VERBATIM = re.compile(r"(\$[^$]*\$|`[^`]*`)")
_CJK = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"
_FULL_WIDTH = {
    ",": "，",
    ":": "：",
    ";": "；",
    "(": "（",
    ")": "）",
    "?": "？",
    "!": "！",
    ".": "。",
}
_ASCII_NEXT_TO_CJK = re.compile(rf"(?<=[{_CJK}])\s*([,:;?!.])\s*|\s*([,:;?!])\s*(?=[{_CJK}])")
_PAREN_PAIR = re.compile(r"\s*\(([^()]*)\)\s*")
_IS_CJK = re.compile(rf"[{_CJK}]")


def chinese_punctuation(text: str) -> str:
    """ASCII punctuation next to a Chinese character becomes full-width; math and code untouched.

    (A `.` only after a Chinese character: before one it may be a decimal point or a file name.)
    """

    def fix(segment: str) -> str:
        return _ASCII_NEXT_TO_CJK.sub(lambda m: _FULL_WIDTH[m.group(1) or m.group(2)], segment)

    def verbatim(m: re.Match[str]) -> str:
        kept.append(m.group(0))
        return f"\0{len(kept) - 1}\0"

    # Math and code spans are set aside (a bracket pair may enclose one), then put back.
    kept: list[str] = []
    plain = _VERBATIM.sub(verbatim, text)

    def pair(m: re.Match[str]) -> str:
        # A bracket pair is Chinese when a Chinese character is just outside or just inside it.
        inner = m.group(1).strip()
        around = m.string[max(0, m.start() - 1) : m.start()] + m.string[m.end() : m.end() + 1]
        if _IS_CJK.search(around + inner[:1] + inner[-1:]):
            return "（" + inner + "）"
        return m.group(0)

    plain = _PAREN_PAIR.sub(pair, plain)
    plain = fix(plain)
    return re.sub("\0([0-9]+)\0", lambda m: kept[int(m.group(1))], plain)


def prose(text: str, fmt: str, lang: str = "en") -> str:
    """Prose as the format needs it: `code` spans become \texttt{} (escaped) in LaTeX, and
    Chinese prose gets full-width punctuation."""
    if lang == "zh":
        text = chinese_punctuation(text)
    if fmt != "tex":
        return text

    def texttt(m: re.Match[str]) -> str:
        return r"\texttt{" + "".join(_TEX_SPECIAL.get(ch, ch) for ch in m.group(1)) + "}"

    # Outside math and code, `_ % & #` are text (a user loss named `ce_entropy` is a name, not a
    # subscript that would swallow the rest of the paragraph into math mode).
    parts = _VERBATIM.split(text)
    return "".join(
        _CODE_SPAN.sub(texttt, part)
        if _VERBATIM.fullmatch(part)
        else _UNESCAPED_SPECIAL.sub(r"\\\1", part)
        for part in parts
    )


_UNESCAPED_SPECIAL = re.compile(r"(?<!\\)([_%&#])")


def step_view(
    number: int, checked: CheckedStep, lang: str, fmt: str = "md", shown: Display | None = None
) -> StepView:
    step = checked.step
    equation, lines = equation_lines(step, shown or Display(step.lhs, None))
    return StepView(
        number=number,
        name=step.name,
        title=prose(step.title(lang), fmt, lang),
        reason=prose(step.reason(lang), fmt, lang),
        equation=equation,
        lines=lines,
        checks=[prose(o.text(lang), fmt, lang) for o in checked.outcomes],
        definition=step.definition,
        numeric_only=not checked.proved,
    )


def step_views(checked: CheckedDerivation, lang: str, fmt: str = "md") -> list[StepView]:
    shown = displays(checked.steps)
    return [step_view(i, s, lang, fmt, shown[i - 1]) for i, s in enumerate(checked.steps, start=1)]


@dataclass(frozen=True)
class QuestionView:
    question: str
    answer: str
    #: The equation of the step the answer shows, as that step prints it.
    lines: list[str]
    equation: str
    #: (step number, step name) of each step that proves the answer.
    links: list[tuple[int, str]]


@dataclass(frozen=True)
class ResultView:
    label: str
    lines: list[str]
    equation: str
    step: int


def question_views(
    checked: CheckedDerivation, views: list[StepView], lang: str, fmt: str
) -> list[QuestionView]:
    number = {v.name: v for v in views}
    return [
        QuestionView(
            question=prose(q.question(lang), fmt, lang),
            answer=prose(q.answer(lang), fmt, lang),
            lines=number[q.shows].lines,
            equation=number[q.shows].equation,
            links=[(number[name].number, name) for name in q.steps],
        )
        for q in checked.derivation.questions
    ]


def result_views(checked: CheckedDerivation, lang: str, fmt: str) -> list[ResultView]:
    """The closing summary: each result is the right side of the step that proved it, printed
    as that step prints it (in yhat once softmax was named), under its own left side."""
    shown = displays(checked.steps)
    index = {s.step.name: i for i, s in enumerate(checked.steps)}
    out = []
    for result in checked.derivation.results:
        i = index[result.step]
        step = checked.steps[i].step
        display = Display(result.lhs, shown[i].softmax_as)
        equation, lines = equation_lines(step, display)
        out.append(ResultView(prose(result.label(lang), fmt, lang), lines, equation, i + 1))
    return out


def context(
    checked: CheckedDerivation, lang: str, template: str, fmt: str = "md"
) -> dict[str, Any]:
    if lang not in LANGS:
        raise ValueError(f"lang {lang!r}: expected one of {', '.join(LANGS)}")
    d = checked.derivation
    steps = step_views(checked, lang, fmt)
    return {
        "template": template,
        "lang": lang,
        "title": prose(d.title(lang), fmt, lang),
        "intro": prose(d.intro(lang), fmt, lang),
        "questions": question_views(checked, steps, lang, fmt),
        "steps": steps,
        "results": result_views(checked, lang, fmt),
        "words": {key: prose(text(lang), fmt, lang) for key, text in CHROME.items()},
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
    rows = step_views(checked, "en")
    body = r" \\ ".join(
        r"&\text{" + r.title.replace("$", "") + r"}:\quad " + r.equation for r in rows
    )
    return r"$\begin{aligned}" + body + r"\end{aligned}$"


@dataclass(frozen=True)
class Notebook:
    """A checked derivation as Jupyter shows it: a cell ending in `Notebook(checked)` renders the
    notes (Markdown) or, where only LaTeX is shown, the equations.

    It lives here, not on `CheckedDerivation`, so that the symbolic core knows nothing of rendering.
    """

    checked: CheckedDerivation
    lang: str = "en"

    def _repr_markdown_(self) -> str:
        return render_markdown(self.checked, self.lang)

    def _repr_latex_(self) -> str:
        return latex_fragment(self.checked)
