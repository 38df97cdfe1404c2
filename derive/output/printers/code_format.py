"""Printed Python statements in the layout `ruff format` keeps, so emitted files are stable.

The code printers (`vector`, `framework_vectors`) print one statement per string; the emitted
modules must be byte-identical on every run and unchanged by `ruff format` (the golden tests and
`derive check` compare them byte for byte). `formatted` normalises one statement through `ast`
(spaces around operators, no redundant brackets); `code_block` (the templates' `code` filter, see
`derive.output.notes`) indents statements and splits one longer than `LINE_LENGTH` as ruff would:
a long sum one operand per line with leading operators, a long call with its arguments on their
own line(s). No SymPy here: only the layout of code that is already printed.
"""

from __future__ import annotations

import ast


def formatted(code: str) -> str:
    """One statement in the layout `ruff format` keeps (spaces around operators), via `ast`."""
    return ast.unparse(ast.parse(code))


LINE_LENGTH = 100


def _operand(node: ast.expr, level: tuple[type, ...]) -> str:
    """An operand as written in the split layout: lower-precedence sums keep their brackets."""
    text = ast.unparse(node)
    lower = (
        level == (ast.Mult, ast.Div)
        and isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Add | ast.Sub)
    )
    return f"({text})" if lower else text


def code_block(statements: list[str], indent: str) -> str:
    """Statements indented, each laid out as `ruff format` would at `LINE_LENGTH`.

    A long `name = a + b - c` becomes a parenthesised block: on one indented line where it fits
    there, else one operand per line with leading operators: ruff's own layout, so the emitted
    file is stable under `ruff format`.
    """
    out = []
    for stmt in statements:
        line = indent + formatted(stmt)
        if len(line) > LINE_LENGTH:
            line = _split_sum(stmt, indent) or line
        out.append(line)
    return "\n".join(out)


def _split_sum(stmt: str, indent: str) -> str | None:
    tree = ast.parse(stmt).body[0]
    if not isinstance(tree, ast.Assign | ast.AugAssign):
        return None
    operands: list[tuple[str, ast.expr]] = []
    symbols = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
    top = tree.value
    if isinstance(top, ast.Call):
        return _split_call(tree, top, indent)
    if not (isinstance(top, ast.BinOp) and type(top.op) in symbols):
        return None
    # Split at the operators of the lowest precedence at the top (ruff's layout).
    level = (ast.Add, ast.Sub) if isinstance(top.op, ast.Add | ast.Sub) else (ast.Mult, ast.Div)

    def flatten(node: ast.expr, op: str) -> None:
        if isinstance(node, ast.BinOp) and isinstance(node.op, level):
            flatten(node.left, op)
            flatten(node.right, symbols[type(node.op)])
        else:
            operands.append((op, node))

    flatten(top, "")
    if len(operands) < 2:
        return None
    target = ast.unparse(tree.targets[0] if isinstance(tree, ast.Assign) else tree.target)
    assign = "=" if isinstance(tree, ast.Assign) else ast.unparse(tree).split()[1]
    inner = indent + "    "
    one_line = inner + ast.unparse(top)
    if len(one_line) <= LINE_LENGTH:  # ruff first tries the whole sum on one bracketed line
        return f"{indent}{target} {assign} (\n{one_line}\n{indent})"
    body = [inner + (f"{op} " if op else "") + _operand(node, level) for op, node in operands]
    return f"{indent}{target} {assign} (\n" + "\n".join(body) + f"\n{indent})"


def _split_call(tree: ast.Assign | ast.AugAssign, call: ast.Call, indent: str) -> str:
    """`name = f(args)` too long for one line, in ruff's layout: the arguments on one indented
    line when they fit, else one per line with a trailing comma."""
    target = ast.unparse(tree.targets[0] if isinstance(tree, ast.Assign) else tree.target)
    assign = "=" if isinstance(tree, ast.Assign) else ast.unparse(tree).split()[1]
    args = [ast.unparse(a) for a in call.args] + [ast.unparse(k) for k in call.keywords]
    head = f"{indent}{target} {assign} {ast.unparse(call.func)}("
    inner = indent + "    "
    one_line = inner + ", ".join(args)
    if len(one_line) <= LINE_LENGTH:
        return f"{head}\n{one_line}\n{indent})"
    body = "\n".join(f"{inner}{a}," for a in args)
    return f"{head}\n{body}\n{indent})"
