"""The `spacelang` command line: argument parsing, output and exit codes.

Exit codes: 0 success, 1 `fmt --check` found changes, 2 a user error (bad
spec, flag, file, data or checkpoint), 130 interrupted, 70 an internal error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from spacelang import __version__
from spacelang.cli import common

COMMAND_MODULES = {
    "check": "language", "fmt": "language",
    "flops": "build", "compile": "build",
    "derive": "run", "search": "run", "train": "run", "eval": "run",
    "upscale": "tools", "export": "tools", "report": "tools",
}
"""Each command and the module of this package that registers and runs it."""

COMMANDS = tuple(COMMAND_MODULES)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `command`, only that command's module is loaded (so
    `spacelang check` does not import what `report` or `eval` need)."""
    parser = common.Parser(
        prog="spacelang",
        description="A language and toolchain for neural architecture search spaces.",
    )
    parser.add_argument("--version", action="version", version=f"spacelang {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=common.Parser)
    sub.required = True
    wanted = [COMMAND_MODULES[command]] if command in COMMAND_MODULES else COMMAND_MODULES.values()
    for module in dict.fromkeys(wanted):
        importlib.import_module(f"spacelang.cli.{module}").register(sub)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command named on the line (the first argument that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _version() -> str:
    return __version__


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `spacelang` console script."""
    sys.exit(run_cli(argv))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(argv))
    try:
        args = parser.parse_args(argv)
        return int(args.handler(args) or 0)
    except common.UsageError as exc:
        common.report_error(exc, str(exc))
        return 2
    except KeyboardInterrupt:
        common.print_error("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        message = common.user_error_message(exc)
        if message is not None:
            common.report_error(exc, message)
            return 2
        if os.environ.get("SPACELANG_DEBUG"):
            raise
        common.report_error(exc, f"internal error: {type(exc).__name__}: {exc}\n"
                           "  (set SPACELANG_DEBUG=1 for a traceback, and please report it)")
        return 70
