"""Text → AST: the lark LALR parser and a Transformer into `spacelang.ast`.

Only lark's public API is used: `Lark(parser="lalr")` with a custom lexer class
(`lex(text)`, the documented interface) and an inline `transformer=`; lark is
pinned in pyproject.toml to the minor version this is tested with.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import threading
from pathlib import Path

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import Lexer

from spacelang import ast
from spacelang.diagnostics import Diagnostic, SpecError, error

GRAMMAR_PATH = Path(__file__).with_name("grammar.lark")

_TOKEN_NAMES = {
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`",
    "RBRACE": "`}`", "COMMA": "`,`", "EQUAL": "`=`", "COLON": "`:`", "PLUS": "`+`",
    "MINUS": "`-`", "STAR": "`*`", "SLASH": "`/`",
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "RETURN": "`return`", "FOR": "`for`", "IN": "`in`", "PICK": "`pick`", "OF": "`of`",
    "IMPORT": "`import`", "CHOICE": "`choice`", "OP": "`op`", "CELL": "`cell`",
    "NETWORK": "`network`", "SHARES": "`shares`", "TRUE": "`true`", "FALSE": "`false`",
    "DOUBLE_SLASH": "`//`", "DOUBLE_DOT": "`..`", "$END": "end of file",
}


@contextlib.contextmanager
def paused_gc():
    """No cyclic garbage collection while parsing or checking.

    Both allocate many long-lived objects and few cycles; each full collection
    walks every object, which made a 20,000-line file take twice as long per line
    as a 10,000-line one. The collector is re-enabled (if it was on) on the way out.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Lexer(Lexer):
    """The grammar's terminals as one regular expression, keywords by table look-up.

    Equivalent to lark's basic lexer (longest punctuation first, FLOAT before INT,
    a name that spells a keyword is that keyword) but with a tighter loop; lexing
    was half the parse time.
    """

    def __init__(self, conf):
        terminals = {t.name: t for t in conf.terminals}
        self.ignore = frozenset(conf.ignore)  # only these may span lines (white space)
        self.keywords = {t.pattern.value: name for name, t in terminals.items()
                         if t.pattern.type == "str" and t.pattern.value.isidentifier()}
        punctuation = sorted((t for name, t in terminals.items() if t.pattern.type == "str"
                              and name not in self.keywords.values()),
                             key=lambda t: -len(t.pattern.value))
        patterns = sorted((t for t in terminals.values() if t.pattern.type == "re"),
                          key=lambda t: -t.priority)
        self.regex = re.compile("|".join(
            [f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in patterns]
            + [f"(?P<{t.name}>{re.escape(t.pattern.value)})" for t in punctuation]))
        self.terminals = conf.terminals_by_name

    def lex(self, text: str):
        """Tokens of `text` (lark's documented custom-lexer interface: the whole input)."""
        match = self.regex.match
        keywords = self.keywords
        ignore = self.ignore
        pos, line, line_start, end = 0, 1, 0, len(text)
        new_str = str.__new__
        while pos < end:
            found = match(text, pos)
            if found is None:
                raise UnexpectedCharacters(
                    text, pos, line, pos - line_start + 1,
                    allowed={n for n in self.terminals if n not in ignore},
                    terminals_by_name=self.terminals)
            kind = found.lastgroup
            value = found.group()
            stop = found.end()
            if kind in ignore:
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = pos + value.rindex("\n") + 1
                pos = stop
                continue
            if kind == "NAME":
                kind = keywords.get(value, kind)
            column = pos - line_start + 1
            # what Token(kind, value, pos, ...) makes, without its argument handling
            token = new_str(Token, value)
            token.type, token.value, token.start_pos, token.end_pos = kind, value, pos, stop
            token.line = token.end_line = line
            token.column, token.end_column = column, column + len(value)
            yield token
            pos = stop


@functools.cache
def _lark() -> Lark:
    # The AST is built while parsing (an inline transformer): no parse tree and no
    # position propagation, which together cost two thirds of the parse time.
    # `cache=True` keeps the analysed grammar in the temp folder, for a fast start.
    return Lark(
        GRAMMAR_PATH.read_text(),
        parser="lalr",
        # not the contextual lexer: with it a keyword where no keyword fits lexes as a
        # name, so `true = relu(x)` or `in = x` were accepted; keywords are reserved.
        # `_Lexer` tokenises as lark's basic lexer would, in half the time.
        lexer=_Lexer,
        maybe_placeholders=True,
        keep_all_tokens=True,
        transformer=_ToAst(),
        cache=True,
    )


