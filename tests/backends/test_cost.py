"""The analytic cost model against measurement: parameters, thop and FlopCounterMode.

The analytic count is a formula in the HR size, so checking it against a
measurement at a small size (and the exact published figures at 1280×720)
checks it at every size without running a full-size forward pass.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hypothesis import find, given, settings
from spacelang.backends.cost import Cost, cost_report, lr_size
from spacelang.backends.torch.supernet import param_key
from thop import profile
from torch.utils.flop_counter import FlopCounterMode

import spacelang
from spacelang.decisions import normalize
from spacelang.diagnostics import SpecError
from spacelang.primitives import PRIMITIVES, free
from spacelang.strategies import architectures
from tests.paths import SPACES


def _shipped_fixed() -> list[str]:
    names = []
    for path in sorted(SPACES.glob("*.space")):
        try:
            space = spacelang.load(path)
        except SpecError:  # a library of ops, with no network
            continue
        if space.is_fixed:
            names.append(path.stem)
    return names


SHIPPED_FIXED = _shipped_fixed()


@functools.cache
def load(name: str, **overrides) -> spacelang.Space:
    return spacelang.load(SPACES / f"{name}.space", **overrides)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def parameter_count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def has_thop_leftovers(net: torch.nn.Module) -> bool:
    return any("total_ops" in m._buffers or "total_ops" in m.__dict__
               or "total_params" in m._buffers for m in net.modules())


def measure(net: torch.nn.Module, network, hr: tuple[int, int]) -> Cost:
    """Parameters, thop MACs (on a copy) and FlopCounterMode FLOPs ÷ 2 for an HR output of hr."""
    width, height = lr_size(network, hr)
    x = torch.rand(1, network.in_channels, height, width) * network.rgb_range
    keys = list(net.state_dict())
    counted = copy.deepcopy(net)
    macs, params = profile(counted, inputs=(x,), verbose=False)
    assert not has_thop_leftovers(net) and list(net.state_dict()) == keys
    assert not has_thop_leftovers(counted)
    assert params == parameter_count(net)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        y = net(x)
    assert y.shape[-2:] == (height * network.scale, width * network.scale)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    assert macs == int(macs)
    return Cost(parameter_count(net), int(macs), flops // 2)


def test_the_shipped_fixed_specs_are_covered():
    assert {"imdn", "rfdn", "dlsr_derived"} <= set(SHIPPED_FIXED)


@pytest.mark.parametrize("name", SHIPPED_FIXED)
def test_parameters_of_the_real_networks(name):
    space = load(name)
    assert space.cost().fixed.params == parameter_count(space.fixed())


def _narrow(name: str) -> dict[str, int]:
    """A cheap width for a shipped network: C = 16 where it has a trunk width C."""
    return {"C": 16} if "C" in load(name).network.params else {}


CASES = [(name, _narrow(name), (64, 48)) for name in SHIPPED_FIXED] + [
    ("imdn", {"C": 16, "scale": 3, "cells": 2}, (66, 48)),
    ("rfdn", {"C": 16, "scale": 4, "cells": 2}, (96, 64)),
    ("dlsr_derived", {"C": 8}, (65, 49)),  # HR not a multiple of the scale: LR rounds down
]


@pytest.mark.parametrize(("name", "overrides", "hr"), CASES,
                         ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in o.items())}-{w}x{h}"
                              for n, o, (w, h) in CASES])
def test_analytic_cost_matches_measurement(name, overrides, hr):
    space = load(name, **overrides)
    report = space.cost(hr)
    assert report.lr == lr_size(space.network, hr)
    assert measure(space.fixed(), space.network, hr) == report.fixed
    assert report.fixed == sum((cost for _, cost in report.cells), Cost())


def test_published_figures():
    imdn = load("imdn", C=64, scale=2).cost((1280, 720)).fixed
    assert imdn == Cost(params=694_404, macs=158_854_352_256, conv_macs=158_765_878_272)
    dlsr = load("dlsr_derived").cost((1280, 720)).fixed
    assert (dlsr.params, dlsr.macs) == (322_620, 67_306_238_496)
    assert dlsr.conv_macs == dlsr.macs  # no global pooling in DLSR
    assert cost_report(load("imdn").network).fixed == imdn  # 1280×720 is the default


HR_SMALL = (48, 32)


def _check_architecture(space, decisions):
    analytic = space.cost(HR_SMALL).architecture(decisions)
    derived = space.derived(decisions)
    assert derived.is_fixed
    assert derived.cost(HR_SMALL).fixed == analytic
    assert measure(space.fixed(decisions), space.network, HR_SMALL) == analytic


@settings(max_examples=25, deadline=None)
@given(architectures(load("dlsr", C=16)))
def test_architecture_cost_dlsr(decisions):
    _check_architecture(load("dlsr", C=16), decisions)


@settings(max_examples=25, deadline=None)
@given(architectures(load("imdn_cell", C=16)))
def test_architecture_cost_imdn_cell(decisions):
    _check_architecture(load("imdn_cell", C=16), decisions)


def test_architectures_shrink_to_the_first_candidates():
    space = load("dlsr", C=16)
    smallest = find(architectures(space), lambda d: True)
    assert smallest == {**{s.key: 0 for s in space.network.choice_sites},
                        **{s.key: tuple(range(s.k)) for s in space.network.pick_sites}}
    assert find(architectures(load("imdn")), lambda d: True) == {}


@settings(max_examples=50, deadline=None)
@given(architectures(load("dlsr", C=16)))
def test_architectures_are_normalized_decisions(decisions):
    network = load("dlsr", C=16).network
    assert normalize(network, decisions) == decisions
    assert decisions.keys() == ({s.key for s in network.choice_sites}
                                | {s.key for s in network.pick_sites})


@pytest.mark.parametrize("field", ["macs", "params"])
def test_expected_cost_is_differentiable_in_alpha(field):
    space = load("imdn_cell", C=16)
    report = space.cost(HR_SMALL)
    net = space.supernet()
    expected = report.expected(net.probabilities(), field)
    assert isinstance(expected, torch.Tensor) and expected.requires_grad
    expected.backward()
    for site in space.network.choice_sites:
        grad = net.alphas[param_key(site.key)].grad
        assert grad is not None and grad.abs().sum() > 0, site.key
    # the minimum and maximum bound the expectation
    assert report.extreme(field) <= expected.item() <= report.extreme(field, max)

    before = expected.item()
    with torch.no_grad():
        for site in report.sites:
            costs = [getattr(c, field) for c in site.costs]
            net.alphas[param_key(site.key)][costs.index(min(costs))] += 1.0
    after = report.expected(net.probabilities(), field).item()
    assert after < before

    # weights concentrated on one candidate give that architecture's cost
    with torch.no_grad():
        for p in net.arch_parameters():
            p.zero_()
            p[-1] = 100.0
    decisions = net.decisions()
    concentrated = report.expected(net.probabilities(), field).item()
    assert concentrated == pytest.approx(getattr(report.architecture(decisions), field),
                                         rel=1e-5)


EVERY_COUNTED_PRIMITIVE = """
network counted(C = 8, scale = 4) {
    s = prelu(conv(input, C, k=3), per_channel=true)
    t = prelu(dwconv(s, k=5, dilation=2))
    g = avgpool(t) + std(t) + mean(t)
    a, b = split(t * sigmoid(g), 3, C - 3)
    p = resize(conv(maxpool(concat(a, b), 3, stride=2), C, k=3, groups=2), s)
    q = local_avgpool(p, k=5) + local_maxpool(p) + zero(p) + tanh(p) * 0.5 - [1, 2, 3, 4, 5, 6,
                                                                              7, 8]
    w = resize(conv_transpose(q, C, k=4, stride=2, padding=0, groups=2), upsample(q, 2))
    h = conv_transpose(w, C, k=3, stride=2, bias=false) + upsample(w, 2, mode="bilinear")
    r1 = conv(lrelu(h, slope=0.2), C, k=3)
    r2 = conv(r1, C, k=3) shares r1
    return conv(r2 / 2, 3, k=3, bias=false)
}
"""


def test_every_counted_primitive_matches_thop():
    space = spacelang.loads(EVERY_COUNTED_PRIMITIVE, path="counted.space")
    counted = {name for name, prim in PRIMITIVES.items() if prim.cost is not free}
    assert counted <= {node.op for node in space.network.graph.nodes}
    assert any(node.weights for node in space.network.graph.nodes)
    for hr in [(40, 32), (44, 36)]:
        assert measure(space.fixed(), space.network, hr) == space.cost(hr).fixed

