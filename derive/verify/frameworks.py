"""verify's float64 accuracy checks on a framework module (torch, JAX, array API).

`numpy_view(module, target)` presents an emitted framework module through the NumPy module's API
(`loss`, `grad_logits`, `loss_and_grad`, `hessian_logits`, `hvp_logits`, `hvp_W`, the softmax
kernels), computing every derivative with the framework's own machinery, so that what is checked
is the derived code path: torch's autograd calls the emitted `Function.backward` (the derived
gradient) and, for second order, its backward (the derived Hessian-vector product); JAX's `grad`
and `jvp` call the emitted `custom_jvp` rules; the array-API module is called directly. Arrays
cross as float64/float32 NumPy arrays; integer labels stay integers.

`run` applies the rows of `derive.verify.rows` that concern the mathematics (finite
differences, references, the prediction and the decision rule, extreme logits, float32,
properties). The blocking and bad-input checks
are about the NumPy module's own loop and validation and are not run here.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

from derive.errors import FrameworkMissing
from derive.pyfile import import_file
from derive.verify import runner
from derive.verify.rows import CHECKS
from derive.verify.subject import Result

Array = np.ndarray[Any, Any]

#: The checks that apply to every target (see the module docstring for those left out).
ACCURACY_CHECKS: tuple[str, ...] = (
    "fd_logits",
    "fd_parameters",
    "fd_hessian",
    "reference_loss",
    "prediction",
    "softmax_kernels",
    "extreme_float64",
    "extreme_float32",
    "extreme_training",
    "dtypes",
    "properties",
    # One row per input family against the module's reference() (issue 8): float64 and float32.
    *(c.__name__ for c in CHECKS if c.__name__.startswith("accuracy_")),
)


def _decay(m: ModuleType) -> tuple[str | None, float]:
    """The weight-decay parameter (by the role the module declares in `WEIGHT_DECAY`, never by
    a name) and its default (from the signature of the function that takes it: `weight_decay`,
    or the array-API module's `loss_and_grad`); (None, 0.0) without one."""
    name = getattr(m, "WEIGHT_DECAY", None)
    if name is None:
        return None, 0.0
    takes = getattr(m, "weight_decay", None) or m.loss_and_grad
    return name, float(inspect.signature(takes).parameters[name].default)


def _split(m: ModuleType, p: dict[str, float]) -> tuple[dict[str, float], float]:
    """Keyword arguments of `loss_and_grad` as (the loss's parameters, the decay strength)."""
    name, default = _decay(m)
    loss_params = {k: v for k, v in p.items() if k != name}
    return loss_params, float(p.get(name, default)) if name is not None else 0.0


def _signature(params: dict[str, float]) -> inspect.Signature:
    """`loss_and_grad(X, y, W, b, *, <param>=<default>...)`, as `Subject.params` reads it."""
    kinds = inspect.Parameter
    positional = [kinds(n, kinds.POSITIONAL_OR_KEYWORD) for n in ("X", "y", "W", "b")]
    keywords = [kinds(n, kinds.KEYWORD_ONLY, default=v) for n, v in params.items()]
    return inspect.Signature(positional + keywords)


def _autodiff_view(
    m: ModuleType,
    to_framework: Callable[[Any], Any],
    back: Callable[[Any], Array],
    *,
    loss: Callable[..., Any],
    grad_logits: Callable[..., Array],
    loss_and_grad: Callable[..., tuple[Any, ...]],
    predict_proba: Callable[..., Array],
    predict: Callable[..., Array],
    hessian_logits: Callable[..., Array],
    hvp_logits: Callable[..., Array],
    hvp_W: Callable[..., Array],
) -> SimpleNamespace:
    """The view the torch and JAX targets share: the five functions every module has, the three
    second-order ones where the module derives them (`SECOND_ORDER`), and for a softmax loss the
    module's softmax kernels, converted to the framework's arrays and `back` to NumPy."""
    view = SimpleNamespace(
        loss=loss,
        grad_logits=grad_logits,
        loss_and_grad=loss_and_grad,
        predict_proba=predict_proba,
        predict=predict,
    )
    if m.SECOND_ORDER:
        view.hessian_logits, view.hvp_logits, view.hvp_W = hessian_logits, hvp_logits, hvp_W
    if m.TARGETS == "distribution":
        view.softmax = _kernel(lambda a: back(m.softmax(to_framework(a))))
        view.log_softmax = _kernel(lambda a: back(m.log_softmax(to_framework(a))))
        view.logsumexp = _kernel(lambda a: back(m.logsumexp(to_framework(a))))
    return view


def _torch_view(m: ModuleType) -> SimpleNamespace:
    import torch

    def t(a: Any) -> Any:
        arr = np.asarray(a)
        return torch.from_numpy(arr.copy())

    def back(x: Any) -> Array:
        return np.asarray(x.detach().numpy())

    def mean_loss(O: Any, y: Any, **p: float) -> Any:
        return m.loss(O, y, "mean", **p)

    def loss(O: Array, y: Array, **p: float) -> Any:
        return back(mean_loss(t(O), t(y), **p))[()]

    def grad_logits(O: Array, y: Array, **p: float) -> Array:
        Ot = t(O).requires_grad_(True)
        (g,) = torch.autograd.grad(mean_loss(Ot, t(y), **p), Ot)
        return back(g)

    def total(X: Any, y: Any, W: Any, b: Any, p: dict[str, float]) -> Any:
        loss_params, strength = _split(m, p)
        value = mean_loss(X @ W + b, y, **loss_params)
        return value + m.weight_decay(W, strength) if m.WEIGHT_DECAY is not None else value

    def loss_and_grad(X: Array, y: Array, W: Array, b: Array, **p: float) -> tuple[Any, ...]:
        Wt, bt = t(W).requires_grad_(True), t(b).requires_grad_(True)
        value = total(t(X), t(y), Wt, bt, p)
        dW, db = torch.autograd.grad(value, (Wt, bt))
        return back(value)[()], back(dW), back(db)

    def hessian_logits(o: Array, **p: float) -> Array:
        # One sample's loss is the same for any target; the Hessian of the softmax family does not
        # depend on it (and the binary/real ones are checked the same way with zero targets).
        y = (
            np.zeros(1, dtype=np.int64)
            if m.TARGETS == "distribution"
            else np.zeros((1, o.size), dtype=o.dtype)
        )
        ot = t(o[None, :])
        hessian: Any = torch.autograd.functional.hessian
        H = hessian(lambda z: mean_loss(z, t(y), **p), ot)
        return back(H)[0, :, 0, :]

    def hvp_logits(O: Array, V: Array, **p: float) -> Array:
        n = O.shape[0]
        y = np.zeros(n, dtype=np.int64) if m.TARGETS == "distribution" else np.zeros_like(O)
        Ot = t(O).requires_grad_(True)
        (g,) = torch.autograd.grad(m.loss(Ot, t(y), "sum", **p), Ot, create_graph=True)
        (hv,) = torch.autograd.grad(g, Ot, t(V))
        return back(hv)

    def hvp_W(X: Array, W: Array, b: Array, V: Array, **p: float) -> Array:
        n, K = X.shape[0], W.shape[1]
        y = (
            np.zeros(n, dtype=np.int64)
            if m.TARGETS == "distribution"
            else np.zeros((n, K), dtype=X.dtype)
        )
        Wt = t(W).requires_grad_(True)
        (g,) = torch.autograd.grad(total(t(X), t(y), Wt, t(b), p), Wt, create_graph=True)
        (hv,) = torch.autograd.grad(g, Wt, t(V))
        return back(hv)

    def predict_proba(X: Array, W: Array, b: Array) -> Array:
        # The module's `predict_proba` takes logits (as torch.nn.functional does).
        return back(m.predict_proba(t(X) @ t(W) + t(b)))

    def predict(X: Array, W: Array, b: Array) -> Array:
        return back(m.predict(t(X), t(W), t(b)))

    return _autodiff_view(
        m,
        t,
        back,
        loss=loss,
        grad_logits=grad_logits,
        loss_and_grad=loss_and_grad,
        predict_proba=predict_proba,
        predict=predict,
        hessian_logits=hessian_logits,
        hvp_logits=hvp_logits,
        hvp_W=hvp_W,
    )


def _kernel(f: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """A row-wise kernel that also takes one row (K,), as the NumPy module's does."""

    def call(a: Array) -> Array:
        a = np.asarray(a)
        out = f(a[None, :] if a.ndim == 1 else a)
        return out[0] if a.ndim == 1 else out

    return call


def _jax_view(m: ModuleType) -> SimpleNamespace:
    import jax
    import jax.numpy as jnp

    # NOTE: the float64 checks need JAX's 64-bit mode (off by default: arrays become float32).
    config: Any = jax.config
    config.update("jax_enable_x64", True)

    def j(a: Any) -> Any:
        return jnp.asarray(np.asarray(a))

    def back(x: Any) -> Array:
        return np.asarray(x)

    def zeros_target(n: int, K: int) -> Any:
        return jnp.zeros(n, dtype=int) if m.TARGETS == "distribution" else jnp.zeros((n, K))

    def loss(O: Array, y: Array, **p: float) -> Any:
        return back(m.loss(j(O), j(y), **p))[()]

    def grad_logits(O: Array, y: Array, **p: float) -> Array:
        return back(jax.grad(lambda o: m.loss(o, j(y), **p))(j(O)))

    def total(X: Any, y: Any, W: Any, b: Any, p: dict[str, float]) -> Any:
        loss_params, strength = _split(m, p)
        value = m.loss(X @ W + b, y, "mean", **loss_params)
        return value + m.weight_decay(W, strength) if m.WEIGHT_DECAY is not None else value

    def loss_and_grad(X: Array, y: Array, W: Array, b: Array, **p: float) -> tuple[Any, ...]:
        fn = jax.value_and_grad(lambda w, c: total(j(X), j(y), w, c, p), argnums=(0, 1))
        value, (dW, db) = fn(j(W), j(b))
        return back(value)[()], back(dW), back(db)

    def hessian_logits(o: Array, **p: float) -> Array:
        y = zeros_target(1, o.size)
        return back(jax.hessian(lambda z: m.loss(z[None, :], y, **p))(j(o)))

    def hvp_logits(O: Array, V: Array, **p: float) -> Array:
        y = zeros_target(*O.shape)
        g = jax.grad(lambda z: m.loss(z, y, "sum", **p))
        return back(jax.jvp(g, (j(O),), (j(V),))[1])

    def hvp_W(X: Array, W: Array, b: Array, V: Array, **p: float) -> Array:
        y = zeros_target(X.shape[0], W.shape[1])
        g = jax.grad(lambda w: total(j(X), y, w, j(b), p))
        return back(jax.jvp(g, (j(W),), (j(V),))[1])

    def predict_proba(X: Array, W: Array, b: Array) -> Array:
        # The module's `predict_proba` takes logits (as optax's losses do).
        return back(m.predict_proba(j(X) @ j(W) + j(b)))

    def predict(X: Array, W: Array, b: Array) -> Array:
        return back(m.predict(j(X), j(W), j(b)))

    return _autodiff_view(
        m,
        j,
        back,
        loss=loss,
        grad_logits=grad_logits,
        loss_and_grad=loss_and_grad,
        predict_proba=predict_proba,
        predict=predict,
        hessian_logits=hessian_logits,
        hvp_logits=hvp_logits,
        hvp_W=hvp_W,
    )


def _array_api_view(m: ModuleType) -> SimpleNamespace:
    """The module already has the NumPy module's API; NumPy arrays reach it through
    array-api-compat. The Hessian and the HVP in W are built from its `hvp_logits` (the derived
    HVP) by the chain rule, plus the weight decay's Hessian (its gradient is linear in W: the
    strength times the identity)."""

    def hessian_logits(o: Array, **p: float) -> Array:
        O = np.broadcast_to(o, (o.size, o.size)).copy()
        return np.asarray(m.hvp_logits(O, np.eye(o.size), **p))

    def hvp_W(X: Array, W: Array, b: Array, V: Array, **p: float) -> Array:
        loss_params, strength = _split(m, p)
        G = np.asarray(m.hvp_logits(X @ W + b, X @ V, **loss_params)) / X.shape[0]
        out: Array = X.T @ G + strength * V
        return out

    view = SimpleNamespace(
        loss=m.loss,
        grad_logits=m.grad_logits,
        predict_proba=m.predict_proba,
        predict=m.predict,
    )

    def loss_and_grad(X: Array, y: Array, W: Array, b: Array, **p: float) -> tuple[Any, ...]:
        out: tuple[Any, ...] = m.loss_and_grad(X, y, W, b, **p)
        return out

    view.loss_and_grad = loss_and_grad
    if m.SECOND_ORDER:
        view.hessian_logits, view.hvp_logits, view.hvp_W = hessian_logits, m.hvp_logits, hvp_W
    if m.TARGETS == "distribution":
        view.softmax, view.log_softmax, view.logsumexp = m.softmax, m.log_softmax, m.logsumexp
    return view


#: What a module declares about itself (the same names as the NumPy module's), which the checks
#: read: the loss's definition for the mpmath references, the weight decay's role, ranges.
DECLARED = (
    "LOSS",
    "TARGETS",
    "STABLE",
    "CATALOGUE_LOSS",
    "WEIGHT_DECAY",
    "PARAMETER_RANGES",
    "REFERENCE_LOSS",
    "REFERENCE_PREDICTION",
)

VIEWS: dict[str, Callable[[ModuleType], SimpleNamespace]] = {
    "torch": _torch_view,
    "jax": _jax_view,
    "array-api": _array_api_view,
}

#: What each target imports, and the extra that installs it.
FRAMEWORKS = {
    "torch": ("torch", "torch"),
    "jax": ("jax", "jax"),
    "array-api": ("array_api_compat", "array-api"),
}


def load(path: Path, target: str) -> ModuleType:
    """Import an emitted framework module; a missing framework is one clear error."""
    package, extra = FRAMEWORKS[target]
    if importlib.util.find_spec(package) is None:
        raise FrameworkMissing(
            f"--target {target}: {package} is not installed (pip install 'softmax-derive[{extra}]')"
        )
    return import_file(Path(path), f"_derive_{target.replace('-', '_')}_{path.stem}", "module")


def numpy_view(module: ModuleType, target: str) -> SimpleNamespace:
    """`module` (an emitted `target` module) behind the NumPy module's API (see above)."""
    view = VIEWS[target](module)
    for name in DECLARED:
        setattr(view, name, getattr(module, name))
    if hasattr(module, "reference"):
        view.reference = module.reference
    decay, default = _decay(module)
    params = dict(module.PARAMS) | ({decay: default} if decay is not None else {})
    view.loss_and_grad.__signature__ = _signature(params)  # read by Subject.params
    return view


def run(module: ModuleType, target: str) -> list[Result]:
    """The accuracy checks on a framework module, through `numpy_view`, in the order of
    `ACCURACY_CHECKS`."""
    view = numpy_view(module, target)
    by_name = {c.__name__: c for c in CHECKS}
    selected = [by_name[name] for name in ACCURACY_CHECKS]
    subject: Any = view  # a module in all but type
    return runner.run(subject, selected)
