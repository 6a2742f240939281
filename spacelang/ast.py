"""The abstract syntax tree of a `.space` file.

Every node is immutable and carries the `Span` it was parsed from. Spans take no
part in equality, so two files that differ only in layout give equal trees.
"""

from __future__ import annotations

from typing import Union

from attrs import field, frozen


@frozen
class Span:
    """A region of source text; lines and columns count from 1."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int


NO_SPAN = Span("<generated>", 1, 1, 1, 1)


def _span() -> Span:
    return field(default=NO_SPAN, eq=False, repr=False)


# ----------------------------------------------------------------- expressions


@frozen
class Name:
    name: str
    span: Span = _span()


@frozen
class Int:
    value: int
    span: Span = _span()


@frozen
class Float:
    value: float
    text: str = field(eq=False, default="")
    span: Span = _span()


@frozen
class Bool:
    value: bool
    span: Span = _span()


@frozen
class Vector:
    """`[a, b, c]`: one number per channel (a per-channel constant, as an RGB mean)."""

    items: tuple[Expr, ...]
    span: Span = _span()


@frozen
class String:
    """`"nearest"`: the value of a primitive's option (as `mode=` of `upsample`)."""

    value: str
    span: Span = _span()


@frozen
class BinOp:
    """`left op right` with op one of `+ - * / //`."""

    op: str
    left: Expr
    right: Expr
    span: Span = _span()


@frozen
class Neg:
    operand: Expr
    span: Span = _span()


@frozen
class Index:
    """`name[index]`: one value of an indexed family such as `b[3]`."""

    name: str
    index: Expr
    span: Span = _span()


@frozen
class Slice:
    """`name[lo..hi]`, both ends included: expands to several values."""

    name: str
    lo: Expr
    hi: Expr
    span: Span = _span()


@frozen
class Keyword:
    name: str
    value: Expr
    span: Span = _span()


@frozen
class Call:
    """`func(args..., key=value...)`: a primitive, composite op, cell or choice."""

    func: str
    args: tuple[Expr | Slice, ...] = ()
    keywords: tuple[Keyword, ...] = ()
    span: Span = _span()
    func_span: Span = _span()


@frozen
class Pick:
    """`pick k of [a, b, ...]`: a network-level choice of k inputs out of several."""

    k: Expr
    candidates: tuple[Expr | Slice, ...]
    span: Span = _span()


Expr = Union[Name, Int, Float, Bool, Vector, String, BinOp, Neg, Index, Call, Pick]

# ------------------------------------------------------------------ statements


@frozen
class Target:
    name: str
    index: Expr | None = None
    span: Span = _span()


@frozen
class Assign:
    """`a = expr`, or `a, b = split(...)` for an op with several outputs.

    `shares` (`b2 = block(o1) shares b1`) names an earlier value whose defining
    call's weights this statement's call runs with.
    """

    targets: tuple[Target, ...]
    value: Expr
    shares: Name | Index | None = None
    span: Span = _span()


@frozen
class ForLoop:
    var: str
    lo: Expr
    hi: Expr
    body: tuple[Statement, ...]
    span: Span = _span()
    var_span: Span = _span()


Statement = Union[Assign, ForLoop]


@frozen
class Body:
    statements: tuple[Statement, ...]
    result: Expr
    span: Span = _span()
    return_span: Span = _span()


# ------------------------------------------------------------- definitions


@frozen
class TensorParam:
    """`x: channels`: a tensor input; a bare unbound name binds its channel count."""

    name: str
    channels: Expr
    span: Span = _span()


@frozen
class IntParam:
    """`n` or `n = default`: a number parameter (an integer in a network; in an op or
    cell any constant, as a residual scale `0.1` or a per-channel mean)."""

    name: str
    default: Expr | None = None
    span: Span = _span()
    # `C = choice [18, 24, 36, 48]` (networks only): a width searched over these values
    choices: tuple[Expr, ...] = ()


Param = Union[TensorParam, IntParam]


@frozen
class Import:
    path: str
    span: Span = _span()


@frozen
class ChoiceDef:
    """`choice name = [op, op(args), ...]`: a named set of candidate ops."""

    name: str
    candidates: tuple[Call, ...]
    span: Span = _span()
    name_span: Span = _span()


@frozen
class OpDef:
    name: str
    params: tuple[Param, ...]
    body: Body
    span: Span = _span()
    name_span: Span = _span()


@frozen
class CellDef:
    """A cell; choices named in `shares` have one set of weights for all instances."""

    name: str
    params: tuple[Param, ...]
    shares: tuple[str, ...]
    body: Body
    span: Span = _span()
    name_span: Span = _span()
    shares_spans: tuple[Span, ...] = field(default=(), eq=False, repr=False)


@frozen
class NetworkDef:
    name: str
    params: tuple[Param, ...]
    body: Body
    span: Span = _span()
    name_span: Span = _span()


Definition = Union[Import, ChoiceDef, OpDef, CellDef, NetworkDef]


@frozen
class Comment:
    text: str
    line: int
    column: int


@frozen
class Module:
    """One parsed file: its definitions in order, and its comments for `fmt`."""

    items: tuple[Definition, ...]
    path: str = field(default="<string>", eq=False)
    comments: tuple[Comment, ...] = field(default=(), eq=False, repr=False)
    source: str = field(default="", eq=False, repr=False)
