"""The `derive` command: latex, emit, verify, check, all, list, train.

`derive all` is the main job: check the derivation, write the notes and the module, verify the
module. `derive check` regenerates everything in memory and fails with a diff when `generated/`
differs. Every subcommand returns an exit code; errors users can cause print one clear line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from derive import verify
from derive.errors import DeriveError
from derive.losses import catalogue
from derive.losses.derivation import loss_derivation
from derive.losses.user_model import load_user_model, model_from_formula
from derive.output import build
from derive.output.loader import GENERATED_DIR, load_module_from_path
from derive.output.notes import LANGS
from derive.output.pdf import compile_pdf
from derive.train.cli import add_train_arguments, run_train


def _names(args: argparse.Namespace) -> list[str]:
    return [args.loss] if getattr(args, "loss", None) else catalogue.names()


def _langs(args: argparse.Namespace) -> tuple[str, ...]:
    return LANGS if args.lang == "all" else (args.lang,)


def _generate(args: argparse.Namespace, kinds: tuple[str, ...]) -> dict[str, str]:
    """Check every selected loss (in parallel) and return its artifacts; print the timings."""
    out: dict[str, str] = {}
    for name, (arts, seconds) in build.artifacts_for_all(_names(args), kinds).items():
        print(f"{name}: derivation checked in {seconds:.1f} s")
        out |= arts
    return out


def _wanted(path: str, langs: tuple[str, ...]) -> bool:
    if path.endswith(".py"):
        return True
    lang = "zh" if ".zh." in path else "en"
    return lang in langs


def cmd_latex(args: argparse.Namespace) -> int:
    out = Path(args.out)
    arts = {p: t for p, t in _generate(args, ("notes",)).items() if _wanted(p, _langs(args))}
    for path in build.write(arts, out):
        print(f"  wrote {path}")
        if args.pdf and path.suffix == ".tex":
            print(f"  wrote {compile_pdf(path, out)}")
    return 0


def _code_kind(args: argparse.Namespace) -> str:
    """The artifact kind of `--target`: "code" is the NumPy module."""
    return "code" if args.target == "numpy" else str(args.target)


def cmd_emit(args: argparse.Namespace) -> int:
    if args.model or args.formula:
        return _emit_user_model(args)
    for path in build.write(_generate(args, (_code_kind(args),)), Path(args.out)):
        print(f"  wrote {path}")
    return 0


def _emit_user_model(args: argparse.Namespace) -> int:
    """A user's loss, from a file or a formula string: check, write notes and module, verify."""

    if args.out == str(GENERATED_DIR):
        raise DeriveError("--out: choose an output folder for a user model (generated/ is ours)")
    if args.model:
        model = load_user_model(Path(args.model))
    else:
        if not args.name:
            raise DeriveError("--formula needs --name (the loss name, a Python identifier)")
        model = model_from_formula(args.name, args.formula, targets=args.targets)
    t0 = time.perf_counter()
    checked = loss_derivation(model).check()
    print(f"{model.name}: derivation checked in {time.perf_counter() - t0:.1f} s")
    out = Path(args.out)
    arts = build.notes_artifacts(checked) | build.code_artifacts(checked)
    if args.target != "numpy":
        arts |= build.framework_artifacts(checked, args.target)
    for path in build.write(arts, out):
        print(f"  wrote {path}")
    args.module, args.loss = str(out / f"{model.name}.py"), None
    code = cmd_verify(argparse.Namespace(**{**vars(args), "target": "numpy"}))
    if args.target == "numpy":
        return code
    args.module = str(out / build.FRAMEWORK_DIRS[args.target] / f"{model.name}.py")
    return cmd_verify(args) or code


def cmd_verify(args: argparse.Namespace) -> int:
    target = getattr(args, "target", "numpy")
    folder = Path(args.out) / build.FRAMEWORK_DIRS.get(target, "")
    paths = [Path(args.module)] if args.module else [folder / f"{n}.py" for n in _names(args)]
    ok = True
    for path in paths:
        if target == "numpy":
            results = verify.run(load_module_from_path(path))
        else:
            from derive.verify import frameworks

            results = frameworks.run(frameworks.load(path, target), target)
        print(f"verify {path}")
        print(verify.table(results))
        ok &= all(r.passed for r in results)
    print("all checks passed" if ok else "some checks FAILED")
    return 0 if ok else 1


def cmd_check(args: argparse.Namespace) -> int:
    diffs = build.stale(_generate(args, build.KINDS), Path(args.out))
    if not diffs:
        print(f"{args.out}: up to date")
        return 0
    for rel, diff in diffs.items():
        print(f"stale: {rel}")
        print(diff[:4000])
    print(f"{len(diffs)} file(s) in {args.out} are stale: run `derive all` and commit the result")
    return 1


def cmd_all(args: argparse.Namespace) -> int:
    """Check and write everything (notes and code, in one pass), then verify the modules."""
    for path in build.write(_generate(args, build.KINDS), Path(args.out)):
        print(f"  wrote {path}")
    args.module = None
    return cmd_verify(args)


def cmd_list(args: argparse.Namespace) -> int:
    for name, model in catalogue.MODELS.items():
        params = ", ".join(f"{p.symbol.name} in {p.range_text()}" for p in model.params)
        print(f"{name:24} {model.title.en:46} targets: {model.targets:12} {params}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="derive", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, loss: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if loss:
            sp.add_argument("--loss", choices=catalogue.names(), help="one loss (default: all)")
            sp.add_argument(
                "--out", default=str(GENERATED_DIR), help="output folder (default: generated/)"
            )
        return sp

    latex = add("latex", "check the derivation and write the notes (.md, .tex; en and zh)")
    latex.add_argument("--lang", choices=[*LANGS, "all"], default="all")
    latex.add_argument("--pdf", action="store_true", help="also compile the .tex files to PDF")
    latex.set_defaults(func=cmd_latex)
    emit = add("emit", "write the NumPy module(s) emitted from the derivation")
    emit.add_argument(
        "--model", help="a user loss: a .py file defining MODEL, or a .toml file of formulas"
    )
    emit.add_argument("--formula", help="a user loss as a formula string (restricted parser)")
    emit.add_argument("--name", help="the name of the --formula loss")
    emit.add_argument(
        "--targets", choices=["distribution", "binary", "real"], default="distribution"
    )
    emit.set_defaults(func=cmd_emit)
    ver = add("verify", "check an emitted module numerically and print the table")
    ver.add_argument("--module", help="path of a module to verify (default: the emitted ones)")
    for sp in (emit, ver):
        sp.add_argument(
            "--target",
            choices=["numpy", *build.FRAMEWORK_DIRS],
            default="numpy",
            help="the array library of the emitted module (default: numpy); framework modules "
            "go to <out>/torch/, <out>/jax/, <out>/array_api/",
        )
    ver.set_defaults(func=cmd_verify)
    add("check", "fail with a diff when generated/ is stale").set_defaults(func=cmd_check)
    add("all", "latex + emit + verify: the main job").set_defaults(func=cmd_all)
    add("list", "list the losses in the catalogue", loss=False).set_defaults(func=cmd_list)

    train = sub.add_parser("train", help="train with the generated module on real data")
    add_train_arguments(train)
    train.set_defaults(func=run_train)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except DeriveError as exc:
        print(f"derive: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
