"""The lightweight-SR zoo in spaces/: each spec against its authors' network.

Each reference below is the authors' PyTorch model rebuilt from its structure
(the repository and file are named on each): the spec's parameter count equals
the reference's trainable parameters, and, with the reference's weights copied
in, the compiled network computes what the reference computes. Frozen mean-shift
convolutions (EDSR, CARN) are not counted, as the published counts do not count
them: the spec writes the mean shift as a constant, which has no parameters.
The analytic Multi-Adds equal thop's and FlopCounterMode's on the lowered network.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from spacelang.backends.cost import Cost, lr_size
from thop import profile
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import spacelang
from spacelang.strategies import architectures

SPACES = Path(__file__).resolve().parents[2] / "spaces"
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@functools.cache
def load(name: str, **overrides: int) -> spacelang.Space:
    return spacelang.load(SPACES / f"{name}.space", **overrides)


def trainable(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def conv(cin: int, cout: int, k: int, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=bias)


class MeanShift(nn.Conv2d):
    """EDSR's and CARN's frozen 1×1 conv that adds sign · range · mean per channel."""

    def __init__(self, rgb_range: float, sign: int):
        super().__init__(3, 3, 1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(DIV2K_MEAN)
        for p in self.parameters():
            p.requires_grad = False


# -- yjn870/ESPCN-pytorch, models.py

class ESPCN(nn.Module):
    def __init__(self, scale: int):
        super().__init__()
        self.layers = nn.Sequential(conv(1, 64, 5), nn.Tanh(), conv(64, 32, 3), nn.Tanh(),
                                    conv(32, scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, x):
        return self.layers(x)


# -- yjn870/FSRCNN-pytorch, models.py

class FSRCNN(nn.Module):
    def __init__(self, scale: int, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        layers = [conv(1, d, 5), nn.PReLU(d), conv(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [conv(s, s, 3), nn.PReLU(s)]
        layers += [conv(s, d, 1), nn.PReLU(d)]
        self.layers = nn.Sequential(*layers)
        self.last = nn.ConvTranspose2d(d, 1, 9, stride=scale, padding=4,
                                       output_padding=scale - 1)

    def forward(self, x):
        return self.last(self.layers(x))


# -- sanghyun-son/EDSR-PyTorch, src/model/edsr.py and src/model/common.py

class ResBlock(nn.Module):
    def __init__(self, c: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(conv(c, c, 3), nn.ReLU(), conv(c, c, 3))
        self.res_scale = res_scale

    def forward(self, x):
        return self.body(x).mul(self.res_scale) + x


class EDSR(nn.Module):
    def __init__(self, c: int, blocks: int, res_scale: float, scale: int = 2):
        super().__init__()
        self.sub_mean, self.add_mean = MeanShift(255, -1), MeanShift(255, 1)
        self.head = conv(3, c, 3)
        self.body = nn.Sequential(*[ResBlock(c, res_scale) for _ in range(blocks)],
                                  conv(c, c, 3))
        self.tail = nn.Sequential(conv(c, c * scale * scale, 3), nn.PixelShuffle(scale),
                                  conv(c, 3, 3))

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(self.body(x) + x))


# -- nmhkahn/CARN-pytorch, carn/model/carn_m.py and carn/model/ops.py

class EResidualBlock(nn.Module):
    def __init__(self, c: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(conv(c, c, 3, groups), nn.ReLU(), conv(c, c, 3, groups),
                                  nn.ReLU(), conv(c, c, 1))

    def forward(self, x):
        return F.relu(self.body(x) + x)


def basic(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(conv(cin, cout, 1), nn.ReLU())


class Cascade(nn.Module):
    """Three cascading steps; `block(i)` gives the residual block of step i."""

    def __init__(self, c: int, block):
        super().__init__()
        self.blocks, self.fuse = [], []
        for i in range(3):  # a block registered twice holds its parameters once
            self.blocks.append(block(i))
            self.fuse.append(basic(c * (i + 2), c))
            self.add_module(f"b{i}", self.blocks[-1])
            self.add_module(f"c{i}", self.fuse[-1])

    def forward(self, x):
        cat = out = x
        for block, fuse in zip(self.blocks, self.fuse, strict=True):
            cat = torch.cat([cat, block(out)], dim=1)
            out = fuse(cat)
        return out


class CARNM(nn.Module):
    def __init__(self, c: int = 64, groups: int = 4, scale: int = 2):
        super().__init__()
        self.sub_mean, self.add_mean = MeanShift(1, -1), MeanShift(1, 1)
        self.entry = conv(3, c, 3)

        def block(i):  # each cascading block runs one residual block three times
            shared = EResidualBlock(c, groups)
            return Cascade(c, lambda j: shared)

        blocks = [block(i) for i in range(3)]
        self.body = Cascade(c, lambda i: blocks[i])
        self.up = nn.Sequential(nn.Upsample(scale_factor=scale), conv(c, c, 3, groups),
                                nn.ReLU())
        self.exit = conv(c, 3, 3)

    def forward(self, x):
        x = self.entry(self.sub_mean(x))
        return self.add_mean(self.exit(self.up(self.body(x))))


# -- zhaohengyuan1/PAN, codes/models/archs/PAN_arch.py

class PA(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = conv(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.k2, self.k3, self.k4 = conv(c, c, 1), conv(c, c, 3, bias=False), \
            conv(c, c, 3, bias=False)

    def forward(self, x):
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        half = c // 2
        self.conv1_a, self.conv1_b = conv(c, half, 1, bias=False), conv(c, half, 1, bias=False)
        self.k1 = conv(half, half, 3, bias=False)
        self.pa_conv = PAConv(half)
        self.conv3 = conv(c, c, 1, bias=False)

    def forward(self, x):
        a = F.leaky_relu(self.conv1_a(x), 0.2)
        b = F.leaky_relu(self.conv1_b(x), 0.2)
        a = F.leaky_relu(self.k1(a), 0.2)
        b = F.leaky_relu(self.pa_conv(b), 0.2)
        return self.conv3(torch.cat([a, b], dim=1)) + x


class PAN(nn.Module):
    def __init__(self, c: int = 40, u: int = 24, blocks: int = 16, scale: int = 2):
        super().__init__()
        self.scale = scale
        self.first = conv(3, c, 3)
        self.trunk = nn.Sequential(*[SCPA(c) for _ in range(blocks)])
        self.trunk_conv = conv(c, c, 3)
        # registered in the order the spec's module tree lists them, so weights copy
        # by order: the spec's `up[1]` comes after the `u[1]` it feeds
        self.att, self.hr_conv = PA(u), conv(u, u, 3)
        self.upconv = conv(c, u, 3)
        self.last = conv(u, 3, 3)

    def forward(self, x):
        fea = self.first(x)
        fea = fea + self.trunk_conv(self.trunk(fea))
        fea = self.upconv(F.interpolate(fea, scale_factor=self.scale, mode="nearest"))
        fea = F.leaky_relu(self.hr_conv(F.leaky_relu(self.att(fea), 0.2)), 0.2)
        image = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.last(fea) + image


# spec name → (overrides, the reference at those overrides): published sizes
ZOO = {
    "espcn": ({}, lambda: ESPCN(2)),
    "fsrcnn": ({}, lambda: FSRCNN(2)),
    "edsr_baseline": ({}, lambda: EDSR(64, 16, 1.0)),
    "edsr": ({}, lambda: EDSR(256, 32, 0.1)),
    "carn_m": ({}, lambda: CARNM()),
    "pan": ({}, lambda: PAN()),
}
# the same at small sizes and other scales, cheap enough to run
SMALL = {
    "espcn": ({"scale": 3}, lambda: ESPCN(3)),
    "fsrcnn": ({"scale": 3, "d": 16, "m": 2}, lambda: FSRCNN(3, d=16, m=2)),
    "edsr_baseline": ({"C": 16, "blocks": 2}, lambda: EDSR(16, 2, 1.0)),
    "edsr": ({"C": 16, "blocks": 3, "scale": 3}, lambda: EDSR(16, 3, 0.1, scale=3)),
    "carn_m": ({"C": 16, "scale": 3}, lambda: CARNM(16, scale=3)),
    "pan": ({"C": 16, "U": 8, "blocks": 2, "scale": 3},
            lambda: PAN(16, 8, 2, scale=3)),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_parameters_equal_the_reference(name):
    overrides, reference = ZOO[name]
    space = load(name, **overrides)
    assert space.is_fixed
    assert space.cost().fixed.params == trainable(reference())
    assert space.cost().fixed.params == trainable(space.fixed())


def test_published_parameter_counts():
    # the counts the authors print: EDSR-baseline 1.37M and EDSR 40.7M (README of
    # sanghyun-son/EDSR-PyTorch), PAN ×2 261K (README of zhaohengyuan1/PAN)
    counts = {name: load(name).cost().fixed.params for name in ZOO}
    assert counts["edsr_baseline"] == 1_369_859
    assert round(counts["edsr"] / 1e5) == 407
    assert round(counts["pan"] / 1e3) == 261


def _copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Copy trainable weights in registration order, which the specs follow."""
    ours = [p for p in target.parameters()]
    theirs = [p for p in source.parameters() if p.requires_grad]
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    with torch.no_grad():
        for mine, reference in zip(ours, theirs, strict=True):
            mine.copy_(reference)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_network_computes_what_the_reference_computes(name):
    overrides, build = SMALL[name]
    space = load(name, **overrides)
    torch.manual_seed(0)
    reference = build().eval()
    net = space.fixed().eval()
    _copy_weights(reference, net)
    x = torch.rand(2, space.network.in_channels, 11, 13) * space.network.rgb_range
    with torch.no_grad():
        expected = reference(x)
        got = net(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * space.network.rgb_range)


