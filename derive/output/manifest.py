"""A user's loss in their own repository: what `derive emit --model/--formula` writes, and how
`derive check FOLDER` remakes it.

Next to the notes and the module, `emit` writes `<name>.derive.json`, a small manifest of how
they were made: the model file (relative to the folder, so the repository can move) or the
formula with its flags, and the files it wrote. `check` reads it, rebuilds the model, checks the
derivation again and compares, in memory, what it would write with what is on disk. The manifest
is deterministic like every other output: no timestamps, versions or absolute paths.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derive.errors import DeriveError, os_error_text
from derive.losses.model import LossModel
from derive.losses.user_model import load_user_model, model_from_formula, parse_param_flag
from derive.output import build
from derive.symbolic.steps import CheckedDerivation

SUFFIX = ".derive.json"
ABOUT = (
    "How softmax-derive made the files listed here. `derive check <this folder>` regenerates "
    "them in memory, fails with a diff when they are stale, and verifies the module again."
)


@dataclass(frozen=True)
class Source:
    """Where a user's loss comes from: a model file, or a formula with its flags."""

    model: str | None = None  # relative to the output folder, POSIX separators
    formula: str | None = None
    name: str | None = None
    targets: str = "distribution"
    params: tuple[str, ...] = ()  # `--param` flags as given
    target: str = "numpy"  # `--target`: a framework module is written (and checked) as well

    def as_json(self) -> dict[str, Any]:
        extra = {} if self.target == "numpy" else {"target": self.target}
        if self.model is not None:
            return {"model": self.model} | extra
        return {
            "formula": self.formula,
            "name": self.name,
            "targets": self.targets,
            "params": list(self.params),
        } | extra

    def load(self, folder: Path) -> LossModel:
        """The `LossModel` this source describes; a model path is read relative to `folder`."""
        if self.model is not None:
            return load_user_model(folder / self.model)
        params = dict(parse_param_flag(p) for p in self.params)
        return model_from_formula(str(self.name), str(self.formula), self.targets, params)


def model_source(model_path: Path, out: Path, target: str = "numpy") -> Source:
    """The source record of `--model PATH` written to `--out OUT`."""
    try:
        rel = os.path.relpath(model_path.resolve(), out.resolve())
    except ValueError:  # another drive on Windows: no relative path exists
        rel = str(model_path.resolve())
    return Source(model=Path(rel).as_posix(), target=target)


def artifacts(checked: CheckedDerivation, source: Source) -> dict[str, str]:
    """Notes, module and manifest for a user's loss: `{file name: text}`."""
    arts = build.notes_artifacts(checked) | build.code_artifacts(checked)
    if source.target != "numpy":
        arts |= build.framework_artifacts(checked, source.target)
    name = checked.derivation.name
    doc = {
        "about": ABOUT,
        "files": sorted(arts),
        "loss": name,
        "made_by": "derive emit",
        "source": source.as_json(),
    }
    return arts | {f"{name}{SUFFIX}": json.dumps(doc, indent=2, sort_keys=True) + "\n"}


def manifests(folder: Path) -> list[Path]:
    """The manifests in `folder`, sorted; a folder without one is a user's mistake."""
    if not folder.exists():
        raise DeriveError(f"folder {str(folder)!r}: no such folder", "", "check the path")
    if not folder.is_dir():
        raise DeriveError(
            f"{str(folder)!r} is a file",
            "derive check takes the folder `derive emit --out` wrote",
            "pass that folder",
        )
    found = sorted(folder.glob(f"*{SUFFIX}"))
    if not found:
        raise DeriveError(
            f"folder {str(folder)!r} holds no *{SUFFIX} manifest",
            "only folders written by `derive emit --model/--formula` can be checked",
            f"run `derive emit --model FILE --out {folder}` first",
        )
    return found


#: Folders `find` never enters: hidden ones (.git, .venv, .tox), caches, installed packages.
SKIP = frozenset({"__pycache__", "node_modules", "site-packages"})


def find(roots: list[Path]) -> list[Path]:
    """Every folder at or below `roots` that holds a manifest (a hook's way to find them)."""
    found: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            raise DeriveError(f"folder {str(root)!r}: no such folder", "", "check the path")
        for here, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP)
            if any(f.endswith(SUFFIX) for f in files):
                found.add(Path(here))
    if not found:
        shown = ", ".join(str(r) for r in roots)
        raise DeriveError(
            f"no *{SUFFIX} manifest at or below {shown}",
            "nothing written by `derive emit --model/--formula` to check",
            "emit your loss first: derive emit --model FILE --out DIR",
        )
    return sorted(found)


def read(path: Path) -> tuple[str, Source]:
    """The loss name and source recorded in a manifest; any damage is one line."""
    shown = f"manifest {str(path)!r}"
    fix = "emit it again with `derive emit` (do not edit it by hand)"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeriveError(f"{shown}: cannot read it", os_error_text(exc), fix) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeriveError(f"{shown}: not valid JSON", str(exc), fix) from None
    try:
        src = doc["source"]
        target = str(src.get("target", "numpy"))
        if target != "numpy" and target not in build.FRAMEWORK_DIRS:
            raise KeyError(f"target {target!r}")
        if "model" in src:
            source = Source(model=str(src["model"]), target=target)
        else:
            source = Source(
                formula=str(src["formula"]),
                name=str(src["name"]),
                targets=str(src["targets"]),
                params=tuple(str(p) for p in src["params"]),
                target=target,
            )
        return str(doc["loss"]), source
    except (KeyError, TypeError) as exc:
        raise DeriveError(f"{shown}: missing or malformed field {exc}", "", fix) from None
