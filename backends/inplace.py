"""Which steps of a graph may write their result into one of their inputs (torch-free).

A step may run in place when its primitive has an in-place form and one of its inputs
is a fresh tensor that dies at the step: made by a primitive that always allocates its
output (never a view, never the network's input), and used by this step alone, once.
While autograd records, the input must moreover be one no backward pass keeps
(a conv's output, not a sigmoid's), and the in-place form must need no copy of its
original input. The torch backend (`backends/torch/graph.py`) and the emitted source
(`backends/emit.py`) both follow this plan; the results are bit-identical.
"""

from __future__ import annotations

from collections.abc import Collection

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
    """Node id → the position of the input its step may overwrite.

    ``autograd``: the plan for passes that record gradients (else for passes without).
    ``excluded``: nodes whose output is not the primitive's own (a width mask is applied
    to it), never overwritten.
    """
    uses: dict[int, int] = {graph.output: 1}
    for node in graph.nodes:
        for source in node.inputs:
            uses[source] = uses.get(source, 0) + 1
    fresh = FRESH_UNSAVED if autograd else FRESH_UNSAVED | FRESH_SAVED
    op_of = {node.id: node.op for node in graph.nodes}
    plan: dict[int, int] = {}
    for node in graph.nodes:
        if node.op not in IN_PLACE_OPS or (autograd and not IN_PLACE_OPS[node.op]):
            continue
        positions = range(len(node.inputs)) if node.op in COMMUTATIVE else range(1)
        for position in positions:
            source = node.inputs[position]
            if (uses.get(source) == 1 and op_of.get(source) in fresh
                    and source not in excluded):
                plan[node.id] = position
                break
    return plan
