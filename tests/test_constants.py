"""The constant evaluator (spacelang/constants.py): integer arithmetic in specs
that has no finite integer value is a located error, in check and in every
command that reads the spec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spacelang import ast
from spacelang.constants import ConstantError, arith, substitute
from spacelang.parser import parse


def _spec(expression: str) -> str:
    return ("network n(C = 16, scale = 1) {\n"
            f"    d = {expression}\n"
            "    return conv(input, 3, k=d)\n"
            "}\n")


@pytest.mark.parametrize(("expression", "message", "column"), [
    ("1e999 // 1", "`1e999` is not a finite number", 9),
    ("1e300 * 1e300 // 2", "`1e300 * 1e300` is not a finite number", 9),
    ("33.5 // 2", "`33.5 // 2` needs integers, but `33.5` is 33.5", 9),
    ("3 // (2 - 2)", "division by zero in `3 // (2 - 2)`", 9),
    ("7 / 2", "`7 / 2` does not divide exactly", 9),
])
def test_non_integer_constants_are_located_errors(tmp_path, cli, expression, message, column):
    path = tmp_path / "c.space"
    path.write_text(_spec(expression))
    for command in ("check", "flops"):
        code, _, err = cli(command, str(path))
        assert code == 2, err
        assert "Traceback" not in err and "internal error" not in err
        assert f"{path}:2:{column}: error: {message}" in err


def test_integral_floats_divide_and_non_integral_sizes_are_refused(tmp_path, cli):
    path = tmp_path / "c.space"
    path.write_text(_spec("6.0 // 2"))
    assert cli("check", str(path))[0] == 0
    path.write_text(_spec("7.0 / 2"))
    code, _, err = cli("check", str(path))
    assert code == 2 and "must be an integer, got 3.5" in err


@given(st.integers(-10**6, 10**6), st.integers(-10**6, 10**6),
       st.sampled_from(["+", "-", "*", "//"]))
def test_integer_arithmetic_is_python_arithmetic(a, b, op):
    expr = ast.BinOp(op, ast.Int(a), ast.Int(b))
    if op == "//" and b == 0:
        with pytest.raises(ConstantError, match="division by zero"):
            arith(expr, a, b)
        return
    assert arith(expr, a, b) == eval(f"{a} {op} {b}")


def test_substitute_folds_loop_variables_into_indices():
    expr = parse("network n() { return conv(b[i - 1], C * 2, k=i) }").items[0].body.result
    folded = substitute(expr, {"i": 3})
    assert folded == ast.Call("conv", (ast.Index("b", ast.Int(2)),
                                       ast.BinOp("*", ast.Name("C"), ast.Int(2))),
                              (ast.Keyword("k", ast.Int(3)),))
