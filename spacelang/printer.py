"""AST → `.space` text in the canonical layout (used by `fmt` and `derive`).

Comments are kept: a comment on its own line stays before the item or
statement that follows it, a trailing comment stays at the end of its line.
A single blank line between statements is kept where the source had one.
"""

from __future__ import annotations

from spacelang import ast
from spacelang.diagnostics import SpecError
from spacelang.limits import depth_errors

INDENT = "    "
LINE_WIDTH = 100

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2}


def format_expr(expr, parent: int = 0, right_side: bool = False) -> str:
    """One expression, with only the parentheses its meaning needs."""
    if isinstance(expr, ast.Name):
        return expr.name
    if isinstance(expr, ast.Int):
        return str(expr.value)
    if isinstance(expr, ast.Float):
        return expr.text or repr(expr.value)
    if isinstance(expr, ast.Bool):
        return "true" if expr.value else "false"
    if isinstance(expr, ast.Vector):
        return "[" + ", ".join(format_expr(item) for item in expr.items) + "]"
    if isinstance(expr, ast.String):
        return f'"{expr.value}"'
    if isinstance(expr, ast.Neg):
        return "-" + format_expr(expr.operand, 3)
    if isinstance(expr, ast.BinOp):
        level = _PRECEDENCE[expr.op]
        text = (f"{format_expr(expr.left, level)} {expr.op} "
                f"{format_expr(expr.right, level, right_side=True)}")
        if level < parent or (level == parent and right_side):
            return f"({text})"
        return text
    if isinstance(expr, ast.Index):
        return f"{expr.name}[{format_expr(expr.index)}]"
    if isinstance(expr, ast.Slice):
        return f"{expr.name}[{format_expr(expr.lo)}..{format_expr(expr.hi)}]"
    if isinstance(expr, ast.Keyword):
        return f"{expr.name}={format_expr(expr.value)}"
    if isinstance(expr, ast.Call):
        parts = [format_expr(a) for a in expr.args] + [format_expr(k) for k in expr.keywords]
        return f"{expr.func}({', '.join(parts)})"
    if isinstance(expr, ast.Pick):
        source = _pick_source(expr.candidates)
        return f"pick {format_expr(expr.k, 3)} of {source}"
    raise TypeError(f"not an expression: {expr!r}")


def _pick_source(candidates) -> str:
    if len(candidates) == 1 and isinstance(candidates[0], ast.Slice):
        return format_expr(candidates[0])
    return "[" + ", ".join(format_expr(c) for c in candidates) + "]"


def _param(param: ast.Param) -> str:
    if isinstance(param, ast.TensorParam):
        return f"{param.name}: {format_expr(param.channels)}"
    if param.choices:
        return f"{param.name} = choice [{', '.join(format_expr(v) for v in param.choices)}]"
    if param.default is None:
        return param.name
    return f"{param.name} = {format_expr(param.default)}"


def _target(target: ast.Target) -> str:
    if target.index is None:
        return target.name
    return f"{target.name}[{format_expr(target.index)}]"


class _Writer:
    def __init__(self, comments: tuple[ast.Comment, ...]):
        self.lines: list[str] = []
        self.comments = sorted(comments, key=lambda c: c.line)
        self.next_comment = 0
        self.last_source_line = 0

    def own_line_comments(self, before_line: int, indent: str) -> None:
        while (self.next_comment < len(self.comments)
               and self.comments[self.next_comment].line < before_line):
            comment = self.comments[self.next_comment]
            if self.lines and comment.line > self.last_source_line + 1 and self.lines[-1] != "" \
                    and self.last_source_line:
                self.lines.append("")
            self.lines.append(indent + comment.text)
            self.last_source_line = comment.line
            self.next_comment += 1

    def trailing_comment(self, line: int) -> str:
        if (self.next_comment < len(self.comments)
                and self.comments[self.next_comment].line == line):
            comment = self.comments[self.next_comment]
            self.next_comment += 1
            return "  " + comment.text
        return ""

    def emit(self, text: str, span: ast.Span, indent: str, end_line: int | None = None) -> None:
        before = self.next_comment
        self.own_line_comments(span.line, indent)
        if self.next_comment > before and span.line > self.last_source_line + 1:
            self.lines.append("")  # a comment block set apart from what follows stays apart
        last = end_line if end_line is not None else span.end_line
        # comments inside a construct printed on one line go on their own lines before it,
        # where a second run finds them again (so `fmt` is idempotent)
        while (self.next_comment < len(self.comments)
               and span.line <= self.comments[self.next_comment].line < last):
            self.lines.append(indent + self.comments[self.next_comment].text)
            self.next_comment += 1
        self.lines.append(indent + text + self.trailing_comment(last))
        self.last_source_line = last

    def comment_inside(self, span: ast.Span) -> bool:
        """Whether a comment not yet written lies inside `span` (not after its end)."""
        for comment in self.comments[self.next_comment:]:
            if comment.line > span.end_line:
                return False
            if comment.line >= span.line and (comment.line < span.end_line
                                              or comment.column < span.end_column):
                return True
        return False


