"""Standalone PyTorch source for a fixed network.

`emit_python(network)` writes a Python module that needs nothing but torch: a
`Network(nn.Module)` whose `state_dict` keys, parameter shapes and module tree
are those of `FixedNet(network)` and whose forward runs the same ops in the
same order, so weights trained with spacelang load into it and give identical
outputs. Steps run in place as `backends.inplace` plans them for passes that record
gradients, so the module trains as it is. `build(channels_last=..., compile=...,
fuse=...)` gives the optimised forms; `fuse` follows `backends.fusion` as the torch backend
does. Modules are registered straight into `_modules` under the spec's value
paths (a value may be called `half` or `1`), as `FixedNet` does.
"""

from __future__ import annotations

from typing import Any

from spacelang.backends.fusion import FUSABLE_CONVS, POST_OPS, fused_steps
from spacelang.backends.inplace import IN_PLACE_OPS, in_place_inputs

from spacelang.ir import Graph, Network, Node, input_channels, module_path
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


#: In-place forms of the primitives `backends.inplace` may run in place, writing into the
#: first name (`_add_into` and `_mul_into` are defined in the emitted module).
IN_PLACE_EMITTERS = {
    "relu": lambda a, xs: f"torch.relu_({xs[0]})",
    "lrelu": lambda a, xs: f"F.leaky_relu_({xs[0]}, {float(a['slope'])!r})",
    "sigmoid": lambda a, xs: f"torch.sigmoid_({xs[0]})",
    "tanh": lambda a, xs: f"torch.tanh_({xs[0]})",
    "add": lambda a, xs: f"_add_into({xs[0]}, {xs[1]})",
    "mul": lambda a, xs: f"_mul_into({xs[0]}, {xs[1]})",
}
assert set(IN_PLACE_EMITTERS) == set(IN_PLACE_OPS)


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


def _expression(node: Node, xs: list[str], written: int | None) -> str:
    """The Python expression of a primitive without a module; ``written``: the position of
    the input its in-place form overwrites (None: out of place)."""
    if written is not None:
        ordered = [xs[written], *xs[:written], *xs[written + 1:]]
        return IN_PLACE_EMITTERS[node.op](node.args, ordered)
    expression = EMITTERS[node.op](node.args, xs)
    if PRIMITIVES[node.op].outputs_many:
        expression += f"[{node.output_index}]"
    return expression


def _lines(graph: Graph, names: dict[int, str],
           rows: list[tuple[Node, tuple[int, ...], str]]) -> list[str]:
    """A forward's body: each row's statement (under a comment naming its scope when that
    changes), each value deleted after its last reader, then the return."""
    last_use: dict[int, int] = {}
    for position, (_, sources, _) in enumerate(rows):
        for source in sources:
            last_use[source] = position
    last_use[graph.output] = len(rows)
    lines: list[str] = []
    scope = ""
    for position, (node, sources, statement) in enumerate(rows):
        if node.scope != scope:
            scope = node.scope
            lines.append(f"        # {scope or '(network)'}")
        lines.extend(_wrap("", statement, " " * 8))
        frees = sorted({s for s in sources if last_use.get(s) == position})
        if frees:
            lines.append("        del " + ", ".join(names[s] for s in frees))
    lines.append(f"        return {names[graph.output]}")
    return lines


