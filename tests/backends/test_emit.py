"""`emit_python`: standalone PyTorch source equivalent to `FixedNet`."""

from __future__ import annotations

import ast
import importlib.util
import sys
import textwrap

import pytest
import torch
from spacelang.backends.emit import emit_python

import spacelang
from spacelang.primitives import PRIMITIVES
from tests.paths import SPACES

# Every primitive, and values named like nn.Module methods.
EVERY_PRIMITIVE = """
network sink(C = 8, scale = 8) {
    train = conv(input, C, k=3)
    half = prelu(dwconv(train, k=3), per_channel=true)
    eval = prelu(conv(half, C, k=3, groups=2, bias=false))
    a = lrelu(eval, slope=0.2) + relu(half) * sigmoid(identity(train))
    s = sum(a, half, train)
    g = mul(s, mean(s) + std(s) + avgpool(s))
    p = conv(maxpool(g, 3, stride=2, padding=1), C, k=3)
    q = conv(g, C, k=3, stride=2, padding=1, dilation=1)
    r = resize(p + q, g)
    d1, d2 = split(r, 3, C - 3)
    cat = concat(d2, d1, sum(d1))
    l = local_avgpool(cat, k=5) + local_maxpool(cat) * 0.5 - zero(cat) / 4
    l2 = l + [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    t = tanh(conv_transpose(l2, C, k=4, stride=2, padding=1))
    again = conv_transpose(l2, C, k=4, stride=2, padding=1) shares t
    u = upsample(t, 2) + upsample(again, 2, mode="bilinear")
    forward = conv(u, 3 * 2 * 2, k=5, dilation=2)
    return pixel_shuffle(forward, 2)
}
"""


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def exec_source(source: str) -> dict:
    namespace: dict = {"__name__": "emitted"}
    exec(compile(source, "<emitted>", "exec"), namespace)
    return namespace


def assert_equivalent(space, network_class, height=24, width=20):
    fixed = space.fixed()
    emitted = network_class()
    ours = [(k, v.shape) for k, v in fixed.state_dict().items()]
    theirs = [(k, v.shape) for k, v in emitted.state_dict().items()]
    assert theirs == ours

    def tree(net):  # the module tree, container levels by name only, classes by name
        return [(n, "container" if "Container" in type(m).__name__ else type(m).__name__)
                for n, m in net.named_modules() if n]

    assert tree(emitted) == tree(fixed)
    emitted.load_state_dict(fixed.state_dict())
    network = space.network
    x = torch.rand(2, network.in_channels, height, width) * network.rgb_range
    with torch.no_grad():
        expected = fixed(x)
        got = emitted(x)
    assert got.shape == (2, network.out_channels, height * network.scale, width * network.scale)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("name", "overrides"), [
    ("imdn", {"C": 16}),
    ("dlsr_derived", {"C": 16}),
    ("rfdn", {"C": 16, "scale": 3, "cells": 2}),
    ("fsrcnn", {"scale": 3, "d": 8}),
    ("edsr", {"C": 8, "blocks": 2}),
    ("carn_m", {"C": 8}),
    ("pan", {"C": 8, "U": 4, "blocks": 2, "scale": 4, "r": 2, "steps": 2}),
])
def test_emitted_network_matches_fixed(name, overrides):
    space = spacelang.load(SPACES / f"{name}.space", **overrides)
    source = emit_python(space.network)
    namespace = exec_source(source)
    net = namespace["build"]()
    assert isinstance(net, namespace["Network"])
    assert net.scale == space.network.scale and net.rgb_range == space.network.rgb_range
    assert_equivalent(space, namespace["Network"])

    tree = ast.parse(source)
    doc = ast.get_docstring(tree)
    assert doc and name in doc and f"{name}.space" in doc
    imports = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    imports |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imports and all(module.split(".")[0] == "torch" for module in imports)


