"""Where a long equation breaks: an estimate of printed width, and lines packed to fit the page.

A display equation that is wider than the text runs off the page (an overfull box). The notes
break such an equation at its top level: after the left-hand side's relation and between the
terms of a sum, never inside brackets (`\\left(` and `\\right)` must stay on one line). The width
of a LaTeX string is estimated from its glyphs: fractions are as wide as the wider of numerator
and denominator, scripts are smaller, sum limits sit under the sign. The estimate only has to be
good enough that `tests/test_tex.py`, which reads TeX's own overfull-box reports, passes.
"""

from __future__ import annotations

import re

#: Usable width of a display line, in em of the notes' equation font (A4, 2.2 cm margins,
#: `\small` in an 11 pt article: 472 pt of text, 10 pt per em), less a margin for the estimate.
LINE_EM = 40.0

_COMMAND = re.compile(r"\\([A-Za-z]+|.)")
_WIDE_WORDS = {"log": 1.4, "exp": 1.5, "LSE": 2.0, "softmax": 3.4, "diag": 1.8, "max": 1.6}
_NARROW = {"left", "right", "quad", "mathbf", "hat", "operatorname", "mathrm", "text"}
_ONE = {
    "partial", "ell", "delta", "gamma", "lambda", "varepsilon", "sigma", "mu", "infty", "cdot",
    "alpha", "beta", "theta", "tau", "eta", "pi", "lVert", "rVert", "dots", "ge", "le",
}  # fmt: skip


def _group(tex: str, start: int) -> tuple[str, int]:
    """The brace group (or single token) starting at `start`, and the index after it."""
    while start < len(tex) and tex[start] == " ":
        start += 1
    if start >= len(tex):
        return "", start
    if tex[start] != "{":
        m = _COMMAND.match(tex, start)
        if m:
            return m.group(0), m.end()
        return tex[start], start + 1
    depth = 0
    for pos in range(start, len(tex)):
        depth += {"{": 1, "}": -1}.get(tex[pos], 0)
        if depth == 0:
            return tex[start + 1 : pos], pos + 1
    return tex[start + 1 :], len(tex)


def width(tex: str) -> float:
    """Estimated width of a LaTeX math string, in em."""
    total, pos = 0.0, 0
    while pos < len(tex):
        ch = tex[pos]
        if ch == "\\":
            m = _COMMAND.match(tex, pos)
            assert m is not None
            name, pos = m.group(1), m.end()
            if name == "frac":
                top, pos = _group(tex, pos)
                bottom, pos = _group(tex, pos)
                total += max(width(top), width(bottom)) + 0.4
            elif name in ("sum", "prod"):
                limits = 0.0
                while pos < len(tex) and tex[pos] in "_^":
                    script, pos = _group(tex, pos + 1)
                    limits = max(limits, 0.7 * width(script))
                total += max(1.6, limits) + 0.3
            elif name == "operatorname":
                word, pos = _group(tex, pos)
                total += _WIDE_WORDS.get(word, 0.55 * len(word)) + 0.3
            elif name in _WIDE_WORDS:
                total += _WIDE_WORDS[name] + 0.3
            elif name in _NARROW or name in (",", ";", " "):
                total += 0.15 if name in (",", ";", " ", "quad") else 0.0
            else:
                total += 1.0 if name in _ONE else 0.8
        elif ch in "_^":
            script, pos = _group(tex, pos + 1)
            total += 0.7 * width(script)
        elif ch in "{} ":
            pos += 1
        elif ch in "+-=<>":
            total += 1.8
            pos += 1
        elif ch in "()[]|,.'":
            total += 0.4
            pos += 1
        else:
            total += 0.6
            pos += 1
    return total


def break_lines(
    lhs: str,
    relation: str,
    terms: list[str],
    limit: float = LINE_EM,
    lhs_terms: list[str] | None = None,
) -> list[str]:
    """`lhs relation rhs` as lines no wider than `limit` where possible.

    `terms` are the right-hand side's top-level terms, each with its sign (the first unsigned).
    One line if it all fits; otherwise the relation starts the right-hand side on the first line
    (or on the second, when the left-hand side takes more than half the line), and terms are
    packed greedily.
    """
    rhs = " ".join(terms)
    if width(f"{lhs} {relation} {rhs}") <= limit:
        return [f"{lhs} {relation} {rhs}"]
    lines: list[str] = []
    if width(lhs) > limit and lhs_terms and len(lhs_terms) > 1:
        # A left-hand side wider than the page (an unsimplified derivative, say) is packed term
        # by term too, before the relation starts the right-hand side on a line of its own.
        lines += _pack(lhs_terms, limit)
        current = f"{relation} {terms[0]}"
    elif width(lhs) > limit / 2:
        lines.append(lhs)
        current = f"{relation} {terms[0]}"
    else:
        current = f"{lhs} {relation} {terms[0]}"
    return lines + _pack([current, *terms[1:]], limit)


def _pack(terms: list[str], limit: float) -> list[str]:
    """Terms packed greedily into lines no wider than `limit` (a lone wide term keeps its line)."""
    lines: list[str] = []
    current = terms[0]
    for term in terms[1:]:
        if width(f"{current} {term}") <= limit:
            current = f"{current} {term}"
        else:
            lines.append(current)
            current = term
    lines.append(current)
    return lines
