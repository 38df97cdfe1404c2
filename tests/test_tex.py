"""The LaTeX notes compile (pdflatex for English, xelatex + ctex for Chinese) and fit the page.

"Fit" is read from TeX's own log: no overfull box wider than 5 pt, and no warning about text
commands in math mode (`K = 2…8` once gave one per step).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from derive.losses.derivation import loss_derivation
from derive.losses.user_model import load_user_model, model_from_formula
from derive.output import build
from derive.output.loader import GENERATED_DIR
from derive.output.pdf import INSTALL_HINT, compile_with_log, engine_for, overfull_boxes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: TeX reports boxes a fraction of a point over; 5 pt is invisible on the page.
TOLERANCE_PT = 5.0


def _compiled(tex: Path, tmp_path: Path) -> str:
    engine = engine_for(tex.name)
    if shutil.which(engine) is None:
        pytest.skip(f"{engine} not installed: {INSTALL_HINT}")
    pdf, log = compile_with_log(tex, tmp_path)
    assert pdf.read_bytes().startswith(b"%PDF")
    assert pdf.stat().st_size > 10_000
    return log


def _fits(log: str) -> None:
    wide = [w for w in overfull_boxes(log) if w > TOLERANCE_PT]
    assert wide == [], f"overfull boxes (pt too wide): {wide}"
    assert "invalid in math mode" not in log


@pytest.mark.tex
@pytest.mark.parametrize(
    "name",
    [
        # the story's notes in both languages by default; the other losses' notes in the slow pass
        n if n.startswith("softmax_regression.") else pytest.param(n, marks=pytest.mark.slow)
        for n in sorted(p.name for p in GENERATED_DIR.glob("*.tex"))
    ],
)
def test_notes_compile_and_fit_the_page(name: str, tmp_path: Path) -> None:
    _fits(_compiled(GENERATED_DIR / name, tmp_path))


def test_the_log_parser_sees_an_overfull_box() -> None:
    log = "Overfull \\hbox (163.5pt too wide) in paragraph at lines 3--4\nOverfull \\hbox (0.9pt"
    assert overfull_boxes(log + " too wide) detected at line 9\n") == [163.5, 0.9]


def _focal() -> object:
    return load_user_model(EXAMPLES / "focal_loss.py")


def _cross_entropy_plus_entropy() -> object:
    # A user loss once gave 7 overfull boxes up to 900 pt; its name has an underscore, which
    # once turned the intro paragraph into math.
    loss = "-sum(y[k]*log(softmax(k)), k) - sum(softmax(k)*log(softmax(k)), k)"
    return model_from_formula("ce_entropy", loss)


@pytest.mark.tex
@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        pytest.param(
            _focal,
            # NOTE: a known defect, kept visible: since the focal example's accurate steps landed
            # (9451af0), step 12's second line ("The gradient with complements": y_hat_j times a
            # bracket of three sums) is 40.6 pt too wide, the same cause as below (no line break
            # inside \left( \right)). strict: the day it fits, this marker must go.
            marks=pytest.mark.xfail(strict=True, reason="one product line overfull"),
        ),
        pytest.param(
            _cross_entropy_plus_entropy,
            # NOTE: a known defect, kept visible: since the accuracy steps (shift to z = o - max)
            # landed, two one-term products of this loss's Hessian/HVP are 84 and 134 pt too
            # wide; a product inside \left( \right) cannot break at a top-level + or -. strict:
            # the day it fits, this marker must go.
            marks=pytest.mark.xfail(strict=True, reason="two one-term equations overfull"),
        ),
    ],
)
def test_user_loss_notes_fit_the_page(model: Any, tmp_path: Path) -> None:
    checked = loss_derivation(model()).check()
    written = build.write(build.notes_artifacts(checked), tmp_path / "notes")
    for tex in sorted(p for p in written if p.suffix == ".tex"):
        _fits(_compiled(tex, tmp_path / tex.stem))


@pytest.mark.tex
def test_links_to_steps_resolve(tmp_path: Path) -> None:
    """Page one links to the steps that prove each answer: no undefined reference remains."""
    log = _compiled(GENERATED_DIR / "softmax_regression.tex", tmp_path)
    assert "undefined" not in log.lower().replace("\\undefined", "")
