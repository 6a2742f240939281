"""Torch lowering of each primitive: the `LOWERINGS` table, one entry per primitive.

Arguments arrive resolved by the primitive's record (`spacelang.primitives`):
padding, stride, groups and counts are final. A primitive whose record says
`module` gets an entry `(args, in_channels, out_channels) -> nn.Module`; any
other gets `(args, *tensors) -> Tensor` (a tuple of tensors when the record
says `outputs_many`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from spacelang.backends.fusion import POST_OPS
from torch import nn

from spacelang.primitives import Args, Implementations

LOWERINGS: Implementations[Any] = Implementations("torch")
lowering = LOWERINGS.register


@lowering("conv", "dwconv")
def _conv(args: Args, in_channels: int, out_channels: int) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, args["k"], stride=args["stride"],
                     padding=args["padding"], dilation=args["dilation"], groups=args["groups"],
                     bias=args["bias"])


@lowering("conv_transpose")
def _conv_transpose(args: Args, in_channels: int, out_channels: int) -> nn.Module:
    return nn.ConvTranspose2d(in_channels, out_channels, args["k"], stride=args["stride"],
                              padding=args["padding"], output_padding=args["output_padding"],
                              groups=args["groups"], bias=args["bias"])


class Affine(nn.Module):
    """x · scale + shift, each one number or one per channel.

    The constants come from the spec, so they are buffers that are not saved in
    `state_dict`: they move with `.to()` but are neither trained nor counted.
    """

    def __init__(self, scale: tuple[float, ...], shift: tuple[float, ...]):
        super().__init__()
        self.register_buffer("scale", None if scale == (1.0,) else _constant(scale),
                             persistent=False)
        self.register_buffer("shift", None if shift == (0.0,) else _constant(shift),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            x = x * self.scale
        if self.shift is not None:
            x = x + self.shift
        return x


def _constant(values: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


@lowering("affine")
def _affine(args: Args, in_channels: int, out_channels: int) -> nn.Module:
    return Affine(tuple(args["scale"]), tuple(args["shift"]))


@lowering("local_avgpool")
def _local_avgpool(args: Args, in_channels: int, out_channels: int) -> nn.Module:
    return nn.AvgPool2d(args["k"], stride=1, padding=args["k"] // 2, count_include_pad=False)


@lowering("prelu")
def _prelu(args: Args, in_channels: int, out_channels: int) -> nn.Module:
    return nn.PReLU(args["slopes"])


@lowering("avgpool")
def _avgpool(args: Args, in_channels: int, out_channels: int) -> nn.Module:
    return nn.AdaptiveAvgPool2d(1)


@lowering("relu")
def _relu(args: Args, x: torch.Tensor) -> torch.Tensor:
    return F.relu(x)


@lowering("lrelu")
def _lrelu(args: Args, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, args["slope"])


@lowering("sigmoid")
def _sigmoid(args: Args, x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


@lowering("identity")
def _identity(args: Args, x: torch.Tensor) -> torch.Tensor:
    return x


@lowering("add")
def _add(args: Args, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x + y


@lowering("sub")
def _sub(args: Args, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x - y


@lowering("mul")
def _mul(args: Args, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x * y


@lowering("sum")
def _sum(args: Args, *xs: torch.Tensor) -> torch.Tensor:
    return torch.stack(xs).sum(0) if len(xs) > 1 else xs[0]


@lowering("concat")
def _concat(args: Args, *xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs, dim=1)


@lowering("split")
def _split(args: Args, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.split(x, args["sizes"], dim=1)


@lowering("pixel_shuffle")
def _pixel_shuffle(args: Args, x: torch.Tensor) -> torch.Tensor:
    return F.pixel_shuffle(x, args["r"])


@lowering("mean")
def _mean(args: Args, x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)


@lowering("std")
def _std(args: Args, x: torch.Tensor) -> torch.Tensor:
    return x.std(dim=(2, 3), keepdim=True, unbiased=False)


@lowering("maxpool")
def _maxpool(args: Args, x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, args["k"], args["stride"], args["padding"])


@lowering("upsample")
def _upsample(args: Args, x: torch.Tensor) -> torch.Tensor:
    if args["mode"] == "nearest":
        return F.interpolate(x, scale_factor=args["r"], mode="nearest")
    return F.interpolate(x, scale_factor=args["r"], mode="bilinear", align_corners=False)


@lowering("tanh")
def _tanh(args: Args, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


@lowering("local_maxpool")
def _local_maxpool(args: Args, x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, args["k"], 1, args["k"] // 2)


@lowering("zero")
def _zero(args: Args, x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


@lowering("resize")
def _resize(args: Args, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- in place

def _broadcasts_into(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Whether ``x op y`` has the shape and dtype of ``x``, so it may be written into ``x``."""
    if x.dtype != y.dtype:
        return False
    return x.shape == y.shape or torch.broadcast_shapes(x.shape, y.shape) == x.shape