def measure(net: nn.Module, network, hr: tuple[int, int]) -> Cost:
    """Parameters, thop MACs and FlopCounterMode FLOPs ÷ 2 for an HR output of hr."""
    width, height = lr_size(network, hr)
    x = torch.rand(1, network.in_channels, height, width) * network.rgb_range
    macs, params = profile(copy.deepcopy(net), inputs=(x,), verbose=False)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return Cost(int(params), int(macs), counter.get_total_flops() // 2)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_multi_adds_equal_thop_on_the_lowered_network(name):
    overrides, _ = SMALL[name]
    space = load(name, **overrides)
    for hr in [(48, 36), (66, 42)]:
        assert measure(space.fixed(), space.network, hr) == space.cost(hr).fixed


# -- the DARTS-style cell space

@functools.cache
def darts() -> spacelang.Space:
    return load("darts_cell", C=4, cells=2)


def test_the_darts_cell_space_has_its_edges_as_sites():
    network = darts().network
    edges = [site for site in network.choice_sites if site.choice == "edge"]
    assert len(edges) == 2 * (2 + 3 + 4 + 5)  # every edge of every cell chooses an op
    assert {"zero", "identity", "max_pool_3x3", "avg_pool_3x3"} <= set(edges[0].labels)
    # the first node sums both of its edges: a pick of all is no site
    assert [(site.k, len(site.candidates)) for site in network.pick_sites] == \
        [(2, 3), (2, 4), (2, 5)] * 2
    assert len({site.key for site in network.choice_sites + network.pick_sites}) == \
        len(network.choice_sites) + len(network.pick_sites)
    net = darts().supernet()
    y = net(torch.rand(1, 3, 8, 8))
    assert y.shape == (1, 3, 16, 16)
    y.mean().backward()


@settings(max_examples=10, deadline=None)
@given(architectures(darts()))
def test_a_darts_architecture_derives_and_costs_what_it_computes(decisions):
    space = darts()
    hr = (32, 24)
    derived = space.derived(decisions)
    assert derived.is_fixed
    analytic = space.cost(hr).architecture(decisions)
    assert derived.cost(hr).fixed == analytic
    assert measure(space.fixed(decisions), space.network, hr) == analytic
