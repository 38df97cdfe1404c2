"""verify's float64 accuracy checks on a framework module (torch, JAX, array API).

`numpy_view(module, target)` presents an emitted framework module through the NumPy module's API
(`loss`, `grad_logits`, `loss_and_grad`, `hessian_logits`, `hvp_logits`, `hvp_W`, the softmax
kernels), computing every derivative with the framework's own machinery, so that what is checked
is the derived code path: torch's autograd calls the emitted `Function.backward` (the derived
gradient) and, for second order, its backward (the derived Hessian-vector product); JAX's `grad`
and `jvp` call the emitted `custom_jvp` rules; the array-API module is called directly. Arrays
cross as float64/float32 NumPy arrays; integer labels stay integers.

`run` applies the accuracy checks of `derive.verify.checks` that concern the mathematics (finite
differences, references, extreme logits, float32, properties). The blocking and bad-input checks
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
from derive.verify import checks

Array = np.ndarray[Any, Any]

#: The checks that apply to every target (see the module docstring for the two left out).
ACCURACY_CHECKS: tuple[str, ...] = (
    "fd_logits",
    "fd_parameters",
    "fd_hessian",
    "reference_loss",
    "softmax_kernels",
    "extreme_float64",
    "extreme_float32",
    "extreme_training",
    "dtypes",
    "properties",
)


def _decay_value(m: ModuleType) -> float:
    return float(getattr(m, "DECAY", {}).get("lam", 0.0))


def _signature(params: dict[str, float]) -> inspect.Signature:
    """`loss_and_grad(X, y, W, b, *, <param>=<default>...)`, as `Subject.params` reads it."""
    kinds = inspect.Parameter
    positional = [kinds(n, kinds.POSITIONAL_OR_KEYWORD) for n in ("X", "y", "W", "b")]
    keywords = [kinds(n, kinds.KEYWORD_ONLY, default=v) for n, v in params.items()]
    return inspect.Signature(positional + keywords)


def _torch_view(m: ModuleType) -> SimpleNamespace:
    import torch

    def t(a: Any) -> Any:
        arr = np.asarray(a)
        return torch.from_numpy(arr.copy())

    def back(x: Any) -> Array:
        return np.asarray(x.detach().numpy())

    def mean_loss(O: Any, y: Any, **p: float) -> Any:
        return m.loss(O, y, "mean", **p)

    def loss(O: Array, y: Array) -> Any:
        return back(mean_loss(t(O), t(y)))[()]

    def grad_logits(O: Array, y: Array) -> Array:
        Ot = t(O).requires_grad_(True)
        (g,) = torch.autograd.grad(mean_loss(Ot, t(y)), Ot)
        return back(g)

    def loss_and_grad(X: Array, y: Array, W: Array, b: Array, **p: float) -> tuple[Any, ...]:
        lam = p.pop("lam", _decay_value(m))
        Wt, bt = t(W).requires_grad_(True), t(b).requires_grad_(True)
        total = mean_loss(t(X) @ Wt + bt, t(y), **p)
        if hasattr(m, "weight_decay"):
            total = total + m.weight_decay(Wt, lam)
        dW, db = torch.autograd.grad(total, (Wt, bt))
        return back(total)[()], back(dW), back(db)

    def hessian_logits(o: Array) -> Array:
        # One sample's loss is the same for any target; the Hessian of the softmax family does not
        # depend on it (and the binary/real ones are checked the same way with zero targets).
        y = np.zeros(1, dtype=np.int64) if m.TARGETS == "distribution" else np.zeros((1, o.size))
        ot = t(o[None, :])
        hessian: Any = torch.autograd.functional.hessian
        H = hessian(lambda z: mean_loss(z, t(y)), ot)
        return back(H)[0, :, 0, :]

    def hvp_logits(O: Array, V: Array) -> Array:
        n = O.shape[0]
        y = np.zeros(n, dtype=np.int64) if m.TARGETS == "distribution" else np.zeros_like(O)
        Ot = t(O).requires_grad_(True)
        (g,) = torch.autograd.grad(m.loss(Ot, t(y), "sum"), Ot, create_graph=True)
        (hv,) = torch.autograd.grad(g, Ot, t(V))
        return back(hv)

    def hvp_W(X: Array, W: Array, b: Array, V: Array) -> Array:
        n, K = X.shape[0], W.shape[1]
        y = np.zeros(n, dtype=np.int64) if m.TARGETS == "distribution" else np.zeros((n, K))
        Wt = t(W).requires_grad_(True)
        total = mean_loss(t(X) @ Wt + t(b), t(y))
        if hasattr(m, "weight_decay"):
            total = total + m.weight_decay(Wt, _decay_value(m))
        (g,) = torch.autograd.grad(total, Wt, create_graph=True)
        (hv,) = torch.autograd.grad(g, Wt, t(V))
        return back(hv)

    view = SimpleNamespace(
        loss=loss,
        grad_logits=grad_logits,
        loss_and_grad=loss_and_grad,
    )
    if m.SECOND_ORDER:
        view.hessian_logits, view.hvp_logits, view.hvp_W = hessian_logits, hvp_logits, hvp_W
    if m.TARGETS == "distribution":
        view.softmax = _kernel(lambda a: back(m.softmax(t(a))))
        view.log_softmax = _kernel(lambda a: back(m.log_softmax(t(a))))
        view.logsumexp = _kernel(lambda a: back(m.logsumexp(t(a))))
    return view


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

    def loss(O: Array, y: Array) -> Any:
        return back(m.loss(j(O), j(y)))[()]

    def grad_logits(O: Array, y: Array) -> Array:
        return back(jax.grad(lambda o: m.loss(o, j(y)))(j(O)))

    def loss_and_grad(X: Array, y: Array, W: Array, b: Array, **p: float) -> tuple[Any, ...]:
        lam = p.pop("lam", _decay_value(m))

        def total(w: Any, c: Any) -> Any:
            value = m.loss(j(X) @ w + c, j(y), "mean", **p)
            return value + m.weight_decay(w, lam) if hasattr(m, "weight_decay") else value

        value, (dW, db) = jax.value_and_grad(total, argnums=(0, 1))(j(W), j(b))
        return back(value)[()], back(dW), back(db)

    def hessian_logits(o: Array) -> Array:
        y = zeros_target(1, o.size)
        return back(jax.hessian(lambda z: m.loss(z[None, :], y))(j(o)))

    def hvp_logits(O: Array, V: Array) -> Array:
        y = zeros_target(*O.shape)
        g = jax.grad(lambda z: m.loss(z, y, "sum"))
        return back(jax.jvp(g, (j(O),), (j(V),))[1])

    def hvp_W(X: Array, W: Array, b: Array, V: Array) -> Array:
        y = zeros_target(X.shape[0], W.shape[1])

        def total(w: Any) -> Any:
            value = m.loss(j(X) @ w + j(b), y)
            return (
                value + m.weight_decay(w, _decay_value(m)) if hasattr(m, "weight_decay") else value
            )

        return back(jax.jvp(jax.grad(total), (j(W),), (j(V),))[1])

    view = SimpleNamespace(loss=loss, grad_logits=grad_logits, loss_and_grad=loss_and_grad)
    if m.SECOND_ORDER:
        view.hessian_logits, view.hvp_logits, view.hvp_W = hessian_logits, hvp_logits, hvp_W
    if m.TARGETS == "distribution":
        view.softmax = _kernel(lambda a: back(m.softmax(j(a))))
        view.log_softmax = _kernel(lambda a: back(m.log_softmax(j(a))))
        view.logsumexp = _kernel(lambda a: back(m.logsumexp(j(a))))
    return view


def _array_api_view(m: ModuleType) -> SimpleNamespace:
    """The module already has the NumPy module's API; NumPy arrays reach it through
    array-api-compat. The Hessian and the HVP in W are built from its `hvp_logits` (the derived
    HVP) by the chain rule, plus the weight decay's Hessian `lam I` (its gradient is linear)."""

    def hessian_logits(o: Array) -> Array:
        O = np.broadcast_to(o, (o.size, o.size)).copy()
        return np.asarray(m.hvp_logits(O, np.eye(o.size)))

    def hvp_W(X: Array, W: Array, b: Array, V: Array) -> Array:
        G = np.asarray(m.hvp_logits(X @ W + b, X @ V)) / X.shape[0]
        out: Array = X.T @ G + _decay_value(m) * V
        return out

    view = SimpleNamespace(loss=m.loss, grad_logits=m.grad_logits)

    def loss_and_grad(X: Array, y: Array, W: Array, b: Array, **p: float) -> tuple[Any, ...]:
        out: tuple[Any, ...] = m.loss_and_grad(X, y, W, b, **p)
        return out

    view.loss_and_grad = loss_and_grad
    if m.SECOND_ORDER:
        view.hessian_logits, view.hvp_logits, view.hvp_W = hessian_logits, m.hvp_logits, hvp_W
    if m.TARGETS == "distribution":
        view.softmax, view.log_softmax, view.logsumexp = m.softmax, m.log_softmax, m.logsumexp
    return view


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
    view.LOSS, view.TARGETS, view.STABLE = module.LOSS, module.TARGETS, module.STABLE
    params = dict(module.PARAMS) | dict(getattr(module, "DECAY", {}))
    view.loss_and_grad.__signature__ = _signature(params)  # read by checks.Subject.params
    return view


def run(module: ModuleType, target: str) -> list[checks.Result]:
    """The accuracy checks on a framework module, through `numpy_view`."""
    view = numpy_view(module, target)
    selected = [c for c in checks.CHECKS if c.__name__ in ACCURACY_CHECKS]
    subject: Any = view  # a module in all but type
    return checks.run(subject, selected)
