"""Standalone PyTorch source for a fixed network.

`emit_python(network)` writes a Python module that needs nothing but torch: a
`Network(nn.Module)` whose `state_dict` keys, parameter shapes and module tree
are those of `FixedNet(network)` and whose forward runs the same ops in the
same order, so weights trained with spacelang load into it and give identical
outputs. Steps run in place as `backends.inplace` plans them for passes that record
gradients, so the module trains as it is. `build(channels_last=..., compile=...)` gives
the optimised forms. Modules are registered straight into `_modules` under the spec's value
paths (a value may be called `half` or `1`), as `FixedNet` does.
"""

from __future__ import annotations

from typing import Any

from spacelang.backends.inplace import IN_PLACE_OPS, in_place_inputs

from spacelang.ir import Network, input_channels, module_path
from spacelang.primitives import PRIMITIVES, Args, Implementations

LINE = 100

EMITTERS: Implementations[Any] = Implementations("emit")
"""Python source of each primitive, written as `backends/torch/ops.py` lowers it.

A module primitive's entry gives its constructor call,
`(args, in_channels, out_channels) -> str`; any other's an expression over the
names of its inputs, `(args, names) -> str` (a tuple for `outputs_many`).
"""
emitter = EMITTERS.register


def _string(text: str) -> str:
    """A double-quoted Python literal."""
    quoted = repr(text)
    if quoted.startswith("'") and '"' not in text:
        return '"' + quoted[1:-1] + '"'
    return quoted


def _tuple(xs: list[str]) -> str:
    return f"({xs[0]},)" if len(xs) == 1 else f"({', '.join(xs)})"


@emitter("conv", "dwconv")
def _conv(args: Args, in_channels: int, out_channels: int) -> str:
    options = [("stride", args["stride"], 1), ("padding", args["padding"], 0),
               ("dilation", args["dilation"], 1), ("groups", args["groups"], 1),
               ("bias", bool(args["bias"]), True)]
    extra = "".join(f", {name}={value}" for name, value, default in options if value != default)
    return f"nn.Conv2d({in_channels}, {out_channels}, {args['k']}{extra})"


@emitter("conv_transpose")
def _conv_transpose(args: Args, in_channels: int, out_channels: int) -> str:
    options = [("stride", args["stride"], 1), ("padding", args["padding"], 0),
               ("output_padding", args["output_padding"], 0), ("groups", args["groups"], 1),
               ("bias", bool(args["bias"]), True)]
    extra = "".join(f", {name}={value}" for name, value, default in options if value != default)
    return f"nn.ConvTranspose2d({in_channels}, {out_channels}, {args['k']}{extra})"


@emitter("affine")
def _affine(args: Args, in_channels: int, out_channels: int) -> str:
    return f"Affine({tuple(args['scale'])!r}, {tuple(args['shift'])!r})"


@emitter("local_avgpool")
def _local_avgpool(args: Args, in_channels: int, out_channels: int) -> str:
    return f"nn.AvgPool2d({args['k']}, stride=1, padding={args['k'] // 2}, " \
        "count_include_pad=False)"


def _upsample(args: Args, xs: list[str]) -> str:
    if args["mode"] == "nearest":
        return f"F.interpolate({xs[0]}, scale_factor={args['r']}, mode=\"nearest\")"
    return (f"F.interpolate({xs[0]}, scale_factor={args['r']}, mode=\"bilinear\", "
            "align_corners=False)")


@emitter("prelu")
def _prelu(args: Args, in_channels: int, out_channels: int) -> str:
    return f"nn.PReLU({args['slopes']})"


@emitter("avgpool")
def _avgpool(args: Args, in_channels: int, out_channels: int) -> str:
    return "nn.AdaptiveAvgPool2d(1)"


EMITTERS.update({
    "relu": lambda a, xs: f"F.relu({xs[0]})",
    "lrelu": lambda a, xs: f"F.leaky_relu({xs[0]}, {float(a['slope'])!r})",
    "sigmoid": lambda a, xs: f"torch.sigmoid({xs[0]})",
    "identity": lambda a, xs: xs[0],
    "add": lambda a, xs: f"{xs[0]} + {xs[1]}",
    "sub": lambda a, xs: f"{xs[0]} - {xs[1]}",
    "mul": lambda a, xs: f"{xs[0]} * {xs[1]}",
    "sum": lambda a, xs: f"torch.stack({_tuple(xs)}).sum(0)" if len(xs) > 1 else xs[0],
    "concat": lambda a, xs: f"torch.cat({_tuple(xs)}, dim=1)",
    "split": lambda a, xs: f"torch.split({xs[0]}, {list(a['sizes'])!r}, dim=1)",
    "pixel_shuffle": lambda a, xs: f"F.pixel_shuffle({xs[0]}, {a['r']})",
    "mean": lambda a, xs: f"{xs[0]}.mean(dim=(2, 3), keepdim=True)",
    "std": lambda a, xs: f"{xs[0]}.std(dim=(2, 3), keepdim=True, unbiased=False)",
    "maxpool": lambda a, xs: f"F.max_pool2d({xs[0]}, {a['k']}, {a['stride']}, {a['padding']})",
    "resize": lambda a, xs: (f"F.interpolate({xs[0]}, size={xs[1]}.shape[-2:], "
                             "mode=\"bilinear\", align_corners=False)"),
    "upsample": _upsample,
    "tanh": lambda a, xs: f"torch.tanh({xs[0]})",
    "local_maxpool": lambda a, xs: f"F.max_pool2d({xs[0]}, {a['k']}, 1, {a['k'] // 2})",
    "zero": lambda a, xs: f"torch.zeros_like({xs[0]})",
})


