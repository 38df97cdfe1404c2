"""Every artifact as a pure function `{relative path: text}`; `write` and `check` on top.

Writes are atomic (a temporary file in the same directory, then `os.replace`) and deterministic
(no timestamps, paths or versions in any output; stable order), so `generated/` is byte-identical
on every run and `check` can compare it with what the tool would write now.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from derive.errors import OutputDirError
from derive.loader import GENERATED_DIR
from derive.render import LANGS, render
from derive.steps import CheckedDerivation

KINDS = ("notes", "code")


def _suffix(lang: str) -> str:
    return "" if lang == "en" else f".{lang}"


def notes_artifacts(checked: CheckedDerivation, langs: Iterable[str] = LANGS) -> dict[str, str]:
    """`<name>[.zh].md` and `<name>[.zh].tex` for each language."""
    name = checked.derivation.name
    out: dict[str, str] = {}
    for lang in langs:
        for fmt in ("md", "tex"):
            out[f"{name}{_suffix(lang)}.{fmt}"] = render(checked, lang, fmt)
    return out


def code_artifacts(checked: CheckedDerivation) -> dict[str, str]:
    """`<name>.py`: the emitted NumPy module."""
    from derive.codegen import emit_module

    return {f"{checked.derivation.name}.py": emit_module(checked)}


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old file or the new one, never half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputDirError(
            f"output directory {str(path.parent)!r}: cannot write ({exc})"
        ) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(artifacts: dict[str, str], out_dir: Path = GENERATED_DIR) -> list[Path]:
    """Write every artifact under `out_dir`, in sorted order; return the paths written."""
    paths = []
    for rel in sorted(artifacts):
        path = out_dir / rel
        write_atomic(path, artifacts[rel])
        paths.append(path)
    return paths


def stale(artifacts: dict[str, str], out_dir: Path = GENERATED_DIR) -> dict[str, str]:
    """For each artifact that differs from the file on disk, a unified diff (missing = all new)."""
    diffs: dict[str, str] = {}
    for rel in sorted(artifacts):
        path = out_dir / rel
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        if old != artifacts[rel]:
            diffs[rel] = "".join(
                difflib.unified_diff(
                    old.splitlines(keepends=True),
                    artifacts[rel].splitlines(keepends=True),
                    fromfile=f"{rel} (on disk)",
                    tofile=f"{rel} (regenerated)",
                )
            )
    return diffs
