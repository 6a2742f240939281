"""Parsing: every construct of the grammar, operator precedence, comments and spans."""

from __future__ import annotations

import textwrap

import pytest

from spacelang import ast
from spacelang.diagnostics import SpecError
from spacelang.parser import parse

N = ast.Name
I = ast.Int


def parse_text(text: str) -> ast.Module:
    return parse(textwrap.dedent(text), "t.space")


def only(text: str):
    """The single item of a file."""
    (item,) = parse_text(text).items
    return item


def expr(text: str):
    """One expression, parsed as the result of an op."""
    return only(f"op f() {{\n    return {text}\n}}\n").body.result


def statements(text: str) -> tuple:
    body = textwrap.indent(textwrap.dedent(text), "    ")
    return only(f"op f() {{\n{body}    return x\n}}\n").body.statements


# ------------------------------------------------------------------ definitions


def test_empty_file():
    module = parse("", "t.space")
    assert module.items == ()
    assert module.comments == ()
    assert module.path == "t.space"


def test_import():
    module = parse_text('import "ops.space"\nimport "lib/more ops.space"\n')
    assert module.items == (ast.Import("ops.space"), ast.Import("lib/more ops.space"))


def test_choice_with_bare_and_called_candidates():
    choice = only("choice light = [conv_1x1, sep_conv(7, out=8), dil_conv(), relu,]\n")
    assert choice == ast.ChoiceDef("light", (
        ast.Call("conv_1x1"),
        ast.Call("sep_conv", (I(7),), (ast.Keyword("out", I(8)),)),
        ast.Call("dil_conv"),
        ast.Call("relu"),
    ))


def test_empty_choice_parses_and_is_left_to_the_checker():
    assert only("choice nothing = []\n") == ast.ChoiceDef("nothing", ())


def test_op_with_tensor_int_and_required_params():
    op = only("""\
        op sep_conv(x: c, k, out = c, d = 2 * k + 1) {
            return conv(x, out, k=k)
        }
        """)
    assert op == ast.OpDef(
        "sep_conv",
        (ast.TensorParam("x", N("c")), ast.IntParam("k"), ast.IntParam("out", N("c")),
         ast.IntParam("d", ast.BinOp("+", ast.BinOp("*", I(2), N("k")), I(1)))),
        ast.Body((), ast.Call("conv", (N("x"), N("out")), (ast.Keyword("k", N("k")),))),
    )


def test_tensor_param_with_a_channel_expression():
    op = only("op f(x: 3 * C, y: 16,) {\n    return x\n}\n")
    assert op.params == (ast.TensorParam("x", ast.BinOp("*", I(3), N("C"))),
                         ast.TensorParam("y", I(16)))


def test_cell_with_shares():
    cell = only("cell rfdb(x: C) shares light, refine {\n    return light(x)\n}\n")
    assert cell == ast.CellDef("rfdb", (ast.TensorParam("x", N("C")),), ("light", "refine"),
                               ast.Body((), ast.Call("light", (N("x"),))))
    assert [(s.line, s.column) for s in cell.shares_spans] == [(1, 24), (1, 31)]


def test_cell_without_shares():
    assert only("cell c(x: C) {\n    return x\n}\n").shares == ()


def test_network_without_params():
    network = only("network n() {\n    return input\n}\n")
    assert network == ast.NetworkDef("n", (), ast.Body((), N("input")))


def test_items_keep_their_order():
    module = parse_text("""\
        import "ops.space"
        choice c = [relu]
        op o(x: c) {
            return x
        }
        cell k(x: c) {
            return x
        }
        network n() {
            return input
        }
        """)
    kinds = [type(item).__name__ for item in module.items]
    assert kinds == ["Import", "ChoiceDef", "OpDef", "CellDef", "NetworkDef"]


# ------------------------------------------------------------------ statements


def test_assign():
    assert statements("a = relu(x)\n") == (
        ast.Assign((ast.Target("a"),), ast.Call("relu", (N("x"),))),)


def test_multi_target_assign():
    (assign,) = statements("d1, r1 = split(c1, d, C - d)\n")
    assert assign.targets == (ast.Target("d1"), ast.Target("r1"))
    assert assign.value == ast.Call("split", (N("c1"), N("d"), ast.BinOp("-", N("C"), N("d"))))


def test_indexed_targets():
    (first, second) = statements("b[1] = relu(x)\nb[i + 1], r = split(b[i], 2, 2)\n")
    assert first.targets == (ast.Target("b", I(1)),)
    assert second.targets == (ast.Target("b", ast.BinOp("+", N("i"), I(1))), ast.Target("r"))
    assert second.value.args[0] == ast.Index("b", N("i"))


def test_for_loop_nested():
    (loop,) = statements("""\
        for i in 2..cells {
            for j in 1..i - 1 {
                a[j] = relu(x)
            }
            b[i] = relu(b[i - 1])
        }
        """)
    assert loop.var == "i"
    assert loop.lo == I(2)
    assert loop.hi == N("cells")
    inner, assign = loop.body
    assert inner == ast.ForLoop("j", I(1), ast.BinOp("-", N("i"), I(1)), (
        ast.Assign((ast.Target("a", N("j")),), ast.Call("relu", (N("x"),))),))
    assert assign.targets == (ast.Target("b", N("i")),)


