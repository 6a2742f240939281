"""DLSR written by hand in plain PyTorch: the baselines of `bench_speed.py`.

Written from the paper's description and ../shared/REFERENCE.md, as an engineer
would write the model without spacelang:

* `HandDLSR`: the derived ×2 network (RFDB cells whose refine steps are
  conv_1x1, sep_conv_7x7, sep_conv_5x5; cells 3–6 read {1, 2}, {2, 3}, {2, 4},
  {4, 5}; six-way fuse, global residual, pixel shuffle). Its tensors are named
  as in the official checkpoint (`fea_conv`, `B1.c1_d`, `B1.esa.conv1`, ...),
  so `dlsr_x2.pt` loads into it as it is, and `examples/weights/dlsr.yaml`
  maps its `state_dict` onto spacelang's `FixedNet` of `spaces/dlsr_derived.space`.
  Activations are in place where the reference code has them in place.
* `HandDLSRSupernet`: the search supernet of `spaces/dlsr.space`: each refine
  step a mixed op Σ softmax(α)ᵢ·opᵢ(x) over the nine candidate ops, one α
  (3 steps × 9 ops) shared by all cells; cells 3–6 read every earlier cell, each
  scaled by softmax(β), concatenated, then 1×1 conv + leaky relu.

Both take inputs on the 0–255 scale; shapes (N, 3, H, W) → (N, 3, 2H, 2W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SLOPE = 0.05

#: The candidate ops of a refine step, in the order of `spaces/dlsr.space`.
CANDIDATES = ("conv_1x1", "conv_3x3", "conv_5x5", "conv_7x7", "sep_conv_3x3",
              "sep_conv_5x5", "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5")

#: The derived network's refine ops (steps 1–3) and the inputs of cells 3–6.
DERIVED_OPS = ("conv_1x1", "sep_conv_7x7", "sep_conv_5x5")
DERIVED_INPUTS = ((1, 2), (2, 3), (2, 4), (4, 5))


def light_op(name: str, channels: int) -> nn.Sequential:
    """A candidate op without bias: `conv_kxk`, `sep_conv_kxk` (relu, dw k×k, 1×1, relu,
    dw k×k, 1×1) or `dil_conv_kxk` (relu, dw k×k dilation 2, 1×1)."""
    kind, size = name.rsplit("_", 1)
    k = int(size.split("x")[0])
    c = channels
    if kind == "conv":
        return nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, bias=False))
    if kind == "sep_conv":
        return nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
        )
    if kind == "dil_conv":
        return nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, k, padding=k - 1, dilation=2, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
        )
    raise ValueError(f"unknown candidate op {name!r}")


class ESA(nn.Module):
    """Enhanced spatial attention (RFDN) on C channels, f = C // 4 inside."""

    def __init__(self, channels: int):
        super().__init__()
        f = channels // 4
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v = F.max_pool2d(c1, kernel_size=7, stride=3)
        v = F.relu(self.conv_max(v), inplace=True)
        c3 = F.relu(self.conv3(v), inplace=True)
        c3 = self.conv3_(c3)
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False)
        m = torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))
        return x * m


class RFDB(nn.Module):
    """Residual feature distillation block; ``refine`` makes the op of step 1–3."""

    def __init__(self, channels: int, refine):
        super().__init__()
        c, d = channels, channels // 2
        self.c1_d, self.c2_d, self.c3_d = (nn.Conv2d(c, d, 1) for _ in range(3))
        self.c1_r, self.c2_r, self.c3_r = (refine(step) for step in range(3))
        self.c4 = nn.Conv2d(c, d, 3, padding=1)
        self.c5 = nn.Conv2d(4 * d, c, 1)
        self.esa = ESA(c)

    def forward(self, x: torch.Tensor, *refine_args) -> torch.Tensor:
        d1 = F.leaky_relu(self.c1_d(x), SLOPE, inplace=True)
        r1 = F.leaky_relu(self.c1_r(x, *refine_args) + x, SLOPE, inplace=True)
        d2 = F.leaky_relu(self.c2_d(r1), SLOPE, inplace=True)
        r2 = F.leaky_relu(self.c2_r(r1, *refine_args) + r1, SLOPE, inplace=True)
        d3 = F.leaky_relu(self.c3_d(r2), SLOPE, inplace=True)
        r3 = F.leaky_relu(self.c3_r(r2, *refine_args) + r2, SLOPE, inplace=True)
        r4 = F.leaky_relu(self.c4(r3), SLOPE, inplace=True)
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))


