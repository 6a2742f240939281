"""The intermediate representation: an immutable, typed dataflow graph.

A `Network` holds one flat `Graph` of `Node`s in topological order. Composite
ops and cells are inlined; each parameterised node has a dotted `path` that
names it (`b.3.d1`), which becomes its module name when lowered. A choice node
holds one sub-`Graph` per candidate; a pick node selects `k` of its inputs.
Every node knows its channel count and its `Spatial` size relative to the
network input.

Each site records its key, the source call or pick that made it and the
instance path(s) it lives in; `Network.body` is the tree of elaborated bodies
(`Instance`) that holds sites, which derivation reads instead of walking the
source again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

from spacelang import ast
from spacelang.ast import NO_SPAN, Span


@frozen
class Spatial:
    """A spatial size as a function of the input's: a canonical chain of steps.

    Steps are `("up", r)` (pixel shuffle, upsampling), `("win", k, stride, dilation,
    padding)` (a conv or pool window that changes the size), `("tr", k, stride,
    padding, output_padding)` (a transposed conv that is not an exact upscaling) and
    `("global",)` (pooled to 1×1). Size-preserving windows are dropped and exact
    transposed upscalings written as `up`, so equal sizes compare equal.
    """

    steps: tuple[tuple[Any, ...], ...] = ()

    def window(self, kernel: int, stride: int, dilation: int, padding: int) -> Spatial:
        if stride == 1 and 2 * padding == dilation * (kernel - 1):
            return self
        return Spatial((*self.steps, ("win", kernel, stride, dilation, padding)))

    def transposed(self, kernel: int, stride: int, padding: int, output_padding: int) -> Spatial:
        """The size after a transposed conv: (n − 1)·stride − 2·padding + kernel + out_pad."""
        if kernel - 2 * padding + output_padding == stride:
            return self.upscale(stride)
        return Spatial((*self.steps, ("tr", kernel, stride, padding, output_padding)))

    def upscale(self, r: int) -> Spatial:
        if r == 1:
            return self
        if self.steps and self.steps[-1][0] == "up":
            return Spatial((*self.steps[:-1], ("up", self.steps[-1][1] * r)))
        return Spatial((*self.steps, ("up", r)))

    def size(self, height: int, width: int) -> tuple[int, int]:
        """The concrete (height, width) for an input of the given size."""
        for step in self.steps:
            if step[0] == "up":
                height, width = height * step[1], width * step[1]
            elif step[0] == "global":
                height, width = 1, 1
            elif step[0] == "tr":
                _, k, s, p, o = step
                height = (height - 1) * s - 2 * p + k + o
                width = (width - 1) * s - 2 * p + k + o
            else:
                _, k, s, d, p = step
                height = (height + 2 * p - d * (k - 1) - 1) // s + 1
                width = (width + 2 * p - d * (k - 1) - 1) // s + 1
        return height, width

    @property
    def scale(self) -> int | None:
        """The integer upscaling factor if this is a pure upscaling of the input."""
        if not self.steps:
            return 1
        if len(self.steps) == 1 and self.steps[0][0] == "up":
            return self.steps[0][1]
        return None

    def describe(self) -> str:
        """The size in terms of the input's H×W, e.g. `2H×2W` or `(H-3)//2+1×(W-3)//2+1`."""
        if self == GLOBAL:
            return "1×1 (pooled)"
        if self.scale is not None:
            return "H×W" if self.scale == 1 else f"{self.scale}H×{self.scale}W"
        return f"{self._formula('H')}×{self._formula('W')}"

    def _formula(self, side: str) -> str:
        text = side
        for step in self.steps:
            if step[0] == "up":
                text = f"{step[1]}{text}" if text == side else f"{step[1]}({text})"
            elif step[0] == "global":
                text = "1"
            elif step[0] == "tr":
                _, k, s, p, o = step
                grow = k - 2 * p + o - s  # the output is s·in + grow
                head = f"{s}{text}" if text == side else f"{s}({text})"
                text = f"{head}+{grow}" if grow > 0 else f"{head}-{-grow}"
            else:
                _, k, s, d, p = step
                shrink = d * (k - 1) - 2 * p  # the output is (in - shrink - 1) // s + 1
                if s == 1:
                    text = f"{text}-{shrink}" if shrink > 0 else f"{text}+{-shrink}"
                else:
                    offset = shrink + 1
                    inner = f"{text}-{offset}" if offset > 0 else \
                        f"{text}+{-offset}" if offset < 0 else text
                    text = f"({inner})//{s}+1"
        return text


