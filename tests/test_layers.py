"""The import graph of `derive/` reads as the pipeline: imports point down, no cycles.

Layers, lowest first (DESIGN.md "Layers"): errors, notation, symbolic, losses, output, then
verify (which imports nothing of the symbolic side: it checks an emitted module on its own),
then the applications (train) and the command line. A module may import from its own layer or
a lower one; `verify` only from itself and `errors`. Function-level imports are allowed only for
optional third-party dependencies (they keep `import derive` working without the extras); a
function-level import of a `derive` module is how cycles hide, so it is refused too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "derive"

LAYERS: dict[str, int] = {
    "derive.errors": 0,
    "derive.pyfile": 0,
    "derive.resources": 0,
    "derive.notation": 1,
    "derive.symbolic": 2,
    "derive.losses": 3,
    "derive.output": 4,
    "derive.verify": 4,
    "derive.train": 5,
    "derive.cli": 6,
    "derive.__main__": 6,
    "derive": 6,
}

#: What `derive.verify` may import from the package: it verifies emitted modules only (and
#: imports them by path with `derive.pyfile`).
VERIFY_MAY_IMPORT = ("derive.verify", "derive.errors", "derive.pyfile")

#: Inside a subpackage, the order of its modules (lowest first): a module imports only modules
#: of its package that come before it (the package itself, its `__init__`, comes last). The
#: order is the one the package's docstring lists. A nested subpackage has one place in its
#: parent's order (everything in it sits there) and may have an order of its own.
SUBPACKAGE_ORDER: dict[str, tuple[str, ...]] = {
    "derive.losses.derivation": (
        "symbols", "wording", "chains", "forms", "binding", "decision", "labels", "core", "final",
    ),
    "derive.output.printers": (
        "code_format", "latex", "vector", "framework_vectors", "ranges", "reference",
    ),
    "derive.verify": ("subject", "references", "accuracy", "rows", "runner", "frameworks"),
    "derive.verify.accuracy": ("cases", "reference", "families", "measure"),
    "derive.verify.rows": (
        "differences", "definitions", "consistency", "extremes", "properties", "families",
        "refusals",
    ),
}  # fmt: skip

#: Third-party packages that are optional extras (and `resource`, which only POSIX has): importing
#: them inside a function is how the package stays importable without them.
OPTIONAL = {
    "sklearn", "matplotlib", "tqdm", "threadpoolctl", "torch", "jax", "jaxlib", "optax",
    "dask", "distributed", "zarr", "array_api_compat", "array_api_strict", "cupy", "IPython",
    "pre_commit", "build", "twine", "resource",
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    while module not in LAYERS:
        module = module.rpartition(".")[0]
    return LAYERS[module]


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import outside `TYPE_CHECKING`."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, in_function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    yield (full if (PACKAGE.parent / full.replace(".", "/")).exists()
                           or (PACKAGE.parent / f"{full.replace('.', '/')}.py").exists()
                           else base), child.lineno, in_function  # fmt: skip
            else:
                nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                yield from visit(child, nested)

    yield from visit(ast.parse(path.read_text()), False)


SOURCES = sorted(PACKAGE.rglob("*.py"))


def graph() -> dict[str, set[str]]:
    """Module-level imports between `derive` modules."""
    edges: dict[str, set[str]] = {module_name(p): set() for p in SOURCES}
    for path in SOURCES:
        for target, _, in_function in imports(path):
            if target.startswith("derive") and not in_function:
                edges[module_name(path)].add(target)
    return edges


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_point_down_the_pipeline(path: Path) -> None:
    here = module_name(path)
    wrong = []
    for target, line, _ in imports(path):
        if not target.startswith("derive") or target == here:
            continue
        if here.startswith("derive.verify") and not target.startswith(VERIFY_MAY_IMPORT):
            wrong.append(f"line {line}: {target} (verify imports only itself and errors)")
        elif layer(target) > layer(here) and not (here == "derive" and target == "derive"):
            wrong.append(f"line {line}: {target} is above {here}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_function_level_imports_are_optional_dependencies_only(path: Path) -> None:
    hidden = [
        f"line {line}: {target}"
        for target, line, in_function in imports(path)
        if in_function and target.split(".")[0] not in OPTIONAL
    ]
    assert not hidden, "imports inside functions (move them to the top):\n" + "\n".join(hidden)


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt in edges and nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def unreached(edges: dict[str, set[str]], roots: tuple[str, ...]) -> set[str]:
    """The modules of `edges` that importing `roots` never loads (a module loads its packages)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        parts = todo.pop().split(".")
        for found in (".".join(parts[:k]) for k in range(1, len(parts) + 1)):
            if found in edges and found not in seen:
                seen.add(found)
                todo.extend(edges[found])
    return set(edges) - seen