def test_empty_for_loop():
    (loop,) = statements("for i in 1..3 {\n}\n")
    assert loop.body == ()


def test_a_body_needs_a_return():
    with pytest.raises(SpecError) as info:
        parse("op f(x: c) {\n    a = x\n}\n", "t.space")
    assert "unexpected `}`" in info.value.first.message


# ------------------------------------------------------------------ expressions


def test_literals():
    assert expr("42") == I(42)
    assert expr("-7") == I(-7)
    assert expr("true") == ast.Bool(True)
    assert expr("false") == ast.Bool(False)


@pytest.mark.parametrize("text, value", [
    ("0.05", 0.05), ("1.5e3", 1500.0), ("2e-3", 0.002), ("7E+2", 700.0), ("10.0", 10.0),
])
def test_floats_keep_their_spelling(text, value):
    node = expr(text)
    assert node == ast.Float(value)
    assert node.text == text


def test_negative_float_is_a_negation():
    assert expr("-0.5") == ast.Neg(ast.Float(0.5))


def test_negation_of_names_and_parentheses():
    assert expr("-x") == ast.Neg(N("x"))
    assert expr("--x") == ast.Neg(ast.Neg(N("x")))
    assert expr("-(a + 1)") == ast.Neg(ast.BinOp("+", N("a"), I(1)))
    assert expr("-(3)") == I(-3)


@pytest.mark.parametrize("text, tree", [
    ("a + b * c", ("+", "a", ("*", "b", "c"))),
    ("a * b + c", ("+", ("*", "a", "b"), "c")),
    ("a - b - c", ("-", ("-", "a", "b"), "c")),
    ("a - (b - c)", ("-", "a", ("-", "b", "c"))),
    ("a // b * c", ("*", ("//", "a", "b"), "c")),
    ("a / b // c", ("//", ("/", "a", "b"), "c")),
    ("(a + b) * c", ("*", ("+", "a", "b"), "c")),
    ("a * (b + c) - d", ("-", ("*", "a", ("+", "b", "c")), "d")),
    ("3 * scale * scale", ("*", ("*", 3, "scale"), "scale")),
    ("-a * b", ("*", ("neg", "a"), "b")),
    ("a - -2", ("-", "a", -2)),
])
def test_operator_precedence_and_associativity(text, tree):
    def build(shape):
        if isinstance(shape, str):
            return N(shape)
        if isinstance(shape, int):
            return I(shape)
        if shape[0] == "neg":
            return ast.Neg(build(shape[1]))
        op, left, right = shape
        return ast.BinOp(op, build(left), build(right))

    assert expr(text) == build(tree)


def test_call_with_positional_and_keyword_arguments():
    call = expr("conv(x, C // 2, k=1, bias=false)")
    assert call == ast.Call(
        "conv", (N("x"), ast.BinOp("//", N("C"), I(2))),
        (ast.Keyword("k", I(1)), ast.Keyword("bias", ast.Bool(False))))


def test_call_without_arguments_and_trailing_comma():
    assert expr("f()") == ast.Call("f")
    assert expr("f(a, b,)") == ast.Call("f", (N("a"), N("b")))


def test_nested_calls_and_tensor_arithmetic():
    assert expr("act(light(x) + x)") == ast.Call(
        "act", (ast.BinOp("+", ast.Call("light", (N("x"),)), N("x")),))


def test_index_and_slice():
    assert expr("b[i - 1]") == ast.Index("b", ast.BinOp("-", N("i"), I(1)))
    call = expr("concat(b[1..cells], x)")
    assert call.args == (ast.Slice("b", I(1), N("cells")), N("x"))


def test_slice_with_float_like_bounds_lexes_as_integers():
    # `1..2` is the integers 1 and 2, not the number `1.` and `.2`
    assert expr("concat(b[1..2])").args == (ast.Slice("b", I(1), I(2)),)


def test_pick_of_a_list_and_of_a_slice():
    assert expr("concat(pick 2 of [a, b[1..3], c])").args == (
        ast.Pick(I(2), (N("a"), ast.Slice("b", I(1), I(3)), N("c"))),)
    assert expr("sum(pick k + 1 of b[1..i - 1])").args == (
        ast.Pick(ast.BinOp("+", N("k"), I(1)),
                 (ast.Slice("b", I(1), ast.BinOp("-", N("i"), I(1))),)),)


def test_pick_of_a_bracketed_slice_is_the_same_as_the_bare_slice():
    assert expr("concat(pick 1 of [b[1..2]])") == expr("concat(pick 1 of b[1..2])")


def test_keyword_like_names_are_names():
    assert expr("forx + input + picks + of_ + true1") == ast.BinOp(
        "+", ast.BinOp("+", ast.BinOp("+", ast.BinOp("+", N("forx"), N("input")), N("picks")),
                       N("of_")), N("true1"))


@pytest.mark.parametrize("keyword", ["import", "choice", "op", "cell", "network", "shares",
                                     "return", "for", "in", "pick", "of", "true", "false"])
