"""SR pixel losses on NCHW batches: L1, and L1 plus the high-frequency error norm (HFEN)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "laplacian_of_gaussian", "pixel_loss"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: The names `pixel_loss` accepts.
LOSSES = ("l1", "l1_hfen")


def _log_kernel(size: int = 9, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    q = (x**2 + y**2) / (2 * sigma**2)
    kernel = (q - 1) * torch.exp(-q) / (math.pi * sigma**4)
    return (kernel - kernel.mean()).float()


_LOG = _log_kernel()


def laplacian_of_gaussian(x: torch.Tensor) -> torch.Tensor:
    """LoG filter (9×9, σ = 1.5) applied to every channel of an NCHW batch."""
    c = x.shape[1]
    kernel = _LOG.to(x.device, x.dtype).expand(c, 1, *_LOG.shape)
    return F.conv2d(F.pad(x, [4, 4, 4, 4], mode="reflect"), kernel, groups=c)


def pixel_loss(kind: str, hfen_weight: float = 0.2) -> Loss:
    """L1, or L1 + `hfen_weight`·L1(LoG(sr), LoG(hr)) (high-frequency error norm)."""
    if kind == "l1":
        return F.l1_loss
    if kind == "l1_hfen":
        def loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
            return F.l1_loss(sr, hr) + hfen_weight * F.l1_loss(laplacian_of_gaussian(sr),
                                                               laplacian_of_gaussian(hr))
        return loss
    raise ValueError(f"unknown loss {kind!r}; expected one of {', '.join(LOSSES)}")
