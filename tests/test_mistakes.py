"""A user's mistakes: each one is a single line on stderr, `derive: error: <what> (<why>; <what
to do>)`, exit code 2, no traceback, and nothing written or left half-written in the folder.

The table is the contract: one row per mistake, the command as a user types it, and a piece of
the line they must see (what is allowed, or what to do). Faults a root user cannot provoke with
file modes (permission denied, an interrupt in the middle of a write) are injected with
monkeypatch at the system call the code makes.
"""

from __future__ import annotations

import importlib.machinery
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from derive import cli, resources
from derive.cli import main
from derive.errors import INTERRUPTED, USER_ERROR
from derive.output.loader import GENERATED_DIR

Setup = Callable[[Path, pytest.MonkeyPatch], None]

#: Files every case can use, created in the case's empty working folder.
FILES = {
    "plain.py": "x = 1\n",
    "syntax.py": "import math\nx = (\n",
    "raises.py": "raise ValueError('boom')\n",
    "imports.py": "import no_such_module_anywhere\n",
    "nomodel.py": "MODEL = 3\n",
    "model.txt": "sum(o[k], k)\n",
    "bad.toml": "name = 'f'\nloss = \n",
    "two.toml": "name='f'\nloss='sum(a*o[k], k)'\n[params.a]\ndefault='two'\n",
    "unknown.toml": "name='f'\nloss='sum(o[k], k)'\ncolour='red'\n",
    "noloss.toml": "name='f'\n",
    "ordinal.toml": "name='f'\nloss='sum(o[k], k)'\ntargets='ordinal'\n",
    "range.toml": "name='f'\nloss='sum(a*o[k], k)'\n[params.a]\ndefault=1.0\nlow=2.0\nhigh=1.0\n",
    "outside.toml": "name='f'\nloss='sum(a*o[k], k)'\n[params.a]\ndefault=5.0\nlow=0.0\nhigh=1.0\n",
    "ok.toml": "name='f'\nloss='sum(o[k], k)'\n",
    "gen/broken.derive.json": "{not json",
    "empty/.keep": "",
}


def _npy(work: Path, name: str, array: np.ndarray) -> None:
    np.save(work / name, array)


def _data_files(work: Path, _: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    _npy(work, "X.npy", rng.normal(size=(20, 3)))
    _npy(work, "Xstr.npy", np.array([["a", "b", "c"]] * 20))
    _npy(work, "y.npy", np.arange(20) % 2)
    _npy(work, "yhalf.npy", np.full(20, 0.5))


def _permission_denied_on_read(work: Path, mp: pytest.MonkeyPatch) -> None:
    """As if the file were mode 000 for a non-root user (root reads anything)."""
    real_read_text = Path.read_text

    def read_text(self: Path, *a: object, **k: object) -> str:
        if self.name in ("ok.toml", "plain.py"):
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *a, **k)  # type: ignore[arg-type]

    def get_data(self: object, path: str) -> bytes:
        raise PermissionError(13, "Permission denied", path)

    mp.setattr(Path, "read_text", read_text)
    mp.setattr(importlib.machinery.SourceFileLoader, "get_data", get_data)


def _fake_generate(work: Path, mp: pytest.MonkeyPatch) -> None:
    """Skip the derivation (seconds): the write path is what these cases are about."""
    mp.setattr(cli, "_generate", lambda args, kinds: {"a.py": "A = 1\n", "b.py": "B = 2\n"})


def _permission_denied_on_write(work: Path, mp: pytest.MonkeyPatch) -> None:
    _fake_generate(work, mp)

    def mkstemp(*a: object, **k: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied", str(k.get("dir")))

    mp.setattr(tempfile, "mkstemp", mkstemp)


def _interrupt_during_write(work: Path, mp: pytest.MonkeyPatch) -> None:
    """Ctrl-C after the first file is staged, before the second is: nothing may be left."""
    _fake_generate(work, mp)
    real = tempfile.mkstemp
    calls = []

    def mkstemp(*a: object, **k: object) -> tuple[int, str]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)  # type: ignore[call-overload, no-any-return]

    mp.setattr(tempfile, "mkstemp", mkstemp)


