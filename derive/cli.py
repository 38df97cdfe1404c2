"""The `derive` command: latex, emit, verify, check, all, list, train.

`derive all` is the main job: check the derivation, write the notes and the module, verify the
module. `derive check` regenerates everything in memory and fails with a diff when `generated/`
(or a user's emitted folder) differs. Exit codes, the same in every subcommand: 0 success, 1 a
check failed, 2 a user's mistake (one line on stderr, `derive: error: ...`), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from derive import resources, verify
from derive.errors import (
    CHECK_FAILED,
    INTERRUPTED,
    SUCCESS,
    USER_ERROR,
    DeriveError,
    UsageError,
    print_error,
)
from derive.losses import catalogue
from derive.losses.derivation import loss_derivation
from derive.losses.model import TARGET_KINDS
from derive.losses.user_model import (
    PARAM_FLAG,
    load_user_model,
    model_from_formula,
    parse_param_flag,
)
from derive.output import build, codegen, manifest
from derive.output.loader import GENERATED_DIR, load_emitted_module
from derive.output.notes import LANGS
from derive.output.pdf import compile_pdf
from derive.train.cli import add_train_arguments, run_train
from derive.verify import frameworks

EXAMPLES = {
    "latex": "derive latex --loss softmax_regression --lang en --out notes/",
    "emit": "derive emit --model my_loss.py --out gen/\n"
    '  derive emit --formula "sum((o[k] - y[k])**2, k)" --name sse --targets real --out gen/\n'
    '  derive emit --formula "sum(a * (o[k] - y[k])**2, k) / 2" --name half_sse --targets real '
    "--param a=1:0: --out gen/",
    "verify": "derive verify --module gen/my_loss.py",
    "check": "derive check gen/            (a folder written by derive emit --model/--formula)\n"
    "  derive check --find           (every such folder below the current one)\n"
    "  derive check                  (this repository's generated/)",
    "all": "derive all",
    "list": "derive list",
    "train": "derive train --compare-sklearn --plot curves.png\n"
    "  derive train --preset d2l     (d2l's settings: SGD, 10 epochs of 256, lr 0.1)",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a refusal is a `UsageError` (one line, exit 2) rather than usage + exit."""

    def error(self, message: str) -> NoReturn:
        what = message if self.prog == "derive" else f"{self.prog}: {message}"
        # `derive verify softmax_regression`: a loss named where a flag is expected.
        prefix = "unrecognized arguments:"
        stray = message.removeprefix(prefix).split() if message.startswith(prefix) else []
        named = [a for a in stray if a in catalogue.names()]
        fix = f"to pick one loss: --loss {named[0]}" if named else f"see `{self.prog} --help`"
        raise UsageError(what, "", fix)


def _names(args: argparse.Namespace) -> list[str]:
    return [args.loss] if getattr(args, "loss", None) else catalogue.names()


def _langs(args: argparse.Namespace) -> tuple[str, ...]:
    return LANGS if args.lang == "all" else (args.lang,)


def _out_to_write(args: argparse.Namespace) -> Path:
    """`--out`, or the checkout's `generated/`; never into an installed package."""
    if args.out is not None:
        return Path(args.out)
    if resources.installed_copy():
        raise UsageError(
            f"derive {args.command}: no --out given",
            "the catalogue's generated/ is inside the installed package, not for writing",
            "pass --out DIR",
        )
    return GENERATED_DIR


def _generate(args: argparse.Namespace, kinds: tuple[str, ...]) -> dict[str, str]:
    """Check every selected loss (in parallel) and return its artifacts; a line as each loss
    finishes, in the order they finish."""
    out: dict[str, str] = {}
    for name, arts, seconds in build.iter_artifacts(_names(args), kinds):
        print(f"{name}: derivation checked in {seconds:.1f} s", flush=True)
        out |= arts
    return out


def _wanted(path: str, langs: tuple[str, ...]) -> bool:
    if path.endswith(".py"):
        return True
    lang = "zh" if ".zh." in path else "en"
    return lang in langs


