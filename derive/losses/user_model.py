"""Loss models from the user: a Python file (trusted code) or a TOML file (parsed, never run).

A `.py` file is executed like a `conftest.py` and must define `MODEL`, a `LossModel` built with
the public API (see `examples/focal_loss.py`). A `.toml` file gives the formulas as strings, which
go through the restricted parser in `derive.formula`; nothing in it is evaluated as Python.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import sympy as sp

from derive import notation as S
from derive.errors import FormulaParseError, ModelDefinitionError, os_error_text
from derive.losses.formula import parse_formula
from derive.losses.model import TARGET_KINDS, LossModel, Param, TargetKind, softmax_expr
from derive.pyfile import import_file
from derive.symbolic.functions import sigmoid_expr
from derive.symbolic.steps import Prose


def default_prediction(targets: str) -> sp.Expr:
    """What `predict_proba` returns when a model does not say: the usual link for its targets."""
    if targets == "distribution":
        return softmax_expr(S.j)
    if targets == "binary":
        return sigmoid_expr(S.o[S.j])
    return S.o[S.j]


RESERVED = frozenset(
    {"o", "y", "K", "j", "k", "m", "exp", "log", "sqrt", "sigmoid", "softmax", "sum"}
)
PARAM_KEYS = ("default", "low", "high", "low_inclusive", "high_inclusive", "doc")
PARAM_FLAG = "NAME=DEFAULT[:LOW:HIGH]"


def _number(value: object, what: str, fix: str) -> float:
    """A finite float from a TOML value or a flag's text; refuse anything else in one line."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ModelDefinitionError(f"{what} {value!r} is not a number", "", fix)
    try:
        number = float(value)
    except ValueError:
        raise ModelDefinitionError(f"{what} {value!r} is not a number", "", fix) from None
    if isinstance(value, str) and not math.isfinite(number):
        raise ModelDefinitionError(f"{what} {value!r} is not a finite number", "", fix)
    return number


def parse_param_flag(text: str) -> tuple[str, dict[str, Any]]:
    """`--param NAME=DEFAULT[:LOW:HIGH]` as a parameter table (as TOML's `[params.NAME]`).

    LOW and HIGH bound a closed range; either may be left empty for no bound (`gamma=2:0:`).
    """
    fix = f"write --param {PARAM_FLAG}, e.g. --param gamma=2:0:"
    name, eq, rest = text.partition("=")
    fields = rest.split(":")
    if not eq or not name or len(fields) not in (1, 3):
        raise ModelDefinitionError(f"--param {text!r}: expected {PARAM_FLAG}", "", fix)
    what = f"--param {name}:"
    spec: dict[str, Any] = {"default": _number(fields[0], f"{what} default", fix)}
    if len(fields) == 3:
        for key, field in zip(("low", "high"), fields[1:], strict=True):
            if field:
                spec[key] = _number(field, f"{what} {key}", fix)
        spec["high_inclusive"] = True
    return name, spec


def _param(pname: str, spec: object, where: str) -> Param:
    """One declared parameter, every field checked (a TOML table or a `--param` flag)."""
    S.checked_name(pname, "parameter name")
    if pname in RESERVED:
        raise ModelDefinitionError(
            f"parameter name {pname!r} is taken",
            f"the formula language reserves {', '.join(sorted(RESERVED))}",
            "choose another name",
        )
    fix = f"in {where}: default = 2.0, and optionally low, high (numbers) and doc"
    if not isinstance(spec, dict) or "default" not in spec:
        raise ModelDefinitionError(f"parameter {pname}: expected a table with a default", "", fix)
    unknown = sorted(set(spec) - set(PARAM_KEYS))
    if unknown:
        raise ModelDefinitionError(
            f"parameter {pname}: unknown key(s) {', '.join(unknown)}",
            f"allowed: {', '.join(PARAM_KEYS)}",
        )
    default = _number(spec["default"], f"parameter {pname}: default", fix)
    bounds = {
        k: _number(spec[k], f"parameter {pname}: {k}", fix) for k in ("low", "high") if k in spec
    }
    low, high = bounds.get("low"), bounds.get("high")
    if low is not None and high is not None and low > high:
        raise ModelDefinitionError(
            f"parameter {pname}: low {low:g} is above high {high:g}", "", fix
        )
    flags = {k: spec.get(k, k == "low_inclusive") for k in ("low_inclusive", "high_inclusive")}
    for key, flag in flags.items():
        if not isinstance(flag, bool):
            raise ModelDefinitionError(
                f"parameter {pname}: {key} = {flag!r}", "expected true or false"
            )
    return Param(
        sp.Symbol(pname, positive=low is not None and low > 0),
        default,
        low=low,
        high=high,
        low_inclusive=flags["low_inclusive"],
        high_inclusive=flags["high_inclusive"],
        doc=str(spec.get("doc", "")),
    )


