"""Standalone PyTorch source for a fixed network.

`emit_python(network)` writes a Python module that needs nothing but torch: a
`Network(nn.Module)` whose `state_dict` keys, parameter shapes and module tree
are those of `FixedNet(network)` and whose forward runs the same ops in the
same order, so weights trained with spacelang load into it and give identical
outputs. Modules are registered straight into `_modules` under the spec's value
paths (a value may be called `half` or `1`), as `FixedNet` does.
"""

from __future__ import annotations

from collections.abc import Callable

from spacelang.ir import Graph, Network, Node

LINE = 100
MODULE_OPS = frozenset({"conv", "dwconv", "prelu", "avgpool"})


def _padding(args: dict) -> int:
    if args["padding"] >= 0:
        return args["padding"]
    return args["dilation"] * (args["k"] - 1) // 2


def _module_source(node: Node, in_channels: int) -> str:
    """The constructor call of the module a node owns (as `ops.make_module` builds it)."""
    a = node.args
    if node.op in ("conv", "dwconv"):
        out = node.channels if node.op == "conv" else in_channels
        groups = a["groups"] if node.op == "conv" else in_channels
        options = [("stride", a["stride"], 1), ("padding", _padding(a), 0),
                   ("dilation", a["dilation"], 1), ("groups", groups, 1),
                   ("bias", bool(a["bias"]), True)]
        extra = "".join(f", {name}={value}" for name, value, default in options
                        if value != default)
        return f"nn.Conv2d({in_channels}, {out}, {a['k']}{extra})"
    if node.op == "prelu":
        return f"nn.PReLU({node.channels if a['per_channel'] else 1})"
    if node.op == "avgpool":
        return "nn.AdaptiveAvgPool2d(1)"
    raise ValueError(f"no module for primitive {node.op!r}")


def _string(text: str) -> str:
    """A double-quoted Python literal."""
    quoted = repr(text)
    if quoted.startswith("'") and '"' not in text:
        return '"' + quoted[1:-1] + '"'
    return quoted


def _tuple(xs: list[str]) -> str:
    return f"({xs[0]},)" if len(xs) == 1 else f"({', '.join(xs)})"


# Each entry mirrors the function of the same name in `backends/torch/ops.py`.
_FUNCTIONS: dict[str, Callable[[dict, list[str], Node], str]] = {
    "relu": lambda a, xs, n: f"F.relu({xs[0]})",
    "lrelu": lambda a, xs, n: f"F.leaky_relu({xs[0]}, {float(a['slope'])!r})",
    "sigmoid": lambda a, xs, n: f"torch.sigmoid({xs[0]})",
    "identity": lambda a, xs, n: xs[0],
    "add": lambda a, xs, n: f"{xs[0]} + {xs[1]}",
    "mul": lambda a, xs, n: f"{xs[0]} * {xs[1]}",
    "sum": lambda a, xs, n: f"torch.stack({_tuple(xs)}).sum(0)" if len(xs) > 1 else xs[0],
    "concat": lambda a, xs, n: f"torch.cat({_tuple(xs)}, dim=1)",
    "split": lambda a, xs, n: (f"torch.split({xs[0]}, {list(a['sizes'])!r}, dim=1)"
                               f"[{n.output_index}]"),
    "pixel_shuffle": lambda a, xs, n: f"F.pixel_shuffle({xs[0]}, {a['r']})",
    "mean": lambda a, xs, n: f"{xs[0]}.mean(dim=(2, 3), keepdim=True)",
    "std": lambda a, xs, n: f"{xs[0]}.std(dim=(2, 3), keepdim=True, unbiased=False)",
    "maxpool": lambda a, xs, n: (f"F.max_pool2d({xs[0]}, {a['k']}, {a['stride'] or a['k']}, "
                                 f"{a['padding']})"),
    "resize": lambda a, xs, n: (f"F.interpolate({xs[0]}, size={xs[1]}.shape[-2:], "
                                "mode=\"bilinear\", align_corners=False)"),
}

OPS = frozenset(_FUNCTIONS) | MODULE_OPS
"""Every primitive this emitter can write."""


def _wrap(head: str, text: str, indent: str) -> list[str]:
    """`indent + head + text` as lines of at most LINE characters, broken after commas.

    Every comma the emitter writes is inside brackets, so the breaks need no backslash.
    """
    pieces = (indent + head + text).split(", ")
    lines: list[str] = []
    current = pieces[0]
    for piece in pieces[1:]:
        if len(current) + len(piece) + 2 > LINE:
            lines.append(current + ",")
            current = indent + " " * 8 + piece
        else:
            current += ", " + piece
    lines.append(current)
    return lines