def _report_written(paths: list[Path]) -> None:
    for path in paths:
        print(f"  wrote {path}")


def cmd_latex(args: argparse.Namespace) -> int:
    out = _out_to_write(args)
    arts = {p: t for p, t in _generate(args, ("notes",)).items() if _wanted(p, _langs(args))}
    for path in build.write(arts, out):
        print(f"  wrote {path}")
        if args.pdf and path.suffix == ".tex":
            print(f"  wrote {compile_pdf(path, out)}")
    return SUCCESS


def _code_kind(args: argparse.Namespace) -> str:
    """The artifact kind of `--target`: "code" is the NumPy module."""
    return "code" if args.target == "numpy" else str(args.target)


def cmd_emit(args: argparse.Namespace) -> int:
    if args.model or args.formula:
        return _emit_user_model(args)
    for name in ("name", "targets", "param"):
        if getattr(args, name):
            raise UsageError(
                f"derive emit: --{name} goes with --formula only",
                "a catalogue loss or a --model file defines its own",
                f"drop --{name} or use --formula",
            )
    _report_written(build.write(_generate(args, (_code_kind(args),)), _out_to_write(args)))
    return SUCCESS


def _emit_user_model(args: argparse.Namespace) -> int:
    """A user's loss, from a file or a formula string: check, write notes, module and manifest,
    verify."""
    if args.out is None:
        raise UsageError(
            "derive emit: --model and --formula need --out", "", "pass --out DIR, e.g. --out gen/"
        )
    out = Path(args.out)
    if out.resolve() == GENERATED_DIR.resolve():
        raise UsageError(
            f"--out {args.out}: generated/ holds the catalogue's files", "", "choose another folder"
        )
    if args.model:
        for name in ("name", "targets", "param", "first_order"):
            if getattr(args, name):
                flag = "--" + name.replace("_", "-")
                raise UsageError(
                    f"derive emit: {flag} goes with --formula only",
                    "a --model file defines its own",
                    f"drop {flag}",
                )
        model = load_user_model(Path(args.model))
        source = manifest.model_source(Path(args.model), out, args.target)
    else:
        if not args.name:
            raise UsageError(
                "derive emit: --formula needs --name", "", "add --name NAME, a Python identifier"
            )
        params = dict(parse_param_flag(p) for p in args.param or [])
        if len(params) != len(args.param or []):
            raise UsageError("derive emit: a --param is given twice", "", "declare each once")
        targets = args.targets or "distribution"
        model = model_from_formula(
            args.name,
            args.formula,
            targets=targets,
            params=params,
            second_order=not args.first_order,
        )
        source = manifest.Source(
            formula=args.formula,
            name=args.name,
            targets=targets,
            params=tuple(args.param or []),
            target=args.target,
        )
    t0 = time.perf_counter()
    checked = loss_derivation(model).check()
    print(f"{model.name}: derivation checked in {time.perf_counter() - t0:.1f} s", flush=True)
    if model.second_order and "hessian" not in checked.derivation.final_forms:
        print(
            f"derive: note: {model.name}: the Hessian depends on the targets y; emitted "
            "first-order (hessian_logits(o) takes the logits only)",
            file=sys.stderr,
        )
    shapes = codegen.unstable_shapes(checked.derivation)
    if shapes:
        print(
            f"derive: note: {model.name}: no overflow-free form is known for {', '.join(shapes)}; "
            "the module says STABLE = False and raises FloatingPointError where they overflow",
            file=sys.stderr,
        )
    _report_written(build.write(manifest.artifacts(checked, source), out))
    return _verify_emitted(out, model.name, args.target)


def _verify_emitted(out: Path, name: str, target: str) -> int:
    """Verify the NumPy module, and the framework module when one was emitted too."""
    code = _verify_paths([out / f"{name}.py"])
    if target == "numpy":
        return code
    return _verify_paths([out / build.FRAMEWORK_DIRS[target] / f"{name}.py"], target) or code


