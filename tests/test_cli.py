"""The `derive` command, called as `main(argv)` with temporary output folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from derive.cli import main
from derive.output import build
from derive.output.loader import GENERATED_DIR


@pytest.mark.slow
def test_latex_writes_the_four_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["latex", "--loss", "softmax_regression", "--out", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "softmax_regression.md",
        "softmax_regression.tex",
        "softmax_regression.zh.md",
        "softmax_regression.zh.tex",
    ]
    assert "derivation checked" in capsys.readouterr().out
    for p in tmp_path.iterdir():
        assert p.read_bytes() == (GENERATED_DIR / p.name).read_bytes()


@pytest.mark.slow
def test_emit_then_verify_a_module_by_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emit", "--loss", "softmax_regression", "--out", str(tmp_path)]) == 0
    module = tmp_path / "softmax_regression.py"
    assert main(["verify", "--module", str(module)]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "FAIL" not in out


@pytest.mark.slow
def test_check_fails_with_a_diff_when_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = ["--loss", "softmax_regression", "--out", str(tmp_path)]
    assert main(["latex", *one]) == 0
    assert main(["emit", *one]) == 0
    for target in build.FRAMEWORK_DIRS:  # printing only: no framework needs to be installed
        assert main(["emit", "--target", target, *one]) == 0
    assert main(["check", *one]) == 0
    md = tmp_path / "softmax_regression.md"
    md.write_text(md.read_text().replace("Softmax regression", "Softmax regresion", 1))
    assert main(["check", *one]) == 1
    out = capsys.readouterr().out
    assert "stale: softmax_regression.md" in out and "+# Softmax regression" in out


def test_verify_of_a_missing_module_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--module", str(tmp_path / "nope.py")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_unknown_loss_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emit", "--loss", "nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_pdf_without_an_engine_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    args = ["latex", "--pdf", "--lang", "en", "--loss", "squared_error", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "apt-get install" in capsys.readouterr().err


@pytest.mark.slow
def test_a_users_folder_is_checked_fresh_and_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`derive emit --formula ... --param` writes notes, module and manifest; `derive check
    FOLDER` passes on them, and fails with a diff after a hand edit of the module."""
    monkeypatch.chdir(tmp_path)
    formula = "sum(a * (o[k] - y[k])**2, k) / 2"
    argv = ["--formula", formula, "--name", "half_sse", "--targets", "real"]
    assert main(["emit", *argv, "--param", "a=1:0:", "--out", "gen"]) == 0
    written = sorted(p.name for p in (tmp_path / "gen").iterdir())
    assert written == [
        "half_sse.derive.json",
        "half_sse.md",
        "half_sse.py",
        "half_sse.tex",
        "half_sse.zh.md",
        "half_sse.zh.tex",
    ]
    doc = json.loads((tmp_path / "gen" / "half_sse.derive.json").read_text())
    assert doc["source"] == {
        "formula": formula,
        "name": "half_sse",
        "params": ["a=1:0:"],
        "targets": "real",
    }
    assert doc["files"] == [n for n in written if not n.endswith(".json")]
    capsys.readouterr()

    assert main(["check", "gen"]) == 0
    out = capsys.readouterr().out
    assert "gen: half_sse up to date" in out and "all checks passed" in out

    module = tmp_path / "gen" / "half_sse.py"
    module.write_text(module.read_text().replace('LOSS = "half_sse"', 'LOSS = "half_sse"  # mine'))
    assert main(["check", "gen"]) == 1
    out = capsys.readouterr().out
    assert "stale: half_sse.py" in out
    assert '-LOSS = "half_sse"  # mine' in out and '+LOSS = "half_sse"' in out
    assert list(tmp_path.iterdir()) == [tmp_path / "gen"]  # no .hypothesis/ or anything else