GLOBAL = Spatial((("global",),))
INPUT = Spatial()


@frozen
class Node:
    """One operation. `op` is a primitive name, or `input`, `choice` or `pick`."""

    id: int
    op: str
    inputs: tuple[int, ...]
    channels: int
    spatial: Spatial
    args: dict[str, Any] = field(factory=dict, hash=False)
    path: str = ""
    scope: str = ""
    span: Span = field(default=NO_SPAN, eq=False, repr=False)
    output_index: int = 0
    # a node with weights that runs with those of the node at path `weights`
    # (`b2 = block(o1) shares b1`): counted once in params, per call in MACs
    weights: str = ""
    # choice nodes
    site: str = ""
    candidates: tuple[Graph, ...] = ()
    labels: tuple[str, ...] = ()
    # choice nodes of a network elaborated for partial channels (`partial_network`): each
    # candidate built again for the first 1/K of the input's channels
    partial: tuple[Graph, ...] = ()
    # pick nodes; `owned[i]`: the nodes made only to compute input i (a candidate
    # written as an expression, as `edge(s0)`), which a network without it drops
    k: int = 0
    aggregate: str = ""
    owned: tuple[tuple[int, ...], ...] = ()


@frozen
class Graph:
    nodes: tuple[Node, ...]
    inputs: tuple[int, ...]
    output: int

    @property
    def output_node(self) -> Node:
        return self.nodes[self.output]

    def walk(self):
        """All nodes, including those inside choice candidates (depth first)."""
        for node in self.nodes:
            yield node
            for candidate in node.candidates:
                yield from candidate.walk()


#: The one primitive that may read a concatenating pick (the checker enforces it): in the
#: supernet the pick carries every candidate, and only a conv's weights can be sliced to
#: the k picked ones when deriving.
CONCAT_PICK_READER = "conv"


def input_channels(graph: Graph, node: Node) -> int:
    """Channels entering `node` as built: after a concatenating pick (in a supernet), those
    of every candidate, which the pick carries all."""
    source = graph.nodes[node.inputs[0]]
    if source.op == "pick" and source.aggregate == "concat":
        return graph.nodes[source.inputs[0]].channels * len(source.inputs)
    return source.channels


def module_path(node: Node) -> str:
    """Where a lowered node's module sits in the module tree: its path, else `_<op><id>`."""
    return node.path or f"_{node.op}{node.id}"


@frozen
class ChoiceSite:
    """A cell-level choice; `shared` sites have one α for all `instances`. A site in a
    candidate cell of another site is keyed under it: `b.3.block.rfdb.r1`."""

    key: str
    choice: str
    labels: tuple[str, ...]
    shared: bool
    instances: tuple[str, ...]
    span: Span = field(default=NO_SPAN, eq=False, repr=False)
    call: ast.Call | None = field(default=None, eq=False, repr=False)
    # a site inside a candidate cell of another choice: (that site's key, the
    # candidate's index); it counts only while that candidate is chosen
    parent: tuple[str, int] | None = None
    # a width site (`network n(C = choice [18, 24, 36, 48])`): the values of the network
    # parameter `choice` it chooses between; no choice node holds it
    values: tuple[int, ...] = ()


