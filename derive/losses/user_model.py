"""Loss models from the user: a Python file (trusted code) or a TOML file (parsed, never run).

A `.py` file is executed like a `conftest.py` and must define `MODEL`, a `LossModel` built with
the public API (see `examples/focal_loss.py`). A `.toml` file gives the formulas as strings, which
go through the restricted parser in `derive.formula`; nothing in it is evaluated as Python.
"""

from __future__ import annotations

import runpy
import tomllib
from pathlib import Path
from typing import Any

import sympy as sp

from derive import notation as S
from derive.errors import ModelDefinitionError
from derive.losses.formula import parse_formula
from derive.losses.model import LossModel, Param, TargetKind, softmax_expr
from derive.symbolic.steps import Prose


def default_prediction(targets: str) -> sp.Expr:
    """What `predict_proba` returns when a model does not say: the usual link for its targets."""
    if targets == "distribution":
        return softmax_expr(S.j)
    if targets == "binary":
        out: sp.Expr = 1 / (1 + sp.exp(-S.o[S.j]))
        return out
    return S.o[S.j]


def model_from_formula(
    name: str,
    loss: str,
    targets: str = "distribution",
    params: dict[str, dict[str, Any]] | None = None,
    prediction: str | None = None,
    title: str | None = None,
    concrete_Ks: tuple[int, ...] = (2, 3),
    second_order: bool = True,
) -> LossModel:
    """A `LossModel` from formula strings, through the restricted parser."""
    S.checked_name(name, "loss name")
    if targets not in ("distribution", "binary", "real"):
        raise ModelDefinitionError(f"targets {targets!r}: expected distribution, binary or real")
    declared: list[Param] = []
    for pname, spec in (params or {}).items():
        S.checked_name(pname, "parameter name")
        if not isinstance(spec, dict) or "default" not in spec:
            raise ModelDefinitionError(f"parameter {pname}: expected a table with a default")
        low, high = spec.get("low"), spec.get("high")
        symbol = sp.Symbol(pname, positive=low is not None and low > 0)
        declared.append(
            Param(
                symbol,
                float(spec["default"]),
                low=None if low is None else float(low),
                high=None if high is None else float(high),
                low_inclusive=bool(spec.get("low_inclusive", True)),
                high_inclusive=bool(spec.get("high_inclusive", False)),
                doc=str(spec.get("doc", "")),
            )
        )
    symbols = {p.symbol.name: p.symbol for p in declared}
    kind: TargetKind = targets  # type: ignore[assignment]
    return LossModel(
        name=name,
        title=Prose(title or name, title or name),
        loss=parse_formula(loss, symbols),
        prediction=parse_formula(prediction, symbols)
        if prediction
        else default_prediction(targets),
        targets=kind,
        params=tuple(declared),
        description=Prose(f"the user-defined loss `{name}`", f"用户定义的损失 `{name}`"),
        concrete_Ks=concrete_Ks,
        second_order=second_order,
    )


def load_user_model(path: Path) -> LossModel:
    """The `LossModel` defined by a `.py` (MODEL = ...) or `.toml` file."""
    path = Path(path)
    if not path.is_file():
        raise ModelDefinitionError(f"model file {str(path)!r}: no such file")
    if path.suffix == ".py":
        namespace = runpy.run_path(str(path))
        model = namespace.get("MODEL")
        if not isinstance(model, LossModel):
            raise ModelDefinitionError(f"{path}: expected a variable MODEL holding a LossModel")
        return model
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ModelDefinitionError(f"{path}: not valid TOML ({exc})") from None
        keys = {"name", "title", "targets", "loss", "prediction", "params", "second_order"}
        unknown = set(data) - keys
        if unknown or "name" not in data or "loss" not in data:
            raise ModelDefinitionError(
                f"{path}: expected keys name, loss and optionally title, targets, prediction, "
                f"params, second_order; unknown: {sorted(unknown)}"
            )
        return model_from_formula(
            name=str(data["name"]),
            loss=str(data["loss"]),
            targets=str(data.get("targets", "distribution")),
            params=data.get("params"),
            prediction=data.get("prediction"),
            title=data.get("title"),
            second_order=bool(data.get("second_order", True)),
        )
    raise ModelDefinitionError(f"{path}: expected a .py or .toml model file")
