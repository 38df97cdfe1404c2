"""The whole-array code of `vector`, spelled for PyTorch, JAX and the array API standard.

Each printer changes the library's name and the few calls whose spelling differs (class sums, the
label's gather, column sums, a row's maximum); the stable kernels (`_softmax`, ...) print as the
same private names, which each target's template binds to its library's own max-shifted kernel
(torch.logsumexp, jax.nn.logsumexp, ...). `PRINTERS` names the printer of each emit target (the
NumPy one included), for `derive.output.frameworks` and the code generator.
"""

from __future__ import annotations

from sympy.printing.numpy import JaxPrinter

from derive.output.printers.vector import VectorPrinter
from derive.symbolic.functions import RowMax


class TorchVectorPrinter(VectorPrinter):
    """PyTorch: `torch.sum(x, dim=-1, keepdim=True)`, labels gathered with `Tensor.gather`.

    SymPy's `TorchPrinter` prints elementwise functions as `torch.<name>`; the NumPy names that
    reach these printers (log, exp, log1p, sqrt, square) are spelled the same in torch, so the
    namespace is all that changes (a wrong name would fail the emitted module's tests).
    """

    ns = "torch"
    complement_at = True
    arrays_only_square = True

    def _class_sum(self, code: str) -> str:
        return f"torch.sum({code}, dim=-1, keepdim=True)"

    def _at_label(self, code: str) -> str:
        return f"{code}.gather(-1, {self.gather}[:, None])"

    def _column_sums(self, code: str) -> str:
        return f"torch.sum({code}, dim=0)"

    def _sum_of_squares(self, code: str) -> str:
        return f"torch.sum({code} * {code})"

    def _label_one_hot(self, logits: str) -> str:
        return f"torch.nn.functional.one_hot({self.gather}, {logits}.shape[-1]).to({logits}.dtype)"

    def _print_RowMax(self, expr: RowMax) -> str:
        return f"torch.amax({self._print(expr.args[0])}, dim=-1, keepdim=True)"

    def _at_row_max(self, values: str, logits: str) -> str:
        return f"{values}.gather(-1, torch.argmax({logits}, dim=-1, keepdim=True))"

    def _as_index(self, mask: str) -> str:
        return f"({mask}).to(torch.int64)"


class JaxVectorPrinter(VectorPrinter, JaxPrinter):
    """JAX: SymPy's `JaxPrinter` (`jax.numpy` functions, printed as `jnp.`), whole-array."""

    ns = "jnp"
    complement_at = True

    def _at_label(self, code: str) -> str:
        return f"jnp.take_along_axis({code}, {self.gather}[:, None], axis=-1)"

    def _column_sums(self, code: str) -> str:
        return f"jnp.sum({code}, axis=0)"

    def _sum_of_squares(self, code: str) -> str:
        return f"jnp.vdot({code}, {code})"

    def _print_RowMax(self, expr: RowMax) -> str:
        return f"jnp.max({self._print(expr.args[0])}, axis=-1, keepdims=True)"

    def _as_index(self, mask: str) -> str:
        return f"({mask}).astype(jnp.int_)"


class ArrayApiVectorPrinter(VectorPrinter):
    """The array API standard: every call through `xp = array_namespace(...)`, no methods.

    The standard has no integer-array indexing: a label's entry is picked with a boolean mask
    (`_pick`, a sum with one nonzero term, so exact).
    """

    ns = "xp"
    arrays_only_square = True
    #: array_api.py.j2 defines no `_complement_at` (the standard has no integer-array indexing
    #: to zero a label's entry with): the label's entry is read from the whole `_complement`.
    complement_at = False

    def _at_label(self, code: str) -> str:
        # `gather` names a boolean one-hot mask: the row's entry at its label, as a masked sum.
        return f"_pick({code}, {self.gather})"

    def _column_sums(self, code: str) -> str:
        return f"xp.sum({code}, axis=0)"

    def _sum_of_squares(self, code: str) -> str:
        return f"xp.sum({code} * {code})"

    def _label_one_hot(self, logits: str) -> str:
        # `gather` is already the labels' boolean one-hot mask here.
        return f"xp.astype({self.gather}, {logits}.dtype)"

    def _print_RowMax(self, expr: RowMax) -> str:
        return f"xp.max({self._print(expr.args[0])}, axis=-1, keepdims=True)"

    def _at_row_max(self, values: str, logits: str) -> str:
        return f"_pick({values}, _top_mask({logits}))"

    def _as_index(self, mask: str) -> str:
        return f"xp.astype({mask}, xp.int64)"


#: The printer of each emit target.
PRINTERS: dict[str, type[VectorPrinter]] = {
    "numpy": VectorPrinter,
    "torch": TorchVectorPrinter,
    "jax": JaxVectorPrinter,
    "array-api": ArrayApiVectorPrinter,
}
