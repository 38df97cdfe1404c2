"""Unit tests of `derive.losses.model`: what a LossModel admits and refuses, before any derivation
runs (a bad model must fail here, with one line, not deep inside SymPy)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sympy as sp

from derive import notation as S
from derive.errors import ModelDefinitionError
from derive.losses.definitions import LABEL_SMOOTHING, with_weight_decay
from derive.losses.model import SOFTMAX_CROSS_ENTROPY, LossModel, Param, class_sum, softmax_expr

T = sp.Symbol("T", positive=True)


def test_a_parameter_admits_its_range_with_the_declared_ends() -> None:
    p = Param(T, 1.0, low=0.0, high=2.0, low_inclusive=False, high_inclusive=True)
    assert [p.admits(v) for v in (0.0, 1e-300, 2.0, 2.0000001, -1.0)] == [
        False,
        True,
        True,
        False,
        False,
    ]
    assert p.range_text() == "(0.0, 2.0]"
    assert Param(T, 0.0).range_text() == "(-inf, inf)"


def test_a_default_outside_the_range_is_refused() -> None:
    with pytest.raises(ModelDefinitionError, match=r"default 3 is outside its range \[0.0, 1.0\)"):
        Param(T, 3.0, low=0.0, high=1.0)


def _model(**change: object) -> LossModel:
    return replace(SOFTMAX_CROSS_ENTROPY, **change)  # type: ignore[arg-type]


def test_an_undeclared_symbol_in_the_loss_is_refused() -> None:
    with pytest.raises(ModelDefinitionError, match=r"undeclared symbols \['T'\]"):
        _model(loss=T * SOFTMAX_CROSS_ENTROPY.loss)
    # declared, it is accepted
    assert _model(loss=T * SOFTMAX_CROSS_ENTROPY.loss, params=(Param(T, 1.0, low=0.0),)).params


def test_only_o_and_y_may_be_indexed() -> None:
    w = sp.IndexedBase("w")
    with pytest.raises(ModelDefinitionError, match=r"only o\[k\] and y\[k\] may be indexed"):
        _model(loss=class_sum(w[S.k] * S.o[S.k]))


def test_unknown_target_kinds_and_duplicate_roles_are_refused() -> None:
    with pytest.raises(ModelDefinitionError, match="expected distribution, binary or real"):
        _model(targets="ordinal")
    a, b = sp.symbols("a b", positive=True)
    twice = (Param(a, 1.0, role="temperature"), Param(b, 1.0, role="temperature"))
    with pytest.raises(ModelDefinitionError, match="a role is declared twice"):
        _model(loss=a * b * SOFTMAX_CROSS_ENTROPY.loss, params=twice)


def test_roles_are_declared_not_read_from_names() -> None:
    assert SOFTMAX_CROSS_ENTROPY.decay_symbol is None
    decayed = with_weight_decay(SOFTMAX_CROSS_ENTROPY)
    assert decayed.decay_symbol is not None
    assert decayed.role("weight_decay") is not None
    assert LABEL_SMOOTHING.role("smoothing") is not None
    assert LABEL_SMOOTHING.role("weight_decay") is None
    # a parameter named like the decay strength, without the role, is not the decay
    lam = sp.Symbol("lam", positive=True)
    mine = _model(loss=lam * SOFTMAX_CROSS_ENTROPY.loss, params=(Param(lam, 1.0, low=0.0),))
    assert mine.decay_symbol is None
    assert with_weight_decay(mine).decay_symbol not in (None, lam)


def test_the_softmax_definition_is_the_raw_quotient() -> None:
    expr = softmax_expr(S.j)
    assert expr == sp.exp(S.o[S.j]) / sp.Sum(sp.exp(S.o[S.m]), (S.m, 1, S.K))
    assert SOFTMAX_CROSS_ENTROPY.prediction == expr
    assert SOFTMAX_CROSS_ENTROPY.simplex_targets