def format_module(module: ast.Module) -> str:
    """The whole file in canonical layout, ending with one newline; `SpecError` if an
    expression is nested too deep to print."""
    deep = depth_errors(module)
    if deep:
        raise SpecError(deep, {module.path: module.source} if module.source else {})
    writer = _Writer(module.comments)
    previous: ast.Definition | None = None
    for item in module.items:
        if previous is not None and not (isinstance(item, ast.Import)
                                         and isinstance(previous, ast.Import)):
            if writer.lines and writer.lines[-1] != "":
                writer.lines.append("")
            writer.own_line_comments(item.span.line, "")
        _item(writer, item)
        previous = item
    writer.own_line_comments(10**9, "")
    return "\n".join(writer.lines).rstrip("\n") + "\n" if writer.lines else ""


def _item(writer: _Writer, item: ast.Definition) -> None:
    if isinstance(item, ast.Import):
        writer.emit(f'import "{item.path}"', item.span, "")
    elif isinstance(item, ast.ChoiceDef):
        candidates = [format_expr(c) if c.args or c.keywords else c.func
                      for c in item.candidates]
        one_line = f"choice {item.name} = [{', '.join(candidates)}]"
        if len(one_line) <= LINE_WIDTH and not writer.comment_inside(item.span):
            writer.emit(one_line, item.span, "")
        else:  # one candidate a line, each keeping its comments
            writer.own_line_comments(item.span.line, "")
            first = item.candidates[0].span.line if item.candidates else item.span.end_line
            header = f"choice {item.name} = ["
            if first > item.span.line:
                header += writer.trailing_comment(item.span.line)
            writer.lines.append(header)
            writer.last_source_line = item.span.line
            for candidate, text in zip(item.candidates, candidates, strict=True):
                writer.own_line_comments(candidate.span.line, INDENT)
                writer.emit(text + ",", candidate.span, INDENT)
            writer.own_line_comments(item.span.end_line, INDENT)
            writer.lines.append("]" + writer.trailing_comment(item.span.end_line))
            writer.last_source_line = item.span.end_line
    else:
        keyword = {ast.OpDef: "op", ast.CellDef: "cell", ast.NetworkDef: "network"}[type(item)]
        params = ", ".join(_param(p) for p in item.params)
        header = f"{keyword} {item.name}({params})"
        if isinstance(item, ast.CellDef) and item.shares:
            header += " shares " + ", ".join(item.shares)
        writer.emit(header + " {", item.span, "", end_line=item.body.span.line)
        _statements(writer, item.body.statements, INDENT)
        writer.emit("return " + format_expr(item.body.result), item.body.return_span, INDENT)
        writer.own_line_comments(item.span.end_line, INDENT)
        writer.lines.append("}" + writer.trailing_comment(item.span.end_line))
        writer.last_source_line = item.span.end_line


def _statements(writer: _Writer, statements, indent: str) -> None:
    for i, statement in enumerate(statements):
        if i > 0 and statement.span.line > writer.last_source_line + 1 and not _comment_between(
                writer, statement.span.line):
            writer.lines.append("")
        if isinstance(statement, ast.ForLoop):
            head = (f"for {statement.var} in {format_expr(statement.lo)}.."
                    f"{format_expr(statement.hi)} {{")
            first_line = statement.body[0].span.line if statement.body else statement.span.line
            writer.emit(head, statement.span, indent, end_line=min(first_line,
                                                                    statement.span.line))
            _statements(writer, statement.body, indent + INDENT)
            writer.own_line_comments(statement.span.end_line, indent + INDENT)
            writer.lines.append(indent + "}" + writer.trailing_comment(statement.span.end_line))
            writer.last_source_line = statement.span.end_line
        else:
            targets = ", ".join(_target(t) for t in statement.targets)
            shares = f" shares {format_expr(statement.shares)}" if statement.shares else ""
            writer.emit(f"{targets} = {format_expr(statement.value)}{shares}", statement.span,
                        indent)


def _comment_between(writer: _Writer, line: int) -> bool:
    index = writer.next_comment
    return index < len(writer.comments) and writer.comments[index].line < line
