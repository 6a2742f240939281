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
from torch import nn

from spacelang.primitives import Args, Implementations

LOWERINGS: Implementations[Any] = Implementations("torch")
lowering = LOWERINGS.register


@lowering("conv", "dwconv")
def _conv(args: Args, in_channels: int, out_channels: int) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, args["k"], stride=args["stride"],
                     padding=args["padding"], dilation=args["dilation"], groups=args["groups"],
                     bias=args["bias"])


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


@lowering("resize")
def _resize(args: Args, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