@frozen
class PickSite:
    """A choice of `k` out of `candidates` (value names) in the body at path `instance`
    (`""` for the network's own body, else a cell instance as `b.3`)."""

    key: str
    k: int
    candidates: tuple[str, ...]
    aggregate: str
    span: Span = field(default=NO_SPAN, eq=False, repr=False)
    instance: str = ""
    pick: ast.Pick | None = field(default=None, eq=False, repr=False)
    parent: tuple[str, int] | None = None  # as `ChoiceSite.parent`

    @property
    def combinations(self) -> int:
        return math.comb(len(self.candidates), self.k)


@frozen
class PickRun:
    """One evaluated `pick`: its site key (`""` when it keeps every candidate), its
    candidates as expressions, slices expanded (`b[1..3]` → `b[1]`, `b[2]`, `b[3]`),
    and how many it keeps."""

    key: str
    candidates: tuple[ast.Expr, ...] = field(eq=False)
    k: int = 0


@frozen
class Run:
    """One execution of a statement of a body (`statement` None: the body's result).

    `loop_env` holds the loop variables around it. The maps are keyed by `id()` of
    AST nodes of `value`: choice calls → site key, picks → `PickRun`, calls of cells
    and ops → the `Instance` they elaborated (only instances that hold sites), and
    choice calls → per candidate, the `Instance` of a candidate cell that holds
    sites of its own (else None).
    """

    statement: ast.Assign | None = field(eq=False)
    value: ast.Expr = field(eq=False)
    loop_env: tuple[tuple[str, int], ...]
    choices: dict[int, str] = field(eq=False)
    picks: dict[int, PickRun] = field(eq=False)
    calls: dict[int, Instance] = field(eq=False)
    candidates: dict[int, tuple[Instance | None, ...]] = field(eq=False, factory=dict)


@frozen
class Instance:
    """One elaborated body: the network's (`path` "") or a call of a cell or op."""

    definition: str
    path: str
    runs: tuple[Run, ...] = field(eq=False)


@frozen
class CellInstance:
    path: str
    cell: str


@frozen
class Network:
    """A checked network with every parameter resolved."""

    name: str
    params: dict[str, int] = field(hash=False)
    graph: Graph
    choice_sites: tuple[ChoiceSite, ...]
    pick_sites: tuple[PickSite, ...]
    cells: tuple[CellInstance, ...]
    scale: int
    in_channels: int
    out_channels: int
    rgb_range: int
    source: str = ""
    body: Instance | None = field(default=None, eq=False, repr=False)
    # with a width site: the network elaborated at each of its values, in order (this
    # network, the widest, is one of them); graphs equal but for channel counts
    variants: tuple[Network, ...] = field(default=(), eq=False, repr=False)

    @property
    def width_site(self) -> ChoiceSite | None:
        return next((site for site in self.choice_sites if site.values), None)

    @property
    def is_fixed(self) -> bool:
        return not self.choice_sites and not self.pick_sites

    @property
    def alpha_count(self) -> int:
        return sum(len(site.labels) for site in self.choice_sites)

    @property
    def beta_count(self) -> int:
        return sum(len(site.candidates) for site in self.pick_sites)

    @property
    def architecture_count(self) -> int:
        """The exact number of distinct architectures in the space."""
        children: dict[tuple[str, int], list[ChoiceSite]] = {}
        picks: dict[tuple[str, int], list[PickSite]] = {}
        for site in self.choice_sites:
            if site.parent is not None:
                children.setdefault(site.parent, []).append(site)
        for pick in self.pick_sites:
            if pick.parent is not None:
                picks.setdefault(pick.parent, []).append(pick)

        def count(site: ChoiceSite) -> int:  # a nested site counts only under its candidate
            return sum(math.prod(count(child) for child in children.get((site.key, i), []))
                       * math.prod(p.combinations for p in picks.get((site.key, i), []))
                       for i in range(len(site.labels)))

        total = math.prod(count(site) for site in self.choice_sites if site.parent is None)
        return total * math.prod(p.combinations for p in self.pick_sites if p.parent is None)


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
