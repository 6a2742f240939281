"""Which architecture a search derives from its α/β: the argmax, or the one that fits a budget.

``argmax``: softmax(α)'s most likely candidate per choice site, softmax(β)'s top k per pick
site (`SuperNet.decisions`).

``budget``: the mode of the tilted distribution ``p(a) · exp(−λ · cost(a) / budget)``, with
λ the least value whose mode costs at most the budget. ``p(a)`` is the product of the
sites' probabilities (a pick's kept subset scores the product of its candidates'
probabilities, whose most likely subset is the top k). λ > 0 when the argmax costs more
than the budget: the sites where a cheaper candidate loses the least probability per
Multi-Add saved give way first. λ < 0 when the argmax costs less: the budget is spent
where a dearer candidate costs the least probability per Multi-Add added. So the budget
is met from below, as closely as the space's steps allow, and α/β decide where it is
spent; where the mode jumps past the budget (sites that change at the same λ),
single-site changes that still fit spend the rest. Why spend it: an expected-cost penalty
moves every site toward its cheapest candidate at once, so the softmax can satisfy the
budget in expectation while every site's argmax is its cheapest candidate (the space's
minimum); the budget is the cost the user asked for, not a ceiling to stay far below.
Without a budget, ``budget`` is the argmax.

λ is found on an additive model of the cost (each site's cost change measured on the
argmax); the result's cost is then measured exactly (`CostReport.architecture`) and, where
sites interact (a width site, a pick that leaves a cell unread) and the model was short,
sites give way one at a time until it fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import combinations
from typing import Any

import attrs

__all__ = ["DERIVE_RULES", "Selection", "select"]

#: The values of a search config's ``derive``.
DERIVE_RULES = ("budget", "argmax")

_BISECTIONS = 60
_LAMBDA_LIMIT = 1e9


@attrs.frozen
class Selection:
    """The derived ``decisions`` (as `SuperNet.decisions` gives them), their exact ``cost``
    in the budget's unit, and the tilt ``lam`` that chose them (0 for the argmax)."""

    decisions: dict[str, Any]
    cost: int
    lam: float = 0.0


def _options(network: Any, probabilities: Mapping[str, Sequence[float]]
             ) -> dict[str, list[tuple[Any, float]]]:
    """Per site: each decision of non-zero probability with its log-probability (a
    candidate at probability 0, e.g. pruned, is never derived)."""
    out: dict[str, list[tuple[Any, float]]] = {}
    for site in network.choice_sites:
        p = [float(v) for v in probabilities[site.key]]
        out[site.key] = [(i, math.log(v)) for i, v in enumerate(p) if v > 0]
    for site in network.pick_sites:
        p = [float(v) for v in probabilities[site.key]]
        out[site.key] = [(kept, sum(math.log(p[i]) for i in kept))
                         for kept in combinations(range(len(p)), site.k)
                         if all(p[i] > 0 for i in kept)]
    return out


def _argmax(options: Mapping[str, list[tuple[Any, float]]]) -> dict[str, Any]:
    return {key: max(opts, key=lambda o: o[1])[0] for key, opts in options.items()}


