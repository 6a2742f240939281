"""The primitive registry: one record per primitive op, the single source of its facts.

A `Primitive` record says everything the language knows about a primitive:

- `params`: its signature, in positional order: names, kinds (`tensor`,
  `tensors`, `int`, `ints`, `float`, `floats`, `bool`, `str`), defaults, and each
  argument's own range (`ParamSpec.minimum`, `window`, `channels`), which the
  checker enforces where the argument is written; a `floats` argument is one
  number or one per channel (`[0.4, 0.5, 0.6]`), bound as a tuple; a `str`
  argument is one of the spec's `options`;
- `resolve`: the arguments rule across arguments (groups dividing the channels,
  max pool padding within half the kernel). It validates the bound arguments and fills
  in the derived ones (a conv's effective padding, a max pool's default stride,
  a depthwise conv's groups), so IR nodes carry them resolved and no backend
  works them out again;
- `infer`: the shape rule, giving output channels and spatial sizes from the
  inputs' (raises `ShapeError`);
- `cost`: the cost rule, `(args, inputs, output) -> Cost` over concrete
  `Extent`s. It counts parameters, MACs as thop counts them and conv MACs as
  `FlopCounterMode` counts them (an `outputs_many` rule runs once per output);
- `has_weights`: the node gets a path and is lowered as a module with weights;
  `module`: lowered as an `nn.Module` (true for weights, and for `avgpool`,
  which thop only counts as a module); `outputs_many`: gives several values,
  each one IR node with its `output_index`.

Each backend holds its implementations in an `Implementations` table keyed
by primitive name, filled with a decorator, so a backend is a table of entries:

    LOWERINGS = Implementations("torch")
    lowering = LOWERINGS.register

    @lowering("relu")
    def _relu(args, x):
        return F.relu(x)

A table refuses an entry for a name that has no record. `coverage_errors()`
lists every primitive that some table lacks; tests/backends/test_registry.py
fails while the list is not empty.

Adding a primitive:

1. Append one `Primitive(...)` record to `PRIMITIVES` below: signature, shape
   rule, cost rule (`free` when it costs nothing), and an arguments rule if it
   derives or validates arguments. A new kind of size change (an upsampling
   factor, a transposed window) is a new step kind in `ir.Spatial`.
2. Add one entry to each backend table. In `backends/torch/ops.py`,
   `@lowering(name)` is `(args, in_channels, out_channels) -> nn.Module` for
   a module primitive and `(args, *tensors) -> Tensor` (a tuple when
   `outputs_many`) otherwise. In `backends/emit.py`, `@emitter(name)` gives
   the same as Python source: the module's constructor call, or an expression
   over the input names.
3. Use the primitive in `EVERY_PRIMITIVE` (tests/backends/test_emit.py), which
   must use every primitive, and in `EVERY_COUNTED_PRIMITIVE`
   (tests/backends/test_cost.py) if it costs anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from attrs import Factory, field, frozen

from spacelang.ir import GLOBAL, Spatial


class ShapeError(Exception):
    """A primitive applied to wrong arguments or values; `argument` indexes the culprit tensor."""

    def __init__(self, message: str, argument: int | None = None):
        super().__init__(message)
        self.argument = argument


@frozen
class ParamSpec:
    """One parameter and its range; a default of None means "derived by the arguments rule".

    The range is checked for each argument written in a spec, so that the error points
    at it: an `int`/`ints` value is at least `minimum` (1 unless the record says 0, as
    for padding; None: any), a `float` is finite. `window` marks a kernel-window size
    (k, stride, dilation, padding), held to the `kernel` limit with the default too;
    `channels` marks a channel count, held to the `channels` limit.
    """

    name: str
    kind: str  # tensor | tensors | int | ints | float | floats | bool | str
    default: Any = None
    required: bool = True
    options: tuple[str, ...] = ()  # the values a `str` parameter takes
    minimum: int | None = 1
    window: bool = False
    channels: bool = False

    def range_problem(self, value: Any) -> str | None:
        """Why `value` is outside this parameter's range, or None when it is inside."""
        if self.kind == "float" and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if self.kind in ("int", "ints") and self.minimum is not None and value < self.minimum:
            need = {0: "non-negative", 1: "positive"}.get(self.minimum,
                                                          f"at least {self.minimum}")
            return f"must be {need}, got {value}"
        return None