ENTRY_POINTS = ("derive.__main__", "derive.cli")


def test_every_module_is_reached_from_the_command_line() -> None:
    """No dead module: each is imported, directly or not, by the `derive` command."""
    unused = unreached(graph(), ENTRY_POINTS)
    assert not unused, f"imported by nothing: {sorted(unused)}"


def test_the_reach_check_sees_a_module_nobody_imports() -> None:
    """The test above can fail: with every import of `derive.verify.runner` removed, it is
    reported (and nothing else is)."""
    edges = {m: targets - {"derive.verify.runner"} for m, targets in graph().items()}
    assert unreached(edges, ENTRY_POINTS) == {"derive.verify.runner"}


def test_the_checker_sees_a_planted_upward_import(tmp_path: Path) -> None:
    """The test above can fail: an upward import and a hidden one are both reported."""
    planted = PACKAGE / "symbolic" / "_planted_for_test.py"
    planted.write_text(
        "from derive.output import build\n\ndef f():\n    from derive.losses import model\n"
    )
    try:
        found = list(imports(planted))
        assert ("derive.output.build", 1, False) in found
        assert ("derive.losses.model", 4, True) in found
        assert any(layer(t) > layer(module_name(planted)) for t, _, _ in found)
    finally:
        planted.unlink()


def ranks(module: str) -> dict[str, int]:
    """The position of `module` in each ordered package that holds it: by its own name in its
    package, by the subpackage it sits in for an enclosing one; a package's `__init__` is last
    in its own order."""
    out = {}
    for package, order in SUBPACKAGE_ORDER.items():
        if module == package:
            out[package] = len(order)
        elif module.startswith(package + "."):
            leaf = module.removeprefix(package + ".").split(".")[0]
            if leaf in order:
                out[package] = order.index(leaf)
    return out


def out_of_order(path: Path, module: str) -> list[str]:
    """The imports of `path` (read as `module`) not below it in the innermost ordered package
    that holds both."""
    here = ranks(module)
    assert here
    wrong = []
    for target, line, _ in imports(path):
        there = ranks(target)
        shared = [package for package in here if package in there]
        if shared:
            innermost = max(shared, key=len)
            if there[innermost] >= here[innermost]:
                wrong.append(f"line {line}: {target} is not below {module}")
    return wrong


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if ranks(module_name(p))],
    ids=lambda p: module_name(p),
)
def test_a_subpackage_imports_its_own_modules_in_order(path: Path) -> None:
    wrong = out_of_order(path, module_name(path))
    assert not wrong, "\n".join(wrong)


def test_every_module_of_an_ordered_subpackage_is_placed() -> None:
    """A new module of an ordered subpackage must be given its place."""
    for package, order in SUBPACKAGE_ORDER.items():
        folder = PACKAGE.parent / package.replace(".", "/")
        found = {p.stem for p in folder.glob("*.py")} - {"__init__"}
        found |= {p.parent.name for p in folder.glob("*/__init__.py")}
        assert found == set(order), f"{package}: place {sorted(found ^ set(order))}"


def test_the_order_check_sees_an_upward_import_in_a_subpackage() -> None:
    """The order test can fail: `symbols` importing `core` (or `core` itself) is reported;
    `core` importing `symbols` is not."""
    planted = PACKAGE / "losses" / "derivation" / "_planted_for_test.py"
    try:
        planted.write_text("from derive.losses.derivation.core import core_steps\n")
        assert out_of_order(planted, "derive.losses.derivation.symbols")
        assert out_of_order(planted, "derive.losses.derivation.core")
        assert not out_of_order(planted, "derive.losses.derivation")
        planted.write_text("from derive.losses.derivation.symbols import LOSS\n")
        assert not out_of_order(planted, "derive.losses.derivation.core")
    finally:
        planted.unlink()


def test_the_order_check_sees_an_upward_import_across_nested_packages() -> None:
    """A row of `derive.verify.rows` importing the runner (above `rows` in `derive.verify`) or
    another row is reported; the framework view, above both, may import either."""
    planted = PACKAGE / "verify" / "rows" / "_planted_for_test.py"
    try:
        planted.write_text(
            "from derive.verify.runner import run\n"
            "from derive.verify.rows.extremes import softmax_kernels\n"
            "from derive.verify.subject import Subject\n"
        )
        assert out_of_order(planted, "derive.verify.rows.differences") == [
            "line 1: derive.verify.runner is not below derive.verify.rows.differences",
            "line 2: derive.verify.rows.extremes is not below derive.verify.rows.differences",
        ]
        assert not out_of_order(planted, "derive.verify.frameworks")
    finally:
        planted.unlink()
