"""Running an IR graph as an `nn.Module`.

Modules are registered under their node paths (`b.3.d1` → `self.b[3].d1`), so
`state_dict` keys read like the spec. Values are freed after their last use.

An elementwise step whose input dies there, and that nothing else refers to, runs
in place (`ops.INPLACE`): it writes into that input instead of allocating a new
tensor. Which steps do is fixed when the module is built (`backends.inplace`), in two
plans: one safe while autograd records, one for forward passes without gradients; the
results are the same values as out of place, bit for bit. The network's inputs are
never written.

`fuse_convolutions()` adds a third plan for forward passes without gradients on CPU:
each convolution runs as one oneDNN call, with the activation or residual addition that
follows it where `backends.fusion` allows (values equal to float32 rounding).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from spacelang.backends.fusion import FUSABLE_CONVS, fused_steps
from spacelang.backends.inplace import in_place_inputs
from spacelang.backends.torch.ops import INPLACE, LOWERINGS, OneDNNConv
from torch import nn

from spacelang.ir import Graph, Node, input_channels, module_path
from spacelang.primitives import PRIMITIVES


class Container(nn.Module):
    """A named level of the module tree that only holds children."""


def register(root: nn.Module, path: str, module: nn.Module) -> None:
    """Add `module` under a dotted `path`, creating container levels as needed.

    Names go straight into `_modules`, so a value may be called `half` or
    `train` without clashing with `nn.Module` methods; modules are reached
    through `state_dict`, `get_submodule` and the graph, never as attributes.
    """
    *parents, leaf = path.split(".")
    parent = root
    for name in parents:
        child = parent._modules.get(name)
        if child is None:
            child = Container()
            parent._modules[name] = child
        parent = child
    if leaf in parent._modules:
        raise ValueError(f"two modules would be named {path!r}")
    parent._modules[leaf] = module


def get_submodule(root: nn.Module, target: str) -> nn.Module:
    """`nn.Module.get_submodule` through `_modules`, so names like `half` or `eval` resolve
    (torch's version uses `getattr`, which finds the method instead)."""
    module = root
    if not target:
        return module
    for name in target.split("."):
        child = module._modules.get(name)
        if child is None:
            raise AttributeError(f"{type(module).__name__} has no submodule `{name}` "
                                 f"(looking up {target!r})")
        module = child
    return module


class GraphModule(nn.Module):
    """Executes a `Graph`; `special` builds modules for choice and pick nodes."""

    def __init__(self, graph: Graph,
                 special: Callable[[nn.Module, Node], Callable] | None = None,
                 mask: Callable[[Node], Callable | None] | None = None,
                 inplace: bool = True):
        """`mask(node)`, when given, may return a function applied to the node's output
        (a width supernet's channel mask). ``inplace=False`` runs every step out of place."""
        super().__init__()
        self.graph = graph
        steps = []
        self._runs: dict[int, Callable] = {}
        self._fused: list[tuple] | None = None
        last_use: dict[int, int] = {}
        for node in graph.nodes:
            for source in node.inputs:
                last_use[source] = node.id
        last_use[graph.output] = len(graph.nodes)
        masks = {} if mask is None else {n.id: mask(n) for n in graph.nodes if n.op != "input"}
        masked = {node_id for node_id, m in masks.items() if m is not None}
        with_grad_plan = in_place_inputs(graph, autograd=True, excluded=masked) if inplace else {}
        without_grad_plan = (in_place_inputs(graph, autograd=False, excluded=masked)
                             if inplace else {})
        for node in graph.nodes:
            if node.op == "input":
                continue
            if node.op in ("choice", "pick"):
                if special is None:
                    raise ValueError(f"a fixed network cannot hold the {node.op} site "
                                     f"{node.site!r}")
                run = special(self, node)
            elif PRIMITIVES[node.op].module and node.weights:
                run = get_submodule(self, node.weights)  # one module, called again
            elif PRIMITIVES[node.op].module:
                module = LOWERINGS[node.op](node.args, input_channels(graph, node),
                                            node.channels)
                register(self, module_path(node), module)
                # the module itself, not a closure over it, so that `copy.deepcopy`
                # gives a network that runs its own copies of the modules
                run = module
            else:
                run = _function_step(LOWERINGS[node.op], node.args, node.output_index,
                                     PRIMITIVES[node.op].outputs_many)
            frees = tuple(s for s in set(node.inputs) if last_use.get(s) == node.id)
            with_grad, without_grad = (
                _in_place_step(node, plan[node.id]) if node.id in plan else run
                for plan in (with_grad_plan, without_grad_plan))
            steps.append((node.id, with_grad, without_grad, node.inputs, frees,
                          masks.get(node.id)))
            self._runs[node.id] = without_grad
        self._steps = steps
        self._inplace = inplace
        self.has_masks = bool(masked)  # a width supernet's channel masks

    def fuse_convolutions(self) -> None:
        """Run passes without gradients on float32 CPU inputs through the fused plan
        (`backends.fusion`; every conv a oneDNN call). Needs `torch.ops.mkldnn`
        (`spacelang.runtime.speed.fusion_problem`)."""
        if self.has_masks:
            raise ValueError("a network with channel masks cannot fuse its convolutions")
        graph = self.graph
        nodes = {node.id: node for node in graph.nodes}
        rows: list[tuple[int, Callable, tuple[int, ...]]] = []
        for step in fused_steps(graph):
            node, epilogue = step.node, step.epilogue
            if epilogue is not None:
                activation = nodes[epilogue.activation] if epilogue.activation is not None \
                    else None
                run = OneDNNConv(self._runs[epilogue.conv],
                                 activation.op if activation else None,
                                 activation.args if activation else None,
                                 residual=epilogue.residual is not None,
                                 into_residual=step.into_residual and self._inplace)
            elif node.op in FUSABLE_CONVS:
                run = OneDNNConv(self._runs[node.id])
            elif step.written is not None and self._inplace:
                run = _in_place_step(node, step.written)
            elif node.op in INPLACE:  # its in-place plan may differ in the fused order
                run = _function_step(LOWERINGS[node.op], node.args, node.output_index,
                                     PRIMITIVES[node.op].outputs_many)
            else:
                run = self._runs[node.id]
            rows.append((node.id, run, step.sources))
        last_use: dict[int, int] = {}
        for node_id, _, sources in rows:
            for source in sources:
                last_use[source] = node_id
        last_use[graph.output] = len(graph.nodes)
        self._fused = [(node_id, run, run, sources,
                        tuple(s for s in set(sources) if last_use.get(s) == node_id), None)
                       for node_id, run, sources in rows]

    def get_submodule(self, target: str) -> nn.Module:
        return get_submodule(self, target)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        values: dict[int, torch.Tensor] = dict(zip(self.graph.inputs, inputs, strict=True))
        grad = torch.is_grad_enabled()
        steps = self._steps
        if (not grad and self._fused is not None and inputs[0].device.type == "cpu"
                and inputs[0].dtype == torch.float32):
            steps = self._fused
        for node_id, with_grad, without_grad, sources, frees, masked in steps:
            run = with_grad if grad else without_grad
            values[node_id] = run(*(values[s] for s in sources))
            if masked is not None:
                values[node_id] = masked(values[node_id])
            for source in frees:
                del values[source]
        return values[self.graph.output]


def _in_place_step(node: Node, position: int) -> Callable:
    """The node's in-place form writing into its input at ``position``."""
    function, args = INPLACE[node.op], node.args
    if position == 0:
        return lambda *xs: function(args, *xs)
    return lambda x, y: function(args, y, x)  # a commutative op: the second input is written


def _function_step(function, args, index: int, many: bool) -> Callable:
    if many:
        return lambda *xs: function(args, *xs)[index]
    return lambda *xs: function(args, *xs)