@functools.cache
def _token_names() -> dict[str, str]:
    """How to show each terminal; anonymous ones (`..`, `//`) are named by the grammar's
    order, so they are looked up from the compiled grammar rather than written out."""
    names = dict(_TOKEN_NAMES)
    for terminal in _lark().terminals:
        if terminal.pattern.type == "str":
            names[terminal.name] = f"`{terminal.pattern.value}`"
    return names


def _describe_expected(expected: set[str]) -> str:
    """The terminals in the order a reader needs them: closing brackets and `,`, keywords,
    values, then operators (which fit after almost any expression), at most six."""
    shown = _token_names()

    def rank(name: str) -> tuple[int, str]:
        text = shown.get(name, f"`{name.lower()}`")
        if name in ("RBRACE", "RPAR", "RSQB", "COMMA"):
            return 0, text
        if text.strip("`").isidentifier():
            return 1, text
        if not text.startswith("`"):
            return 2, text
        return 3, text

    names = list(dict.fromkeys(text for _, text in sorted(map(rank, expected))))
    if len(names) > 6:
        names = [*names[:6], "..."]
    return ", ".join(names)


class _BadLiteral(Exception):
    def __init__(self, diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


_VALUE_TOKENS = frozenset({"NAME", "INT", "FLOAT", "STRING"})


class _Group:
    """An intermediate result (a list of arguments, ...) and the text it covers."""

    __slots__ = ("end", "start", "value")

    def __init__(self, value, start, end):
        self.value = value
        self.start = start
        self.end = end


class _ToAst(Transformer):
    """Builds the AST during the LALR parse.

    The grammar is compiled with `keep_all_tokens`, so every callback sees the
    punctuation and keywords too: a node's span runs from the start of its first
    token to the end of its last one, and a parenthesised expression keeps its own
    span while its parent's span takes in the parentheses.
    """

    def __init__(self):
        super().__init__()
        self._local = threading.local()

    def begin(self, path: str) -> None:
        self._local.path = path
        self._local.parens = {}
        self._local.problems = []

    @property
    def problems(self) -> list:
        """Errors found while building the tree (the parse itself went on)."""
        return self._local.problems

    @property
    def path(self) -> str:
        return self._local.path

    # positions
    def _start(self, child):
        if isinstance(child, Token):
            return child.line, child.column
        paren = self._local.parens.get(id(child))
        if paren is not None:
            return paren[1]
        if isinstance(child, _Group):
            return child.start
        span = child.span
        return span.line, span.column

    def _end(self, child):
        if isinstance(child, Token):
            return child.end_line, child.end_column
        paren = self._local.parens.get(id(child))
        if paren is not None:
            return paren[2]
        if isinstance(child, _Group):
            return child.end
        span = child.span
        return span.end_line, span.end_column

    def _span(self, children) -> ast.Span:
        present = [c for c in children if c is not None and not (isinstance(c, _Group)
                                                                  and c.start is None)]
        if not present:
            return ast.Span(self.path, 1, 1, 1, 1)
        line, column = self._start(present[0])
        end_line, end_column = self._end(present[-1])
        return ast.Span(self.path, line, column, end_line, end_column)

    def _tok(self, token: Token) -> ast.Span:
        return ast.Span(self.path, token.line, token.column, token.end_line, token.end_column)

    @staticmethod
    def _values(children) -> list:
        """The children that carry meaning: no punctuation, no keywords."""
        return [c for c in children
                if not isinstance(c, Token) or c.type in _VALUE_TOKENS]

    # definitions
    def start(self, children):
        return tuple(children)

    def import_def(self, children):
        (string,) = self._values(children)
        return ast.Import(str(string)[1:-1], span=self._span(children))

    def choice_def(self, children):
        name, *candidates = self._values(children)
        return ast.ChoiceDef(str(name), tuple(candidates), span=self._span(children),
                             name_span=self._tok(name))

    def candidate(self, children):
        (name,) = self._values(children)
        return ast.Call(str(name), span=self._span(children), func_span=self._tok(name))

    def candidate_call(self, children):
        name, arguments = self._values(children)
        args, keywords = arguments.value if arguments is not None else ((), ())
        return ast.Call(str(name), args, keywords, span=self._span(children),
                        func_span=self._tok(name))

    def op_def(self, children):
        name, params, body = self._values(children)
        return ast.OpDef(str(name), params.value if params else (), body,
                         span=self._span(children), name_span=self._tok(name))

    def cell_def(self, children):
        name, params, shares, body = self._values(children)
        names, spans = shares.value if shares else ((), ())
        return ast.CellDef(str(name), params.value if params else (), names, body,
                           span=self._span(children), name_span=self._tok(name),
                           shares_spans=spans)

    def network_def(self, children):
        name, params, body = self._values(children)
        return ast.NetworkDef(str(name), params.value if params else (), body,
                              span=self._span(children), name_span=self._tok(name))

    def shares(self, children):
        names = self._values(children)
        value = tuple(str(c) for c in names), tuple(self._tok(c) for c in names)
        return _Group(value, self._start(children[0]), self._end(children[-1]))

    def parameters(self, children):
        return _Group(tuple(self._values(children)), self._start(children[0]),
                      self._end(children[-1]))

    def tensor_parameter(self, children):
        name, channels = self._values(children)
        return ast.TensorParam(str(name), channels, span=self._span(children))

    def int_parameter(self, children):
        name, default = self._values(children)
        return ast.IntParam(str(name), default, span=self._span(children))

    def width_parameter(self, children):
        name, *values = self._values(children)
        return ast.IntParam(str(name), None, span=self._span(children), choices=tuple(values))

    def required_parameter(self, children):
        (name,) = self._values(children)
        return ast.IntParam(str(name), None, span=self._span(children))

    # statements
    def body(self, children):
        *statements, returned = self._values(children)
        result, return_span = returned.value
        return ast.Body(tuple(statements), result, span=self._span(children),
                        return_span=return_span)

    def return_statement(self, children):
        (value,) = self._values(children)
        span = self._span(children)
        return _Group((value, span), (span.line, span.column), (span.end_line, span.end_column))

    def assign(self, children):
        *targets, value, shares = self._values(children)
        return ast.Assign(tuple(targets), value, shares, span=self._span(children))

    def weights_of(self, children):
        (value,) = self._values(children)
        return value

    def target(self, children):
        (name,) = self._values(children)
        return ast.Target(str(name), None, span=self._span(children))

    def indexed_target(self, children):
        name, index = self._values(children)
        return ast.Target(str(name), index, span=self._span(children))

    def for_loop(self, children):
        var, lo, hi, *body = self._values(children)
        return ast.ForLoop(str(var), lo, hi, tuple(body), span=self._span(children),
                           var_span=self._tok(var))

    # expressions
    def atom(self, children):
        """`( expr )`: the expression itself; its parent's span takes in the parentheses."""
        (inner,) = self._values(children)
        # the node is kept in the table too, so that its id is not reused during the parse
        self._local.parens[id(inner)] = (inner, self._start(children[0]),
                                         self._end(children[-1]))
        return inner

    def _binop(op):
        def build(self, children):
            left, right = self._values(children)
            return ast.BinOp(op, left, right, span=self._span(children))

        return build

    add = _binop("+")
    sub = _binop("-")
    mul = _binop("*")
    div = _binop("/")
    floordiv = _binop("//")

    def neg(self, children):
        (operand,) = self._values(children)
        if isinstance(operand, ast.Int):
            return ast.Int(-operand.value, span=self._span(children))
        return ast.Neg(operand, span=self._span(children))

    def name(self, children):
        (token,) = children
        return ast.Name(str(token), span=self._tok(token))

    def int(self, children):
        (token,) = children
        try:
            value = int(token)
        except ValueError:  # longer than Python converts (4300 digits)
            raise _BadLiteral(error(f"integer literal of {len(token)} digits is too long",
                                    self._tok(token))) from None
        return ast.Int(value, span=self._tok(token))

    def float(self, children):
        (token,) = children
        return ast.Float(float(token), str(token), span=self._tok(token))

    def vector(self, children):
        return ast.Vector(tuple(self._values(children)), span=self._span(children))

    def string(self, children):
        (token,) = children
        return ast.String(str(token)[1:-1], span=self._tok(token))

    def true(self, children):
        return ast.Bool(True, span=self._span(children))

    def false(self, children):
        return ast.Bool(False, span=self._span(children))

    def call(self, children):
        name, arguments = self._values(children)
        args, keywords = arguments.value if arguments is not None else ((), ())
        return ast.Call(str(name), args, keywords, span=self._span(children),
                        func_span=self._tok(name))

    def arguments(self, children):
        values = self._values(children)
        args = tuple(c for c in values if not isinstance(c, ast.Keyword))
        keywords = tuple(c for c in values if isinstance(c, ast.Keyword))
        if keywords and not isinstance(values[-1], ast.Keyword):
            seen_keyword = False
            for value in values:  # positional arguments after keyword ones, as in Python
                if isinstance(value, ast.Keyword):
                    seen_keyword = True
                elif seen_keyword:
                    self._local.problems.append(
                        error("positional argument follows keyword argument", value.span))
        return _Group((args, keywords), self._start(children[0]), self._end(children[-1]))

    def keyword(self, children):
        name, value = self._values(children)
        return ast.Keyword(str(name), value, span=self._span(children))

    def index(self, children):
        name, index = self._values(children)
        return ast.Index(str(name), index, span=self._span(children))

    def slice(self, children):
        name, lo, hi = self._values(children)
        return ast.Slice(str(name), lo, hi, span=self._span(children))

    def pick(self, children):
        k, source = self._values(children)
        return ast.Pick(k, source.value, span=self._span(children))

    def pick_source(self, children):
        return _Group(tuple(self._values(children)), self._start(children[0]),
                      self._end(children[-1]))


BYTE_ORDER_MARK = "\ufeff"


def without_bom(text: str) -> str:
    """`text` without a leading UTF-8 byte order mark (editors on Windows write one)."""
    return text[1:] if text.startswith(BYTE_ORDER_MARK) else text


def parse(text: str, path: str = "<string>") -> ast.Module:
    """Parse `.space` source text into an `ast.Module`; raises `SpecError`.

    A leading byte order mark is dropped (`Module.source` is the text without it).
    The tree is immutable, so the last few parses are remembered: the op library
    that every spec imports is parsed once per process, not once per check.
    """
    return _parse(without_bom(text), path)


@functools.lru_cache(maxsize=32)
def _parse(text: str, path: str) -> ast.Module:
    comments: list[ast.Comment] = []
    sources = {path: text}
    parser = _lark()
    builder = parser.options.transformer
    builder.begin(path)
    try:
        with paused_gc():
            items = parser.parse(text)
        problems = sorted(builder.problems, key=lambda d: (d.span.line, d.span.column))
    except UnexpectedInput as exc:
        raise SpecError([_syntax_diagnostic(exc, text, path)], sources) from None
    except _BadLiteral as exc:
        raise SpecError([exc.diagnostic], sources) from None
    finally:
        builder.begin("")
    if problems:
        raise SpecError(problems, sources)
    for number, line in enumerate(text.split("\n"), start=1):
        position = _comment_start(line) if "#" in line else None
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


_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_CLOSER_TOKENS = {")": "RPAR", "]": "RSQB", "}": "RBRACE"}


def _unclosed(text: str) -> list[tuple[str, int, int]]:
    """The brackets `(`, `[`, `{` still open at the end of `text`, outermost first, as
    (bracket, line, column); strings and comments are skipped."""
    stack: list[tuple[str, int, int]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        in_string = False
        for column, char in enumerate(line, start=1):
            if char == '"':
                in_string = not in_string
            elif in_string:
                continue
            elif char == "#":
                break
            elif char in _CLOSERS:
                stack.append((char, number, column))
            elif char in _CLOSER_TOKENS:
                openers = [opener for opener, _, _ in stack]
                if _CLOSERS.get(openers[-1] if openers else "") == char:
                    stack.pop()
    return stack


def _end_of_file_diagnostic(expected: set[str], text: str, path: str):
    """The file ended inside a definition: name the bracket left open where one is, with
    the caret at the end of the last line that holds anything."""
    lines = text.split("\n")  # lines as lark counts them: only \n ends a line
    line = len(lines)
    while line > 1 and not lines[line - 1].strip():
        line -= 1
    column = len(lines[line - 1].rstrip()) + 1
    span = ast.Span(path, line, column, line, column + 1)
    unclosed = _unclosed(text)
    if unclosed:
        bracket, open_line, open_column = unclosed[-1]
        closer = _CLOSERS[bracket]
        what = "block" if bracket == "{" else f"`{bracket}`"
        if _CLOSER_TOKENS[closer] in expected:
            return error(f"unexpected end of file: missing `{closer}` to close the {what} "
                         f"opened at {open_line}:{open_column}", span)
        message = f"unexpected end of file; expected {_describe_expected(expected)}"
        note = f"`{bracket}` opened at {path}:{open_line}:{open_column} is not closed"
        return Diagnostic("error", message, span, None, (note,))
    return error(f"unexpected end of file; expected {_describe_expected(expected)}", span)


def _acceptable(exc: UnexpectedInput) -> set[str]:
    """The terminals that may come where the parse stopped. The LALR table's row
    (`exc.expected`) also lists look-aheads merged in from other contexts (`)` after a
    statement), so each is tried on a copy of the parser when lark gives one."""
    interactive = getattr(exc, "interactive_parser", None)
    if interactive is not None:
        return set(interactive.accepts())
    return set(exc.expected)


def _syntax_diagnostic(exc: UnexpectedInput, text: str, path: str):
    hint = None
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
        return _end_of_file_diagnostic(_acceptable(exc), text, path)
    else:
        assert isinstance(exc, UnexpectedToken)
        token = exc.token
        acceptable = _acceptable(exc)
        message = f"unexpected `{token}`; expected {_describe_expected(acceptable)}"
        width = max(1, len(str(token)))
        if "NAME" in acceptable and token.type != "NAME" and str(token).isidentifier():
            hint = f"`{token}` is a keyword and cannot be used as a name"
    span = ast.Span(path, line, column, line, column + width)
    return error(message, span, hint)
