"""`spacelang derive`, `search`, `train` and `eval`."""

from __future__ import annotations


def register(sub) -> None:
    pass