def _installed(work: Path, mp: pytest.MonkeyPatch) -> None:
    mp.setattr(resources, "installed_copy", lambda: True)


def _out_is_a_file(work: Path, mp: pytest.MonkeyPatch) -> None:
    _fake_generate(work, mp)
    (work / "out").write_text("I am a file\n")


@dataclass(frozen=True)
class Mistake:
    id: str
    argv: list[str]
    says: str  # a piece of the one line the user must see
    setup: Setup | None = None
    code: int = USER_ERROR
    extra: tuple[Setup, ...] = field(default=())


F = ["emit", "--out", "out", "--name", "f", "--formula"]
TRAIN = ["train", "--quiet"]

MISTAKES = [
    # The command line itself.
    Mistake("unknown-command", ["bogus"], "invalid choice: 'bogus' (choose from 'latex'"),
    Mistake("unknown-flag", ["list", "--x"], "unrecognized arguments: --x"),
    Mistake(
        "loss-without-flag",
        ["verify", "softmax_regression"],
        "unrecognized arguments: softmax_regression (to pick one loss: --loss softmax_regression)",
    ),
    Mistake("unknown-loss", ["emit", "--loss", "nope"], "choose from 'softmax_regression'"),
    Mistake("unknown-lang", ["latex", "--lang", "fr"], "choose from 'en', 'zh', 'all'"),
    Mistake("bad-targets", [*F, "sum(o[k], k)", "--targets", "ord"], "choose from 'distribution'"),
    Mistake(
        "model-and-formula",
        ["emit", "--model", "ok.toml", "--formula", "o[k]", "--out", "out"],
        "argument --formula: not allowed with argument --model",
    ),
    Mistake(
        "loss-and-model",
        ["emit", "--loss", "squared_error", "--model", "ok.toml"],
        "argument --model: not allowed with argument --loss",
    ),
    Mistake(
        "name-without-formula",
        ["emit", "--loss", "squared_error", "--name", "x"],
        "--name goes with --formula only",
    ),
    Mistake(
        "targets-with-model",
        ["emit", "--model", "ok.toml", "--targets", "real", "--out", "out"],
        "--targets goes with --formula only",
    ),
    Mistake(
        "formula-without-name", ["emit", "--formula", "sum(o[k], k)", "--out", "out"], "--name"
    ),
    Mistake("user-model-without-out", ["emit", "--model", "ok.toml"], "pass --out DIR"),
    Mistake("bad-loss-name", [*F, "sum(o[k], k)", "--name", "my-loss"], "plain Python identifier"),
    # Model files.
    Mistake("missing-model", ["emit", "--model", "gone.py", "--out", "out"], "no such file"),
    Mistake("folder-as-model", ["emit", "--model", "empty", "--out", "out"], "allowed: a .py file"),
    Mistake("model-folder-py", ["emit", "--model", "d.py", "--out", "out"], "is a folder"),
    Mistake("txt-model", ["emit", "--model", "model.txt", "--out", "out"], "allowed: a .py file"),
    Mistake("model-syntax-error", ["emit", "--model", "syntax.py", "--out", "out"], "line 2"),
    Mistake(
        "model-raises",
        ["emit", "--model", "raises.py", "--out", "out"],
        "raised ValueError at line 1: boom",
    ),
    Mistake("model-without-MODEL", ["emit", "--model", "nomodel.py", "--out", "out"], "no MODEL"),
    Mistake(
        "model-unreadable-py",
        ["emit", "--model", "plain.py", "--out", "out"],
        "Permission denied",
        _permission_denied_on_read,
    ),
    Mistake(
        "model-unreadable-toml",
        ["emit", "--model", "ok.toml", "--out", "out"],
        "Permission denied",
        _permission_denied_on_read,
    ),
    Mistake("toml-syntax", ["emit", "--model", "bad.toml", "--out", "out"], "not valid TOML"),
    Mistake(
        "toml-default-two",
        ["emit", "--model", "two.toml", "--out", "out"],
        "default 'two' is not a number",
    ),
    Mistake(
        "toml-unknown-key", ["emit", "--model", "unknown.toml", "--out", "out"], "allowed keys"
    ),
    Mistake("toml-no-loss", ["emit", "--model", "noloss.toml", "--out", "out"], "no loss"),
    Mistake(
        "toml-targets",
        ["emit", "--model", "ordinal.toml", "--out", "out"],
        "allowed: distribution, binary, real",
    ),
    Mistake("toml-low-above-high", ["emit", "--model", "range.toml", "--out", "out"], "above high"),
    Mistake(
        "toml-default-outside",
        ["emit", "--model", "outside.toml", "--out", "out"],
        "outside its range [0.0, 1.0)",
    ),
    # Formulas.
    Mistake("undeclared-name", [*F, "sum(a * o[k], k)"], "declare it: --param a=DEFAULT"),
    Mistake("cosh", [*F, "sum(cosh(o[k]), k)"], "allowed functions: exp(x), log(x)"),
    Mistake("abs", [*F, "sum(abs(o[k]), k)"], "allowed functions: exp(x), log(x)"),
    Mistake("max", [*F, "max(o[k], 0)"], "the function 'max' with 2 argument(s)"),
    Mistake("free-index", [*F, "o[k]"], "the index k is free"),
    Mistake("free-index-in-sum", [*F, "sum(o[k], j)"], "wrap it in sum(..., k)"),
    Mistake("other-index", [*F, "sum(o[i], i)"], "allowed indices: j, k, m"),
    Mistake("formula-syntax", [*F, "sum(o[k]"], "not valid syntax"),
    Mistake("comparison", [*F, "sum(o[k], k) > 0"], "allowed: numbers, K"),
    Mistake("param-no-default", [*F, "sum(a*o[k], k)", "--param", "a"], "NAME=DEFAULT"),
    Mistake("param-two", [*F, "sum(a*o[k], k)", "--param", "a=two"], "'two' is not a number"),
    Mistake("param-range", [*F, "sum(a*o[k], k)", "--param", "a=1:2:0"], "above high"),
    Mistake("param-reserved", [*F, "sum(o[k], k)", "--param", "K=1"], "is taken"),
    Mistake(
        "param-twice",
        [*F, "sum(a*o[k], k)", "--param", "a=1", "--param", "a=2"],
        "given twice",
    ),
    # Modules to verify.
    Mistake("verify-missing", ["verify", "--module", "gone.py"], "no such file"),
    Mistake("verify-folder", ["verify", "--module", "empty"], "is a folder"),
    Mistake("verify-syntax", ["verify", "--module", "syntax.py"], "Python cannot parse"),
    Mistake("verify-import-fails", ["verify", "--module", "imports.py"], "ModuleNotFoundError"),
    Mistake("verify-not-emitted", ["verify", "--module", "plain.py"], "not an emitted module"),
    # Folders to check.
    Mistake("check-missing-folder", ["check", "nowhere"], "no such folder"),
    Mistake("check-no-manifest", ["check", "empty"], "holds no *.derive.json"),
    Mistake("check-a-file", ["check", "ok.toml"], "is a file"),
    Mistake("check-broken-manifest", ["check", "gen"], "not valid JSON"),
    Mistake("check-find-nothing", ["check", "--find", "empty"], "no *.derive.json manifest at or"),
    Mistake("check-folder-and-loss", ["check", "gen", "--loss", "squared_error"], "without --loss"),
    # Training.
    Mistake("train-epochs-zero", [*TRAIN, "--epochs", "0"], "expected an integer >= 1, got 0"),
    Mistake("train-epochs-text", [*TRAIN, "--epochs", "ten"], "got 'ten'"),
    Mistake("train-negative-lr", [*TRAIN, "--lr", "-1"], "expected a finite number > 0"),
    Mistake("train-test-size", [*TRAIN, "--test-size", "1.5"], "strictly between 0 and 1"),
    Mistake(
        "train-data-and-dataset",
        [*TRAIN, "--dataset", "digits", "--data", "X.npy", "y.npy"],
        "not allowed with argument --dataset",
    ),
    Mistake("train-missing-data", [*TRAIN, "--data", "gone.npy", "y.npy"], "gone.npy", _data_files),
    Mistake(
        "train-string-features",
        [*TRAIN, "--data", "Xstr.npy", "y.npy"],
        "expected real numbers, got dtype <U1",
        _data_files,
    ),
    Mistake(
        "train-fractional-labels",
        [*TRAIN, "--data", "X.npy", "yhalf.npy"],
        "whole numbers",
        _data_files,
    ),
    Mistake("train-plot-new-folder", [*TRAIN, "--plot", "new/dir/p.png"], "does not exist"),
    Mistake("train-json-is-folder", [*TRAIN, "--json", "empty"], "is a folder"),
    Mistake("train-not-emitted", [*TRAIN, "--module", "plain.py"], "not an emitted module"),
    Mistake(
        "train-l2-without-weight-decay",
        [*TRAIN, "--module", str(GENERATED_DIR / "softmax_regression.py")],
        "has no weight decay",
    ),
    Mistake("train-mnist-no-dir", [*TRAIN, "--dataset", "mnist"], "needs --data-dir"),
    # Writing.
    Mistake("out-is-a-file", ["emit", "--out", "out"], "is a file", _out_is_a_file),
    Mistake(
        "write-permission-denied",
        ["emit", "--out", "out"],
        "Permission denied",
        _permission_denied_on_write,
    ),
    Mistake(
        "interrupt-during-write",
        ["emit", "--out", "out"],
        "interrupted",
        _interrupt_during_write,
        INTERRUPTED,
    ),
    Mistake("installed-no-out", ["all"], "pass --out DIR", _installed),
]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


