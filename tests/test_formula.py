"""Formula strings are parsed without evaluating Python; hostile ones are refused."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import sympy as sp

from derive import notation as S
from derive.cli import main
from derive.errors import FormulaParseError
from derive.losses.formula import parse_formula
from derive.losses.user_model import load_user_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

HOSTILE = [
    "__import__('os').system('touch {marker}')",
    "o.__class__.__bases__",
    "(lambda: 1)()",
    "exp(o[k]).__globals__",
    "[o for o in y]",
    "2**10**10",
    "9**64**64",
    "o[k]**1000",
    "open('{marker}', 'w')",
    "exec('1')",
    "sum(o[k], k, start=1)",
    "o[__import__('os')]",
    "'a string'",
    "o[k] if True else y[k]",
    "x := 1",
    "o[k] @ y[k]",
    "1e400",
]


@pytest.fixture
def nothing_evaluates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any evaluation path fails the test loudly."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a formula was evaluated")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(sp, "sympify", forbidden)
    monkeypatch.setattr("sympy.parsing.sympy_parser.parse_expr", forbidden)


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.usefixtures("nothing_evaluates")
def test_hostile_strings_are_refused_without_running(text: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(FormulaParseError, match="formula:"):
        parse_formula(text.format(marker=marker))
    assert not marker.exists()


@pytest.mark.usefixtures("nothing_evaluates")
def test_the_grammar_builds_the_expected_expression() -> None:
    gamma = sp.Symbol("gamma")
    expr = parse_formula(
        "-sum(y[k] * (1 - softmax(k))**gamma * log(softmax(k)), k)", {"gamma": gamma}
    )
    p = sp.exp(S.o[S.k]) / sp.Sum(sp.exp(S.o[S.m]), (S.m, 1, S.K))
    assert expr == -sp.Sum(S.y[S.k] * (1 - p) ** gamma * sp.log(p), (S.k, 1, S.K))


def test_undeclared_names_and_long_strings_are_refused() -> None:
    with pytest.raises(FormulaParseError, match="'gamma'"):
        parse_formula("o[k]**gamma")
    with pytest.raises(FormulaParseError, match="characters"):
        parse_formula("o[k] + " * 1000 + "1")


def test_the_py_and_toml_examples_define_the_same_loss() -> None:
    a = load_user_model(EXAMPLES / "focal_loss.py")
    b = load_user_model(EXAMPLES / "focal_loss.toml")
    gamma_a, gamma_b = a.params[0].symbol, b.params[0].symbol
    assert sp.simplify(a.loss.xreplace({gamma_a: gamma_b}) - b.loss) == 0


@pytest.mark.slow  # seconds; the default run keeps the quartic (tests/test_user_formulas.py)
def test_a_formula_flag_goes_to_a_verified_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "emit",
            "--formula",
            "sum((o[k] - y[k])**2, k)",
            "--name",
            "sse",
            "--targets",
            "real",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, capsys.readouterr().out
    assert (tmp_path / "sse.py").is_file() and (tmp_path / "sse.zh.md").is_file()
    assert "all checks passed" in capsys.readouterr().out


def test_a_hostile_formula_flag_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["emit", "--formula", "__import__('os')", "--name", "x", "--out", str(tmp_path)])
    assert code == 2
    assert "formula:" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_example_user_loss_goes_from_a_file_to_a_verified_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emit", "--model", str(EXAMPLES / "focal_loss.toml"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "FAIL" not in out
    names = sorted(p.name for p in tmp_path.iterdir())
    # The notes, the module and the manifest `derive check FOLDER` rebuilds them from.
    suffixes = (".derive.json", ".md", ".py", ".tex", ".zh.md", ".zh.tex")
    assert names == [f"focal_loss{s}" for s in suffixes]
