"""Import an emitted module from its file.

`generated/` is not a package: its files are plain modules the tool writes. They are imported by
path (`derive.pyfile`), so `inspect`, tracebacks and `pdb` point at the real file.
"""

from __future__ import annotations

from importlib.resources import as_file
from pathlib import Path
from types import ModuleType

from derive import resources
from derive.errors import ModuleLoadError
from derive.pyfile import import_file

#: The source tree `derive/` was imported from (a checkout; site-packages for a wheel).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The catalogue's emitted files: the checkout's `generated/`, or the wheel's `derive/generated`.
GENERATED_DIR = resources.generated_dir()

#: What every emitted module defines; a file without them is not one (`derive verify` says so).
EMITTED_API = ("LOSS", "TARGETS", "loss", "grad_logits", "loss_and_grad", "predict_proba")


def load_module_from_path(path: Path, module_name: str | None = None) -> ModuleType:
    """Import the Python file at `path` under a private module name and return it."""
    path = Path(path)
    return import_file(path, module_name or f"_derive_generated_{path.stem}", "module")


def load_emitted_module(path: Path, module_name: str | None = None) -> ModuleType:
    """`load_module_from_path`, refusing a file that is not a module `derive emit` wrote."""
    module = load_module_from_path(path, module_name)
    missing = [name for name in EMITTED_API if not hasattr(module, name)]
    if missing:
        raise ModuleLoadError(
            f"module {str(path)!r} is not an emitted module",
            f"it defines no {', '.join(missing)}",
            "pass a .py file written by `derive emit`",
        )
    return module


def load_generated(name: str = "softmax_regression") -> ModuleType:
    """Import `generated/<name>.py`, the committed module emitted by `derive emit` (shipped in
    the wheel as `derive/generated/<name>.py`)."""
    with as_file(resources.generated() / f"{name}.py") as path:
        return load_module_from_path(path)
