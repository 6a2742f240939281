"""Diagnostics: `file:line:col: error: message`, the source line and a caret."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from attrs import frozen

from spacelang.ast import Span


@frozen
class Diagnostic:
    severity: str  # "error" or "warning"
    message: str
    span: Span | None
    hint: str | None = None
    notes: tuple[str, ...] = ()  # e.g. "in expansion of `esa`, called from f:3:5"

    def render(self, sources: dict[str, str] | None = None) -> str:
        """The diagnostic as a compiler would print it."""
        if self.span is None:
            head = f"{self.severity}: {self.message}"
            head = head if self.hint is None else f"{head}\n  hint: {self.hint}"
            return "\n".join([head, *(f"  note: {n}" for n in _shown_notes(self.notes))])
        span = self.span
        lines = [f"{span.path}:{span.line}:{span.column}: {self.severity}: {self.message}"]
        text = (sources or {}).get(span.path)
        if text is not None:
            source_lines = text.split("\n")  # as the parser counts lines
            if 1 <= span.line <= len(source_lines):
                line = source_lines[span.line - 1].rstrip("\r")
                line = line.replace("\t", " ").replace("\r", " ")
                width = 1
                if span.end_line == span.line and span.end_column > span.column:
                    width = span.end_column - span.column
                width = max(1, min(width, len(line) - span.column + 1))
                line, column, width = _window(line, span.column, width)
                lines.append(f"  {line}")
                lines.append("  " + " " * (column - 1) + "^" + "~" * (width - 1))
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        lines.extend(f"  note: {note}" for note in _shown_notes(self.notes))
        return "\n".join(lines)


#: Longest source line shown whole; longer lines are cut around the caret.
MAX_SHOWN = 120


def _window(line: str, column: int, width: int) -> tuple[str, int, int]:
    """The part of a long `line` around `column` (1-based), and the caret's new place."""
    if len(line) <= MAX_SHOWN:
        return line, column, width
    width = min(width, MAX_SHOWN // 2)
    start = max(0, min(column - 1 - MAX_SHOWN // 3, len(line) - MAX_SHOWN))
    shown = line[start:start + MAX_SHOWN]
    column -= start
    if start > 0:
        shown, column = "…" + shown, column + 1
    if start + MAX_SHOWN < len(line):
        shown += "…"
    return shown, column, width


def _shown_notes(notes: tuple[str, ...], most: int = 8) -> tuple[str, ...]:
    """A long chain of notes (deeply nested ops) as its first and last few."""
    if len(notes) <= most:
        return notes
    half = most // 2
    return (*notes[:half], f"... {len(notes) - 2 * half} more ...", *notes[-half:])


class SpecError(Exception):
    """One or more errors in a spec; `str()` renders them all."""

    def __init__(self, diagnostics: Iterable[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = tuple(diagnostics)
        self.sources = dict(sources or {})
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.sources) for d in self.diagnostics)

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]


def error(message: str, span: Span | None, hint: str | None = None) -> Diagnostic:
    return Diagnostic("error", message, span, hint)


def warning(message: str, span: Span | None, hint: str | None = None) -> Diagnostic:
    return Diagnostic("warning", message, span, hint)


def did_you_mean(name: str, known: Iterable[str]) -> str | None:
    """A hint naming the closest known spelling, if any is close."""
    matches = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None