def select(network: Any, probabilities: Mapping[str, Sequence[float]], report: Any,
           field: str = "macs", budget: int | None = None, rule: str = "budget") -> Selection:
    """The derived architecture of a search (see the module docstring for ``rule``).

    ``network`` has ``choice_sites``/``pick_sites`` (`spacelang.ir.Network`),
    ``probabilities`` softmax(α/β) per site key (sequences of floats or 1-d tensors),
    ``report`` a `CostReport` of that network, ``field`` ``"macs"`` or ``"params"``.
    """
    if rule not in DERIVE_RULES:
        raise ValueError(f"derive rule must be one of {DERIVE_RULES}, got {rule!r}")
    options = _options(network, probabilities)
    base = _argmax(options)

    known: dict[tuple[Any, ...], int] = {}

    def exact(decisions: Mapping[str, Any]) -> int:
        key = tuple(decisions[k] for k in options)
        if key not in known:
            known[key] = int(getattr(report.architecture(decisions), field))
        return known[key]

    base_cost = exact(base)
    if rule == "argmax" or budget is None or not options:
        return Selection(base, base_cost)
    delta = {key: [exact({**base, key: d}) - base_cost for d, _ in opts]
             for key, opts in options.items()}

    def mode(lam: float) -> tuple[dict[str, Any], int]:
        chosen, approx = {}, base_cost
        for key, opts in options.items():
            best = max(range(len(opts)),
                       key=lambda i: (opts[i][1] - lam * delta[key][i] / budget,
                                      opts[i][0] == base[key]))
            chosen[key] = opts[best][0]
            approx += delta[key][best]
        return chosen, approx

    fits, over = 0.0, None  # mode(fits) is within the budget, mode(over) is not
    if mode(0.0)[1] > budget:
        over, fits = 0.0, 1.0
        while mode(fits)[1] > budget and fits < _LAMBDA_LIMIT:
            over, fits = fits, fits * 2
    else:
        step = -1.0
        while mode(step)[1] <= budget and step > -_LAMBDA_LIMIT:
            fits, step = step, step * 2
        if mode(step)[1] > budget:
            over = step
        else:
            fits = step  # every architecture the model reaches fits
    if over is not None:
        for _ in range(_BISECTIONS):
            middle = (fits + over) / 2
            if mode(middle)[1] <= budget:
                fits = middle
            else:
                over = middle
    scores = {key: dict(opts) for key, opts in options.items()}
    decisions, cost = _repair(mode(fits)[0], options, scores, exact, budget)
    return Selection(*_fill(decisions, cost, options, scores, exact, budget), fits)


def _moves(decisions: Mapping[str, Any], options: Mapping[str, list[tuple[Any, float]]],
           scores: Mapping[str, Mapping[Any, float]], exact: Any
           ) -> Iterator[tuple[str, Any, int, float]]:
    """Every single-site change of ``decisions``: (site, decision, its exact cost, the
    change of log-probability)."""
    for key, opts in options.items():
        current = scores[key][decisions[key]]
        for choice, score in opts:
            if choice != decisions[key]:
                yield key, choice, exact({**decisions, key: choice}), score - current


def _fill(decisions: dict[str, Any], cost: int,
          options: Mapping[str, list[tuple[Any, float]]],
          scores: Mapping[str, Mapping[Any, float]], exact: Any, budget: int
          ) -> tuple[dict[str, Any], int]:
    """Spend what the tilt left of the budget: symmetric sites (a cell's site shared by
    all its instances, sites of like probabilities) change at the same λ, so the mode can
    jump past the budget. Take single-site changes that still fit, most log-probability
    gained (or least lost) per unit of cost added first, while any fits."""
    while True:
        dearer = [(gain / (new - cost), key, choice, new)
                  for key, choice, new, gain in _moves(decisions, options, scores, exact)
                  if cost < new <= budget]
        if not dearer:
            return decisions, cost
        _, key, choice, cost = max(dearer, key=lambda move: move[0])
        decisions = {**decisions, key: choice}


def _repair(decisions: dict[str, Any], options: Mapping[str, list[tuple[Any, float]]],
            scores: Mapping[str, Mapping[Any, float]], exact: Any, budget: int
            ) -> tuple[dict[str, Any], int]:
    """Where the additive model under-estimated: give way, one site at a time, where the
    least log-probability is lost per unit of cost saved, until the exact cost fits (or
    nothing cheaper is left)."""
    cost = exact(decisions)
    while cost > budget:
        cheaper = [(gain / (new - cost), key, choice, new)
                   for key, choice, new, gain in _moves(decisions, options, scores, exact)
                   if new < cost]
        if not cheaper:
            break
        _, key, choice, cost = min(cheaper, key=lambda move: move[0])
        decisions = {**decisions, key: choice}
    return decisions, cost
