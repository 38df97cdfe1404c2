"""Row: identities the module must satisfy over random shapes, scales and shifts (Hypothesis).

db is the column sums of dL/dO; for softmax losses the probability rows sum to 1, the gradient
rows to 0, and both are invariant under exactly representable shifts up to 1e8. Derandomized,
40 cases, and Hypothesis kept out of the user's folder.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from derive.verify.subject import IDENTITY_BOUND, Result, Subject, rel, result


@contextlib.contextmanager
def _hypothesis_home_elsewhere() -> Iterator[None]:
    """Keep Hypothesis out of the user's folder. `derandomize=True` already means no example
    database; but Hypothesis also caches the constants it collects from loaded modules under
    `./.hypothesis/`. A user's `derive verify` must leave nothing in their folder: give it a
    temporary home for the run, removed after."""
    with tempfile.TemporaryDirectory(prefix="derive-hypothesis-") as home:
        set_hypothesis_home_dir(home)
        try:
            yield
        finally:
            set_hypothesis_home_dir(None)


def properties(s: Subject) -> Result:
    """db = column sums of dL/dO; for softmax losses: rows sum to 1, gradient rows to 0,
    shift invariance up to 1e8 (exactly representable shifts)."""

    worst = [0.0]
    distribution = s.targets == "distribution"
    # NOTE: the catalogue formulas are well conditioned (1e-12). A user loss's printed formula may
    # cancel near saturated logits (the focal loss divides by 1 - p): 1e-8 absolute, and said.
    catalogue = bool(getattr(s.m, "CATALOGUE_LOSS", False))
    bound = IDENTITY_BOUND if catalogue else 1e-8
    note = "" if catalogue else "user loss: bound 1e-8 (conditioning not known)"

    @settings(
        max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(
        n=st.integers(1, 20),
        K=st.integers(2 if distribution else 1, 30),
        seed=st.integers(0, 2**32 - 1),
        shift=st.sampled_from([0.0, 1.0, -3.0, 1e4, 1e8, -1e8]),
        scale=st.sampled_from([1e-3, 1.0, 20.0]),
    )
    def prop(n: int, K: int, seed: int, shift: float, scale: float) -> None:
        rng = np.random.default_rng(seed)
        # NOTE: logits on a grid of 2^-10 so that o + shift is exact for |shift| <= 1e8.
        O = np.round(rng.normal(size=(n, K)) * scale * 1024) / 1024
        y = s.targets_for(rng, n, K, soft=False)
        G = s.m.grad_logits(O, y)
        X = rng.normal(size=(n, 3))
        W = rng.normal(size=(3, K))
        b = rng.normal(size=K)
        _, _, db = s.m.loss_and_grad(X, y, W, b)
        errs = [rel(db, s.m.grad_logits(X @ W + b, y).sum(axis=0)) if np.any(db) else 0.0]
        if s.softmax_api:
            P = s.m.softmax(O)
            errs.append(float(np.max(np.abs(P.sum(axis=-1) - 1))))
            errs.append(float(np.max(np.abs(s.m.softmax(O + shift) - P))))
        if distribution:
            errs.append(float(np.max(np.abs(G.sum(axis=-1)))))
            errs.append(float(np.max(np.abs(s.m.grad_logits(O + shift, y) - G))))
        worst[0] = max(worst[0], *errs)
        assert max(errs) <= bound, errs

    name = "properties (hypothesis, 40 cases)"
    try:
        with _hypothesis_home_elsewhere():
            prop()
    except AssertionError:
        return Result(name, worst[0], bound, "FAIL", note)
    return result(name, worst[0], bound, note)
