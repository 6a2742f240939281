"""Names the checker gives: module paths of weight-owning calls and site keys.

A weight-owning call is named after the value it defines (`d1`), or after its
op when a statement holds several (`d1.conv`, `d1.conv_2`); a call inside a
cell or composite op is prefixed by the path of that call (`b.3.d1`). A
choice or pick site is keyed by the path of the value it defines (a shared
choice by its cell's name instead of the instance), with `_2`, `_3`, ... for
further sites in one statement. Calls of cells and ops that hold choices or
picks count as weight-owning, so every instance of such a cell has its own path.
The sites inside a candidate cell of a choice are keyed under that site and
the candidate's `module_name` (`b.3.rfdb.r1`); its modules' paths are relative
to the candidate, whose module in the supernet is named the same.
"""

from __future__ import annotations

from collections.abc import Iterator

from spacelang import ast
from spacelang.primitives import PRIMITIVES
from spacelang.printer import format_expr
from spacelang.program import Program


def join(*parts: str) -> str:
    """Dotted path of the non-empty parts."""
    return ".".join(p for p in parts if p)


def target_path(target_name: str, index: int | None) -> str:
    """The path of an assigned value: `d1`, or `b.3` for `b[3]`."""
    return target_name if index is None else f"{target_name}.{index}"


def site_key(base: str, ordinal: int) -> str:
    """The key of the `ordinal`-th (0-based) site of one kind in one statement."""
    return base if ordinal == 0 else f"{base}_{ordinal + 1}"


def choice_site_base(choice: str, value_path: str, prefix: str, *, shared_in: str = "",
                     scope: str = "") -> str:
    """The key base of a choice call defining `value_path` in the body at `prefix`.

    A choice shared by a cell (`shared_in`, the cell's name; `scope`, its instance
    path) is keyed by the cell's name and the path inside the cell, so every
    instance has the same key; any other by its full path (or the choice's name).
    """
    if shared_in:
        return join(shared_in, prefix[len(scope):].lstrip("."), value_path)
    return join(prefix, value_path) or choice


def pick_site_base(prefix: str, value_path: str) -> str:
    """The key base of a pick defining `value_path` in the body at instance `prefix`."""
    return join(prefix, value_path) or "pick"


def candidate_label(call: ast.Call) -> str:
    """The display name of a choice candidate: `sep_conv_7x7`, or `sep_conv(7)`."""
    return format_expr(call) if call.args or call.keywords else call.func


def flatten(statements, loop_vars: tuple[str, ...] = ()) -> Iterator[tuple[ast.Assign, tuple]]:
    """Every assignment in a body with the loop variables around it."""
    for statement in statements:
        if isinstance(statement, ast.ForLoop):
            yield from flatten(statement.body, (*loop_vars, statement.var))
        else:
            yield statement, loop_vars


def calls_of(expr) -> Iterator[ast.Call]:
    """The calls in an expression in evaluation order (arguments before the call)."""
    if isinstance(expr, ast.Call):
        for arg in expr.args:
            yield from calls_of(arg)
        for keyword in expr.keywords:
            yield from calls_of(keyword.value)
        yield expr
    elif isinstance(expr, ast.BinOp):
        yield from calls_of(expr.left)
        yield from calls_of(expr.right)
    elif isinstance(expr, ast.Neg):
        yield from calls_of(expr.operand)
    elif isinstance(expr, ast.Pick):
        for candidate in expr.candidates:
            yield from calls_of(candidate)


def expressions_in(definition) -> Iterator:
    """The right-hand sides of a definition's body, then its result."""
    for statement, _ in flatten(definition.body.statements):
        yield statement.value
    yield definition.body.result


def calls_in(definition) -> Iterator[ast.Call]:
    """Every call in a definition's body."""
    for expr in expressions_in(definition):
        yield from calls_of(expr)


def has_pick(expr) -> bool:
    """Whether an expression holds a `pick` (the argument of a call)."""
    if isinstance(expr, ast.Pick):
        return True
    if isinstance(expr, ast.Call):
        return any(has_pick(a) for a in expr.args)
    if isinstance(expr, ast.BinOp):
        return has_pick(expr.left) or has_pick(expr.right)
    return False


def owns_weights(program: Program, name: str, memo: dict[str, bool]) -> bool:
    """Whether calling `name` creates parameters (weights, or α/β of its sites)."""
    if name in memo:
        return memo[name]
    if name in PRIMITIVES:
        return PRIMITIVES[name].has_weights
    definition = program.definitions.get(name)
    memo[name] = False
    result = False
    if isinstance(definition, ast.ChoiceDef):
        result = True
    elif isinstance(definition, (ast.OpDef, ast.CellDef)):
        result = (any(has_pick(e) for e in expressions_in(definition))
                  or any(owns_weights(program, c.func, memo) for c in calls_in(definition)))
    memo[name] = result
    return result


def holds_sites(program: Program, name: str, memo: dict[str, bool]) -> bool:
    """Whether a definition uses a choice or a pick, itself or through what it calls."""
    if name not in memo:
        definition = program.definitions.get(name)
        memo[name] = isinstance(definition, ast.ChoiceDef)
        if isinstance(definition, (ast.OpDef, ast.CellDef)):
            memo[name] = (any(has_pick(e) for e in expressions_in(definition))
                          or any(holds_sites(program, c.func, memo)
                                 for c in calls_in(definition)))
    return memo[name]


def module_name(label: str) -> str:
    """A candidate label as a name: `sep_conv(7)` → `sep_conv_7` (its module in the
    supernet, and the key part of the sites inside it)."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in label)
    return "_".join(part for part in out.split("_") if part) or "candidate"


def entity_calls(program: Program, expr, memo: dict[str, bool]) -> list[ast.Call]:
    """The calls in one statement that own weights, in evaluation order."""
    return [call for call in calls_of(expr) if owns_weights(program, call.func, memo)]


def entity_paths(calls: list[ast.Call], value: str) -> dict[int, str]:
    """Module names for the weight-owning calls of one statement, keyed by id(call).

    A statement `d1 = lrelu(conv(x, 24, k=1))` with one such call names it `d1`;
    with several, each is named `d1.conv`, `d1.esa`, `d1.conv_2`, ...; a `return`
    statement (no value name) names them after their ops.
    """
    if len(calls) == 1 and value:
        return {id(calls[0]): value}
    seen: dict[str, int] = {}
    names = {}
    for call in calls:
        seen[call.func] = seen.get(call.func, 0) + 1
        suffix = f"_{seen[call.func]}" if seen[call.func] > 1 else ""
        names[id(call)] = join(value, call.func + suffix)
    return names
