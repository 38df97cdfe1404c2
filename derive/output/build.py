"""Every artifact as a pure function `{relative path: text}`; `write` and `check` on top.

Writes are atomic (a temporary file in the same directory, then `os.replace`) and deterministic
(no timestamps, paths or versions in any output; stable order), so `generated/` is byte-identical
on every run and `check` can compare it with what the tool would write now.
"""

from __future__ import annotations

import difflib
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from derive.errors import OutputDirError
from derive.losses import catalogue
from derive.output.codegen import emit_module
from derive.output.loader import GENERATED_DIR
from derive.output.notes import LANGS, render
from derive.symbolic.steps import CheckedDerivation

#: Framework targets and the folder (under the output folder) their modules are written to.
FRAMEWORK_DIRS = {"torch": "torch"}
KINDS = ("notes", "code", *FRAMEWORK_DIRS)


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

    return {f"{checked.derivation.name}.py": emit_module(checked)}


def framework_artifacts(checked: CheckedDerivation, target: str) -> dict[str, str]:
    """`<target folder>/<name>.py`: the module for a framework target (torch, jax, array-api)."""
    from derive.output.frameworks import emit_framework_module

    name = checked.derivation.name
    return {f"{FRAMEWORK_DIRS[target]}/{name}.py": emit_framework_module(checked, target)}


def artifacts_for(
    name: str, kinds: tuple[str, ...] = KINDS, workers: int = 1
) -> tuple[dict[str, str], float]:
    """The artifacts of one catalogue loss (checked first), and the seconds the checks took."""

    t0 = time.perf_counter()
    checked = catalogue.checked(name, workers)
    seconds = time.perf_counter() - t0
    out: dict[str, str] = {}
    if "notes" in kinds:
        out |= notes_artifacts(checked)
    if "code" in kinds:
        out |= code_artifacts(checked)
    for target in FRAMEWORK_DIRS:
        if target in kinds:
            out |= framework_artifacts(checked, target)
    return out, seconds


def artifacts_for_all(
    names: list[str], kinds: tuple[str, ...] = KINDS
) -> dict[str, tuple[dict[str, str], float]]:
    """`artifacts_for` every name, one process per core: the symbolic checks are CPU-bound and
    independent per loss. Only strings cross process boundaries."""
    cores = os.cpu_count() or 1
    if len(names) == 1:  # one loss: its steps are checked in parallel instead
        return {names[0]: artifacts_for(names[0], kinds, workers=cores)}
    workers = min(len(names), cores)
    if workers <= 1:
        return {name: artifacts_for(name, kinds) for name in names}
    ctx = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        results = pool.map(artifacts_for, names, [kinds] * len(names))
        return dict(zip(names, results, strict=True))


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
