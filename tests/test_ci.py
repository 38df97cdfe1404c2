"""`.ci/run` fails when no test ran: pytest's exit 5 ("no tests collected") is a failure.

The script is run with stand-ins for `apt-get`, `pip` and `python` first on PATH (nothing is
installed); the `python` stand-in exits with the code under test.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from derive.output.loader import REPO_ROOT

SCRIPT = REPO_ROOT / ".ci" / "run"


def _run_ci(tmp_path: Path, pytest_exit: int) -> int:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (
        ("apt-get", "exit 0"),
        ("pip", "exit 0"),
        ("python", f'case "$*" in *pytest*) exit {pytest_exit};; esac; exit 0'),
    ):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True).returncode


@pytest.mark.parametrize("code", [1, 5])
def test_ci_fails_when_pytest_fails_or_collects_nothing(tmp_path: Path, code: int) -> None:
    """The first pytest run's exit status is the script's: 5 (no tests collected) included."""
    assert _run_ci(tmp_path, code) == code
