"""Which convolutions of a graph may run as one call with what follows them (torch-free).

A convolution whose output is used once, by an activation or by an addition of a tensor
of its own shape, may compute that step in the same kernel (oneDNN post-ops): the
activation is applied, or the addend read, while the conv's output is still in cache,
instead of in a pass of its own over memory. An addition may further take a ReLU.
The fused steps give the values of the unfused ones to float32 rounding (the summation
order inside the kernel differs), so they serve forward passes without gradients
(`spacelang.runtime.speed.optimise(fuse=True)`); the torch backend
(`backends/torch/graph.py`) follows this plan.
"""

from __future__ import annotations

from collections.abc import Callable

from attrs import frozen
from spacelang.backends.inplace import last_readers, writable_inputs

from spacelang.ir import Graph, Node
from spacelang.primitives import Args

#: Convolutions the fused kernels compute (plain and depthwise; not transposed).
FUSABLE_CONVS = frozenset({"conv", "dwconv"})

#: Activations a convolution may apply in its kernel → oneDNN's post-op name and its
#: scalars, from the primitive's arguments.
POST_OPS: dict[str, Callable[[Args], tuple[str, list[float]]]] = {
    "relu": lambda args: ("relu", []),
    "lrelu": lambda args: ("leaky_relu", [float(args["slope"])]),
    "sigmoid": lambda args: ("sigmoid", []),
    "tanh": lambda args: ("tanh", []),
}
FUSABLE_ACTIVATIONS = frozenset(POST_OPS)

#: Activations a convolution may apply after adding a residual in its kernel.
FUSABLE_AFTER_ADD = frozenset({"relu"})


@frozen
class ConvEpilogue:
    """Node `conv`'s convolution, then node `add`'s addition of node `residual` (when
    `add` is not None), then the activation of node `activation` (when not None): the
    value of the last of them, computed by one call."""

    conv: int
    add: int | None = None
    residual: int | None = None
    activation: int | None = None

    @property
    def absorbed(self) -> tuple[int, ...]:
        """The nodes computed on the way, whose own steps are dropped."""
        return (self.conv,) if self.activation is None or self.add is None else \
            (self.conv, self.add)


def conv_epilogues(graph: Graph) -> dict[int, ConvEpilogue]:
    """Node id → the fused step that computes its value (keyed by the last node it
    covers). A node the graph outputs is never absorbed."""
    uses: dict[int, list[int]] = {graph.output: [-1]}
    for node in graph.nodes:
        for source in node.inputs:
            uses.setdefault(source, []).append(node.id)
    nodes = {node.id: node for node in graph.nodes}

    def only_user(node_id: int) -> int | None:
        users = uses.get(node_id, [])
        return users[0] if len(users) == 1 and users[0] >= 0 else None

    plan: dict[int, ConvEpilogue] = {}
    claimed: set[int] = set()
    for conv in graph.nodes:
        if conv.op not in FUSABLE_CONVS or conv.id in claimed:
            continue
        user_id = only_user(conv.id)
        if user_id is None or user_id in claimed:
            continue
        user = nodes[user_id]
        if user.op in FUSABLE_ACTIVATIONS:
            plan[user.id] = ConvEpilogue(conv.id, activation=user.id)
            claimed.update((conv.id, user.id))
        elif user.op == "add" and len(user.inputs) == 2:
            other = nodes[user.inputs[1] if user.inputs[0] == conv.id else user.inputs[0]]
            if (other.id == conv.id or other.channels != conv.channels
                    or other.spatial != conv.spatial):
                continue
            after_id = only_user(user.id)
            if after_id is not None and nodes[after_id].op in FUSABLE_AFTER_ADD:
                plan[after_id] = ConvEpilogue(conv.id, add=user.id, residual=other.id,
                                              activation=after_id)
                claimed.update((conv.id, user.id, after_id, other.id))
            else:
                plan[user.id] = ConvEpilogue(conv.id, add=user.id, residual=other.id)
                claimed.update((conv.id, user.id, other.id))
    return plan


@frozen
class FusedStep:
    """One step of the fused plan: the value of ``node``, read from ``sources``.

    With an ``epilogue`` it is that fused convolution (``into_residual``: adding the
    residual into the residual's own memory); else ``node``'s own step, in place into its
    input at position ``written`` when that is not None. In-place writes are decided in
    the order these steps run, in which a fused conv reads its input where its epilogue
    was, later than in the graph."""

    node: Node
    sources: tuple[int, ...]
    epilogue: ConvEpilogue | None = None
    written: int | None = None
    into_residual: bool = False


def fused_steps(graph: Graph) -> list[FusedStep]:
    """The steps of a pass without gradients that runs `conv_epilogues`' plan, in order."""
    nodes = {node.id: node for node in graph.nodes}
    plan = conv_epilogues(graph)
    absorbed = {n for epilogue in plan.values() for n in epilogue.absorbed}
    order: list[tuple[Node, ConvEpilogue | None, tuple[int, ...]]] = []
    for node in graph.nodes:
        if node.op == "input" or node.id in absorbed:
            continue
        epilogue = plan.get(node.id)
        sources = node.inputs
        if epilogue is not None:
            sources = nodes[epilogue.conv].inputs
            if epilogue.residual is not None:
                sources = (*sources, epilogue.residual)
        order.append((node, epilogue, sources))
    last = last_readers([sources for *_, sources in order], graph.output)
    writable = writable_inputs(graph, autograd=False)

    def written_here(node: Node, index: int) -> list[int]:
        return [p for p in writable.get(node.id, ()) if last.get(node.inputs[p]) == index]

    steps: list[FusedStep] = []
    for index, (node, epilogue, sources) in enumerate(order):
        if epilogue is None:
            positions = written_here(node, index)
            steps.append(FusedStep(node, sources, written=positions[0] if positions else None))
            continue
        into = False
        if epilogue.residual is not None:
            add = nodes[epilogue.add]
            # never into the conv's own input: the kernel would read what it wrote
            into = epilogue.residual not in nodes[epilogue.conv].inputs and any(
                add.inputs[p] == epilogue.residual for p in written_here(add, index))
        steps.append(FusedStep(node, sources, epilogue, into_residual=into))
    return steps
