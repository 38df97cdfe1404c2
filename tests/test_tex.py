"""The LaTeX notes compile: pdflatex for English, xelatex + ctex for Chinese."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from derive.output.loader import GENERATED_DIR
from derive.output.pdf import INSTALL_HINT, compile_pdf, engine_for


@pytest.mark.tex
@pytest.mark.parametrize("name", sorted(p.name for p in GENERATED_DIR.glob("*.tex")))
def test_notes_compile(name: str, tmp_path: Path) -> None:
    engine = engine_for(name)
    if shutil.which(engine) is None:
        pytest.skip(f"{engine} not installed: {INSTALL_HINT}")
    pdf = compile_pdf(GENERATED_DIR / name, tmp_path)
    assert pdf.read_bytes().startswith(b"%PDF")
    assert pdf.stat().st_size > 10_000
