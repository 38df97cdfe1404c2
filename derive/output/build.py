"""Every artifact as a pure function `{relative path: text}`; `write` and `check` on top.

Writes are atomic (a temporary file in the same directory, then `os.replace`) and deterministic
(no timestamps, paths or versions in any output; stable order), so `generated/` is byte-identical
on every run and `check` can compare it with what the tool would write now.
"""

from __future__ import annotations

import contextlib
import difflib
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from derive.errors import OutputDirError, os_error_text
from derive.losses import catalogue
from derive.output.codegen import emit_module
from derive.output.frameworks import emit_framework_module
from derive.output.loader import GENERATED_DIR
from derive.output.notes import LANGS, render
from derive.symbolic.steps import CheckedDerivation

#: Framework targets and the folder (under the output folder) their modules are written to.
FRAMEWORK_DIRS = {"torch": "torch", "jax": "jax", "array-api": "array_api"}
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


def iter_artifacts(
    names: list[str], kinds: tuple[str, ...] = KINDS
) -> Iterator[tuple[str, dict[str, str], float]]:
    """`artifacts_for` every name, one process per core, yielded as each loss finishes (so the
    command can say so at once): the symbolic checks are CPU-bound and independent per loss.
    Only strings cross process boundaries."""
    cores = os.cpu_count() or 1
    if len(names) == 1:  # one loss: its steps are checked in parallel instead
        yield names[0], *artifacts_for(names[0], kinds, workers=cores)
        return
    workers = min(len(names), cores)
    if workers <= 1:
        for name in names:
            yield name, *artifacts_for(name, kinds)
        return
    ctx = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(artifacts_for, name, kinds): name for name in names}
        try:
            for future in as_completed(futures):
                yield futures[future], *future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def artifacts_for_all(
    names: list[str], kinds: tuple[str, ...] = KINDS
) -> dict[str, tuple[dict[str, str], float]]:
    """`iter_artifacts`, collected by name (in the order of `names`)."""
    done = {name: (arts, seconds) for name, arts, seconds in iter_artifacts(names, kinds)}
    return {name: done[name] for name in names}


def _stage(path: Path, text: str) -> Path:
    """Write `text` to a temporary file next to `path` (same filesystem, so `os.replace` is
    atomic); any failure is one `OutputDirError` line and leaves no temporary file."""
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(
            f"output folder {str(folder)!r} is a file", "expected a folder", "choose another --out"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputDirError(
            f"output folder {str(folder)!r}: cannot write there",
            os_error_text(exc),
            "choose a writable --out",
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputDirError(
                f"output file {str(path)!r}: cannot write it",
                os_error_text(exc),
                "free space or choose another --out",
            ) from None
        raise
    return Path(tmp)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so a reader sees the old file or the new one, never half of one."""
    write({path.name: text}, path.parent)


def write(artifacts: dict[str, str], out_dir: Path = GENERATED_DIR) -> list[Path]:
    """Write every artifact under `out_dir`: all are staged as temporary files first, then moved
    into place in sorted order, so a failure or an interrupt while writing leaves the old files
    (and no temporary ones) rather than a mix of half-written ones. Returns the paths written."""
    staged: list[tuple[Path, Path]] = []
    created = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    try:
        for rel in sorted(artifacts):
            path = out_dir / rel
            if path.is_dir():
                raise OutputDirError(
                    f"output file {str(path)!r} is a folder",
                    "",
                    "remove it or choose another --out",
                )
            staged.append((_stage(path, artifacts[rel]), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for folder in created:  # innermost first; only what this call made, and only if empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return [path for _, path in staged]


def stale(artifacts: dict[str, str], out_dir: Path = GENERATED_DIR) -> dict[str, str]:
    """For each artifact that differs from the file on disk, a unified diff (missing = all new)."""
    diffs: dict[str, str] = {}
    for rel in sorted(artifacts):
        path = out_dir / rel
        try:
            old = path.read_text(encoding="utf-8") if path.is_file() else ""
        except (OSError, UnicodeDecodeError) as exc:
            old = f"<unreadable: {exc}>\n"
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
