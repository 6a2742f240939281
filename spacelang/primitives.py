"""The primitive ops of the language: signatures, channel and spatial rules.

This table is the one place a primitive is defined for the front end; each
backend keys its lowering and cost formula by the same names and tests that it
covers all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen

from spacelang.ir import GLOBAL, Spatial


class ShapeError(Exception):
    """A primitive applied to values of the wrong shape; `argument` indexes the culprit."""

    def __init__(self, message: str, argument: int | None = None):
        super().__init__(message)
        self.argument = argument


@frozen
class ParamSpec:
    name: str
    kind: str  # tensor | tensors | int | ints | float | bool
    default: Any = None
    required: bool = True


@frozen
class TensorInfo:
    channels: int
    spatial: Spatial


Infer = Callable[[list[TensorInfo], dict[str, Any]], list[TensorInfo]]


@frozen
class Primitive:
    name: str
    params: tuple[ParamSpec, ...]
    infer: Infer
    has_weights: bool = False
    doc: str = ""

    @property
    def outputs_many(self) -> bool:
        return self.name == "split"


def _t(name: str) -> ParamSpec:
    return ParamSpec(name, "tensor")


def _opt(name: str, kind: str, default: Any) -> ParamSpec:
    return ParamSpec(name, kind, default, required=False)


def _same_spatial(tensors: list[TensorInfo], what: str) -> None:
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


def _same_padding(kernel: int, dilation: int) -> int:
    if kernel % 2 == 0:
        raise ShapeError(f"'same' padding needs an odd kernel, got k={kernel}; "
                         "give padding= explicitly")
    return dilation * (kernel - 1) // 2


def _positive(value: int, what: str) -> None:
    if value <= 0:
        raise ShapeError(f"{what} must be positive, got {value}")


def _infer_conv(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
    (x,) = ts
    for key in ("out", "k", "stride", "dilation", "groups"):
        _positive(a[key], key)
    groups = a["groups"]
    if x.channels % groups or a["out"] % groups:
        raise ShapeError(
            f"groups={groups} must divide both input channels ({x.channels}) "
            f"and output channels ({a['out']})")
    padding = a["padding"] if a["padding"] >= 0 else _same_padding(a["k"], a["dilation"])
    spatial = _window_spatial(x.spatial, a["k"], a["stride"], a["dilation"], padding)
    return [TensorInfo(a["out"], spatial)]


def _infer_dwconv(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
    (x,) = ts
    for key in ("k", "stride", "dilation"):
        _positive(a[key], key)
    padding = a["padding"] if a["padding"] >= 0 else _same_padding(a["k"], a["dilation"])
    spatial = _window_spatial(x.spatial, a["k"], a["stride"], a["dilation"], padding)
    return [TensorInfo(x.channels, spatial)]


def _infer_elementwise(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
    return [ts[0]]


def _infer_binary(name: str, broadcast: bool) -> Infer:
    def infer(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
        left, right = ts
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


def _infer_sum(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
    if not ts:
        raise ShapeError("sum needs at least one value")
    for i, t in enumerate(ts[1:], start=1):
        if t.channels != ts[0].channels:
            raise ShapeError(
                f"cannot sum values with different channel counts: argument 1 has "
                f"{ts[0].channels}, argument {i + 1} has {t.channels}", i)
    _same_spatial(ts, "cannot sum values")
    return [ts[0]]


def _infer_concat(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
    if not ts:
        raise ShapeError("concat needs at least one value")
    _same_spatial(ts, "cannot concat values")
    return [TensorInfo(sum(t.channels for t in ts), ts[0].spatial)]


def _infer_split(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
    (x,) = ts
    sizes = a["sizes"]
    if not sizes:
        raise ShapeError("split needs at least one size")
    for size in sizes:
        _positive(size, "split size")
    if sum(sizes) != x.channels:
        shown = " + ".join(str(s) for s in sizes)
        raise ShapeError(
            f"split sizes {shown} = {sum(sizes)} do not add up to the input's "
            f"{x.channels} channels", 0)
    return [TensorInfo(size, x.spatial) for size in sizes]


def _infer_pixel_shuffle(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
    (x,) = ts
    r = a["r"]
    _positive(r, "pixel_shuffle factor")
    if x.channels % (r * r):
        raise ShapeError(f"pixel_shuffle({r}) needs channels divisible by {r * r}, "
                         f"got {x.channels}", 0)
    if x.spatial == GLOBAL:
        raise ShapeError("cannot pixel_shuffle a globally pooled value", 0)
    return [TensorInfo(x.channels // (r * r), x.spatial.upscale(r))]


def _infer_global(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
    return [TensorInfo(ts[0].channels, GLOBAL)]


def _infer_maxpool(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
    (x,) = ts
    _positive(a["k"], "k")
    if not 0 <= a["padding"] <= a["k"] // 2:
        raise ShapeError(f"maxpool padding must be between 0 and half the kernel (k // 2 = "
                         f"{a['k'] // 2}), got {a['padding']}")
    stride = a["stride"] if a["stride"] > 0 else a["k"]
    return [TensorInfo(x.channels, _window_spatial(x.spatial, a["k"], stride, 1, a["padding"]))]


def _infer_resize(ts: list[TensorInfo], a: dict[str, Any]) -> list[TensorInfo]:
    x, like = ts
    return [TensorInfo(x.channels, like.spatial)]


_CONV_OPTIONS = (
    _opt("stride", "int", 1),
    _opt("dilation", "int", 1),
    _opt("bias", "bool", True),
    _opt("padding", "int", -1),
)

PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in [
        Primitive("conv", (_t("x"), ParamSpec("out", "int"), _opt("k", "int", 3),
                           _CONV_OPTIONS[0], _CONV_OPTIONS[1], _opt("groups", "int", 1),
                           *_CONV_OPTIONS[2:]),
                  _infer_conv, has_weights=True,
                  doc="2-d convolution to `out` channels; 'same' padding unless padding= is given"),
        Primitive("dwconv", (_t("x"), _opt("k", "int", 3), *_CONV_OPTIONS), _infer_dwconv,
                  has_weights=True, doc="depthwise convolution (groups = channels)"),
        Primitive("relu", (_t("x"),), _infer_elementwise),
        Primitive("lrelu", (_t("x"), _opt("slope", "float", 0.01)), _infer_elementwise,
                  doc="leaky relu with negative slope `slope`"),
        Primitive("sigmoid", (_t("x"),), _infer_elementwise),
        Primitive("prelu", (_t("x"), _opt("per_channel", "bool", False)), _infer_elementwise,
                  has_weights=True),
        Primitive("identity", (_t("x"),), _infer_elementwise),
        Primitive("add", (_t("x"), _t("y")), _infer_binary("add", broadcast=False)),
        Primitive("mul", (_t("x"), _t("y")), _infer_binary("multiply", broadcast=True),
                  doc="elementwise product; a globally pooled operand broadcasts"),
        Primitive("sum", (ParamSpec("xs", "tensors"),), _infer_sum),
        Primitive("concat", (ParamSpec("xs", "tensors"),), _infer_concat,
                  doc="concatenate along channels"),
        Primitive("split", (_t("x"), ParamSpec("sizes", "ints")), _infer_split,
                  doc="split channels into pieces of the given sizes"),
        Primitive("pixel_shuffle", (_t("x"), ParamSpec("r", "int")), _infer_pixel_shuffle),
        Primitive("mean", (_t("x"),), _infer_global,
                  doc="per-channel mean over height and width"),
        Primitive("std", (_t("x"),), _infer_global,
                  doc="per-channel population standard deviation over height and width"),
        Primitive("avgpool", (_t("x"),), _infer_global,
                  doc="global average pool (an AdaptiveAvgPool2d(1) module)"),
        Primitive("maxpool", (_t("x"), ParamSpec("k", "int"), _opt("stride", "int", 0),
                              _opt("padding", "int", 0)), _infer_maxpool,
                  doc="max pool; stride defaults to the kernel size"),
        Primitive("resize", (_t("x"), _t("like")), _infer_resize,
                  doc="bilinear resize of x to the spatial size of `like`"),
    ]
}

BINARY_OPERATORS = {"+": "add", "*": "mul"}
