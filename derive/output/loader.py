"""Import an emitted module from its file.

`generated/` is not a package: its files are plain modules the tool writes. Importing them by path
(rather than copying source into memory) keeps `inspect`, tracebacks and `pdb` pointing at the real
file, as Tangent does with its generated source.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.resources import as_file
from pathlib import Path
from types import ModuleType

from derive import resources
from derive.errors import ModuleLoadError

#: The source tree `derive/` was imported from (a checkout; site-packages for a wheel).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The catalogue's emitted files: the checkout's `generated/`, or the wheel's `derive/generated`.
GENERATED_DIR = resources.generated_dir()


def load_module_from_path(path: Path, module_name: str | None = None) -> ModuleType:
    """Import the Python file at `path` under a private module name and return it."""
    path = Path(path)
    if not path.is_file():
        raise ModuleLoadError(f"module path {str(path)!r}: no such file (run `derive emit` first?)")
    name = module_name or f"_derive_generated_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModuleLoadError(f"module path {str(path)!r}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    return module


def load_generated(name: str = "softmax_regression") -> ModuleType:
    """Import `generated/<name>.py`, the committed module emitted by `derive emit` (shipped in
    the wheel as `derive/generated/<name>.py`)."""
    with as_file(resources.generated() / f"{name}.py") as path:
        return load_module_from_path(path)