#: In-place forms of the primitives `backends.inplace` may run in place while autograd
#: records, writing into the first name (`_add_into` is defined in the emitted module).
IN_PLACE_EMITTERS = {
    "relu": lambda a, xs: f"torch.relu_({xs[0]})",
    "lrelu": lambda a, xs: f"F.leaky_relu_({xs[0]}, {float(a['slope'])!r})",
    "sigmoid": lambda a, xs: f"torch.sigmoid_({xs[0]})",
    "tanh": lambda a, xs: f"torch.tanh_({xs[0]})",
    "add": lambda a, xs: f"_add_into({xs[0]}, {xs[1]})",
}
assert set(IN_PLACE_EMITTERS) == {op for op, safe in IN_PLACE_OPS.items() if safe}


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
        if node.op != "input" and node.op not in EMITTERS:
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
    in_place = in_place_inputs(graph, autograd=True)

    init: list[str] = []
    body: list[str] = []
    scope = ""
    modules = 0
    index_of: dict[str, int] = {}  # module path → its index in the forward-order list
    for node in graph.nodes:
        if node.op == "input":
            continue
        if node.scope != scope:
            scope = node.scope
            body.append(f"        # {scope or '(network)'}")
        target = names[node.id]
        xs = [names[s] for s in node.inputs]
        if PRIMITIVES[node.op].module and node.weights:
            index = index_of[node.weights]
            body.append(f"        {target} = m[{index}]({', '.join(xs)})  # {node.weights}")
        elif PRIMITIVES[node.op].module:
            path = module_path(node)
            constructor = EMITTERS[node.op](node.args, input_channels(graph, node),
                                            node.channels)
            init.extend(_wrap("", f"m.append(_put(self, {_string(path)}, {constructor}))", " " * 8))
            body.append(f"        {target} = m[{modules}]({', '.join(xs)})  # {path}")
            index_of[path] = modules
            modules += 1
        elif node.id in in_place:
            written = in_place[node.id]  # that input first
            ordered = [xs[written], *xs[:written], *xs[written + 1:]]
            body.extend(_wrap(f"{target} = ", IN_PLACE_EMITTERS[node.op](node.args, ordered),
                              " " * 8))
        else:
            expression = EMITTERS[node.op](node.args, xs)
            if PRIMITIVES[node.op].outputs_many:
                expression += f"[{node.output_index}]"
            body.extend(_wrap(f"{target} = ", expression, " " * 8))
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
        "def _add_into(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:",
        '    """x + y, written into x (which dies there) when the sum has its shape and dtype."""',
        "    if x.dtype == y.dtype and torch.broadcast_shapes(x.shape, y.shape) == x.shape:",
        "        return x.add_(y)",
        "    return x + y",
        "",
        "",
        "class Affine(nn.Module):",
        '    """x * scale + shift, one number or one per channel; constants are buffers',
        '    that are not saved in state_dict."""',
        "",
        "    def __init__(self, scale: tuple, shift: tuple) -> None:",
        "        super().__init__()",
        "        def constant(values, neutral):",
        "            if values == (neutral,):",
        "                return None",
        "            return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)",
        "        self.register_buffer(\"scale\", constant(scale, 1.0), persistent=False)",
        "        self.register_buffer(\"shift\", constant(shift, 0.0), persistent=False)",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        if self.scale is not None:",
        "            x = x * self.scale",
        "        if self.shift is not None:",
        "            x = x + self.shift",
        "        return x",
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
        "def build(*, channels_last: bool = False, compile: bool = False) -> Network:",
        f'    """A freshly initialised `{network.name}`. `channels_last`: weights (and so',
        "    activations) in NHWC layout, which oneDNN and cuDNN often run faster; `compile`:",
        '    torch.compile (on CPU it needs a C++ compiler). Neither changes the state_dict."""',
        "    net = Network()",
        "    if channels_last:",
        "        net = net.to(memory_format=torch.channels_last)",
        "    if compile:",
        "        net.compile()",
        "    return net",
        "",
    ]
    return "\n".join(header)


__all__ = ["EMITTERS", "emit_python"]