class ProgressBar:
    """`verify NAME [#####.....] 5/12 next check` on a terminal's stderr, redrawn in place and
    erased when done; silent when stderr is not a terminal (logs stay clean)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.enabled = self.stream.isatty()

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self.enabled:
            return
        if done == total:
            self.stream.write("\r\033[K")
        else:
            filled = round(20 * done / total)
            line = f"{self.label} [{'#' * filled}{'.' * (20 - filled)}] {done}/{total} {what}"
            self.stream.write(f"\r\033[K{line[:100]}")
        self.stream.flush()


def _verify_paths(paths: list[Path], target: str = "numpy") -> int:
    if target != "numpy":
        framework_results = [(p, frameworks.run(frameworks.load(p, target), target)) for p in paths]
        return _report_verified(framework_results)
    modules = [(path, load_emitted_module(path)) for path in paths]  # every file first
    return _report_verified(
        [(p, verify.run(m, progress=ProgressBar(f"verify {p.name}"))) for p, m in modules]
    )


def _report_verified(verified: list[tuple[Path, list[verify.Result]]]) -> int:
    ok = True
    for path, results in verified:
        print(f"verify {path}")
        print(verify.table(results))
        ok &= all(r.passed for r in results)
    print("all checks passed" if ok else "some checks FAILED")
    return SUCCESS if ok else CHECK_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    if args.module:
        return _verify_paths([Path(args.module)], args.target)
    out = Path(args.out) if args.out is not None else GENERATED_DIR
    folder = out / build.FRAMEWORK_DIRS.get(args.target, "")
    return _verify_paths([folder / f"{n}.py" for n in _names(args)], args.target)


def _print_diffs(diffs: dict[str, str]) -> None:
    for rel, diff in diffs.items():
        print(f"stale: {rel}")
        print(diff[:4000])


def cmd_check(args: argparse.Namespace) -> int:
    if args.find:
        args.folders = [str(f) for f in manifest.find([Path(f) for f in args.folders or ["."]])]
    if args.folders:
        if args.loss or args.out:
            raise UsageError(
                "derive check: FOLDER goes without --loss and --out",
                "a folder's manifests say what to regenerate",
                "drop --loss/--out",
            )
        return _check_user_folders([Path(f) for f in args.folders])
    out = Path(args.out) if args.out is not None else GENERATED_DIR
    diffs = build.stale(_generate(args, build.KINDS), out)
    if not diffs:
        print(f"{out}: up to date")
        return SUCCESS
    _print_diffs(diffs)
    print(f"{len(diffs)} file(s) in {out} are stale: run `derive all` and commit the result")
    return CHECK_FAILED


def _check_user_folders(folders: list[Path]) -> int:
    """Each manifest in each folder: regenerate in memory, diff, then verify the module."""
    found = [(folder, m) for folder in folders for m in manifest.manifests(folder)]
    ok = True
    for folder, path in found:
        name, source = manifest.read(path)
        model = source.load(folder)
        t0 = time.perf_counter()
        checked = loss_derivation(model).check()
        print(f"{name}: derivation checked in {time.perf_counter() - t0:.1f} s", flush=True)
        diffs = build.stale(manifest.artifacts(checked, source), folder)
        if diffs:
            _print_diffs(diffs)
            print(
                f"{len(diffs)} file(s) of {name} in {folder} are stale: run "
                f"`derive emit` again ({path.name} says how) and commit the result"
            )
            ok = False
        else:
            print(f"{folder}: {name} up to date")
        ok &= _verify_emitted(folder, name, source.target) == SUCCESS
    return SUCCESS if ok else CHECK_FAILED


def cmd_all(args: argparse.Namespace) -> int:
    """Check and write everything (notes and code, in one pass), then verify the modules."""
    out = _out_to_write(args)
    _report_written(build.write(_generate(args, build.KINDS), out))
    return _verify_paths([out / f"{n}.py" for n in _names(args)])


def cmd_list(args: argparse.Namespace) -> int:
    for name, model in catalogue.MODELS.items():
        params = ", ".join(f"{p.symbol.name} in {p.range_text()}" for p in model.params)
        print(f"{name:24} {model.title.en:46} targets: {model.targets:12} {params}")
    return SUCCESS


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="derive",
        description=__doc__.splitlines()[0],
        epilog="example:\n  derive all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, help_text: str, func: Callable[[argparse.Namespace], int], loss: bool = True
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog="example:\n  " + EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.set_defaults(func=func)
        if loss:
            sp.add_argument("--loss", choices=catalogue.names(), help="one loss (default: all)")
            sp.add_argument("--out", help="output folder (default: generated/ of a checkout)")
        return sp

    latex = add(
        "latex", "check the derivation and write the notes (.md, .tex; en and zh)", cmd_latex
    )
    latex.add_argument("--lang", choices=[*LANGS, "all"], default="all")
    latex.add_argument("--pdf", action="store_true", help="also compile the .tex files to PDF")

    emit = add("emit", "write the module(s) emitted from the derivation", cmd_emit, False)
    which = emit.add_mutually_exclusive_group()
    which.add_argument(
        "--loss", choices=catalogue.names(), help="one catalogue loss (default: all)"
    )
    which.add_argument(
        "--model", help="a user loss: a .py file defining MODEL, or a .toml file of formulas"
    )
    which.add_argument("--formula", help="a user loss as a formula string (restricted parser)")
    emit.add_argument("--out", help="output folder (default: generated/ of a checkout)")
    emit.add_argument("--name", help="the name of the --formula loss (a Python identifier)")
    emit.add_argument(
        "--targets",
        choices=TARGET_KINDS,
        help="what y holds, for --formula: distribution (class probabilities or labels; the "
        "default), binary (0/1 per output) or real (regression targets)",
    )
    emit.add_argument(
        "--param",
        action="append",
        metavar=PARAM_FLAG,
        help="declare a --formula parameter with its default and optional closed range "
        "(LOW or HIGH may be empty); repeat for several",
    )
    emit.add_argument(
        "--first-order",
        action="store_true",
        help="for --formula: emit the loss and its gradient only (no Hessian, no HVPs)",
    )

    ver = add("verify", "check an emitted module numerically and print the table", cmd_verify)
    ver.add_argument("--module", help="path of a module to verify (default: the emitted ones)")
    for sp in (emit, ver):
        sp.add_argument(
            "--target",
            choices=["numpy", *build.FRAMEWORK_DIRS],
            default="numpy",
            help="the array library of the emitted module (default: numpy); framework modules "
            "go to <out>/torch/",
        )

    chk = add("check", "fail with a diff when generated/ or an emitted folder is stale", cmd_check)
    chk.add_argument(
        "folders",
        nargs="*",
        metavar="FOLDER",
        help="folders written by `derive emit --model/--formula` (default: generated/)",
    )
    chk.add_argument(
        "--find",
        action="store_true",
        help="check every folder holding a *.derive.json manifest at or below FOLDER (default: "
        "the current folder; hidden folders are skipped): what the pre-commit hook runs",
    )
    add("all", "latex + emit + verify: the main job", cmd_all)
    add("list", "list the losses in the catalogue", cmd_list, loss=False)

    train = add("train", "train with the generated module on real data", run_train, loss=False)
    add_train_arguments(train)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a user's mistake is one line on stderr and exit code 2, never a
    traceback (`DERIVE_DEBUG=1` re-raises it)."""
    try:
        args = parser().parse_args(argv)
        code: int = args.func(args)
    except DeriveError as exc:
        if os.environ.get("DERIVE_DEBUG"):
            raise
        print_error(exc)
        return USER_ERROR
    except KeyboardInterrupt:
        print_error("interrupted (writes are atomic: no file was left half-written)")
        return INTERRUPTED
    return code


if __name__ == "__main__":
    raise SystemExit(main())
