"""Text → AST: the lark LALR parser and a Transformer into `spacelang.ast`."""

from __future__ import annotations

import functools
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from spacelang import ast
from spacelang.diagnostics import SpecError, error

GRAMMAR_PATH = Path(__file__).with_name("grammar.lark")

_TOKEN_NAMES = {
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`",
    "RBRACE": "`}`", "COMMA": "`,`", "EQUAL": "`=`", "COLON": "`:`", "PLUS": "`+`",
    "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`", "__ANON_0": "`//`", "__ANON_1": "`..`",
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "RETURN": "`return`", "FOR": "`for`", "IN": "`in`", "PICK": "`pick`", "OF": "`of`",
    "IMPORT": "`import`", "CHOICE": "`choice`", "OP": "`op`", "CELL": "`cell`",
    "NETWORK": "`network`", "SHARES": "`shares`", "TRUE": "`true`", "FALSE": "`false`",
    "DOUBLE_SLASH": "`//`", "DOUBLE_DOT": "`..`", "$END": "end of file",
}


@functools.cache
def _lark() -> Lark:
    return Lark(
        GRAMMAR_PATH.read_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _describe_expected(expected: set[str]) -> str:
    names = sorted({_TOKEN_NAMES.get(name, f"`{name.lower()}`") for name in expected})
    if len(names) > 6:
        names = [*names[:6], "..."]
    return ", ".join(names)


class _ToAst(Transformer):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _span(self, meta) -> ast.Span:
        if getattr(meta, "empty", True):
            return ast.Span(self.path, 1, 1, 1, 1)
        return ast.Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tok(self, token: Token) -> ast.Span:
        return ast.Span(self.path, token.line, token.column, token.end_line, token.end_column)

    # definitions
    @v_args(meta=True)
    def start(self, meta, items):
        return tuple(items)

    @v_args(meta=True)
    def import_def(self, meta, children):
        (string,) = children
        return ast.Import(str(string)[1:-1], span=self._span(meta))

    @v_args(meta=True)
    def choice_def(self, meta, children):
        name, *candidates = children
        return ast.ChoiceDef(str(name), tuple(candidates), span=self._span(meta),
                             name_span=self._tok(name))

    @v_args(meta=True)
    def candidate(self, meta, children):
        (name,) = children
        return ast.Call(str(name), span=self._span(meta), func_span=self._tok(name))

    @v_args(meta=True)
    def candidate_call(self, meta, children):
        name, arguments = children
        args, keywords = arguments or ((), ())
        return ast.Call(str(name), args, keywords, span=self._span(meta), func_span=self._tok(name))

    @v_args(meta=True)
    def op_def(self, meta, children):
        name, params, body = children
        return ast.OpDef(str(name), params or (), body, span=self._span(meta),
                         name_span=self._tok(name))

    @v_args(meta=True)
    def cell_def(self, meta, children):
        name, params, shares, body = children
        names, spans = shares or ((), ())
        return ast.CellDef(str(name), params or (), names, body, span=self._span(meta),
                           name_span=self._tok(name), shares_spans=spans)

    @v_args(meta=True)
    def network_def(self, meta, children):
        name, params, body = children
        return ast.NetworkDef(str(name), params or (), body, span=self._span(meta),
                              name_span=self._tok(name))

    def shares(self, children):
        return tuple(str(c) for c in children), tuple(self._tok(c) for c in children)

    def parameters(self, children):
        return tuple(children)

    @v_args(meta=True)
    def tensor_parameter(self, meta, children):
        name, channels = children
        return ast.TensorParam(str(name), channels, span=self._span(meta))

    @v_args(meta=True)
    def int_parameter(self, meta, children):
        name, default = children
        return ast.IntParam(str(name), default, span=self._span(meta))

    @v_args(meta=True)
    def required_parameter(self, meta, children):
        (name,) = children
        return ast.IntParam(str(name), None, span=self._span(meta))

    # statements
    @v_args(meta=True)
    def body(self, meta, children):
        *statements, (result, return_span) = children
        return ast.Body(tuple(statements), result, span=self._span(meta), return_span=return_span)

    @v_args(meta=True)
    def return_statement(self, meta, children):
        (value,) = children
        return value, self._span(meta)

    @v_args(meta=True)
    def assign(self, meta, children):
        *targets, value = children
        return ast.Assign(tuple(targets), value, span=self._span(meta))

    @v_args(meta=True)
    def target(self, meta, children):
        (name,) = children
        return ast.Target(str(name), None, span=self._span(meta))

    @v_args(meta=True)
    def indexed_target(self, meta, children):
        name, index = children
        return ast.Target(str(name), index, span=self._span(meta))

    @v_args(meta=True)
    def for_loop(self, meta, children):
        var, lo, hi, *body = children
        return ast.ForLoop(str(var), lo, hi, tuple(body), span=self._span(meta),
                           var_span=self._tok(var))

    # expressions
    def _binop(op):
        @v_args(meta=True)
        def build(self, meta, children):
            left, right = children
            return ast.BinOp(op, left, right, span=self._span(meta))

        return build

    add = _binop("+")
    sub = _binop("-")
    mul = _binop("*")
    div = _binop("/")
    floordiv = _binop("//")

    @v_args(meta=True)
    def neg(self, meta, children):
        (operand,) = children
        if isinstance(operand, ast.Int):
            return ast.Int(-operand.value, span=self._span(meta))
        return ast.Neg(operand, span=self._span(meta))

    @v_args(meta=True)
    def name(self, meta, children):
        (token,) = children
        return ast.Name(str(token), span=self._span(meta))

    @v_args(meta=True)
    def int(self, meta, children):
        (token,) = children
        return ast.Int(int(token), span=self._span(meta))

    @v_args(meta=True)
    def float(self, meta, children):
        (token,) = children
        return ast.Float(float(token), str(token), span=self._span(meta))

    @v_args(meta=True)
    def true(self, meta, children):
        return ast.Bool(True, span=self._span(meta))

    @v_args(meta=True)
    def false(self, meta, children):
        return ast.Bool(False, span=self._span(meta))

    @v_args(meta=True)
    def call(self, meta, children):
        name, arguments = children
        args, keywords = arguments or ((), ())
        return ast.Call(str(name), args, keywords, span=self._span(meta), func_span=self._tok(name))

    def arguments(self, children):
        args = tuple(c for c in children if not isinstance(c, ast.Keyword))
        keywords = tuple(c for c in children if isinstance(c, ast.Keyword))
        return args, keywords

    @v_args(meta=True)
    def keyword(self, meta, children):
        name, value = children
        return ast.Keyword(str(name), value, span=self._span(meta))

    @v_args(meta=True)
    def index(self, meta, children):
        name, index = children
        return ast.Index(str(name), index, span=self._span(meta))

    @v_args(meta=True)
    def slice(self, meta, children):
        name, lo, hi = children
        return ast.Slice(str(name), lo, hi, span=self._span(meta))

    @v_args(meta=True)
    def pick(self, meta, children):
        k, source = children
        return ast.Pick(k, source, span=self._span(meta))

    def pick_source(self, children):
        return tuple(children)


def _check_keyword_order(items: tuple[ast.Definition, ...], path: str) -> list:
    """Positional arguments after keyword ones are a syntax error, as in Python."""
    problems = []

    def visit_expr(expr):
        if isinstance(expr, ast.Call):
            seen_keyword = False
            for node in sorted([*expr.args, *expr.keywords],
                               key=lambda n: (n.span.line, n.span.column)):
                if isinstance(node, ast.Keyword):
                    seen_keyword = True
                elif seen_keyword:
                    problems.append(error("positional argument follows keyword argument",
                                          node.span))
            for arg in expr.args:
                visit_expr(arg)
            for keyword in expr.keywords:
                visit_expr(keyword.value)
        elif isinstance(expr, ast.BinOp):
            visit_expr(expr.left)
            visit_expr(expr.right)
        elif isinstance(expr, ast.Neg):
            visit_expr(expr.operand)
        elif isinstance(expr, ast.Pick):
            for candidate in expr.candidates:
                visit_expr(candidate)

    def visit_statements(statements):
        for statement in statements:
            if isinstance(statement, ast.Assign):
                visit_expr(statement.value)
            else:
                visit_statements(statement.body)

    for item in items:
        if isinstance(item, ast.ChoiceDef):
            for candidate in item.candidates:
                visit_expr(candidate)
        elif isinstance(item, (ast.OpDef, ast.CellDef, ast.NetworkDef)):
            visit_statements(item.body.statements)
            visit_expr(item.body.result)
    return problems


def parse(text: str, path: str = "<string>") -> ast.Module:
    """Parse `.space` source text into an `ast.Module`; raises `SpecError`."""
    comments: list[ast.Comment] = []
    sources = {path: text}
    try:
        tree = _lark().parse(text, on_error=None)
    except UnexpectedInput as exc:
        raise SpecError([_syntax_diagnostic(exc, text, path)], sources) from None
    items = _ToAst(path).transform(tree)
    problems = _check_keyword_order(items, path)
    if problems:
        raise SpecError(problems, sources)
    for number, line in enumerate(text.splitlines(), start=1):
        position = _comment_start(line)
        if position is not None:
            comments.append(ast.Comment(line[position:].rstrip(), number, position + 1))
    return ast.Module(items, path=path, comments=tuple(comments), source=text)


def _comment_start(line: str) -> int | None:
    """Column (0-based) where a `#` comment starts, ignoring `#` inside strings."""
    in_string = False
    for i, char in enumerate(line):
        if char == '"':
            in_string = not in_string
        elif char == "#" and not in_string:
            return i
    return None


def _syntax_diagnostic(exc: UnexpectedInput, text: str, path: str):
    line = getattr(exc, "line", None) or 1
    column = getattr(exc, "column", None) or 1
    if line < 1:
        line, column = 1, 1
    if isinstance(exc, UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        message = f"unexpected character `{char}`"
        width = 1
    elif isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    ):
        lines = text.splitlines() or [""]
        line = len(lines)
        column = len(lines[-1]) + 1
        expected = _describe_expected(set(exc.expected))
        message = f"unexpected end of file; expected {expected}"
        width = 1
    else:
        assert isinstance(exc, UnexpectedToken)
        token = exc.token
        expected = _describe_expected(set(exc.expected))
        message = f"unexpected `{token}`; expected {expected}"
        width = max(1, len(str(token)))
    span = ast.Span(path, line, column, line, column + width)
    return error(message, span)
