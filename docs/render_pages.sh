#!/usr/bin/env bash
# Renders the pages of the notes that the README shows (needs TeX, see `derive latex --pdf`, and
# poppler's pdftoppm): page one of the softmax-regression notes in English and Chinese, and the
# page of the focal-loss example's notes with its gradient in stable form.
#   bash docs/render_pages.sh        (from the repository root)
set -euo pipefail
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python -m derive emit --model examples/focal_loss.py --out "$out/focal" >/dev/null
python - "$out" <<'PY'
import sys
from pathlib import Path

from derive.output.loader import GENERATED_DIR
from derive.output.pdf import compile_pdf

out = Path(sys.argv[1])
for tex in ("softmax_regression.tex", "softmax_regression.zh.tex"):
    compile_pdf(GENERATED_DIR / tex, out / "pdf")
compile_pdf(out / "focal" / "focal_loss.tex", out / "pdf")
PY
pdftoppm -r 80 -png -f 1 -l 1 -singlefile "$out/pdf/softmax_regression.pdf" docs/notes_page1.en
pdftoppm -r 80 -png -f 1 -l 1 -singlefile "$out/pdf/softmax_regression.zh.pdf" docs/notes_page1.zh
pdftoppm -r 80 -png -f 3 -l 3 -singlefile "$out/pdf/focal_loss.pdf" docs/focal_loss_page3
