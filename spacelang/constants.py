"""The one constant evaluator: integer and number arithmetic on spec expressions.

The checker evaluates parameters, loop bounds, indices and arguments with it;
derivation folds substituted loop variables with it. Values are Python `int`
(unbounded), `float` (finite only) or `bool`, and per-channel vectors
(`[0.4488, 0.4371, 0.4040] * 255`), a tuple of numbers: arithmetic between a
vector and a number applies to each item, between two vectors of one length
item by item. Every failure is a located
`ConstantError`: division by zero, inexact `/` on integers, `//` on a value
that is not an integer, and results that are not finite numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Union

from spacelang import ast
from spacelang.diagnostics import Diagnostic, error
from spacelang.printer import format_expr

Number = Union[int, float, bool]
Value = Union[Number, tuple[Number, ...]]


class ConstantError(Exception):
    """A constant expression that has no value; carries the located diagnostic."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def _fail(message: str, span: ast.Span, hint: str | None = None):
    raise ConstantError(error(message, span, hint))


def _finite(value: Number, expr) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        _fail(f"`{format_expr(expr)}` is not a finite number ({value})", expr.span)
    return value


def _whole(value: Number, expr, side) -> int:
    """An operand of `//` as an integer: integral finite floats are accepted."""
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            _fail(f"`{format_expr(expr)}` needs integers, but `{format_expr(side)}` is "
                  f"{value}", side.span, "`//` divides integers")
        return int(value)
    return int(value)


def arith(expr: ast.BinOp, left: Value, right: Value) -> Value:
    """`left expr.op right`, or a located `ConstantError`; vectors item by item."""
    if isinstance(left, tuple) or isinstance(right, tuple):
        if expr.op == "//":
            _fail("`//` divides integers, not per-channel constants", expr.span)
        if isinstance(left, tuple) and isinstance(right, tuple) and len(left) != len(right):
            _fail(f"cannot combine constants of {len(left)} and {len(right)} values",
                  expr.span)
        n = len(left) if isinstance(left, tuple) else len(right)
        lefts = left if isinstance(left, tuple) else (left,) * n
        rights = right if isinstance(right, tuple) else (right,) * n
        return tuple(_arith(expr, float(a), float(b)) for a, b in zip(lefts, rights,
                                                                        strict=True))
    return _arith(expr, left, right)


def _arith(expr: ast.BinOp, left: Number, right: Number) -> Number:
    try:
        if expr.op == "+":
            return _finite(left + right, expr)
        if expr.op == "-":
            return _finite(left - right, expr)
        if expr.op == "*":
            return _finite(left * right, expr)
        if expr.op == "//":
            a, b = _whole(left, expr, expr.left), _whole(right, expr, expr.right)
            if b == 0:
                _fail(f"division by zero in `{format_expr(expr)}`", expr.span)
            return a // b
        if right == 0:
            _fail(f"division by zero in `{format_expr(expr)}`", expr.span)
        if isinstance(left, int) and isinstance(right, int) and not isinstance(left, bool):
            if left % right:
                _fail(f"`{format_expr(expr)}` does not divide exactly: {left} / {right} = "
                      f"{left / right:g}", expr.span, "use // for floor division")
            return left // right
        return _finite(left / right, expr)
    except OverflowError:
        _fail(f"`{format_expr(expr)}` is too large to compute", expr.span)


def evaluate(expr, lookup: Callable[[ast.Name], Value]) -> Value:
    """The value of a constant expression; `lookup` gives (or rejects) each name."""
    if isinstance(expr, (ast.Int, ast.Bool)):
        return expr.value
    if isinstance(expr, ast.Vector):
        items = []
        for item in expr.items:
            value = evaluate(item, lookup)
            if isinstance(value, tuple):
                _fail("a per-channel constant holds numbers, not lists", item.span)
            items.append(float(value))
        return tuple(items)
    if isinstance(expr, ast.Float):
        return _finite(expr.value, expr)
    if isinstance(expr, ast.Name):
        return lookup(expr)
    if isinstance(expr, ast.Neg):
        value = evaluate(expr.operand, lookup)
        return tuple(-v for v in value) if isinstance(value, tuple) else -value
    if isinstance(expr, ast.BinOp):
        return arith(expr, evaluate(expr.left, lookup), evaluate(expr.right, lookup))
    if isinstance(expr, ast.String):
        _fail(f"expected a number, got the string \"{expr.value}\"", expr.span)
    _fail("expected an integer expression", expr.span)


def describe(value: Value) -> str:
    """A value as a message shows it."""
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return repr(value)


def require_int(value: Value, expr, what: str) -> int:
    """`value` where an integer is needed: a `bool` or a `float` is an error at `expr`."""
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{what} must be an integer, got {describe(value)}", expr.span)
    return value


def is_number_expr(expr, kinds: Mapping[str, str]) -> bool:
    """Whether `expr` is number arithmetic (a `let`, as `d = C // 4`); `kinds[name] == "int"`
    marks the names that hold numbers."""
    if isinstance(expr, (ast.Int, ast.Float, ast.Bool, ast.Vector)):
        return True
    if isinstance(expr, ast.Name):
        return kinds.get(expr.name) == "int"
    if isinstance(expr, ast.Neg):
        return is_number_expr(expr.operand, kinds)
    if isinstance(expr, ast.BinOp):
        return is_number_expr(expr.left, kinds) and is_number_expr(expr.right, kinds)
    return False


def substitute(expr, env: Mapping[str, int]):
    """`expr` with the names in `env` replaced by their values and integer
    arithmetic on literals folded (as `b[i - 1]` with i = 3 → `b[2]`)."""
    if isinstance(expr, ast.Name):
        return ast.Int(env[expr.name], span=expr.span) if expr.name in env else expr
    if isinstance(expr, ast.BinOp):
        left, right = substitute(expr.left, env), substitute(expr.right, env)
        folded = ast.BinOp(expr.op, left, right, span=expr.span)
        if isinstance(left, ast.Int) and isinstance(right, ast.Int):
            try:
                return ast.Int(arith(folded, left.value, right.value), span=expr.span)
            except ConstantError:
                return folded
        return folded
    if isinstance(expr, ast.Neg):
        inner = substitute(expr.operand, env)
        if isinstance(inner, ast.Int):
            return ast.Int(-inner.value, span=expr.span)
        return ast.Neg(inner, span=expr.span)
    if isinstance(expr, ast.Vector):
        return ast.Vector(tuple(substitute(item, env) for item in expr.items), span=expr.span)
    if isinstance(expr, ast.Index):
        return ast.Index(expr.name, substitute(expr.index, env), span=expr.span)
    if isinstance(expr, ast.Slice):
        return ast.Slice(expr.name, substitute(expr.lo, env), substitute(expr.hi, env),
                         span=expr.span)
    if isinstance(expr, ast.Call):
        return ast.Call(expr.func, tuple(substitute(a, env) for a in expr.args),
                        tuple(ast.Keyword(k.name, substitute(k.value, env), span=k.span)
                              for k in expr.keywords),
                        span=expr.span, func_span=expr.func_span)
    if isinstance(expr, ast.Pick):
        return ast.Pick(substitute(expr.k, env),
                        tuple(substitute(c, env) for c in expr.candidates), span=expr.span)
    return expr
