"""SR pixel losses on NCHW batches: L1, and L1 plus the high-frequency error norm (HFEN).

HFEN is the L1 distance between high-pass filtered images, in one of two forms
(`HFEN_FORMS`):

- ``log9``: a 9×9 Laplacian-of-Gaussian (σ 1.5, zero mean) on every channel, reflect
  padded, unnormalised;
- ``dlsr``: DLSR's search loss: a 5×5 Gaussian (σ 1.5, no padding), then the 3×3
  Laplacian [0 1 0; 1 −4 1; 0 1 0] (no padding), summed over the colour channels; each
  filtered batch divided by its own maximum over the batch. The result does not depend
  on the pixel scale, so with L1 on the 0–1 scale DLSR's weight 0.2 (L1 on 0–255)
  becomes 0.2 / 255 (`spacelang/configs/dlsr_reference.yaml`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["HFEN_FORMS", "LOSSES", "dlsr_high_pass", "laplacian_of_gaussian", "pixel_loss"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: The names `pixel_loss` accepts.
LOSSES = ("l1", "l1_hfen")


def _log_kernel(size: int = 9, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    q = (x**2 + y**2) / (2 * sigma**2)
    kernel = (q - 1) * torch.exp(-q) / (math.pi * sigma**4)
    return (kernel - kernel.mean()).float()


def _gaussian_kernel(size: int = 5, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    return (kernel / kernel.sum()).float()


_LOG = _log_kernel()
_GAUSSIAN = _gaussian_kernel()
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_of_gaussian(x: torch.Tensor) -> torch.Tensor:
    """LoG filter (9×9, σ = 1.5) applied to every channel of an NCHW batch."""
    c = x.shape[1]
    kernel = _LOG.to(x.device, x.dtype).expand(c, 1, *_LOG.shape)
    return F.conv2d(F.pad(x, [4, 4, 4, 4], mode="reflect"), kernel, groups=c)


def dlsr_high_pass(x: torch.Tensor) -> torch.Tensor:
    """DLSR's HFEN filter: 5×5 Gaussian (σ 1.5) on each channel, then the 3×3 Laplacian
    summed over channels, both unpadded: N×C×H×W → N×1×(H−6)×(W−6), not normalised."""
    c = x.shape[1]
    blurred = F.conv2d(x, _GAUSSIAN.to(x.device, x.dtype).expand(c, 1, 5, 5), groups=c)
    return F.conv2d(blurred, _LAPLACIAN.to(x.device, x.dtype).expand(1, c, 3, 3))


def _dlsr_hfen(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    a, b = dlsr_high_pass(sr), dlsr_high_pass(hr)
    return F.l1_loss(a / a.max().clamp_min(1e-12),
                     b / b.max().clamp_min(1e-12))


def _log9_hfen(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(laplacian_of_gaussian(sr), laplacian_of_gaussian(hr))


#: HFEN form -> ``(sr, hr) -> distance``.
HFEN_FORMS: dict[str, Loss] = {"log9": _log9_hfen, "dlsr": _dlsr_hfen}


def pixel_loss(kind: str, hfen_weight: float = 0.2, hfen: str = "log9") -> Loss:
    """L1, or L1 + `hfen_weight`·HFEN(sr, hr) in the form ``hfen`` (`HFEN_FORMS`)."""
    if kind == "l1":
        return F.l1_loss
    if kind == "l1_hfen":
        if hfen not in HFEN_FORMS:
            raise ValueError(f"unknown HFEN form {hfen!r}; expected one of "
                             f"{', '.join(HFEN_FORMS)}")
        distance = HFEN_FORMS[hfen]

        def loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
            return F.l1_loss(sr, hr) + hfen_weight * distance(sr, hr)
        return loss
    raise ValueError(f"unknown loss {kind!r}; expected one of {', '.join(LOSSES)}")