@frozen
class TensorInfo:
    """A value's shape as the checker knows it: channels and a symbolic spatial size."""

    channels: int
    spatial: Spatial


@frozen
class Extent:
    """A value's concrete shape for one input size: channels × height × width."""

    channels: int
    height: int
    width: int

    @property
    def elements(self) -> int:
        return self.channels * self.height * self.width


@frozen
class Cost:
    """Parameters and multiply-adds; `macs` as thop counts, `conv_macs` convolutions only."""

    params: int = 0
    macs: int = 0
    conv_macs: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs,
                    self.conv_macs + other.conv_macs)

    def __mul__(self, n: int) -> Cost:
        return Cost(self.params * n, self.macs * n, self.conv_macs * n)


Args = dict[str, Any]
Resolve = Callable[[Sequence[TensorInfo], Args], Args]
Infer = Callable[[Sequence[TensorInfo], Args], list[TensorInfo]]
CostRule = Callable[[Args, Sequence[Extent], Extent], Cost]


def _unchanged(inputs: Sequence[TensorInfo], args: Args) -> Args:
    return args


def free(args: Args, inputs: Sequence[Extent], output: Extent) -> Cost:
    """The cost rule of a primitive that has no weights and that thop does not count."""
    return Cost()


@frozen(kw_only=True)
class Primitive:
    """One primitive op; see the module docstring for each field's meaning."""

    name: str
    params: tuple[ParamSpec, ...]
    infer: Infer
    cost: CostRule
    resolve: Resolve = _unchanged
    has_weights: bool = False
    module: bool = field(default=Factory(lambda self: self.has_weights, takes_self=True))
    outputs_many: bool = False
    doc: str = ""

    def __attrs_post_init__(self) -> None:
        if self.has_weights and not self.module:
            raise ValueError(f"primitive {self.name!r} has weights, so it must be a module")

    def apply(self, inputs: Sequence[TensorInfo],
              args: Mapping[str, Any]) -> tuple[Args, list[TensorInfo]]:
        """The resolved arguments and the output shapes for bound `args`; raises ShapeError."""
        resolved = self.resolve(inputs, dict(args))
        return resolved, self.infer(inputs, resolved)


# -- backend tables

Entry = TypeVar("Entry")

BACKENDS: dict[str, Implementations[Any]] = {}
"""Every backend table created so far, by backend name."""