def test_keywords_cannot_be_value_names(keyword):
    with pytest.raises(SpecError):
        parse(f"op f(x: c) {{\n    {keyword} = relu(x)\n    return x\n}}\n", "t.space")


def test_positional_after_keyword_is_rejected():
    with pytest.raises(SpecError) as info:
        parse("op f(x: c) {\n    return conv(x, k=3, 8)\n}\n", "t.space")
    assert info.value.first.message == "positional argument follows keyword argument"


# ------------------------------------------------------------------ comments


def test_comments_are_collected_with_their_positions():
    module = parse_text("""\
        # file header
        import "ops.space"  # the library

        op f(x: c) {
            # inside
            return x  # trailing
        }
        """)
    assert [(c.text, c.line, c.column) for c in module.comments] == [
        ("# file header", 1, 1), ("# the library", 2, 21), ("# inside", 5, 5),
        ("# trailing", 6, 15)]
    assert module.items[0] == ast.Import("ops.space")


def test_hash_inside_a_string_is_not_a_comment():
    module = parse('import "a#b.space"  # real\n', "t.space")
    assert module.items == (ast.Import("a#b.space"),)
    assert [c.text for c in module.comments] == ["# real"]


def test_comment_only_file():
    module = parse("# nothing here\n# at all\n", "t.space")
    assert module.items == ()
    assert len(module.comments) == 2


# ------------------------------------------------------------------ layout and spans


def test_layout_does_not_change_the_tree():
    tight = parse("op f(x:c,k){return conv(x,c,k=k)}", "a.space")
    loose = parse("op  f ( x : c ,\n k )\n{\n\n  return conv( x , c ,\n k = k )\n}\n", "b.space")
    assert tight == loose
    assert tight.items[0].span != loose.items[0].span


def _span(node) -> tuple[int, int, int, int]:
    s = node.span
    return s.line, s.column, s.end_line, s.end_column


SOURCE = """\
import "ops.space"

choice light = [conv_1x1, sep_conv(7)]

cell rfdb(x: C) shares light {
    d = C // 4
    a, b = split(x, d, C - d)
    for i in 1..2 {
        v[i] = (a + b) * light(x)
    }
    return concat(pick 1 of [v[1], v[2]])
}
"""


@pytest.fixture(scope="module")
def module():
    return parse(SOURCE, "spans.space")


def test_spans_of_definitions(module):
    imp, choice, cell = module.items
    assert imp.span == ast.Span("spans.space", 1, 1, 1, 19)
    assert _span(choice) == (3, 1, 3, 39)
    assert (choice.name_span.line, choice.name_span.column) == (3, 8)
    assert _span(choice.candidates[1]) == (3, 27, 3, 38)
    assert (choice.candidates[1].func_span.column, choice.candidates[1].func_span.end_column) \
        == (27, 35)
    assert _span(cell) == (5, 1, 12, 2)
    assert (cell.name_span.line, cell.name_span.column, cell.name_span.end_column) == (5, 6, 10)
    assert _span(cell.params[0]) == (5, 11, 5, 15)
    assert _span(cell.body) == (5, 30, 12, 2)


def test_spans_of_statements(module):
    cell = module.items[2]
    let, split, loop = cell.body.statements
    assert _span(let) == (6, 5, 6, 15)
    assert _span(let.value) == (6, 9, 6, 15)
    assert _span(split) == (7, 5, 7, 30)
    assert [_span(t) for t in split.targets] == [(7, 5, 7, 6), (7, 8, 7, 9)]
    assert _span(loop) == (8, 5, 10, 6)
    assert (loop.var_span.line, loop.var_span.column) == (8, 9)
    (assign,) = loop.body
    assert _span(assign.targets[0]) == (9, 9, 9, 13)
    assert _span(cell.body) == (5, 30, 12, 2)
    assert cell.body.return_span.line == 11
    assert _span(cell.body.result) == (11, 12, 11, 42)


def test_spans_of_expressions(module):
    (assign,) = module.items[2].body.statements[2].body
    product = assign.value
    # the product's span takes in the parentheses; the sum inside keeps its own
    assert _span(product) == (9, 16, 9, 34)
    assert _span(product.left) == (9, 17, 9, 22)
    assert _span(product.right) == (9, 26, 9, 34)
    assert (product.right.func_span.column, product.right.func_span.end_column) == (26, 31)
    pick = module.items[2].body.result.args[0]
    assert _span(pick) == (11, 19, 11, 41)
    assert _span(pick.k) == (11, 24, 11, 25)
    assert [_span(c) for c in pick.candidates] == [(11, 30, 11, 34), (11, 36, 11, 40)]


def test_span_of_a_negative_literal_covers_the_sign():
    node = expr("- 5")
    assert node == I(-5)
    assert _span(node) == (2, 12, 2, 15)


def test_span_path_is_the_given_path():
    module = parse('import "x"\n', "some/where.space")
    assert module.items[0].span.path == "some/where.space"
    assert module.path == "some/where.space"
    assert module.source == 'import "x"\n'
