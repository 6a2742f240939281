"""Analytic parameters and multiply-adds, from the IR alone.

Each primitive's cost rule lives in its record (`spacelang.primitives`); this
module applies them over a graph. Conventions: one multiply-add is one MAC; a
conv's bias is a parameter but not a MAC; elementwise ops (activations, `+`,
`*`, constants such as `x * 0.1` or a mean shift, upsampling, zero) count no
MACs, as neither thop nor FlopCounterMode counts them; a layer that shares the
weights of another (`shares`) has its MACs counted per call, its parameters once.
`macs` follows thop: conv MACs, plus
one op per input element and one per output element of every `avgpool`, plus
one per element through a PReLU. `conv_macs` counts convolutions only, as
`torch.utils.flop_counter.FlopCounterMode` does (its FLOPs ÷ 2). Sizes are for
an HR output of `hr` (width, height); the LR input is `hr // scale`.

The expected cost of a search space under architecture weights is a plain
sum of products, so it is differentiable when the weights are torch tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from attrs import field, frozen

from spacelang.ir import Graph, Network, Node
from spacelang.primitives import PRIMITIVES, Cost, Extent

DEFAULT_HR = (1280, 720)

NO_COST = frozenset({"input", "pick"})
"""Node kinds that are not primitives and cost nothing themselves (choices are summed)."""


def _extent(node: Node, h: int, w: int) -> Extent:
    return Extent(node.channels, *node.spatial.size(h, w))


def node_cost(node: Node, graph: Graph, h: int, w: int) -> Cost:
    """The cost of one primitive node for an LR input of h×w, by its record's cost rule."""
    if node.op in NO_COST:
        return Cost()
    inputs = [_extent(graph.nodes[source], h, w) for source in node.inputs]
    cost = PRIMITIVES[node.op].cost(node.args, inputs, _extent(node, h, w))
    if node.weights:  # runs with the weights of another node: counted there
        return Cost(0, cost.macs, cost.conv_macs)
    return cost


def graph_cost(graph: Graph, h: int, w: int,
               decisions: Mapping[str, Any] | None = None) -> Cost:
    """Total cost of a graph; choice nodes need a decision (candidate index)."""
    total = Cost()
    for node in graph.nodes:
        if node.op == "choice":
            if decisions is None or node.site not in decisions:
                raise KeyError(f"no decision for choice site {node.site!r}")
            total += graph_cost(node.candidates[decisions[node.site]], h, w, decisions)
        else:
            total += node_cost(node, graph, h, w)
    return total


@frozen
class SiteTable:
    """Per-candidate cost of a choice site, summed over all its instances."""

    key: str
    labels: tuple[str, ...]
    costs: tuple[Cost, ...]


@frozen
class CostReport:
    """Cost of a network: fixed part, per-site tables, per-cell breakdown."""

    network: str
    hr: tuple[int, int]
    lr: tuple[int, int]
    base: Cost
    sites: tuple[SiteTable, ...]
    cells: tuple[tuple[str, Cost], ...]
    graph: Graph | None = field(default=None, eq=False, repr=False)

    @property
    def fixed(self) -> Cost:
        if self.sites:
            raise ValueError("the network has choices; use minimum/maximum/expected")
        return self.base

    def architecture(self, decisions: Mapping[str, Any]) -> Cost:
        """The cost of the network `decisions` derives (a candidate index per choice
        site, the kept indices per pick site). A pick candidate written as an
        expression (`pick 2 of [edge(s0), edge(s1), edge(n1)]`) is computed only
        when kept, so the ones left out cost nothing."""
        dropped = _dropped(self.graph, decisions) if self.graph is not None else set()
        if not dropped:
            total = self.base
            for site in self.sites:
                total += site.costs[decisions[site.key]]
            return total
        assert self.graph is not None
        lw, lh = self.lr
        total = Cost()
        for node in self.graph.nodes:
            if node.id in dropped:
                continue
            if node.op == "choice":
                total += graph_cost(node.candidates[decisions[node.site]], lh, lw, decisions)
            else:
                total += node_cost(node, self.graph, lh, lw)
        return total

    def extreme(self, field: str, pick=min) -> int:
        return getattr(self.base, field) + sum(
            pick(getattr(c, field) for c in site.costs) for site in self.sites)

    def expected(self, probabilities: Mapping[str, Sequence[Any]], field: str = "macs"):
        """Σ over sites of Σ_i p_i · cost_i, plus the fixed part.

        `probabilities[key]` is a sequence (or 1-d torch tensor) of candidate
        probabilities, e.g. softmax(α); the result is differentiable in them.
        """
        total: Any = getattr(self.base, field)
        for site in self.sites:
            p = probabilities[site.key]
            for i, cost in enumerate(site.costs):
                total = total + p[i] * getattr(cost, field)
        return total

    def uniform(self, field: str = "macs") -> float:
        return self.expected({s.key: [1 / len(s.costs)] * len(s.costs) for s in self.sites},
                             field)


def _dropped(graph: Graph, decisions: Mapping[str, Any]) -> set[int]:
    """The nodes made only for pick candidates that `decisions` leaves out."""
    dropped: set[int] = set()
    for node in graph.nodes:
        if node.op == "pick" and node.owned:
            kept = set(decisions[node.site])
            for i, owned in enumerate(node.owned):
                if i not in kept:
                    dropped.update(owned)
    return dropped


def lr_size(network: Network, hr: tuple[int, int] = DEFAULT_HR) -> tuple[int, int]:
    """(width, height) of the LR input for an HR output of `hr`, rounded down."""
    return hr[0] // network.scale, hr[1] // network.scale


def cost_report(network: Network, hr: tuple[int, int] = DEFAULT_HR) -> CostReport:
    """Analytic cost of every part of `network` for an HR output of `hr` (w, h)."""
    lw, lh = lr_size(network, hr)
    base = Cost()
    per_cell: dict[str, Cost] = {}
    per_site: dict[str, list[Cost]] = {}
    labels: dict[str, tuple[str, ...]] = {}
    graph = network.graph
    for node in graph.nodes:
        if node.op == "choice":
            costs = [graph_cost(candidate, lh, lw) for candidate in node.candidates]
            if node.site in per_site:
                per_site[node.site] = [a + b for a, b in zip(per_site[node.site], costs,
                                                               strict=True)]
            else:
                per_site[node.site] = costs
                labels[node.site] = node.labels
            continue
        cost = node_cost(node, graph, lh, lw)
        base += cost
        per_cell[node.scope] = per_cell.get(node.scope, Cost()) + cost
    sites = tuple(SiteTable(key, labels[key], tuple(costs)) for key, costs in per_site.items())
    cells = tuple((scope or "(network)", cost) for scope, cost in per_cell.items())
    return CostReport(network.name, hr, (lw, lh), base, sites, cells, graph)
