"""The wheel: what it ships, and that the package works from it outside the checkout.

The wheel is built here without build isolation (hatchling comes with the test extras), unpacked
into a temporary folder, and used from a second, empty folder with nothing of the checkout on the
path. `.ci/wheel` does the same with a real venv and `pip install`, plus `twine check`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from derive import resources
from derive.output.loader import GENERATED_DIR, REPO_ROOT

pytestmark = pytest.mark.slow


def _tracked(folder: str) -> dict[str, bytes]:
    """The files git tracks under `folder` (what a clean clone has), by path relative to it."""
    out = subprocess.run(
        ["git", "ls-files", "-z", folder], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    return {
        str(Path(p).relative_to(folder)): (REPO_ROOT / p).read_bytes() for p in out.split("\0") if p
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), "."],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    (path,) = dist.glob("*.whl")
    return path


def test_the_wheel_ships_templates_and_generated_inside_the_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    with zipfile.ZipFile(wheel) as zf:
        for folder in ("templates", "generated"):
            shipped = {
                n.removeprefix(f"derive/{folder}/"): zf.read(n)
                for n in names
                if n.startswith(f"derive/{folder}/")
            }
            assert shipped == _tracked(folder), folder
    sources = {n for n in names if n.endswith(".py") and not n.startswith("derive/generated/")}
    assert sources == {f"derive/{p}" for p in _tracked("derive")} and "derive/cli.py" in sources
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pdf"))]
    assert not [n for n in names if n.startswith(("tests/", "templates/", "generated/"))]


def test_the_unpacked_wheel_works_from_an_empty_folder(wheel: Path, tmp_path: Path) -> None:
    site, empty = tmp_path / "site", tmp_path / "empty"
    zipfile.ZipFile(wheel).extractall(site)
    empty.mkdir()
    script = (
        "import derive, json\n"
        "from derive import resources\n"
        "from derive.output.loader import load_generated\n"
        "from derive.output.notes import environment\n"
        "m = load_generated('softmax_regression')\n"
        "env = environment()\n"
        "print(json.dumps([derive.__file__, m.__file__, resources.installed_copy(),\n"
        "    env.get_template('module.py.j2').name]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=empty, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    pkg, module, installed, template = json.loads(run.stdout)
    assert Path(pkg).is_relative_to(site) and Path(module).is_relative_to(site)
    assert installed is True and template == "module.py.j2"
    listed = subprocess.run(
        [sys.executable, "-m", "derive", "list"], cwd=empty, env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0 and "softmax_regression_l2" in listed.stdout, listed.stderr
    assert list(empty.iterdir()) == []


def test_a_checkout_reads_the_top_level_folders() -> None:
    """Editable installs and a checkout on PYTHONPATH read the repository's own folders."""
    assert not resources.installed_copy()
    assert Path(str(resources.templates())) == REPO_ROOT / "templates"
    assert GENERATED_DIR == REPO_ROOT / "generated"