def _add_into(args: Args, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x.add_(y) if _broadcasts_into(x, y) else x + y


def _mul_into(args: Args, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x.mul_(y) if _broadcasts_into(x, y) else x * y


#: In-place forms ``(args, *tensors)`` of the primitives of `backends.inplace.IN_PLACE_OPS`,
#: writing into the first tensor (`GraphModule` follows `backends.inplace.in_place_inputs`).
INPLACE: dict[str, Any] = {
    "relu": lambda args, x: torch.relu_(x),
    "lrelu": lambda args, x: F.leaky_relu_(x, args["slope"]),
    "sigmoid": lambda args, x: torch.sigmoid_(x),
    "tanh": lambda args, x: torch.tanh_(x),
    "add": _add_into,
    "mul": _mul_into,
}


# --------------------------------------------------------------------------- fused (oneDNN)

class OneDNNConv:
    """``conv``'s step as one oneDNN call (CPU, float32, no autograd): ``x → conv(x)``, then
    ``+ residual`` (a second argument; with ``into_residual`` written into it), then
    ``activation`` (a primitive of `backends.fusion.POST_OPS` with its ``args``).

    The weight is handed to oneDNN in the blocked layout its kernel reads, reordered once
    per input shape and kept until the weight changes (its version counter or storage) or
    an input of another shape comes, instead of being reordered on every call. It is
    ``conv``'s own parameter that is read, so loading a state_dict later takes effect; a
    deep copy runs its copy of ``conv`` (the reordered weight is not copied)."""

    def __init__(self, conv: nn.Conv2d, activation: str | None = None,
                 args: Args | None = None, residual: bool = False,
                 into_residual: bool = False):
        self.conv = conv
        self.attr, self.scalars = POST_OPS[activation](args) if activation else ("none", [])
        self.residual, self.into_residual = residual, into_residual
        self._packed: tuple | None = None  # (input shape, weight version, data pointer, tensor)

    def weight(self, x: torch.Tensor) -> torch.Tensor:
        conv, weight, packed = self.conv, self.conv.weight, self._packed
        if (packed is not None and packed[0] == x.shape and packed[1] == weight._version
                and packed[2] == weight.data_ptr()):
            return packed[3]
        reordered = torch.ops.mkldnn._reorder_convolution_weight(
            weight, conv.padding, conv.stride, conv.dilation, conv.groups, x.shape)
        self._packed = (x.shape, weight._version, weight.data_ptr(), reordered)
        return reordered

    def __call__(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        ops, conv = torch.ops.mkldnn, self.conv
        weight = self.weight(x)
        if not self.residual:
            return ops._convolution_pointwise(
                x, weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups,
                self.attr, self.scalars, "")
        unary = None if self.attr == "none" else self.attr
        if self.into_residual:
            return ops._convolution_pointwise_(
                other, x, weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                conv.groups, "add", 1.0, unary, self.scalars, None)
        return ops._convolution_pointwise(
            x, other, weight, conv.bias, conv.padding, conv.stride, conv.dilation,
            conv.groups, "add", 1.0, unary, self.scalars, None)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_packed": None}
