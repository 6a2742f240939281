"""Fused convolutions (`backends.fusion`, `GraphModule.fuse_convolutions`): the plan absorbs
only steps nothing else reads, and a fused network computes what the network computes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from spacelang.backends.fusion import FUSABLE_ACTIVATIONS, FUSABLE_CONVS, conv_epilogues
from torch import nn

import spacelang
from spacelang.runtime.speed import fusion_problem, optimise
from tests.paths import SPACES

pytestmark = pytest.mark.skipif(
    fusion_problem(nn.Module()) is not None and "networks spacelang builds" not in
    str(fusion_problem(nn.Module())), reason="this torch has no oneDNN fused convolutions")

FIXED = ["carn_m.space", "dlsr_derived.space", "edsr_baseline.space", "imdn.space",
         "pan.space", "rfdn.space"]

#: Fused and unfused sums differ in order inside the kernel: float32 rounding, relative to
#: the output's magnitude (measured: at most 1e-6 on these specs).
RELATIVE = 1e-5


def _fixed(name: str, seed: int = 0) -> nn.Module:
    space = spacelang.load(SPACES / name)
    if "C" in space.network.params:
        space = spacelang.load(SPACES / name, C=16)
    torch.manual_seed(seed)
    return space.fixed().eval()


def _input(net, height: int, width: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand(1, net.network.in_channels, height, width) * net.rgb_range


def _close(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) <= RELATIVE * float(ref.abs().max())


@pytest.mark.parametrize("name", FIXED)
def test_plan_absorbs_only_convolutions_read_once(name):
    graph = _fixed(name).graph
    nodes = {node.id: node for node in graph.nodes}
    readers: dict[int, list[int]] = {}
    for node in graph.nodes:
        for source in node.inputs:
            readers.setdefault(source, []).append(node.id)
    plan = conv_epilogues(graph)
    assert plan, "every one of these specs has a conv followed by an activation or a residual"
    absorbed = [n for epilogue in plan.values() for n in epilogue.absorbed]
    assert len(absorbed) == len(set(absorbed)), "a node absorbed twice"
    assert not set(absorbed) & set(plan), "a fused step's value absorbed by another"
    for key, epilogue in plan.items():
        assert nodes[epilogue.conv].op in FUSABLE_CONVS
        assert graph.output not in epilogue.absorbed
        for node_id in epilogue.absorbed:
            assert len(readers[node_id]) == 1, "an absorbed value read elsewhere"
        if epilogue.add is not None:
            add = nodes[epilogue.add]
            assert add.op == "add" and set(add.inputs) == {epilogue.conv, epilogue.residual}
            assert nodes[epilogue.residual].spatial == nodes[epilogue.conv].spatial
        if epilogue.activation is not None:
            assert nodes[epilogue.activation].op in FUSABLE_ACTIVATIONS
        assert key == (epilogue.activation if epilogue.activation is not None else epilogue.add)


@pytest.mark.parametrize("name", FIXED)
def test_fused_network_computes_what_the_network_computes(name):
    net = _fixed(name)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = _input(net, 23, 30)
    before = x.clone()
    with torch.no_grad():
        ref = net(x)
    optimise(net, fuse=True)
    assert net.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    with torch.inference_mode():
        _close(net(x), ref)
    optimise(net, channels_last=True)
    with torch.no_grad():
        _close(net(x.contiguous(memory_format=torch.channels_last)), ref)
    assert torch.equal(x, before), "the network's input was written"


@settings(max_examples=6, deadline=None)
@given(height=st.integers(15, 40), width=st.integers(15, 40), seed=st.integers(0, 2**16),
       channels_last=st.booleans())
def test_fused_dlsr_agrees_at_any_size_and_weights(height, width, seed, channels_last):
    """Any size ESA's pooling takes (15 px and up), any weights, either layout."""
    net = _fixed("dlsr_derived.space", seed)
    x = _input(net, height, width, seed)
    with torch.no_grad():
        ref = net(x)
    optimise(net, fuse=True, channels_last=channels_last)
    with torch.no_grad():
        _close(net(x), ref)


def _conv_calls(net: nn.Module, x: torch.Tensor, grad: bool) -> int:
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.set_grad_enabled(grad):
        out = net(x)
    for hook in hooks:
        hook.remove()
    if grad:
        out.mean().backward()
    return len(calls)


def test_fusion_serves_passes_without_gradients_only():
    """Without gradients no conv module runs (oneDNN computes every one); with gradients the
    network runs as before, bit for bit, and its weights get gradients."""
    net = _fixed("dlsr_derived.space")
    x = _input(net, 16, 16)
    with torch.no_grad():
        plain = net(x)
    plain_calls = _conv_calls(net, x, grad=False)
    optimise(net, fuse=True)
    assert _conv_calls(net, x, grad=False) == 0
    assert _conv_calls(net, x, grad=True) == plain_calls
    assert all(p.grad is not None for p in net.parameters())
    with torch.enable_grad():
        assert torch.equal(net(x).detach(), plain)


def test_weights_loaded_after_fusing_take_effect():
    net, other = _fixed("dlsr_derived.space", 0), _fixed("dlsr_derived.space", 1)
    x = _input(net, 16, 16)
    with torch.no_grad():
        ref = other(x)
    optimise(net, fuse=True)
    net.load_state_dict(other.state_dict())
    with torch.no_grad():
        _close(net(x), ref)


def test_a_fused_network_follows_its_weights_after_running():
    """The weights oneDNN reads are reordered once and kept: loading others, editing them in
    place, or running another input size after a pass must still compute with the current
    ones."""
    net, other = _fixed("dlsr_derived.space", 0), _fixed("dlsr_derived.space", 1)
    small, large = _input(net, 16, 16), _input(net, 24, 20)
    optimise(net, fuse=True)
    with torch.no_grad():
        net(small)
        net.load_state_dict(other.state_dict())
        _close(net(small), other(small))
        _close(net(large), other(large))
        for module in (net, other):
            for parameter in module.parameters():
                parameter.mul_(0.5)
        _close(net(small), other(small))


def test_a_copy_of_a_fused_network_runs_its_own_weights():
    import copy

    net = _fixed("dlsr_derived.space", 0)
    x = _input(net, 16, 16)
    optimise(net, fuse=True)
    with torch.no_grad():
        before = net(x)
        twin = copy.deepcopy(net)
        for parameter in twin.parameters():
            parameter.zero_()
        _close(net(x), before)
        assert float(twin(x).abs().max()) == 0.0


#: A conv whose fused step runs where its residual add was, after another reader of its
#: input (a ReLU, its last reader in graph order) and of the residual: neither may have
#: been overwritten by then.
DELAYED_READS = """
network delayed(C = 8, scale = 1) {
    x = conv(input, C, k=3)
    c = conv(x, C, k=3)
    r = relu(x)
    y = lrelu(conv(r, C, k=1) + sigmoid(r))
    z = c + r
    return conv(z + y, 3, k=3)
}
"""


def test_a_fused_step_reads_its_inputs_before_anything_overwrites_them():
    torch.manual_seed(0)
    net = spacelang.loads(DELAYED_READS).fixed().eval()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        ref = net(x)
        optimise(net, fuse=True)
        _close(net(x), ref)
