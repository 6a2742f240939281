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

import math
from collections.abc import Mapping, Sequence
from itertools import combinations, product
from typing import Any

from attrs import evolve, field, frozen

from spacelang.ir import Graph, Network, Node, live_nodes
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
class Scenario:
    """One joint decision of the picks that decide which nodes are alive (an early exit):
    `picks` the kept candidate indices per such pick site, `dead` the fixed cost and
    `dead_sites` the per-candidate costs of the choice nodes that do not reach the
    output under it (keyed as the network's sites)."""

    picks: tuple[tuple[str, tuple[int, ...]], ...]
    dead: Cost
    dead_sites: tuple[SiteTable, ...]


MAX_SCENARIOS = 4096
"""Joint decisions of liveness-deciding picks enumerated at most; beyond it every node
counts as alive in `expected` and `extreme` (an upper bound; `architecture` stays exact)."""


def subset_probability(p: Sequence[Any], kept: Sequence[int], k: int) -> Any:
    """P(a pick keeps exactly `kept`) under candidate probabilities `p`: Π_{i∈S} p_i over
    the sum of that product over all k-subsets (exact for k = 1, where it is p_i; for
    k > 1 the distribution whose most likely subset is the top-k of `p`)."""
    if k == 1:
        return p[kept[0]]
    total: Any = 0
    for subset in combinations(range(len(p)), k):
        total = total + _product(p, subset)
    return _product(p, kept) / total


def _product(p: Sequence[Any], indices: Sequence[int]) -> Any:
    out: Any = 1
    for i in indices:
        out = out * p[i]
    return out


@frozen
class CostReport:
    """Cost of a network: fixed part, per-site tables, per-cell breakdown.

    Depth: `scenarios` (empty when no pick decides liveness) make `expected` and
    `extreme` count only the nodes that reach the output. Width: a network with a width
    site (`width` its key) has one report per width value in `variants`; the fields
    above are the widest's, and each query goes to the chosen value's report.
    """

    network: str
    hr: tuple[int, int]
    lr: tuple[int, int]
    base: Cost
    sites: tuple[SiteTable, ...]
    cells: tuple[tuple[str, Cost], ...]
    graph: Graph | None = field(default=None, eq=False, repr=False)
    scenarios: tuple[Scenario, ...] = ()
    width: str = ""
    variants: tuple[CostReport, ...] = ()

    @property
    def fixed(self) -> Cost:
        if self.sites or self.variants:
            raise ValueError("the network has choices; use minimum/maximum/expected")
        return self.base

    @property
    def searchable(self) -> bool:
        """Whether the cost depends on any decision (a choice, width or liveness pick)."""
        return bool(self.sites or self.scenarios or self.variants)

    def architecture(self, decisions: Mapping[str, Any]) -> Cost:
        """The exact cost of the network `decisions` derive (a candidate index per choice
        site, the kept indices per pick site): what a pick leaves unread, and what only
        that fed, costs nothing."""
        if self.variants:
            return self.variants[decisions[self.width]].architecture(decisions)
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

    def extreme(self, field: str, pick=min) -> int:
        """The least (`pick=min`) or largest cost over every architecture, counting only
        the nodes alive under each liveness scenario."""
        if self.variants:
            return pick(v.extreme(field, pick) for v in self.variants)
        if not self.scenarios:
            return _extreme(getattr(self.base, field), self.sites, field, pick)
        return pick(_extreme(getattr(self.base, field) - getattr(s.dead, field),
                             _minus(self.sites, s.dead_sites, field), field, pick)
                    for s in self.scenarios)

    def expected(self, probabilities: Mapping[str, Sequence[Any]], field: str = "macs"):
        """Σ over sites of Σ_i p_i · cost_i, plus the fixed part, less what is dead.

        `probabilities[key]` is a sequence (or 1-d torch tensor) of candidate
        probabilities, e.g. softmax(α) or softmax(β); the result is differentiable in
        them. A node counts with its probability of reaching the output (exact by
        enumerating the liveness scenarios); a width site mixes its values' reports,
        Σ_w p_w · E_w.
        """
        if self.variants:
            p = probabilities[self.width]
            total: Any = 0
            for i, variant in enumerate(self.variants):
                total = total + p[i] * variant.expected(probabilities, field)
            return total
        parents = {site.key: site.parent for site in self.sites}
        total = getattr(self.base, field) + _expected(self.sites, probabilities, field,
                                                      parents)
        for scenario in self.scenarios:
            chance: Any = 1
            for key, kept in scenario.picks:
                p = probabilities[key]
                chance = chance * subset_probability(p, kept, len(kept))
            dead = getattr(scenario.dead, field) + _expected(
                scenario.dead_sites, probabilities, field, parents)
            total = total - chance * dead
        return total

    def uniform(self, field: str = "macs") -> float:
        sizes = {s.key: len(s.costs) for s in self.sites}
        for scenario in self.scenarios:
            for key, _ in scenario.picks:
                sizes.setdefault(key, self.graph_pick_sizes[key])
        if self.variants:
            sizes[self.width] = len(self.variants)
            for variant in self.variants:
                sizes.update({s.key: len(s.costs) for s in variant.sites})
                sizes.update(variant.graph_pick_sizes)
        return self.expected({key: [1 / n] * n for key, n in sizes.items()}, field)

    @property
    def graph_pick_sizes(self) -> dict[str, int]:
        """Candidates per pick site of the top-level graph."""
        if self.graph is None:
            return {}
        return {n.site: len(n.inputs) for n in self.graph.nodes if n.op == "pick"}


