"""One definition of each parameter's range: `Param.interval`.

`Param.admits` asks the interval; the emitted module's check is printed from it
(`print_range_check`) and run by the template's `_param`. Here the two agree at the ends of
every range (the ends themselves, the next floats either side, the default, far values) for
every catalogue loss and every example model, and the committed modules refuse exactly what
`admits` refuses.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import sympy as sp
from conftest import FRAMEWORK_TARGETS

from derive.losses.definitions import CATALOGUE_MODELS
from derive.losses.model import LossModel, Param
from derive.losses.user_model import load_user_model
from derive.output.codegen import param_views
from derive.output.loader import load_module_from_path
from derive.output.notes import environment
from derive.output.printers.ranges import print_range_check
from derive.verify import frameworks

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml")) + sorted((ROOT / "examples").glob("*.py"))


def models() -> Iterator[LossModel]:
    yield from CATALOGUE_MODELS
    for path in EXAMPLES:
        yield load_user_model(path)


def probes(prm: Param) -> list[float]:
    """The ends, the floats just inside and outside them, the default, and far values."""
    out = [prm.default, -1e300, 1e300, 0.0]
    for end in (prm.low, prm.high):
        if end is not None:
            out += [end, math.nextafter(end, -math.inf), math.nextafter(end, math.inf)]
    return out


CASES = [
    pytest.param(model, prm, id=f"{model.name}-{prm.symbol.name}")
    for model in models()
    for prm in model.params
]


def emitted_param_check() -> Any:
    """The `_param` every target's module defines (NumPy, torch, JAX, array API: all include
    `param.py.j2`), on its own: exec of the rendered template."""
    source = environment().get_template("param.py.j2").render()
    scope: dict[str, Any] = {}
    exec(
        "from __future__ import annotations\nimport math\nimport numbers\n"
        "from collections.abc import Callable\nfrom typing import Any\n" + source,
        scope,
    )
    return scope["_param"]


def test_every_catalogue_loss_and_example_is_probed() -> None:
    assert {m.name for m in CATALOGUE_MODELS} <= {c.values[0].name for c in CASES} | {
        m.name for m in CATALOGUE_MODELS if not m.params
    }
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize(("model", "prm"), CASES)
def test_admits_and_the_printed_check_agree_at_the_ends(model: LossModel, prm: Param) -> None:
    check = emitted_param_check()
    (view,) = [v for v in param_views(model) if v["name"] == prm.symbol.name]
    inside = eval(f"lambda {view['name']}: {view['inside']}")
    for value in probes(prm):
        try:
            check(view["name"], value, view["range"], inside)
            accepted = True
        except ValueError as exc:
            assert str(exc) == f"{view['name']}: {value!r} is outside its valid range " + (
                prm.range_text()
            )
            accepted = False
        assert accepted is prm.admits(value), (model.name, prm.symbol.name, value)


def test_a_range_check_prints_each_finite_end_exactly() -> None:
    eps = sp.Symbol("eps")
    odd = Param(eps, 0.5, low=0.30000000000000004, high=1.0, low_inclusive=False)
    assert print_range_check(odd.interval, "eps") == "0.30000000000000004 < eps < 1.0"
    assert print_range_check(Param(eps, 0.0).interval, "eps") == "True"
    assert print_range_check(Param(eps, 1.0, low=0.0).interval, "eps") == "eps >= 0.0"
    closed = Param(eps, 0.0, high=1.0, high_inclusive=True, low_inclusive=False)
    assert print_range_check(closed.interval, "eps") == "eps <= 1.0"
    assert not odd.admits(0.30000000000000004) and odd.admits(math.nextafter(0.3 + 1e-16, 1))
    assert not odd.admits(math.nan) and not odd.admits(math.inf)


def _generated(model: LossModel) -> ModuleType:
    return load_module_from_path(ROOT / "generated" / f"{model.name}.py")


@pytest.mark.parametrize(("model", "prm"), [c for c in CASES if c.values[0] in CATALOGUE_MODELS])
def test_the_committed_modules_refuse_exactly_what_admits_refuses(
    model: LossModel, prm: Param
) -> None:
    module = _generated(model)
    rng = np.random.default_rng(0)
    X, W, b = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)
    y = rng.random(size=(4, 2)) if model.targets != "distribution" else np.array([0, 1, 1, 0])
    if model.targets == "binary":
        y = (y > 0.5).astype(float)
    for value in probes(prm):
        try:
            # Far values may overflow the loss itself: only the range check is under test.
            with np.errstate(all="ignore"):
                module.loss_and_grad(X, y, W, b, **{prm.symbol.name: value})
            accepted = True
        except ValueError as exc:
            accepted = "outside its valid range" not in str(exc)
        assert accepted is prm.admits(value), (model.name, prm.symbol.name, value)


def _framework_call(model: LossModel, target: str) -> Callable[[str, float], object]:
    """The committed `target` module's function that takes the parameter: `loss` for a loss
    parameter; the weight decay's (`weight_decay`, or the array API's `loss_and_grad`)."""
    module = frameworks.load(
        ROOT / "generated" / target.replace("-", "_") / f"{model.name}.py", target
    )
    rng = np.random.default_rng(0)
    O, W = rng.normal(size=(4, 2)), rng.normal(size=(3, 2))
    X, b = rng.normal(size=(4, 3)), rng.normal(size=2)
    y: np.ndarray[Any, Any] = (
        np.array([0, 1, 1, 0]) if model.targets == "distribution" else rng.random(size=(4, 2))
    )
    if model.targets == "binary":
        y = (y > 0.5).astype(float)
    as_array: Callable[[Any], Any] = {
        "torch": lambda a: importlib.import_module("torch").asarray(a),
        "jax": lambda a: importlib.import_module("jax.numpy").asarray(a),
        "array-api": np.asarray,
    }[target]
    decay = model.decay_symbol.name if model.decay_symbol is not None else None

    def call(name: str, value: float) -> object:
        if name != decay:
            return module.loss(as_array(O), as_array(y), **{name: value})
        if target == "array-api":
            return module.loss_and_grad(X, y, W, b, **{name: value})
        return module.weight_decay(as_array(W), **{name: value})

    return call


@pytest.mark.parametrize("target", FRAMEWORK_TARGETS)
@pytest.mark.parametrize(("model", "prm"), [c for c in CASES if c.values[0] in CATALOGUE_MODELS])
def test_the_committed_framework_modules_refuse_exactly_what_admits_refuses(
    model: LossModel, prm: Param, target: str
) -> None:
    """torch, JAX and the array API run the same printed check (`param.py.j2`) as NumPy: the
    same values refused, with the same message (the range as declared)."""
    call = _framework_call(model, target)
    for value in probes(prm):
        try:
            with np.errstate(all="ignore"):
                call(prm.symbol.name, value)
            accepted = True
        except ValueError as exc:
            assert str(exc) == f"{prm.symbol.name}: {value!r} is outside its valid range " + (
                prm.range_text()
            )
            accepted = False
        assert accepted is prm.admits(value), (target, model.name, prm.symbol.name, value)
