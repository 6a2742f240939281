"""A fixed network: one architecture as a plain `nn.Module`."""

from __future__ import annotations

import torch
from spacelang.backends.torch.graph import GraphModule

from spacelang.ir import Network


class FixedNet(GraphModule):
    """A network with no choices; submodules are named after the spec's values.

    `rgb_range` (1 or 255) is the input range the spec declares; `scale` the
    upscaling factor inferred from the spec.
    """

    def __init__(self, network: Network):
        super().__init__(network.graph)
        self.network = network
        self.rgb_range = network.rgb_range
        self.scale = network.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


def build_fixed(network: Network) -> FixedNet:
    return FixedNet(network)
