"""Counts written with SI suffixes: ``20G``, ``68e9``, ``300K``, ``1.5M`` (torch-free).

`parse_count` reads them (budgets in configs and on the command line); `format_count`
writes one back in the shortest exact form (``12G``, ``1.5M``, ``300K``, ``1234``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["SUFFIXES", "format_count", "parse_count"]

#: Suffix -> multiplier. ``k``/``g`` are accepted in lower case; ``m`` is not (milli?).
SUFFIXES = {"K": 10**3, "k": 10**3, "M": 10**6, "G": 10**9, "g": 10**9, "T": 10**12}


def parse_count(text: str | int | float) -> int:
    """A positive whole count from ``20G``, ``68e9``, ``300K``, ``1.5M``, ``1_000`` or a
    number; `ValueError` with a sentence saying what is wrong otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"expected a count such as 20G or 300K, got {text!r}")
    if isinstance(text, int):
        value = Decimal(text)
    elif isinstance(text, float):
        value = Decimal(repr(text))
    else:
        raw = str(text).strip().replace("_", "").replace(" ", "")
        multiplier = 1
        if raw and raw[-1] in SUFFIXES:
            multiplier = SUFFIXES[raw[-1]]
            raw = raw[:-1]
        try:
            value = Decimal(raw) * multiplier
        except InvalidOperation:
            raise ValueError(f"expected a count such as 20G, 68e9, 300K or 1.5M, "
                             f"got {text!r}") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError(f"expected a whole count, got {text!r}")
    if value <= 0:
        raise ValueError(f"expected a count > 0, got {text!r}")
    return int(value)


def format_count(value: int) -> str:
    """The shortest suffixed form of ``value`` that reads back exactly (``12G``, ``1.5M``)."""
    for suffix in ("T", "G", "M", "K"):
        scaled = Decimal(value) / SUFFIXES[suffix]
        if abs(scaled) >= 1 and scaled == scaled.quantize(Decimal("0.001")):
            return f"{scaled.normalize():f}{suffix}"
    return str(value)
