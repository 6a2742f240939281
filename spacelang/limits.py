"""Size limits that keep `check`, `flops` and `compile` from running away.

Every limit is checked by `check` with a location; the CLI overrides them with
`--max-NAME VALUE` (`--max-channels 100000`), the API with `limits=Limits(...)`.
Nesting depth is fixed: the walks over expressions are recursive.
"""

from __future__ import annotations

from attrs import fields, frozen

from spacelang import ast
from spacelang.diagnostics import Diagnostic, error

#: The HR output size (width, height) at which Multi-Adds are counted and sizes checked.
DEFAULT_HR = (1280, 720)

#: Expression nesting (calls, operators, parentheses) and op-inside-op inlining.
MAX_DEPTH = 100


@frozen
class Limits:
    """Upper bounds (inclusive) for one elaborated network."""

    channels: int = 65_536        # channels of any value
    kernel: int = 255             # k, stride, dilation and padding of a conv or pool
    loop: int = 10_000            # iterations of one `for` loop (the cell count)
    nodes: int = 100_000          # primitive ops after inlining every op and cell
    params: int = 10_000_000_000  # parameters of the largest architecture
    macs: int = 10**15            # Multi-Adds of the largest architecture at HR 1280×720

    def with_overrides(self, values: dict[str, int]) -> Limits:
        """A copy with some limits replaced; unknown names raise `KeyError`."""
        known = {f.name for f in fields(Limits)}
        for name in values:
            if name not in known:
                raise KeyError(name)
        return Limits(**{**{n: getattr(self, n) for n in known}, **values})


LIMIT_NAMES = tuple(f.name for f in fields(Limits))

DEFAULT_LIMITS = Limits()


_EXPRESSIONS = frozenset({ast.BinOp, ast.Neg, ast.Call, ast.Pick, ast.Index, ast.Slice,
                          ast.Keyword, ast.ForLoop})
_SKIPPED = (str, int, float, bool, ast.Span, ast.Comment, type(None))
_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    """The attribute names of an AST node class that may hold other nodes."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(a.name for a in getattr(cls, "__attrs_attrs__", ())
                                     if "span" not in a.name)
    return names


def too_deep(module: ast.Module, limit: int = MAX_DEPTH) -> tuple[int, ast.Span] | None:
    """The first expression nested deeper than `limit`, as (depth, span), or None.

    An explicit stack, so that the walk itself does not recurse.
    """
    stack: list[tuple[object, int]] = [(item, 0) for item in reversed(module.items)]
    push = stack.append
    while stack:
        node, depth = stack.pop()
        cls = type(node)
        if cls is tuple:
            for child in reversed(node):
                if not isinstance(child, _SKIPPED):
                    push((child, depth))
            continue
        if cls in _EXPRESSIONS:
            depth += 1
            if depth > limit:
                return depth, node.span
        for name in _fields(cls):
            value = getattr(node, name)
            if not isinstance(value, _SKIPPED):
                push((value, depth))
    return None


def depth_errors(module: ast.Module) -> list[Diagnostic]:
    """A located error if an expression of `module` is nested deeper than `MAX_DEPTH`."""
    found = too_deep(module)
    if found is None:
        return []
    return [error(f"expression nested more than {MAX_DEPTH} levels deep (calls, operators, "
                  "loops); split it up", found[1],
                  "name intermediate values: y1 = ..., y2 = ...")]