class _Fixed(nn.Module):
    """A refine step with one op, stored as `op` (the checkpoint's `c1_r.op.0`)."""

    def __init__(self, name: str, channels: int):
        super().__init__()
        self.op = light_op(name, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _conv_lrelu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.LeakyReLU(SLOPE, inplace=True))


class HandDLSR(nn.Module):
    """The derived DLSR ×``scale`` network with C channels."""

    def __init__(self, channels: int = 48, scale: int = 2):
        super().__init__()
        c = channels
        self.fea_conv = nn.Conv2d(3, c, 3, padding=1)
        for i in range(1, 7):
            self.add_module(f"B{i}", RFDB(c, lambda step: _Fixed(DERIVED_OPS[step], c)))
        for i in range(3, 7):
            self.add_module(f"c{i}", _conv_lrelu(2 * c, c))
        self.cout = _conv_lrelu(6 * c, c)
        self.LR_conv = nn.Conv2d(c, c, 3, padding=1)
        self.upsampler = nn.Sequential(nn.Conv2d(c, 3 * scale * scale, 3, padding=1),
                                       nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        b = [None, self.B1(fea)]
        b.append(self.B2(b[1]))
        for i, (j, k) in zip(range(3, 7), DERIVED_INPUTS, strict=True):
            inp = getattr(self, f"c{i}")(torch.cat([b[j], b[k]], dim=1))
            b.append(getattr(self, f"B{i}")(inp))
        fused = self.cout(torch.cat(b[1:], dim=1))
        return self.upsampler(self.LR_conv(fused) + fea)


class _Mixed(nn.Module):
    """One refine step of the supernet: Σ wᵢ·opᵢ(x) over the candidates."""

    def __init__(self, channels: int):
        super().__init__()
        self.ops = nn.ModuleList(light_op(name, channels) for name in CANDIDATES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, step: int) -> torch.Tensor:
        w = weights[step]
        return sum(w[i] * op(x) for i, op in enumerate(self.ops))


class _MixedCell(RFDB):
    def __init__(self, channels: int):
        super().__init__(channels, lambda step: _Mixed(channels))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        d1 = F.leaky_relu(self.c1_d(x), SLOPE)
        r1 = F.leaky_relu(self.c1_r(x, weights, 0) + x, SLOPE)
        d2 = F.leaky_relu(self.c2_d(r1), SLOPE)
        r2 = F.leaky_relu(self.c2_r(r1, weights, 1) + r1, SLOPE)
        d3 = F.leaky_relu(self.c3_d(r2), SLOPE)
        r3 = F.leaky_relu(self.c3_r(r2, weights, 2) + r2, SLOPE)
        r4 = F.leaky_relu(self.c4(r3), SLOPE)
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))


class HandDLSRSupernet(nn.Module):
    """DLSR's search supernet: α (3 × 9) shared by all cells, β per cell 3–6 over every
    earlier cell. `arch_parameters()` are α and the β's; `weight_parameters()` the rest."""

    def __init__(self, channels: int = 48, scale: int = 2, cells: int = 6):
        super().__init__()
        c = channels
        self.alpha = nn.Parameter(1e-3 * torch.randn(3, len(CANDIDATES)))
        self.betas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(i - 1))
                                      for i in range(3, cells + 1))
        self.fea_conv = nn.Conv2d(3, c, 3, padding=1)
        self.cells = nn.ModuleList(_MixedCell(c) for _ in range(cells))
        self.inputs = nn.ModuleList(nn.Conv2d((i - 1) * c, c, 1) for i in range(3, cells + 1))
        self.cout = nn.Conv2d(cells * c, c, 1)
        self.LR_conv = nn.Conv2d(c, c, 3, padding=1)
        self.up = nn.Conv2d(c, 3 * scale * scale, 3, padding=1)
        self.scale = scale

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, *self.betas]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.alpha, dim=-1)
        fea = self.fea_conv(x)
        outs = [self.cells[0](fea, weights)]
        outs.append(self.cells[1](outs[0], weights))
        for cell, fuse, beta in zip(self.cells[2:], self.inputs, self.betas, strict=True):
            scales = F.softmax(beta, dim=-1)
            mixed = torch.cat([s * o for s, o in zip(scales, outs, strict=False)], dim=1)
            outs.append(cell(F.leaky_relu(fuse(mixed), SLOPE), weights))
        fused = F.leaky_relu(self.cout(torch.cat(outs, dim=1)), SLOPE)
        return F.pixel_shuffle(self.up(self.LR_conv(fused) + fea), self.scale)
