"""`spacelang check` and `spacelang fmt`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from spacelang.api import check_file, format_source
from spacelang.cli import common
from spacelang.diagnostics import SpecError


def register(sub) -> None:
    check = sub.add_parser("check", help="check .space files and summarise their networks",
                           description="Check .space files: syntax, names, channels, shapes. "
                                       "'-' reads standard input.")
    check.add_argument("files", nargs="+", metavar="FILE")
    common.add_overrides(check)
    common.add_limits(check)
    check.set_defaults(handler=run_check)

    fmt = sub.add_parser("fmt", help="rewrite .space files in the canonical layout",
                         description="Rewrite .space files in the canonical layout. "
                                     "'-' reads standard input and writes standard output.")
    fmt.add_argument("files", nargs="+", metavar="FILE")
    fmt.add_argument("--check", action="store_true",
                     help="change nothing; exit 1 if a file would be rewritten")
    fmt.set_defaults(handler=run_fmt)


def network_summary(network) -> str:
    cells = len({c.path for c in network.cells})
    parts = [f"{cells} cell{'s' if cells != 1 else ''}"]
    if network.is_fixed:
        parts.append("fixed")
    else:
        parts.append(f"{len(network.choice_sites)} choice sites ({network.alpha_count} α)")
        parts.append(f"{len(network.pick_sites)} pick sites ({network.beta_count} β)")
        parts.append(f"{network.architecture_count:,} architectures")
    params = ", ".join(f"{k}={v}" for k, v in network.params.items())
    return f"network {network.name}({params}): ×{network.scale}, " + ", ".join(parts)


def run_check(args: argparse.Namespace) -> int:
    overrides = common.parse_overrides(args.overrides)
    limits = common.limits(args)
    status = 0
    for file in args.files:
        try:
            if file == "-":
                program, result = check_file("<stdin>", overrides, text=sys.stdin.read(),
                                             limits=limits)
            else:
                program, result = check_file(file, overrides, limits=limits)
        except SpecError as exc:
            common.print_error(exc.render())
            status = 2
            continue
        common.print_warnings(result.warnings, program.sources)
        if not result.networks:
            definitions = program.root.items
            counts = {kind: sum(1 for d in definitions if type(d).__name__ == kind)
                      for kind in ("OpDef", "CellDef", "ChoiceDef")}
            print(f"{file}: ok ({counts['OpDef']} ops, {counts['CellDef']} cells, "
                  f"{counts['ChoiceDef']} choices, no network)")
        for network in result.networks:
            print(f"{'<stdin>' if file == '-' else file}: {network_summary(network)}")
    return status


def run_fmt(args: argparse.Namespace) -> int:
    status = 0
    for file in args.files:
        try:
            if file == "-":
                source = sys.stdin.read()
                formatted = format_source(source, "<stdin>")
                if args.check:
                    status = max(status, int(formatted != source))
                else:
                    sys.stdout.write(formatted)
                continue
            path = Path(file)
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                common.print_error(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}")
                status = 2
                continue
            formatted = format_source(source, file)
        except SpecError as exc:
            common.print_error(exc.render())
            status = 2
            continue
        if formatted == source:
            continue
        if args.check:
            print(f"would reformat {file}")
            status = max(status, 1)
        else:
            write_atomic(path, formatted)
            print(f"reformatted {file}")
    return status


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves the old or the new file."""
    common.check_output_file(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        if path.exists():
            os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
