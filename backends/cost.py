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
from spacelang.limits import DEFAULT_HR
from spacelang.primitives import PRIMITIVES, Cost, Extent

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


def live_nodes(graph: Graph, decisions: Mapping[str, Any] | None = None) -> list[bool]:
    """Which nodes reach the output once every pick keeps only its chosen inputs.

    Without decisions (or for a pick without one) every input of a pick is live.
    """
    alive = [False] * len(graph.nodes)
    alive[graph.output] = True
    for node in reversed(graph.nodes):  # a node's inputs come before it
        if not alive[node.id]:
            continue
        sources = node.inputs
        if node.op == "pick" and decisions is not None and node.site in decisions:
            sources = tuple(node.inputs[i] for i in decisions[node.site])
        for source in sources:
            alive[source] = True
    return alive


def graph_cost(graph: Graph, h: int, w: int,
               decisions: Mapping[str, Any] | None = None) -> Cost:
    """Total cost of the nodes of a graph that reach its output under `decisions`;
    choice nodes need a decision (candidate index), picks keep their chosen inputs."""
    total = Cost()
    alive = live_nodes(graph, decisions)
    for node in graph.nodes:
        if not alive[node.id]:
            continue
        if node.op == "choice":
            if decisions is None or node.site not in decisions:
                raise KeyError(f"no decision for choice site {node.site!r}")
            total += graph_cost(node.candidates[decisions[node.site]], h, w, decisions)
        else:
            total += node_cost(node, graph, h, w)
    return total


@frozen
class SiteTable:
    """Per-candidate cost of a choice site, summed over all its instances.

    A candidate cell's own choices are sites of their own, under `parent` (the
    site's key, the candidate's index): the candidate's cost leaves them out, and
    they count only while that candidate is chosen.
    """

    key: str
    labels: tuple[str, ...]
    costs: tuple[Cost, ...]
    parent: tuple[str, int] | None = None


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
        """The exact cost of the network `decisions` derive (a candidate index per choice
        site, the kept indices per pick site): what a pick leaves unread, and what only
        that fed, costs nothing."""
        if self.graph is not None:
            lw, lh = self.lr
            return graph_cost(self.graph, lh, lw, decisions)
        total = self.base
        for site in self.sites:
            if self._active(site, decisions):
                total += site.costs[decisions[site.key]]
        return total

    def _active(self, site: SiteTable, decisions: Mapping[str, Any]) -> bool:
        while site.parent is not None:
            key, index = site.parent
            if decisions[key] != index:
                return False
            site = self._by_key[key]
        return True

    @property
    def _by_key(self) -> dict[str, SiteTable]:
        return {site.key: site for site in self.sites}

    def _children(self) -> dict[tuple[str, int], list[SiteTable]]:
        children: dict[tuple[str, int], list[SiteTable]] = {}
        for site in self.sites:
            if site.parent is not None:
                children.setdefault(site.parent, []).append(site)
        return children

    def extreme(self, field: str, pick=min) -> int:
        children = self._children()

        def best(site: SiteTable) -> int:
            return pick(getattr(cost, field) + sum(best(c) for c in children.get((site.key, i), []))
                        for i, cost in enumerate(site.costs))

        return getattr(self.base, field) + sum(best(s) for s in self.sites if s.parent is None)

    def expected(self, probabilities: Mapping[str, Sequence[Any]], field: str = "macs"):
        """Σ over sites of Σ_i p_i · cost_i, plus the fixed part.

        `probabilities[key]` is a sequence (or 1-d torch tensor) of candidate
        probabilities, e.g. softmax(α); the result is differentiable in them.
        """
        total: Any = getattr(self.base, field)
        by_key = self._by_key
        for site in self.sites:
            p = probabilities[site.key]
            part: Any = 0
            for i, cost in enumerate(site.costs):
                part = part + p[i] * getattr(cost, field)
            ancestor = site  # a nested site counts as often as its candidate is chosen
            while ancestor.parent is not None:
                key, index = ancestor.parent
                part = part * probabilities[key][index]
                ancestor = by_key[key]
            total = total + part
        return total

    def uniform(self, field: str = "macs") -> float:
        return self.expected({s.key: [1 / len(s.costs)] * len(s.costs) for s in self.sites},
                             field)


def _own_cost(graph: Graph, h: int, w: int) -> Cost:
    """A candidate's cost without the choices inside it (sites of their own)."""
    total = Cost()
    for node in graph.nodes:
        if node.op != "choice":
            total += node_cost(node, graph, h, w)
    return total


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
    parents = {site.key: site.parent for site in network.choice_sites}

    def add_site(node: Node) -> None:
        costs = [_own_cost(candidate, lh, lw) for candidate in node.candidates]
        if node.site in per_site:
            per_site[node.site] = [a + b for a, b in zip(per_site[node.site], costs,
                                                           strict=True)]
        else:
            per_site[node.site] = costs
            labels[node.site] = node.labels
        for candidate in node.candidates:
            for inner in candidate.nodes:
                if inner.op == "choice":
                    add_site(inner)

    graph = network.graph
    for node in graph.nodes:
        if node.op == "choice":
            add_site(node)
            continue
        cost = node_cost(node, graph, lh, lw)
        base += cost
        per_cell[node.scope] = per_cell.get(node.scope, Cost()) + cost
    order = {site.key: i for i, site in enumerate(network.choice_sites)}
    sites = tuple(SiteTable(key, labels[key], tuple(per_site[key]), parents.get(key))
                  for key in sorted(per_site, key=lambda k: order.get(k, len(order))))
    cells = tuple((scope or "(network)", cost) for scope, cost in per_cell.items())
    return CostReport(network.name, hr, (lw, lh), base, sites, cells, graph)