def _fused_forward(graph: Graph, names: dict[int, str],
                   index_of: dict[str, int]) -> tuple[list[str], list[str]]:
    """The fused conv steps (constructor calls over ``m``, the forward-order module list)
    and the body of ``_forward_fused``: the steps of `backends.fusion.fused_steps`, as the
    torch backend's `GraphModule.fuse_convolutions` runs them."""
    nodes = {node.id: node for node in graph.nodes}
    steps: list[str] = []
    rows: list[tuple[Node, tuple[int, ...], str]] = []
    for step in fused_steps(graph):
        node, epilogue = step.node, step.epilogue
        if epilogue is None and node.op not in FUSABLE_CONVS:
            xs = [names[s] for s in node.inputs]
            if PRIMITIVES[node.op].module:
                call = f"m[{index_of[node.weights or module_path(node)]}]({', '.join(xs)})"
            else:
                call = _expression(node, xs, step.written)
            rows.append((node, step.sources, f"{names[node.id]} = {call}"))
            continue
        conv = nodes[epilogue.conv] if epilogue is not None else node
        options = [f"m[{index_of[conv.weights or module_path(conv)]}]"]
        if epilogue is not None and epilogue.activation is not None:
            activation = nodes[epilogue.activation]
            name, scalars = POST_OPS[activation.op](activation.args)
            options.append(f"{_string(name)}, {scalars!r}")
        if epilogue is not None and epilogue.residual is not None:
            options.append("residual=True" + (", into_residual=True" if step.into_residual
                                              else ""))
        steps.append(f"_FusedConv({', '.join(options)})")
        call = f"f[{len(steps) - 1}]({', '.join(names[s] for s in step.sources)})"
        rows.append((node, step.sources, f"{names[node.id]} = {call}"))
    return steps, _lines(graph, names, rows)


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

    in_place = in_place_inputs(graph, autograd=True)
    init: list[str] = []
    body: list[str] = []
    modules = 0
    index_of: dict[str, int] = {}  # module path → its index in the forward-order list
    rows: list[tuple[Any, str]] = []
    for node in graph.nodes:
        if node.op == "input":
            continue
        target = names[node.id]
        xs = [names[s] for s in node.inputs]
        if PRIMITIVES[node.op].module and node.weights:
            call = f"m[{index_of[node.weights]}]({', '.join(xs)})  # {node.weights}"
        elif PRIMITIVES[node.op].module:
            path = module_path(node)
            constructor = EMITTERS[node.op](node.args, input_channels(graph, node),
                                            node.channels)
            init.extend(_wrap("", f"m.append(_put(self, {_string(path)}, {constructor}))", " " * 8))
            call = f"m[{modules}]({', '.join(xs)})  # {path}"
            index_of[path] = modules
            modules += 1
        else:
            call = _expression(node, xs, in_place.get(node.id))
        rows.append((node, node.inputs, f"{target} = {call}"))
    body = _lines(graph, names, rows)
    fused_steps, fused_body = _fused_forward(graph, names, index_of)

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
        "def _mul_into(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:",
        '    """x * y, written into x (which dies there) when the product has its shape',
        '    and dtype."""',
        "    if x.dtype == y.dtype and torch.broadcast_shapes(x.shape, y.shape) == x.shape:",
        "        return x.mul_(y)",
        "    return x * y",
        "",
        "",
        "class _FusedConv:",
        '    """`conv` as one oneDNN call (CPU, float32, no autograd), then `+ other` (written',
        "    into `other` with `into_residual`), then the activation `post_op` with `scalars`.",
        "    The weight is reordered to oneDNN's layout once per input shape and kept until",
        '    the weight changes; copies of the network drop it."""',
        "",
        "    def __init__(self, conv: nn.Conv2d, post_op: str = \"none\", scalars: tuple = (),",
        "                 residual: bool = False, into_residual: bool = False) -> None:",
        "        self.conv, self.post_op, self.scalars = conv, post_op, list(scalars)",
        "        self.residual, self.into_residual = residual, into_residual",
        "        self._packed = None",
        "",
        "    def __getstate__(self) -> dict:",
        "        return {**self.__dict__, \"_packed\": None}",
        "",
        "    def __call__(self, x: torch.Tensor,",
        "                 other: torch.Tensor | None = None) -> torch.Tensor:",
        "        conv, ops = self.conv, torch.ops.mkldnn",
        "        geometry = (conv.padding, conv.stride, conv.dilation, conv.groups)",
        "        key = (x.shape, conv.weight._version, conv.weight.data_ptr())",
        "        if self._packed is None or self._packed[0] != key:",
        "            self._packed = (key, ops._reorder_convolution_weight(conv.weight, *geometry,",
        "                                                                  x.shape))",
        "        weight = self._packed[1]",
        "        if not self.residual:",
        "            return ops._convolution_pointwise(x, weight, conv.bias, *geometry,",
        "                                              self.post_op, self.scalars, \"\")",
        "        unary = None if self.post_op == \"none\" else self.post_op",
        "        if self.into_residual:",
        "            return ops._convolution_pointwise_(other, x, weight, conv.bias, *geometry,",
        "                                               \"add\", 1.0, unary, self.scalars, None)",
        "        return ops._convolution_pointwise(x, other, weight, conv.bias, *geometry,",
        "                                          \"add\", 1.0, unary, self.scalars, None)",
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
        "        self._fused: list | None = None",
        "",
        "    def fuse(self) -> \"Network\":",
        '        """Run passes without gradients on float32 CPU inputs with each convolution one',
        "        oneDNN call that also applies the activation, or adds the residual, after it",
        "        (outputs equal to float32 rounding); passes with gradients run as before.",
        '        Needs a torch with oneDNN."""',
        "        if not hasattr(torch.ops.mkldnn, \"_convolution_pointwise\"):",
        "            raise RuntimeError(f\"torch {torch.__version__} has no oneDNN fused \"",
        "                               \"convolutions\")",
        "        m = self._steps",
        "        self._fused = [",
        *(f"            {step}," for step in fused_steps),
        "        ]",
        "        return self",
        "",
        f"    def forward(self, {arguments}) -> torch.Tensor:",
        "        if (self._fused is not None and not torch.is_grad_enabled()",
        f"                and {names[graph.inputs[0]]}.device.type == \"cpu\"",
        f"                and {names[graph.inputs[0]]}.dtype == torch.float32):",
        f"            return self._forward_fused({', '.join(names[i] for i in graph.inputs)})",
        "        m = self._steps",
        *body,
        "",
        f"    def _forward_fused(self, {arguments}) -> torch.Tensor:",
        "        m, f = self._steps, self._fused" if any(" m[" in line or "(m[" in line
                                                        for line in fused_body)
        else "        f = self._fused",
        *fused_body,
        "",
        "",
        "def build(*, channels_last: bool = False, compile: bool = False,",
        "          fuse: bool = False) -> Network:",
        f'    """A freshly initialised `{network.name}`. `channels_last`: weights (and so',
        "    activations) in NHWC layout, which oneDNN and cuDNN often run faster; `compile`:",
        "    torch.compile (on CPU it needs a C++ compiler); `fuse`: `Network.fuse` (CPU",
        '    inference; not with compile). None changes the state_dict."""',
        "    if fuse and compile:",
        "        raise ValueError(\"fuse and compile exclude each other (compile fuses on its \"",
        "                         \"own)\")",
        "    net = Network()",
        "    if channels_last:",
        "        net = net.to(memory_format=torch.channels_last)",
        "    if fuse:",
        "        net.fuse()",
        "    if compile:",
        "        net.compile()",
        "    return net",
        "",
    ]
    return "\n".join(header)


__all__ = ["EMITTERS", "emit_python"]
