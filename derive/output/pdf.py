"""Compile the LaTeX notes to PDF when a TeX engine is installed.

English notes compile with pdflatex, Chinese ones with xelatex (ctex needs a Unicode engine).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from derive.errors import DeriveError, LatexEngineMissing

INSTALL_HINT = (
    "apt-get install --no-install-recommends texlive-latex-base texlive-latex-recommended "
    "texlive-xetex texlive-lang-chinese fonts-noto-cjk"
)


def engine_for(tex_name: str) -> str:
    return "xelatex" if ".zh." in tex_name else "pdflatex"


#: TeX's report of a line wider than the text (what runs off the page).
_OVERFULL = re.compile(r"^Overfull \\hbox \(([0-9.]+)pt too wide\)", re.MULTILINE)


def overfull_boxes(log: str) -> list[float]:
    """The widths (pt) by which each overfull box in a TeX log sticks out of the text."""
    return [float(w) for w in _OVERFULL.findall(log)]


def compile_pdf(tex: Path, out_dir: Path) -> Path:
    """Compile `tex` in a scratch directory and copy the PDF to `out_dir`."""
    return compile_with_log(tex, out_dir)[0]


def compile_with_log(tex: Path, out_dir: Path) -> tuple[Path, str]:
    """`compile_pdf`, and the engine's log (overfull boxes, warnings)."""
    engine = engine_for(tex.name)
    if shutil.which(engine) is None:
        raise LatexEngineMissing(
            f"{engine} is not installed (needed for {tex.name}); {INSTALL_HINT}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / tex.name
        shutil.copyfile(tex, src)
        pdf, log_file = src.with_suffix(".pdf"), src.with_suffix(".log")
        # The links to steps are cross-references: a second run resolves them (TeX says so).
        for _ in range(2):
            proc = subprocess.run(
                [engine, "-interaction=nonstopmode", "-halt-on-error", src.name],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if proc.returncode != 0 or not pdf.is_file():
                tail = "\n".join(proc.stdout.splitlines()[-15:])
                raise DeriveError(f"{engine} failed on {tex.name}:\n{tail}")
            log = log_file.read_text(encoding="utf-8", errors="replace")
            if "Rerun to get cross-references right" not in log:
                break
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / pdf.name
        shutil.copyfile(pdf, target)
        return target, log