def _input_channels(graph: Graph, node: Node) -> int:
    return graph.nodes[node.inputs[0]].channels


def _describe(network: Network) -> str:
    params = ", ".join(f"{k}={v}" for k, v in network.params.items())
    return f"{network.name}({params})"


def emit_python(network: Network) -> str:
    """Standalone PyTorch source equivalent to `FixedNet(network)`; raises for search spaces."""
    if not network.is_fixed:
        raise ValueError(f"network `{network.name}` has choice or pick sites; derive a fixed "
                         "architecture before emitting Python")
    graph = network.graph
    for node in graph.nodes:
        if node.op != "input" and node.op not in OPS:
            raise ValueError(f"cannot emit primitive {node.op!r}")

    names: dict[int, str] = {}
    if len(graph.inputs) == 1:
        names[graph.inputs[0]] = "x"
    else:
        names.update({node_id: f"x{i}" for i, node_id in enumerate(graph.inputs)})
    for node in graph.nodes:
        names.setdefault(node.id, f"v{node.id}")

    last_use: dict[int, int] = {}
    for node in graph.nodes:
        for source in node.inputs:
            last_use[source] = node.id
    last_use[graph.output] = len(graph.nodes)

    init: list[str] = []
    body: list[str] = []
    scope = ""
    modules = 0
    for node in graph.nodes:
        if node.op == "input":
            continue
        if node.scope != scope:
            scope = node.scope
            body.append(f"        # {scope or '(network)'}")
        target = names[node.id]
        xs = [names[s] for s in node.inputs]
        if node.op in MODULE_OPS:
            path = node.path or f"_{node.op}{node.id}"
            constructor = _module_source(node, _input_channels(graph, node))
            init.extend(_wrap("", f"m.append(_put(self, {_string(path)}, {constructor}))", " " * 8))
            body.append(f"        {target} = m[{modules}]({xs[0]})  # {path}")
            modules += 1
        else:
            body.extend(_wrap(f"{target} = ", _FUNCTIONS[node.op](node.args, xs, node),
                              " " * 8))
        frees = sorted({s for s in node.inputs if last_use.get(s) == node.id})
        if frees:
            body.append("        del " + ", ".join(names[s] for s in frees))
    body.append(f"        return {names[graph.output]}")

    arguments = ", ".join(f"{names[i]}: torch.Tensor" for i in graph.inputs)
    where = f"from {network.source}" if network.source else "from a spacelang spec"
    header = [
        f'"""{_describe(network)}: ×{network.scale} super-resolution,',
        f"{where}.",
        "",
        "Generated by `spacelang compile --emit-py`; needs only torch. `Network` has the",
        "state_dict keys of spacelang's FixedNet for this spec, so its weights load as they are.",
        "",
        "    net = build()",
        "    net.load_state_dict(torch.load(\"weights.pt\", weights_only=True))",
        '"""',
        "",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        "",
        "class _Container(nn.Module):",
        '    """A named level of the module tree that only holds children."""',
        "",
        "",
        "def _put(root: nn.Module, path: str, module: nn.Module) -> nn.Module:",
        '    """Register `module` under a dotted path straight in `_modules` (names may be',
        '    `1` or `half`), creating container levels as needed."""',
        "    *parents, leaf = path.split(\".\")",
        "    parent = root",
        "    for name in parents:",
        "        child = parent._modules.get(name)",
        "        if child is None:",
        "            child = parent._modules[name] = _Container()",
        "        parent = child",
        "    parent._modules[leaf] = module",
        "    return module",
        "",
        "",
        "class Network(nn.Module):",
        f'    """{network.name}: input {network.in_channels} channels in [0, '
        f'{network.rgb_range}], output ×{network.scale}."""',
        "",
        f"    name = {_string(network.name)}",
        f"    scale = {network.scale}",
        f"    rgb_range = {network.rgb_range}",
        f"    in_channels = {network.in_channels}",
        f"    out_channels = {network.out_channels}",
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        "        m: list[nn.Module] = []",
        *init,
        "        # modules in forward order; a plain list, so not registered twice",
        "        self._steps = m",
        "",
        f"    def forward(self, {arguments}) -> torch.Tensor:",
        "        m = self._steps",
        *body,
        "",
        "",
        "def build() -> Network:",
        f'    """A freshly initialised `{network.name}`."""',
        "    return Network()",
        "",
    ]
    return "\n".join(header)


__all__ = ["OPS", "emit_python"]
