"""Which steps of a graph may write their result into one of their inputs (torch-free).

A step may run in place when its primitive has an in-place form and one of its inputs
is a fresh tensor that dies at the step: made by a primitive that always allocates its
output (never a view, never the network's input). While autograd records, the input
must be used by this step alone, once, and be one no backward pass keeps (a conv's
output, not a sigmoid's), and the in-place form must need no copy of its original input.
Without autograd it is enough that the step is the input's last reader (in graph order),
reads it once, and that every earlier reader allocated its own output (so no view of it
lives on). The torch backend (`backends/torch/graph.py`) and the emitted source
(`backends/emit.py`) both follow this plan; the results are bit-identical.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from spacelang.ir import Graph

#: Primitives with an in-place form → whether it is safe while autograd records
#: (``mul_`` is not: autograd would copy the original input to differentiate it).
IN_PLACE_OPS: dict[str, bool] = {
    "relu": True,
    "lrelu": True,
    "sigmoid": True,
    "tanh": True,
    "add": True,
    "mul": False,
}

#: Two-input in-place forms whose inputs may swap (the result is the same bit for bit).
COMMUTATIVE = frozenset({"add", "mul"})

#: Primitives whose output is a new tensor that no backward pass keeps.
FRESH_UNSAVED = frozenset({"conv", "dwconv", "conv_transpose", "add", "sub", "mul", "concat"})

#: Further primitives whose output is a new tensor (a backward pass may keep it).
FRESH_SAVED = frozenset({"relu", "lrelu", "sigmoid", "tanh", "maxpool", "upsample", "resize",
                         "local_maxpool", "local_avgpool", "prelu"})


def in_place_inputs(graph: Graph, *, autograd: bool,
                    excluded: Collection[int] = ()) -> dict[int, int]:
    """Node id → the position of the input its step overwrites (the first it may).

    ``autograd``: the plan for passes that record gradients (else for passes without).
    ``excluded``: nodes whose output is not the primitive's own (a width mask is applied
    to it), never overwritten.
    """
    return {node_id: positions[0] for node_id, positions in
            writable_inputs(graph, autograd=autograd, excluded=excluded).items()}


def writable_inputs(graph: Graph, *, autograd: bool,
                    excluded: Collection[int] = ()) -> dict[int, tuple[int, ...]]:
    """Node id → the positions of the inputs its step may overwrite (of nodes with any);
    arguments as `in_place_inputs`."""
    readers: dict[int, list[int]] = {graph.output: [-1]}
    for node in graph.nodes:
        for source in node.inputs:
            readers.setdefault(source, []).append(node.id)
    fresh = FRESH_UNSAVED if autograd else FRESH_UNSAVED | FRESH_SAVED
    op_of = {node.id: node.op for node in graph.nodes}

    def dies_here(source: int, reader: int) -> bool:
        ids = readers.get(source, [])
        if autograd or ids.count(reader) != 1 or -1 in ids:
            return ids == [reader]
        return ids[-1] == reader and all(op_of[r] in fresh for r in ids if r != reader)

    plan: dict[int, tuple[int, ...]] = {}
    for node in graph.nodes:
        if node.op not in IN_PLACE_OPS or (autograd and not IN_PLACE_OPS[node.op]):
            continue
        positions = range(len(node.inputs)) if node.op in COMMUTATIVE else range(1)
        writable = tuple(position for position in positions
                         if op_of.get(node.inputs[position]) in fresh
                         and node.inputs[position] not in excluded
                         and dies_here(node.inputs[position], node.id))
        if writable:
            plan[node.id] = writable
    return plan


def last_readers(order: Sequence[Sequence[int]], output: int) -> dict[int, int]:
    """Value id → the index of the last step that reads it when steps run in ``order``
    (each step given by the ids it reads); ``output`` is read after the last step.

    A plan that runs steps in another order than the graph's (fused convolutions run
    where their epilogue was) may write an input in place only at that input's last
    reader in its own order, besides `writable_inputs`' conditions."""
    last: dict[int, int] = {}
    for index, sources in enumerate(order):
        for source in sources:
            last[source] = index
    last[output] = len(order)
    return last
