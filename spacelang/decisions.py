"""Decisions: which candidate each choice site takes and which values each pick keeps.

Keys are site keys (`spacelang.ir.ChoiceSite.key`, `PickSite.key`). A choice
decision is a candidate index or label; a pick decision is `k` distinct
candidate indices or value names. `normalize` checks them against a network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

from spacelang.diagnostics import SpecError, error
from spacelang.ir import Network

Decision = Union[int, str, Sequence[int | str]]
Decisions = Mapping[str, Decision]


def normalize(network: Network, decisions: Decisions) -> dict[str, Any]:
    """Decisions as indices: `int` per choice site, sorted `tuple` per pick site."""
    out: dict[str, Any] = {}
    known = {s.key for s in network.choice_sites} | {s.key for s in network.pick_sites}
    for key in decisions:
        if key not in known:
            raise SpecError([error(f"no choice or pick site named `{key}` in "
                                   f"`{network.name}` (sites: {', '.join(sorted(known))})",
                                   None)])
    for site in network.choice_sites:
        if site.key not in decisions:
            raise SpecError([error(f"no decision for choice site `{site.key}`", None)])
        value = decisions[site.key]
        if isinstance(value, str):
            if value not in site.labels:
                raise SpecError([error(f"`{value}` is not a candidate of `{site.key}` "
                                       f"({', '.join(site.labels)})", None)])
            value = site.labels.index(value)
        if not isinstance(value, int) or not 0 <= value < len(site.labels):
            raise SpecError([error(f"decision for `{site.key}` must be a candidate index "
                                   f"0..{len(site.labels) - 1} or label, got {value!r}", None)])
        out[site.key] = int(value)
    for site in network.pick_sites:
        if site.key not in decisions:
            raise SpecError([error(f"no decision for pick site `{site.key}`", None)])
        raw = decisions[site.key]
        values = [site.candidates.index(v) if isinstance(v, str) and v in site.candidates
                  else v for v in raw]
        if (len(set(values)) != site.k or any(not isinstance(v, int) for v in values)
                or any(not 0 <= v < len(site.candidates) for v in values)):
            raise SpecError([error(f"decision for pick site `{site.key}` must be {site.k} "
                                   f"distinct candidates of {list(site.candidates)}, got "
                                   f"{list(raw)!r}", None)])
        out[site.key] = tuple(sorted(values))
    return out


def indicator(network: Network, decisions: Decisions) -> dict[str, list[float]]:
    """The architecture `decisions` as site probabilities: one-hot per choice (and width)
    site, 1 at each kept candidate of a pick. `CostReport.expected` of it is the cost of
    that architecture."""
    chosen = normalize(network, decisions)
    out = {site.key: [float(i == chosen[site.key]) for i in range(len(site.labels))]
           for site in network.choice_sites}
    out.update({site.key: [float(i in chosen[site.key]) for i in range(len(site.candidates))]
                for site in network.pick_sites})
    return out


__all__ = ["Decision", "Decisions", "indicator", "normalize"]
