"""Where the templates and the committed `generated/` live, in a checkout or in an installed wheel.

The repository keeps `templates/` and `generated/` at the top level; the wheel ships them inside
the package as `derive/templates` and `derive/generated` (hatchling's `force-include`). Everything
that reads them goes through `importlib.resources` here, so an editable install, a plain checkout
on `PYTHONPATH` and an installed wheel find the same files by the same route.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

#: The checkout the package was imported from, if any: the folder holding `derive/`.
_SOURCE_TREE = Path(__file__).resolve().parents[1]


def _data(name: str) -> Traversable:
    """`derive/<name>` when installed from the wheel; else the checkout's top-level `<name>/`."""
    packaged = files("derive") / name
    if packaged.is_dir():
        return packaged
    return _SOURCE_TREE / name


def templates() -> Traversable:
    """The Jinja templates (`templates/` of the repository)."""
    return _data("templates")


def generated() -> Traversable:
    """The catalogue's committed output (`generated/` of the repository)."""
    return _data("generated")


def installed_copy() -> bool:
    """True when the data come from an installed wheel: then `generated/` is not for writing."""
    return (files("derive") / "generated").is_dir()


def generated_dir() -> Path:
    """`generated()` as a filesystem path (pip always unpacks wheels, so it is one)."""
    return Path(str(generated()))
