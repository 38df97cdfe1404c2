"""Unit tests of `derive.output.layout`: the width estimate and where a long equation breaks
(tests/test_tex.py checks the result against TeX's own overfull-box reports)."""

from __future__ import annotations

from derive.output import layout


def test_width_grows_with_the_glyphs_and_a_fraction_is_as_wide_as_its_wider_part() -> None:
    assert layout.width("a") < layout.width("a + b") < layout.width("a + b + c")
    assert layout.width(r"\frac{a}{bbbbbb}") == layout.width(r"\frac{bbbbbb}{a}")
    assert layout.width(r"\frac{a}{bbbbbb}") < layout.width("a bbbbbb")
    # scripts are smaller than the same glyphs on the line
    assert layout.width("x_{ij}") < layout.width("xij")


def test_an_equation_that_fits_stays_on_one_line() -> None:
    assert layout.break_lines("L", "=", ["a", "+ b"]) == ["L = a + b"]


def test_a_long_right_hand_side_breaks_between_terms_never_inside_one() -> None:
    term = r"\left(" + "x " * 12 + r"\right)"
    terms = [term, *(f"+ {term}" for _ in range(5))]
    lines = layout.break_lines("L", "=", terms, limit=30.0)
    assert len(lines) > 1
    assert lines[0].startswith("L = ")
    assert " ".join(lines) == "L = " + " ".join(terms)
    for line in lines:
        assert line.count(r"\left(") == line.count(r"\right)")
        assert layout.width(line) <= 30.0


def test_a_wide_left_hand_side_gets_a_line_of_its_own() -> None:
    lhs = "w" * 30  # 18 em: more than half of the 30 em line
    lines = layout.break_lines(lhs, "=", ["a", "+ b", "+ " + "c " * 30], limit=30.0)
    assert lines[0] == lhs
    assert lines[1].startswith("= a")


def test_a_left_hand_side_wider_than_the_page_is_packed_term_by_term() -> None:
    parts = ["p " * 10, *("+ " + "q " * 10 for _ in range(5))]
    lhs = " ".join(parts)
    lines = layout.break_lines(lhs, "=", ["a", "+ b"], limit=30.0, lhs_terms=parts)
    assert all(layout.width(line) <= 30.0 for line in lines)
    assert lines[-1].startswith("= a")
    assert " ".join(lines) == f"{lhs} = a + b"
