"""Property tests of the front end.

(a) Round trips: any syntactically printable AST survives `format_module` →
    `parse`, and formatting is idempotent (comments included).
(b) Robustness: any text ends in a checked network or a `SpecError` whose
    diagnostics point inside the text, never in another exception.
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark
from lark.exceptions import UnexpectedCharacters
from lark.grammar import NonTerminal

from spacelang import ast
from spacelang.api import format_source, loads
from spacelang.diagnostics import SpecError
from spacelang.parser import GRAMMAR_PATH, _lark, _Lexer, parse
from spacelang.printer import format_module
from tests.paths import SPACES as SPACES_DIR

SHIPPED = tuple(sorted(SPACES_DIR.glob("*.space")))

KEYWORDS = {"import", "choice", "op", "cell", "network", "shares", "return", "for", "in",
            "pick", "of", "true", "false"}

PROPERTY = settings(max_examples=2000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])

# ------------------------------------------------------------------ AST strategies

# Short names; several start like a keyword, to exercise the lexer's keyword boundaries.
NAMES = ["a", "b", "x", "C", "k", "_t", "x1", "input", "forx", "picks", "of_", "true1",
         "falsey", "in2", "returns", "cells", "op_", "network2", "importer", "shares_"]
assert not KEYWORDS & set(NAMES)
names = st.sampled_from(NAMES)

# Negative integers are `Int(-n)`: the parser folds `-<literal>` into the literal, so
# `Neg(Int(n))` does not round-trip (it is never generated).
ints = st.integers(min_value=-50, max_value=10**12).map(ast.Int)
# Floats are non-negative (a minus sign is a `Neg`) and their repr round-trips.
floats = st.sampled_from([0.0, 0.5, 1.5, 2.25, 1e-05, 1e16, 123.125, 3e-07, 7.0]).map(
    lambda v: ast.Float(v, repr(v)))
# (one draw for most leaves: generation, not the code under test, dominates the time)
leaves = st.one_of(
    st.sampled_from([ast.Name(n) for n in NAMES] + [ast.Bool(True), ast.Bool(False)]
                    + [ast.Int(n) for n in (0, 1, 2, 3, 16, -1, -7, 10**12)]
                    + [ast.String(v) for v in ("nearest", "", "a b")]),
    ints, floats)


def _slices(exprs):
    return st.builds(ast.Slice, names, exprs, exprs)


def _extend(exprs):
    args = st.lists(st.one_of(exprs, _slices(exprs)), max_size=2).map(tuple)
    keywords = st.lists(st.builds(ast.Keyword, names, exprs), max_size=1).map(tuple)
    return st.one_of(
        st.builds(ast.BinOp, st.sampled_from(["+", "-", "*", "/", "//"]), exprs, exprs),
        exprs.filter(lambda e: not isinstance(e, ast.Int)).map(ast.Neg),
        st.builds(ast.Index, names, exprs),
        st.builds(ast.Call, names, args, keywords),
        st.builds(ast.Pick, exprs,
                  st.lists(st.one_of(exprs, _slices(exprs)), min_size=1, max_size=2).map(tuple)),
        st.builds(ast.Vector, st.lists(exprs, min_size=1, max_size=3).map(tuple)),
    )


exprs = st.recursive(leaves, _extend, max_leaves=4)
targets = st.builds(ast.Target, names, st.none() | exprs)
shared_values = st.one_of(names.map(ast.Name), st.builds(ast.Index, names, exprs))
assigns = st.builds(ast.Assign, st.lists(targets, min_size=1, max_size=2).map(tuple), exprs,
                    st.none() | shared_values)
loops = st.builds(ast.ForLoop, names, exprs, exprs, st.lists(assigns, max_size=2).map(tuple))
statements = st.lists(st.one_of(assigns, loops), max_size=2).map(tuple)
bodies = st.builds(ast.Body, statements, exprs)
params = st.lists(
    st.one_of(st.builds(ast.TensorParam, names, exprs),
              st.builds(ast.IntParam, names, st.none() | exprs)),
    max_size=2).map(tuple)
candidates = st.one_of(
    names.map(ast.Call),
    st.builds(ast.Call, names, st.lists(st.one_of(exprs, _slices(exprs)), max_size=2).map(tuple),
              st.lists(st.builds(ast.Keyword, names, exprs), max_size=1).map(tuple)),
)
definitions = st.one_of(
    st.builds(ast.Import, st.sampled_from(["ops.space", "", "a b/c.space", "../x-1.space"])),
    st.builds(ast.ChoiceDef, names, st.lists(candidates, max_size=3).map(tuple)),
    st.builds(ast.OpDef, names, params, bodies),
    st.builds(ast.CellDef, names, params, st.lists(names, max_size=2).map(tuple), bodies),
    st.builds(ast.NetworkDef, names, params, bodies),
)
modules = st.lists(definitions, min_size=1, max_size=2).map(lambda items: ast.Module(tuple(items)))


@PROPERTY
@given(modules, st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["own", "trailing",
                                                                        "blank"])),
                         max_size=4))
def test_format_parse_round_trip_and_fmt_is_idempotent(module, notes):
    # format → parse gives the tree back
    text = format_module(module)
    assert parse(text, "gen.space") == module
    # format → parse → format is stable, also with comments and blank lines sprinkled in
    lines = text.splitlines()
    for index, kind in sorted(notes, reverse=True):
        index = min(index, len(lines))
        if kind == "own":
            lines.insert(index, "# note")
        elif kind == "blank":
            lines.insert(index, "")
        elif index < len(lines):
            lines[index] += "  # why"
    messy = "\n".join(lines) + "\n"
    once = format_source(messy, "gen.space")
    assert format_source(once, "gen.space") == once
    assert parse(once, "gen.space") == module
    # (the parses are remembered by path and text: these two cost nothing)
    assert len(parse(once, "gen.space").comments) == len(parse(messy, "gen.space").comments)


@settings(PROPERTY, max_examples=400)
@given(modules, st.lists(st.integers(0, 10**6), min_size=1, max_size=4))
def test_fmt_is_idempotent_with_comments_inside_brackets(module, places):
    """A comment (and the line break it forces) after any `(`, `[` or `,`: in a parameter
    list, an argument list, a choice's candidates, a pick's list, an index."""
    text = format_module(module)
    positions = [m.end() for m in re.finditer(r"[,(\[]", text)]
    if not positions:
        return
    for place in sorted({positions[p % len(positions)] for p in places}, reverse=True):
        text = text[:place] + "  # inside\n" + text[place:]
    once = format_source(text, "gen.space")
    assert format_source(once, "gen.space") == once
    assert parse(once, "gen.space") == module
    assert len(parse(once, "gen.space").comments) == len(parse(text, "gen.space").comments)


# ------------------------------------------------------------------ robustness


def _check_robust(text: str, path: str) -> None:
    """`loads` either succeeds or raises a SpecError with in-bounds locations."""
    try:
        loads(text, path=path)
    except SpecError as exc:
        assert exc.diagnostics
        for diagnostic in exc.diagnostics:
            span = diagnostic.span
            if span is None:
                continue
            source = exc.sources.get(span.path)
            assert source is not None, f"no source for {span.path}: {diagnostic}"
            lines = source.split("\n")
            assert 1 <= span.line <= len(lines) + 1, diagnostic
            assert span.column >= 1, diagnostic
            if span.line <= len(lines):
                assert span.column <= len(lines[span.line - 1]) + 1, diagnostic
        assert exc.render()


def _tokens(text: str) -> list[str]:
    pattern = r'#[^\n]*|"[^"\n]*"|\d+(?:\.\d+)?|[A-Za-z_]\w*|\.\.|//|\S'
    return [m.group() for m in re.finditer(pattern, text)]


ALL_TOKENS = sorted({t for path in SHIPPED for t in _tokens(path.read_text())})


@PROPERTY
@given(st.text(max_size=60))
def test_random_text_never_crashes(text):
    _check_robust(text, "fuzz.space")


@PROPERTY
@given(st.lists(st.sampled_from(ALL_TOKENS), max_size=40),
       st.lists(st.sampled_from([" ", "\n", "\t", ""]), max_size=40))
def test_token_soup_never_crashes(tokens, separators):
    text = "".join(t + (separators[i] if i < len(separators) else " ")
                   for i, t in enumerate(tokens))
    _check_robust(text, str(SPACES_DIR / "fuzz.space"))


_BASIC_LEXER = Lark(GRAMMAR_PATH.read_text(), parser="lalr", lexer="basic")


def _tokens_of(lex) -> list | str:
    try:
        return [(t.type, str(t), t.line, t.column, t.end_line, t.end_column, t.start_pos,
                 t.end_pos) for t in lex]
    except UnexpectedCharacters as exc:
        return f"unexpected character at {exc.line}:{exc.column}"


@PROPERTY
@given(st.one_of(
    st.text(alphabet=' \n\t\r.,:=+-*/()[]{}#"_aeiknoprtx019', max_size=40),
    st.lists(st.sampled_from(ALL_TOKENS), max_size=20).map(" ".join),
))
def test_fast_lexer_agrees_with_larks_basic_lexer(text):
    ours = _Lexer(_lark().lexer_conf).lex(text)
    assert _tokens_of(ours) == _tokens_of(_BASIC_LEXER.lex(text))


_GRAMMAR_NAMES = ["x", "y", "C", "c", "b", "i", "input", "conv", "relu", "concat", "sum",
                  "split", "add", "pixel_shuffle", "act", "light", "scale", "rgb_range", "k",
                  "out", "rfdb", "esa", "conv_3x3", "n"]


def _bounded_grammar(levels: int = 2, stop_weight: int = 16) -> tuple[Lark, dict]:
    """Our grammar, rewritten so that `from_lark` draws small sentences of it.

    Drawn straight from the grammar, expressions nest without bound and most draws
    overrun hypothesis's buffer, which takes minutes for a few hundred examples. The
    rewrite keeps every rule but (1) gives each rule inside expressions one copy per
    nesting level, dropping what would nest deeper than `levels`, and (2) repeats the
    non-recursive alternatives of recursive rules (lists, sums) so that they tend to
    stop. Every sentence of the rewrite is a sentence of the grammar. Spacing comes
    from the token strategies, so the rewrite has no ignored terminals.
    """
    original = Lark(GRAMMAR_PATH.read_text(), parser="lalr")
    terminals, rules, _ = original.grammar.compile(["start"], ())
    names = {t.name: t.name.replace("__ANON_", "ANON") for t in terminals}
    expansions: dict[str, list] = {}
    for rule in rules:
        expansions.setdefault(rule.origin.name, []).append(rule.expansion)
    inner, todo = set(), ["expr"]  # the rules an expression is made of
    while todo:
        name = todo.pop()
        if name not in inner:
            inner.add(name)
            todo += [s.name for e in expansions[name] for s in e if not s.is_term]

    def symbol(sym, level):
        if sym.is_term:
            return names[sym.name]
        base = sym.name.lstrip("_")
        if sym.name not in inner:
            return f"{base}_top"
        if sym.name == "expr":  # entering an expression: one level deeper
            return f"expr_{level + 1}"
        return f"{base}_{max(level, 0)}"

    rewritten: dict[str, list[list[str]]] = {}
    for name, alternatives in expansions.items():
        for level in range(levels) if name in inner else [-1]:
            head = symbol(NonTerminal(name), level - (name == "expr"))
            rewritten[head] = [[symbol(s, level) for s in e] for e in alternatives]
    while True:  # drop alternatives that need a level beyond the last, to a fixpoint
        kept = {head: [e for e in alts if all(s in rewritten or s.isupper() for s in e)]
                for head, alts in rewritten.items()}
        kept = {head: alts for head, alts in kept.items() if alts}
        if kept == rewritten:
            break
        rewritten = kept
    for head, alternatives in list(rewritten.items()):
        if any(head in e for e in alternatives):
            stops = [e for e in alternatives if head not in e]
            for k in range(stop_weight):
                for i, stop in enumerate(stops):
                    rewritten[f"{head}_stop{k}_{i}"] = [stop]
                    rewritten[head].append([f"{head}_stop{k}_{i}"])
    lines = ["start: start_top"]
    lines += [f"{head}: " + " | ".join(f"({' '.join(e)})" if e else "" for e in alternatives)
              for head, alternatives in rewritten.items()]
    lines += [f"{names[t.name]}: {json.dumps(t.pattern.value)}" if t.pattern.type == "str"
              else f"{names[t.name]}: /{_regex_literal(t.pattern.value)}/"
              for t in terminals if names[t.name] not in ("WS", "COMMENT")]
    grammar = Lark("\n".join(lines), parser="earley")
    explicit = {names[t.name]: st.just(f" {t.pattern.value} ") for t in terminals
                if t.pattern.type == "str"}
    return grammar, explicit


def _regex_literal(regex: str) -> str:
    escapes = {"/": "\\/", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x0c": "\\f"}
    return "".join(escapes.get(char, char) for char in regex)


def _grammar_text():
    # The parser's own Lark object comes from a cache that keeps no grammar object, so
    # the grammar is read from its file. Every terminal has an explicit strategy.
    grammar, explicit = _bounded_grammar()
    spaced = [" ", "\n", "  # note\n"]
    explicit.update({
        "NAME": st.tuples(st.sampled_from(spaced), st.sampled_from(_GRAMMAR_NAMES)).map("".join),
        "INT": st.integers(0, 12).map(lambda n: f" {n}"),
        "FLOAT": st.sampled_from([" 0.5", " 1.0", " 2e3", " 0.05"]),
        "STRING": st.sampled_from(['"ops.space"', '"nope.space"', '""', '"dlsr.space"',
                                   '"fuzz.space"']),
    })
    return from_lark(grammar, explicit=explicit)


grammar_text = _grammar_text()


@PROPERTY
@given(grammar_text)
def test_grammar_generated_text_never_crashes(text):
    _check_robust(text, str(SPACES_DIR / "fuzz.space"))


def _spans(text: str) -> list[tuple[int, int]]:
    pattern = r'"[^"\n]*"|\d+(?:\.\d+)?|[A-Za-z_]\w*|\.\.|//|[^\s#]'
    code = re.sub(r"#[^\n]*", lambda m: " " * len(m.group()), text)
    return [m.span() for m in re.finditer(pattern, code)]


SHIPPED_TOKENS = {path: (path.read_text(), _spans(path.read_text())) for path in SHIPPED}


@st.composite
def mutations(draw):
    path = draw(st.sampled_from(SHIPPED))
    text, spans = SHIPPED_TOKENS[path]
    i = draw(st.integers(0, len(spans) - 1))
    start, end = spans[i]
    token = text[start:end]
    kind = draw(st.sampled_from(["delete", "duplicate", "swap", "replace"]))
    if kind == "delete":
        mutated = text[:start] + text[end:]
    elif kind == "duplicate":
        mutated = text[:end] + " " + token + text[end:]
    elif kind == "swap":
        j = min(i + 1, len(spans) - 1)
        if j == i:
            j = i - 1
        (a0, a1), (b0, b1) = sorted([spans[i], spans[j]])
        mutated = text[:a0] + text[b0:b1] + text[a1:b0] + text[a0:a1] + text[b1:]
    else:
        other_start, other_end = spans[draw(st.integers(0, len(spans) - 1))]
        mutated = text[:start] + text[other_start:other_end] + text[end:]
    return str(path), mutated


@PROPERTY
@given(mutations())
def test_mutated_shipped_spaces_never_crash(case):
    path, text = case
    _check_robust(text, path)


# ------------------------------------------------------------------ fmt of the shipped specs


def test_shipped_spaces_are_canonical():
    for path in SHIPPED:
        text = path.read_text()
        assert format_source(text, str(path)) == text, path.name


def test_formatting_keeps_every_comment_of_the_shipped_spaces():
    for path in SHIPPED:
        text = path.read_text()
        messy = re.sub(r"\n(?=\S)", "\n\n", text).replace("    ", "  ")
        formatted = format_source(messy, str(path))
        assert _comment_lines(formatted) == _comment_lines(text), path.name
        assert parse(formatted) == parse(text)


def _comment_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#")]


def test_comments_stay_with_their_statements():
    text = ("# head\n"
            "op f(x: c) {  # trailing on the header\n"
            "    # before a\n"
            "    a = relu(x)  # after a\n"
            "\n"
            "    # before the return\n"
            "    return a\n"
            "}  # after the op\n"
            "# the end\n")
    assert format_source(text) == text
