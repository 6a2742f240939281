"""spacelang: a language and toolchain for neural architecture search spaces.

    import spacelang
    space = spacelang.load("spaces/dlsr.space", C=16)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {"load", "loads", "parse", "format_source", "check_file", "Space"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from spacelang import api

        return getattr(api, name)
    if name == "SpecError":
        from spacelang.diagnostics import SpecError

        return SpecError
    raise AttributeError(f"module 'spacelang' has no attribute {name!r}")


__all__ = sorted(_API | {"SpecError"})