class Implementations(Generic[Entry]):
    """One backend's implementation of each primitive, keyed by primitive name."""

    def __init__(self, backend: str):
        if backend in BACKENDS:
            raise ValueError(f"a backend table named {backend!r} already exists")
        self.backend = backend
        self._entries: dict[str, Entry] = {}
        BACKENDS[backend] = self

    def register(self, *names: str) -> Callable[[Entry], Entry]:
        """A decorator that makes its function the entry for each of `names`."""

        def add(entry: Entry) -> Entry:
            for name in names:
                if name not in PRIMITIVES:
                    raise KeyError(f"the {self.backend} backend cannot implement {name!r}: "
                                   "there is no such primitive")
                if name in self._entries:
                    raise ValueError(f"the {self.backend} backend implements {name!r} twice")
                self._entries[name] = entry
            return entry

        return add

    def update(self, entries: Mapping[str, Entry]) -> None:
        """Register several entries at once, e.g. one-line lambdas."""
        for name, entry in entries.items():
            self.register(name)(entry)

    def unregister(self, name: str) -> None:
        del self._entries[name]

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise NotImplementedError(
                f"the {self.backend} backend has no entry for primitive {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def missing(self) -> list[str]:
        """Primitives this backend has no entry for."""
        return [name for name in PRIMITIVES if name not in self._entries]

    def unknown(self) -> list[str]:
        """Entries for names that are not (or no longer) primitives."""
        return [name for name in self._entries if name not in PRIMITIVES]


def coverage_errors() -> list[str]:
    """One line per backend table that misses a primitive or implements an unknown one."""
    errors = []
    for backend, table in BACKENDS.items():
        if table.missing():
            errors.append(f"the {backend} backend has no entry for "
                          + ", ".join(table.missing()))
        if table.unknown():
            errors.append(f"the {backend} backend implements unknown primitives "
                          + ", ".join(table.unknown()))
    return errors


# -- rules shared by several primitives

def _same_spatial(tensors: Sequence[TensorInfo], what: str) -> None:
    first = tensors[0]
    for i, tensor in enumerate(tensors[1:], start=1):
        if tensor.spatial != first.spatial:
            raise ShapeError(
                f"{what}: spatial sizes differ ({first.spatial.describe()} "
                f"vs {tensor.spatial.describe()})",
                i,
            )


def _window_spatial(spatial: Spatial, kernel: int, stride: int, dilation: int,
                    padding: int) -> Spatial:
    result = spatial.window(kernel, stride, dilation, padding)
    if spatial == GLOBAL and result != spatial:
        raise ShapeError("cannot apply a size-changing window to a globally pooled value", 0)
    return result


def _resolve_padding(args: Args) -> None:
    """`padding` None means 'same': dilation·(k − 1)/2, which needs an odd kernel."""
    if args["padding"] is None:
        if args["k"] % 2 == 0:
            raise ShapeError(f"'same' padding needs an odd kernel, got k={args['k']}; "
                             "give padding= explicitly")
        args["padding"] = args["dilation"] * (args["k"] - 1) // 2


def _check_groups(x: TensorInfo, args: Args) -> None:
    groups = args["groups"]
    if x.channels % groups or args["out"] % groups:
        raise ShapeError(
            f"groups={groups} must divide both input channels ({x.channels}) "
            f"and output channels ({args['out']})")


def _resolve_conv(inputs: Sequence[TensorInfo], args: Args) -> Args:
    (x,) = inputs
    _check_groups(x, args)
    _resolve_padding(args)
    return args


def _resolve_dwconv(inputs: Sequence[TensorInfo], args: Args) -> Args:
    _resolve_padding(args)
    args["groups"] = inputs[0].channels
    return args


def _infer_conv(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    spatial = _window_spatial(inputs[0].spatial, args["k"], args["stride"], args["dilation"],
                              args["padding"])
    return [TensorInfo(args["out"], spatial)]


def _infer_dwconv(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    spatial = _window_spatial(inputs[0].spatial, args["k"], args["stride"], args["dilation"],
                              args["padding"])
    return [TensorInfo(inputs[0].channels, spatial)]


def _cost_conv(args: Args, inputs: Sequence[Extent], output: Extent) -> Cost:
    per_output = inputs[0].channels // args["groups"] * args["k"] * args["k"]
    params = output.channels * per_output + (output.channels if args["bias"] else 0)
    macs = output.elements * per_output
    return Cost(params, macs, macs)


def _resolve_prelu(inputs: Sequence[TensorInfo], args: Args) -> Args:
    args["slopes"] = inputs[0].channels if args["per_channel"] else 1
    return args


def _cost_prelu(args: Args, inputs: Sequence[Extent], output: Extent) -> Cost:
    return Cost(args["slopes"], output.elements, 0)  # thop: one op per element


def _infer_elementwise(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    return [inputs[0]]


def _infer_binary(name: str, broadcast: bool) -> Infer:
    def infer(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
        left, right = inputs
        if left.channels != right.channels:
            raise ShapeError(
                f"cannot {name} values with different channel counts: left has "
                f"{left.channels}, right has {right.channels}", 1)
        if left.spatial != right.spatial:
            if broadcast and GLOBAL in (left.spatial, right.spatial):
                return [left if right.spatial == GLOBAL else right]
            raise ShapeError(
                f"cannot {name} values with different spatial sizes: left is "
                f"{left.spatial.describe()}, right is {right.spatial.describe()}", 1)
        return [left]

    return infer


def _infer_sum(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    if not inputs:
        raise ShapeError("sum needs at least one value")
    for i, t in enumerate(inputs[1:], start=1):
        if t.channels != inputs[0].channels:
            raise ShapeError(
                f"cannot sum values with different channel counts: argument 1 has "
                f"{inputs[0].channels}, argument {i + 1} has {t.channels}", i)
    _same_spatial(inputs, "cannot sum values")
    return [inputs[0]]


def _infer_concat(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    if not inputs:
        raise ShapeError("concat needs at least one value")
    _same_spatial(inputs, "cannot concat values")
    return [TensorInfo(sum(t.channels for t in inputs), inputs[0].spatial)]


def _resolve_split(inputs: Sequence[TensorInfo], args: Args) -> Args:
    sizes = args["sizes"]
    if not sizes:
        raise ShapeError("split needs at least one size")
    if sum(sizes) != inputs[0].channels:
        shown = " + ".join(str(s) for s in sizes)
        raise ShapeError(
            f"split sizes {shown} = {sum(sizes)} do not add up to the input's "
            f"{inputs[0].channels} channels", 0)
    return args


def _infer_split(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    return [TensorInfo(size, inputs[0].spatial) for size in args["sizes"]]


def _infer_pixel_shuffle(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    (x,) = inputs
    r = args["r"]
    if x.channels % (r * r):
        raise ShapeError(f"pixel_shuffle({r}) needs channels divisible by {r * r}, "
                         f"got {x.channels}", 0)
    if x.spatial == GLOBAL:
        raise ShapeError("cannot pixel_shuffle a globally pooled value", 0)
    return [TensorInfo(x.channels // (r * r), x.spatial.upscale(r))]


def _infer_global(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    return [TensorInfo(inputs[0].channels, GLOBAL)]


def _cost_avgpool(args: Args, inputs: Sequence[Extent], output: Extent) -> Cost:
    # thop's AdaptiveAvgPool2d: one op per input element and one per output element
    return Cost(0, inputs[0].elements + output.elements, 0)


def _resolve_maxpool(inputs: Sequence[TensorInfo], args: Args) -> Args:
    """`stride` None means the kernel size; padding may be at most half the kernel."""
    if args["stride"] is None:
        args["stride"] = args["k"]
    if args["padding"] > args["k"] // 2:
        raise ShapeError(f"max pool padding must be between 0 and half the kernel "
                         f"({args['k'] // 2}), got {args['padding']}")
    return args


def _infer_maxpool(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    spatial = _window_spatial(inputs[0].spatial, args["k"], args["stride"], 1, args["padding"])
    return [TensorInfo(inputs[0].channels, spatial)]


def _resolve_conv_transpose(inputs: Sequence[TensorInfo], args: Args) -> Args:
    """`padding` None means (k − 1)/2 (an odd kernel); `output_padding` None means the
    value that makes the output exactly `stride` times the input, else 0."""
    (x,) = inputs
    _check_groups(x, args)
    k, stride = args["k"], args["stride"]
    if args["padding"] is None:
        if k % 2 == 0:
            raise ShapeError(f"the default padding needs an odd kernel, got k={k}; "
                             "give padding= explicitly")
        args["padding"] = (k - 1) // 2
    if args["output_padding"] is None:
        exact = stride - k + 2 * args["padding"]
        args["output_padding"] = exact if 0 <= exact < stride else 0
    if not 0 <= args["output_padding"] < stride:
        raise ShapeError(f"output_padding must be between 0 and stride - 1 ({stride - 1}), "
                         f"got {args['output_padding']}")
    if k - 2 * args["padding"] + args["output_padding"] <= 0:
        raise ShapeError(f"padding={args['padding']} is too large for k={k}")
    return args


def _infer_conv_transpose(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    (x,) = inputs
    if x.spatial == GLOBAL:
        raise ShapeError("cannot apply a transposed conv to a globally pooled value", 0)
    spatial = x.spatial.transposed(args["k"], args["stride"], args["padding"],
                                   args["output_padding"])
    return [TensorInfo(args["out"], spatial)]


def _cost_conv_transpose(args: Args, inputs: Sequence[Extent], output: Extent) -> Cost:
    # each input element is scattered through a k×k window to out/groups channels;
    # thop and FlopCounterMode both count it so (bias not counted)
    per_input = output.channels // args["groups"] * args["k"] * args["k"]
    params = inputs[0].channels * per_input + (output.channels if args["bias"] else 0)
    macs = inputs[0].elements * per_input
    return Cost(params, macs, macs)


def _infer_upsample(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    (x,) = inputs
    if x.spatial == GLOBAL:
        raise ShapeError("cannot upsample a globally pooled value", 0)
    return [TensorInfo(x.channels, x.spatial.upscale(args["r"]))]


def _resolve_local_pool(inputs: Sequence[TensorInfo], args: Args) -> Args:
    k = args["k"]
    if k <= 0 or k % 2 == 0:
        raise ShapeError(f"a local pool keeps the size, so its kernel must be odd and "
                         f"positive, got k={k}")
    if inputs[0].spatial == GLOBAL:
        raise ShapeError("cannot pool a globally pooled value locally", 0)
    return args


def _window_total(size: int, k: int) -> int:
    """Σ over the `size` outputs of a stride-1 window of k (padding k // 2) of the
    inputs it covers, padding excluded."""
    pad = k // 2
    return sum(min(i + pad + 1, size) - max(i - pad, 0) for i in range(size))


def _cost_local_avgpool(args: Args, inputs: Sequence[Extent], output: Extent) -> Cost:
    # thop's AvgPool2d (count_include_pad=False): one add per input in each window,
    # one divide per output
    x = inputs[0]
    windows = _window_total(x.height, args["k"]) * _window_total(x.width, args["k"])
    return Cost(0, x.channels * windows + output.elements, 0)


def _resolve_affine(inputs: Sequence[TensorInfo], args: Args) -> Args:
    channels = inputs[0].channels
    for key in ("scale", "shift"):
        values = args[key]
        if len(values) not in (1, channels):
            raise ShapeError(f"the constant has {len(values)} values, but the tensor has "
                             f"{channels} channels", 1)
    return args


def _infer_resize(inputs: Sequence[TensorInfo], args: Args) -> list[TensorInfo]:
    x, like = inputs
    return [TensorInfo(x.channels, like.spatial)]


def _t(name: str) -> ParamSpec:
    return ParamSpec(name, "tensor")


def _opt(name: str, kind: str, default: Any, **range_: Any) -> ParamSpec:
    return ParamSpec(name, kind, default, required=False, **range_)


_KERNEL = _opt("k", "int", 3, window=True)
_STRIDE = _opt("stride", "int", 1, window=True)
_DILATION = _opt("dilation", "int", 1, window=True)
_GROUPS = _opt("groups", "int", 1)
_BIAS = _opt("bias", "bool", True)
_SAME_PADDING = _opt("padding", "int", None, minimum=0, window=True)  # None: 'same'

PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in [
        Primitive(name="conv", params=(_t("x"), ParamSpec("out", "int", channels=True),
                                       _KERNEL, _STRIDE, _DILATION, _GROUPS, _BIAS,
                                       _SAME_PADDING),
                  resolve=_resolve_conv, infer=_infer_conv, cost=_cost_conv,
                  has_weights=True,
                  doc="2-d convolution to `out` channels; 'same' padding unless padding= is given"),
        Primitive(name="dwconv", params=(_t("x"), _KERNEL, _STRIDE, _DILATION, _BIAS,
                                         _SAME_PADDING),
                  resolve=_resolve_dwconv, infer=_infer_dwconv, cost=_cost_conv,
                  has_weights=True, doc="depthwise convolution (groups = channels)"),
        Primitive(name="relu", params=(_t("x"),), infer=_infer_elementwise, cost=free),
        Primitive(name="lrelu", params=(_t("x"), _opt("slope", "float", 0.01)),
                  infer=_infer_elementwise, cost=free,
                  doc="leaky relu with negative slope `slope`"),
        Primitive(name="sigmoid", params=(_t("x"),), infer=_infer_elementwise, cost=free),
        Primitive(name="prelu", params=(_t("x"), _opt("per_channel", "bool", False)),
                  resolve=_resolve_prelu, infer=_infer_elementwise, cost=_cost_prelu,
                  has_weights=True,
                  doc="parametric relu: one learned slope, or one per channel (`slopes`)"),
        Primitive(name="identity", params=(_t("x"),), infer=_infer_elementwise, cost=free),
        Primitive(name="add", params=(_t("x"), _t("y")),
                  infer=_infer_binary("add", broadcast=False), cost=free),
        Primitive(name="sub", params=(_t("x"), _t("y")),
                  infer=_infer_binary("subtract", broadcast=False), cost=free),
        Primitive(name="mul", params=(_t("x"), _t("y")),
                  infer=_infer_binary("multiply", broadcast=True), cost=free,
                  doc="elementwise product; a globally pooled operand broadcasts"),
        Primitive(name="sum", params=(ParamSpec("xs", "tensors"),), infer=_infer_sum,
                  cost=free),
        Primitive(name="concat", params=(ParamSpec("xs", "tensors"),), infer=_infer_concat,
                  cost=free, doc="concatenate along channels"),
        Primitive(name="split", params=(_t("x"), ParamSpec("sizes", "ints", channels=True)),
                  resolve=_resolve_split, infer=_infer_split, cost=free, outputs_many=True,
                  doc="split channels into pieces of the given sizes"),
        Primitive(name="pixel_shuffle", params=(_t("x"), ParamSpec("r", "int")),
                  infer=_infer_pixel_shuffle, cost=free),
        Primitive(name="mean", params=(_t("x"),), infer=_infer_global, cost=free,
                  doc="per-channel mean over height and width"),
        Primitive(name="std", params=(_t("x"),), infer=_infer_global, cost=free,
                  doc="per-channel population standard deviation over height and width"),
        Primitive(name="avgpool", params=(_t("x"),), infer=_infer_global,
                  cost=_cost_avgpool, module=True,
                  doc="global average pool (a module, so that thop counts it)"),
        Primitive(name="maxpool", params=(_t("x"), ParamSpec("k", "int", window=True),
                                          _opt("stride", "int", None, window=True),
                                          _opt("padding", "int", 0, minimum=0, window=True)),
                  resolve=_resolve_maxpool, infer=_infer_maxpool, cost=free,
                  doc="max pool; stride defaults to the kernel size"),
        Primitive(name="resize", params=(_t("x"), _t("like")), infer=_infer_resize, cost=free,
                  doc="bilinear resize of x to the spatial size of `like`"),
        Primitive(name="conv_transpose",
                  params=(_t("x"), ParamSpec("out", "int", channels=True), _KERNEL,
                          _STRIDE, _SAME_PADDING,
                          _opt("output_padding", "int", None, minimum=0, window=True), _GROUPS,
                          _BIAS),
                  resolve=_resolve_conv_transpose, infer=_infer_conv_transpose,
                  cost=_cost_conv_transpose, has_weights=True,
                  doc="transposed convolution; by default an odd kernel upscales by `stride`"),
        Primitive(name="upsample",
                  params=(_t("x"), ParamSpec("r", "int"),
                          ParamSpec("mode", "str", "nearest", required=False,
                                    options=("nearest", "bilinear"))),
                  infer=_infer_upsample, cost=free,
                  doc="upsample by an integer factor; bilinear without aligned corners"),
        Primitive(name="tanh", params=(_t("x"),), infer=_infer_elementwise, cost=free),
        Primitive(name="local_avgpool", params=(_t("x"), _KERNEL),
                  resolve=_resolve_local_pool, infer=_infer_elementwise,
                  cost=_cost_local_avgpool, module=True,
                  doc="k×k average pool, stride 1, same padding not counted in the average "
                      "(a module, so that thop counts it)"),
        Primitive(name="local_maxpool", params=(_t("x"), _KERNEL),
                  resolve=_resolve_local_pool, infer=_infer_elementwise, cost=free,
                  doc="k×k max pool, stride 1, same padding"),
        Primitive(name="zero", params=(_t("x"),), infer=_infer_elementwise, cost=free,
                  doc="zeros of the input's shape (the `none` op of cell spaces)"),
        Primitive(name="affine",
                  params=(_t("x"), _opt("scale", "floats", (1.0,)),
                          _opt("shift", "floats", (0.0,))),
                  resolve=_resolve_affine, infer=_infer_elementwise, cost=free, module=True,
                  doc="x · scale + shift, each one number or one per channel; what "
                      "`x * 0.1` and `x - [0.4, 0.5, 0.6]` become (constants as buffers)"),
    ]
}

BINARY_OPERATORS = {"+": "add", "-": "sub", "*": "mul"}
"""The primitive of each operator between two tensors; between a tensor and a number
or a per-channel constant, `+ - * /` are all `affine`."""

SCALAR_OPERATOR = "affine"
