"""Import a Python file by path, turning every way it can fail into one `DeriveError` line.

Used for the files users hand us: a `.py` loss model (`derive emit --model`) and an emitted
module (`derive verify --module`, `derive train --module`). Importing by path (rather than
`exec` of a string) keeps `inspect`, tracebacks and `pdb` pointing at the real file, as Tangent
does with its generated source.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

from derive.errors import DeriveError, ModuleLoadError, os_error_text


def import_file(
    path: Path, module_name: str, what: str, error: type[DeriveError] = ModuleLoadError
) -> ModuleType:
    """Import the Python file at `path` as `module_name`; `what` names it in messages."""
    shown = f"{what} {str(path)!r}"
    if path.is_dir():
        raise error(f"{shown} is a folder", "expected a .py file", "name the file itself")
    if not path.is_file():
        raise error(f"{shown}: no such file", "", "check the path")
    if path.suffix != ".py":
        raise error(f"{shown}: not a .py file", f"got {path.suffix or 'no suffix'}")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise error(f"{shown}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except OSError as exc:
        sys.modules.pop(module_name, None)
        raise error(
            f"{shown}: cannot read it", os_error_text(exc), "check that it is a readable file"
        ) from None
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise error(
            f"{shown}: line {exc.lineno}: {exc.msg}",
            "Python cannot parse the file",
            "fix that line",
        ) from None
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        here = path.resolve()
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == here
        ]
        where = f" at line {frames[-1].lineno}" if frames else ""
        raise error(
            f"{shown} raised {type(exc).__name__}{where}: {exc}",
            "importing it ran its code, which failed",
            f"run `python {path}` to see the traceback",
        ) from None
    return module