def _no_free_index(expr: sp.Expr, allowed: frozenset[sp.Symbol], what: str) -> None:
    """Refuse an index left outside every sum: `o[k]` alone is not one number per sample."""
    free = sorted(str(i) for i in (expr.free_symbols & {S.j, S.k, S.m}) - allowed)
    if free:
        index = free[0]
        keep = " (only j, the class of the output, may be free there)" if allowed else ""
        raise FormulaParseError(
            f"{what}: the index {index} is free{keep}",
            f"it appears outside any sum over {index}, so the {what} is not one number per sample",
            f"wrap it in sum(..., {index})",
        )


def model_from_formula(
    name: str,
    loss: str,
    targets: str = "distribution",
    params: dict[str, Any] | None = None,
    prediction: str | None = None,
    title: str | None = None,
    concrete_Ks: tuple[int, ...] = (2, 3),
    second_order: bool = True,
    where: str = "--param",
) -> LossModel:
    """A `LossModel` from formula strings, through the restricted parser."""
    S.checked_name(name, "loss name")
    if targets not in TARGET_KINDS:
        raise ModelDefinitionError(
            f"targets {targets!r} is not a kind of target", f"allowed: {', '.join(TARGET_KINDS)}"
        )
    if params is not None and not isinstance(params, dict):
        raise ModelDefinitionError("params: expected a table of parameters", "", f"see {where}")
    declared = [_param(pname, spec, where) for pname, spec in (params or {}).items()]
    symbols = {p.symbol.name: p.symbol for p in declared}
    kind: TargetKind = targets  # type: ignore[assignment]
    loss_expr = parse_formula(loss, symbols)
    _no_free_index(loss_expr, frozenset(), "loss")
    prediction_expr = (
        parse_formula(prediction, symbols) if prediction else default_prediction(targets)
    )
    _no_free_index(prediction_expr, frozenset({S.j}), "prediction")
    return LossModel(
        name=name,
        title=Prose(title or name, title or name),
        loss=loss_expr,
        prediction=prediction_expr,
        targets=kind,
        params=tuple(declared),
        description=Prose(f"the user-defined loss `{name}`", f"用户定义的损失 `{name}`"),
        concrete_Ks=concrete_Ks,
        second_order=second_order,
    )


TOML_KEYS = ("name", "title", "targets", "loss", "prediction", "params", "second_order")


def load_user_model(path: Path) -> LossModel:
    """The `LossModel` defined by a `.py` (MODEL = ...) or `.toml` file."""
    path = Path(path)
    shown = f"model file {str(path)!r}"
    if path.suffix not in (".py", ".toml"):
        raise ModelDefinitionError(
            f"{shown}: not a model file", "allowed: a .py file defining MODEL, or a .toml file"
        )
    if path.suffix == ".py":
        module = import_file(
            path, f"_derive_user_model_{path.stem}", "model file", ModelDefinitionError
        )
        model = getattr(module, "MODEL", None)
        if not isinstance(model, LossModel):
            raise ModelDefinitionError(
                f"{shown} defines no MODEL",
                f"found {type(model).__name__}" if model is not None else "no variable MODEL",
                "set MODEL = LossModel(...) as in examples/focal_loss.py",
            )
        return model
    if path.is_dir():
        raise ModelDefinitionError(
            f"{shown} is a folder", "expected a .toml file", "name the file itself"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelDefinitionError(f"{shown}: no such file", "", "check the path") from None
    except OSError as exc:
        raise ModelDefinitionError(
            f"{shown}: cannot read it", os_error_text(exc), "check that it is a readable file"
        ) from None
    except UnicodeDecodeError as exc:
        raise ModelDefinitionError(
            f"{shown}: not UTF-8 text", str(exc.reason), "save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelDefinitionError(
            f"{shown}: not valid TOML", str(exc), "fix the TOML syntax"
        ) from None
    unknown = sorted(set(data) - set(TOML_KEYS))
    missing = [key for key in ("name", "loss") if key not in data]
    if unknown or missing:
        bad = (
            f"unknown key(s) {', '.join(unknown)}" if unknown else f"no {' and no '.join(missing)}"
        )
        raise ModelDefinitionError(
            f"{shown}: {bad}", f"allowed keys: {', '.join(TOML_KEYS)}; name and loss are required"
        )
    for key in ("name", "title", "targets", "loss", "prediction"):
        if key in data and not isinstance(data[key], str):
            raise ModelDefinitionError(f"{shown}: {key} = {data[key]!r}", "expected a string")
    if not isinstance(data.get("second_order", True), bool):
        raise ModelDefinitionError(
            f"{shown}: second_order = {data['second_order']!r}", "expected true or false"
        )
    return model_from_formula(
        name=data["name"],
        loss=data["loss"],
        targets=data.get("targets", "distribution"),
        params=data.get("params"),
        prediction=data.get("prediction"),
        title=data.get("title"),
        second_order=data.get("second_order", True),
        where=f"{path.name} [params.NAME]",
    )