def _expected(sites: Sequence[SiteTable], probabilities: Mapping[str, Sequence[Any]],
              field: str, parents: Mapping[str, tuple[str, int] | None]) -> Any:
    """Σ_i p_i · cost_i per table; a nested site times its ancestors' probabilities."""
    total: Any = 0
    for site in sites:
        p = probabilities[site.key]
        part: Any = 0
        for i, cost in enumerate(site.costs):
            part = part + p[i] * getattr(cost, field)
        parent = site.parent  # a nested site counts as often as its candidate is chosen
        while parent is not None:
            key, index = parent
            part = part * probabilities[key][index]
            parent = parents.get(key)
        total = total + part
    return total


def _extreme(base: int, sites: Sequence[SiteTable], field: str, pick) -> int:
    children: dict[tuple[str, int], list[SiteTable]] = {}
    for site in sites:
        if site.parent is not None:
            children.setdefault(site.parent, []).append(site)

    def best(site: SiteTable) -> int:
        return pick(getattr(cost, field) + sum(best(c) for c in children.get((site.key, i), []))
                    for i, cost in enumerate(site.costs))

    return base + sum(best(s) for s in sites if s.parent is None)


def _minus(sites: Sequence[SiteTable], dead: Sequence[SiteTable], field: str
           ) -> tuple[SiteTable, ...]:
    """`sites` with the costs of the dead instances taken away (only `field` is kept)."""
    less = {d.key: d.costs for d in dead}
    out = []
    for site in sites:
        costs = site.costs
        if site.key in less:
            costs = tuple(_field_cost(field, getattr(a, field) - getattr(b, field))
                          for a, b in zip(costs, less[site.key], strict=True))
        out.append(SiteTable(site.key, site.labels, costs, site.parent))
    return tuple(out)


def _field_cost(field: str, value: int) -> Cost:
    return Cost(**{field: value})


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
    width = network.width_site
    if width is None:
        return _cost_report(network, hr)
    variants = tuple(_cost_report(v, hr) for v in network.variants)
    widest = variants[network.variants.index(network)]
    return evolve(widest, width=width.key, variants=variants)


def _site_tables(network: Network, nodes: Sequence[Node], lh: int, lw: int
                 ) -> tuple[SiteTable, ...]:
    """Per-site candidate costs of the choice nodes `nodes` and the sites nested in them,
    summed over instances, in the network's site order."""
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

    for node in nodes:
        add_site(node)
    order = {site.key: i for i, site in enumerate(network.choice_sites)}
    return tuple(SiteTable(key, labels[key], tuple(per_site[key]), parents.get(key))
                 for key in sorted(per_site, key=lambda k: order.get(k, len(order))))


def _scenarios(network: Network, lh: int, lw: int) -> tuple[Scenario, ...]:
    """The joint decisions of the picks that decide which nodes reach the output.

    A node is certain if it reaches the output with every pick keeping nothing; a pick
    decides liveness if it reads a node that is not. Picks inside candidate cells are
    taken as keeping everything alive.
    """
    graph = network.graph
    picks = [node for node in graph.nodes if node.op == "pick"]
    certain = live_nodes(graph, {node.site: () for node in picks})
    deciding = {node.site: node for node in picks
                if any(not certain[i] for i in node.inputs)}
    if not deciding:
        return ()
    options = [[(key, kept) for kept in combinations(range(len(node.inputs)), node.k)]
               for key, node in deciding.items()]
    if math.prod(len(o) for o in options) > MAX_SCENARIOS:
        return ()
    out = []
    for joint in product(*options):
        alive = live_nodes(graph, dict(joint))
        dead = [node for node in graph.nodes if not alive[node.id]]
        fixed = Cost()
        for node in dead:
            if node.op != "choice":
                fixed += node_cost(node, graph, lh, lw)
        choices = [node for node in dead if node.op == "choice"]
        out.append(Scenario(tuple(joint), fixed, _site_tables(network, choices, lh, lw)))
    return tuple(out)


def _cost_report(network: Network, hr: tuple[int, int]) -> CostReport:
    lw, lh = lr_size(network, hr)
    base = Cost()
    per_cell: dict[str, Cost] = {}
    graph = network.graph
    for node in graph.nodes:
        if node.op == "choice":
            continue
        cost = node_cost(node, graph, lh, lw)
        base += cost
        per_cell[node.scope] = per_cell.get(node.scope, Cost()) + cost
    sites = _site_tables(network, [n for n in graph.nodes if n.op == "choice"], lh, lw)
    cells = tuple((scope or "(network)", cost) for scope, cost in per_cell.items())
    return CostReport(network.name, hr, (lw, lh), base, sites, cells, graph,
                      _scenarios(network, lh, lw))