def test_the_table_has_thirty_mistakes() -> None:
    assert len(MISTAKES) >= 30
    assert len({m.id for m in MISTAKES}) == len(MISTAKES)


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_a_mistake_is_one_line_and_writes_nothing(
    mistake: Mistake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    for rel, text in FILES.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    (work / "d.py").mkdir()
    monkeypatch.chdir(work)
    if mistake.setup is not None:
        mistake.setup(work, monkeypatch)
    before = _snapshot(work)

    code = main(mistake.argv)

    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("derive: error: "), lines[0]
    assert mistake.says in lines[0], lines[0]
    assert code == mistake.code
    monkeypatch.undo()  # the snapshot reads files with the real functions
    assert _snapshot(work) == before, "something was written or left behind"


def test_help_of_every_subcommand_ends_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [*cli.EXAMPLES]
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out.rstrip()
        tail = text[text.rindex("example:") :]
        assert f"derive {command}" in tail and tail.count("\n") >= 1, command
    assert set(commands) == {"latex", "emit", "verify", "check", "all", "list", "train"}


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, log = Terminal(), io.StringIO()
    for stream in (tty, log):
        bar = cli.ProgressBar("verify m.py", stream)
        for done in range(4):
            bar(done, 3, f"check {done}")
    assert "[#######.............] 1/3 check 1" in tty.getvalue()
    assert tty.getvalue().endswith("\r\033[K")  # erased when done
    assert log.getvalue() == ""


def test_losses_are_reported_as_they_finish(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Each loss's line is printed when that loss is done, before the next one finishes."""

    def finishing(names: list[str], kinds: tuple[str, ...]):  # type: ignore[no-untyped-def]
        yield "squared_error", {"squared_error.py": "A = 1\n"}, 0.5
        assert capsys.readouterr().out == "squared_error: derivation checked in 0.5 s\n"
        yield "softmax_regression", {"softmax_regression.py": "B = 1\n"}, 1.5

    monkeypatch.setattr(cli.build, "iter_artifacts", finishing)
    assert main(["emit", "--out", str(tmp_path)]) == 0
    assert "softmax_regression: derivation checked in 1.5 s" in capsys.readouterr().out
