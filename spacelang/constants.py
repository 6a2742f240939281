"""The one constant evaluator: integer and number arithmetic on spec expressions.

The checker evaluates parameters, loop bounds, indices and arguments with it;
derivation folds substituted loop variables with it. Values are Python `int`
(unbounded), `float` (finite only) or `bool`. Every failure is a located
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


def arith(expr: ast.BinOp, left: Number, right: Number) -> Number:
    """`left expr.op right`, or a located `ConstantError`."""
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


def evaluate(expr, lookup: Callable[[ast.Name], Number]) -> Number:
    """The value of a constant expression; `lookup` gives (or rejects) each name."""
    if isinstance(expr, (ast.Int, ast.Bool)):
        return expr.value
    if isinstance(expr, ast.Float):
        return _finite(expr.value, expr)
    if isinstance(expr, ast.Name):
        return lookup(expr)
    if isinstance(expr, ast.Neg):
        return -evaluate(expr.operand, lookup)
    if isinstance(expr, ast.BinOp):
        return arith(expr, evaluate(expr.left, lookup), evaluate(expr.right, lookup))
    _fail("expected an integer expression", expr.span)


def require_int(value: Number, expr, what: str) -> int:
    """`value` where an integer is needed: a `bool` or a `float` is an error at `expr`."""
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{what} must be an integer, got {value!r}", expr.span)
    return value


def is_number_expr(expr, kinds: Mapping[str, str]) -> bool:
    """Whether `expr` is number arithmetic (a `let`, as `d = C // 4`); `kinds[name] == "int"`
    marks the names that hold numbers."""
    if isinstance(expr, (ast.Int, ast.Float, ast.Bool)):
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
