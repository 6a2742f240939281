"""Torch implementations of the primitives, keyed by the names in `spacelang.primitives`.

A primitive with weights becomes a module (`conv`, `dwconv`, `prelu`) or, when
thop must see it, a module without weights (`avgpool`); the others are
functions of their input tensors and resolved arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spacelang.ir import Node


def _padding(args: dict[str, Any]) -> int:
    if args["padding"] >= 0:
        return args["padding"]
    return args["dilation"] * (args["k"] - 1) // 2


def make_module(node: Node, in_channels: int) -> nn.Module | None:
    """The module a node owns, or None for a stateless primitive."""
    a = node.args
    if node.op == "conv":
        return nn.Conv2d(in_channels, node.channels, a["k"], stride=a["stride"],
                         padding=_padding(a), dilation=a["dilation"], groups=a["groups"],
                         bias=a["bias"])
    if node.op == "dwconv":
        return nn.Conv2d(in_channels, in_channels, a["k"], stride=a["stride"],
                         padding=_padding(a), dilation=a["dilation"], groups=in_channels,
                         bias=a["bias"])
    if node.op == "prelu":
        return nn.PReLU(node.channels if a["per_channel"] else 1)
    if node.op == "avgpool":
        return nn.AdaptiveAvgPool2d(1)
    return None


def _std(x: torch.Tensor) -> torch.Tensor:
    return x.std(dim=(2, 3), keepdim=True, unbiased=False)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "relu": lambda a, x: F.relu(x),
    "lrelu": lambda a, x: F.leaky_relu(x, a["slope"]),
    "sigmoid": lambda a, x: torch.sigmoid(x),
    "identity": lambda a, x: x,
    "add": lambda a, x, y: x + y,
    "mul": lambda a, x, y: x * y,
    "sum": lambda a, *xs: torch.stack(xs).sum(0) if len(xs) > 1 else xs[0],
    "concat": lambda a, *xs: torch.cat(xs, dim=1),
    "split": lambda a, x: torch.split(x, a["sizes"], dim=1),
    "pixel_shuffle": lambda a, x: F.pixel_shuffle(x, a["r"]),
    "mean": lambda a, x: x.mean(dim=(2, 3), keepdim=True),
    "std": lambda a, x: _std(x),
    "maxpool": lambda a, x: F.max_pool2d(x, a["k"], a["stride"] or a["k"], a["padding"]),
    "resize": lambda a, x, like: F.interpolate(x, size=like.shape[-2:], mode="bilinear",
                                               align_corners=False),
}

MODULE_OPS = frozenset({"conv", "dwconv", "prelu", "avgpool"})