def test_every_primitive_and_method_names():
    space = spacelang.loads(textwrap.dedent(EVERY_PRIMITIVE), path="sink.space")
    assert {node.op for node in space.network.graph.nodes} - {"input"} == set(PRIMITIVES)
    namespace = exec_source(emit_python(space.network))
    assert_equivalent(space, namespace["Network"])
    net = namespace["build"]()
    assert "half.prelu.weight" in net.state_dict() and "train.weight" in net.state_dict()
    net.eval()
    assert not net.training


def test_emitted_module_imports_from_a_file(tmp_path, monkeypatch):
    space = spacelang.load(SPACES / "dlsr_derived.space", C=8)
    path = tmp_path / "dlsr_small.py"
    path.write_text(emit_python(space.network), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("dlsr_small", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "dlsr_small", module)
    spec.loader.exec_module(module)
    net = module.build()
    fixed = space.fixed()
    net.load_state_dict(fixed.state_dict())
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        assert torch.allclose(net(x), fixed(x), atol=1e-6, rtol=0)
    # a saved state_dict round-trips through torch.save in both directions
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    fixed.load_state_dict(torch.load(tmp_path / "weights.pt"))


def test_emitting_a_search_space_is_refused():
    space = spacelang.load(SPACES / "dlsr.space", C=16)
    with pytest.raises(ValueError, match="choice or pick"):
        emit_python(space.network)


FUSED_SPECS = [("imdn", {"C": 16}), ("dlsr_derived", {"C": 16}),
               ("rfdn", {"C": 16, "scale": 3, "cells": 2}), ("carn_m", {"C": 8}),
               ("pan", {"C": 8, "U": 4, "blocks": 2, "scale": 4, "r": 2, "steps": 2}),
               ("edsr", {"C": 8, "blocks": 2})]


@pytest.mark.skipif(not hasattr(torch.ops.mkldnn, "_convolution_pointwise"),
                    reason="this torch has no oneDNN fused convolutions")
@pytest.mark.parametrize(("name", "overrides"), FUSED_SPECS)
def test_the_fused_emitted_module_computes_what_the_network_computes(name, overrides):
    """`build(fuse=True)`: without gradients each conv is one oneDNN call (values equal to
    float32 rounding, as spacelang's fused network), in either memory layout; with gradients
    the plain forward, bit for bit; the input is never written; copies run their own
    weights."""
    import copy

    space = spacelang.load(SPACES / f"{name}.space", **overrides)
    namespace = exec_source(emit_python(space.network))
    torch.manual_seed(0)
    fixed = space.fixed()
    for channels_last in (False, True):
        net = namespace["build"](fuse=True, channels_last=channels_last)
        net.load_state_dict(fixed.state_dict())
        x = torch.rand(1, space.network.in_channels, 24, 20) * space.network.rgb_range
        before = x.clone()
        with torch.no_grad():
            expected = fixed(x)
            got = net(x)
        assert torch.equal(x, before)
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
        if not channels_last:  # with gradients: the plain forward (same kernels)
            assert torch.equal(net(x).detach(), fixed(x).detach())
    twin = copy.deepcopy(net)
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.zero_()
        assert float((net(x) - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
        twin(x)


def test_the_emitted_module_refuses_fuse_with_compile():
    space = spacelang.load(SPACES / "dlsr_derived.space", C=8)
    namespace = exec_source(emit_python(space.network))
    with pytest.raises(ValueError, match="fuse and compile"):
        namespace["build"](fuse=True, compile=True)


@pytest.mark.skipif(not hasattr(torch.ops.mkldnn, "_convolution_pointwise"),
                    reason="this torch has no oneDNN fused convolutions")
def test_the_fused_emitted_module_reads_inputs_before_anything_overwrites_them():
    from tests.backends.test_fusion import DELAYED_READS

    space = spacelang.loads(DELAYED_READS)
    namespace = exec_source(emit_python(space.network))
    torch.manual_seed(0)
    fixed = space.fixed().eval()
    net = namespace["build"](fuse=True)
    net.load_state_dict(fixed.state_dict())
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        expected, got = fixed(x), net(x)
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
