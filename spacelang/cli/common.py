"""Pieces shared by the commands: flags, errors, consoles."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from spacelang.diagnostics import SpecError
from spacelang.limits import DEFAULT_LIMITS, LIMIT_NAMES, Limits


class UsageError(Exception):
    """A bad flag or argument; printed without a traceback, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def require_rgb(network: Any) -> None:
    """Training and evaluation read RGB images: the network must map 3 channels to 3."""
    if network.in_channels != 3 or network.out_channels != 3:
        raise UsageError(
            f"network `{network.name}` maps {network.in_channels} to {network.out_channels} "
            "channels; training and evaluation work on RGB images (3 to 3)")


def print_error(message: str) -> None:
    text = message if message.startswith(("error", "warning")) or ": error:" in message \
        else f"error: {message}"
    print(text, file=sys.stderr)


def user_error_message(exc: BaseException) -> str | None:
    """The message to show for an exception that is the user's to fix, else None."""
    if isinstance(exc, SpecError):
        return exc.render()
    names = {"DataError", "ConfigError", "CheckpointError", "TrainError", "WeightsError",
             "ImageError", "SearchError", "RunError", "RankLost", "SpeedError"}
    kind = type(exc)
    if kind.__name__ in names and kind.__module__.startswith("spacelang."):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return f"{exc.strerror}: {exc.filename}"
    return None


def add_bad_image_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--on-bad-image", choices=("fail", "skip"), default="fail",
                        help="an unreadable image stops the run (fail, default) or is "
                             "skipped with a warning naming it")


def add_weights_map(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights-map", metavar="MAP.yaml",
                        help="rename map for weights from another implementation")


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="override a network parameter, e.g. --set C=16 (repeatable)")


def parse_overrides(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UsageError(f"--set expects NAME=VALUE, got {item!r}")
        if name.strip() in out:
            raise UsageError(f"--set {name.strip()} given twice ({out[name.strip()]} and "
                             f"{value.strip()})")
        out[name.strip()] = value.strip()
    return out


def add_limits(parser: argparse.ArgumentParser) -> None:
    """`--max-channels N`, ... one flag per field of `spacelang.limits.Limits`."""
    for name in LIMIT_NAMES:
        parser.add_argument(f"--max-{name}", type=_positive_int, default=None, metavar="N",
                            help=f"limit on {name} (default {getattr(DEFAULT_LIMITS, name):,})")


def limits(args: argparse.Namespace) -> Limits:
    """The `Limits` that the `--max-...` flags give."""
    given = {name: getattr(args, f"max_{name}", None) for name in LIMIT_NAMES}
    return DEFAULT_LIMITS.with_overrides({k: v for k, v in given.items() if v is not None})


def _positive_int(text: str) -> int:
    if not text.strip().isascii() or not text.strip().isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def check_output_file(path: Any) -> None:
    """A `UsageError` unless `path` can be written as a file (checked before any work)."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot write {path}: it is a directory; give a file name")
    if not target.resolve().parent.is_dir():
        raise UsageError(f"cannot write {path}: its folder does not exist")


def parse_size(text: str) -> tuple[int, int]:
    """`1280x720` → (1280, 720)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"expected a size like 1280x720, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise UsageError(f"size must be positive, got {text!r}")
    return width, height


def console(stderr: bool = False, quiet: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, quiet=quiet)


def under_torchrun() -> bool:
    """Whether torchrun started this process (its variables are set)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def rank_environment() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from torchrun's variables; ``(0, 1, 0)`` without."""
    def number(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    return number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0)


def is_main_rank() -> bool:
    """Whether this process prints a run's output (rank 0, or the only process)."""
    return rank_environment()[0] == 0


def report_error(exc: BaseException, message: str) -> None:
    """Print ``message`` for ``exc``; under torchrun, once per job where every rank has it.

    Rank 0 always prints. Another rank stays quiet when the error is one every rank raised
    alike (``same_on_every_rank``), or one about the command line or spec files that the
    first rank on its machine reports; else it prints with a ``rank R:`` prefix.
    """
    rank, _, local = rank_environment()
    if rank != 0:
        if getattr(exc, "same_on_every_rank", False):
            return
        if local != 0 and (isinstance(exc, (UsageError, SpecError))
                           or type(exc).__name__ == "ConfigError"):
            return
        message = f"rank {rank}: {message}"
    print_error(message)


def print_warnings(warnings, sources: dict[str, str]) -> None:
    for w in warnings:
        print(w.render(sources), file=sys.stderr)


def group(n: int) -> str:
    return f"{n:,}"


def giga(n: float) -> str:
    return f"{n / 1e9:.2f} G"


def prepare_torch() -> None:
    """CPU settings for running networks: flush denormal floats (they can slow
    convolutions down a hundredfold and change no result that matters), and keep freed
    memory in the process (`spacelang.runtime.speed.retain_freed_memory`)."""
    import torch

    from spacelang.runtime.speed import retain_freed_memory

    torch.set_flush_denormal(True)
    retain_freed_memory()
