"""The torch backend: module names, architecture parameters, supernet modes."""

from __future__ import annotations

import textwrap

import pytest
import torch
from spacelang.backends.torch import FixedNet, SuperNet
from spacelang.backends.torch.supernet import MixedOp, param_key
from torch import nn

import spacelang
from spacelang.decisions import normalize
from tests.paths import SPACES

# Values, ops and sites named like nn.Module / ParameterDict attributes.
METHOD_NAMES = """
choice light = [half, train]

op half(x: c) {
    return conv(x, c, k=1, bias=false)
}

op train(x: c) {
    return conv(x, c, k=3, bias=false)
}

cell blk(x: C) {
    keys = relu(light(x))
    half = lrelu(conv(keys, C, k=3), slope=0.1)
    return half + x
}

network methods(C = 8, scale = 2) {
    train = light(conv(input, C, k=3))
    half[1] = blk(train)
    half[2] = blk(half[1])
    eval = conv(concat(pick 1 of [half[1], half[2]]), C, k=1)
    forward = conv(eval + train, 3 * scale * scale, k=3)
    return pixel_shuffle(forward, scale)
}
"""


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def dlsr():
    return spacelang.load(SPACES / "dlsr.space", C=16)


@pytest.fixture(scope="module")
def small_dlsr():
    """Four cells, so one pick site (x.4), and few channels: fast to run backward."""
    return spacelang.load(SPACES / "dlsr.space", C=8, cells=4)


def lr_input(space, height=16, width=20, batch=1):
    network = space.network
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, network.in_channels, height, width,
                      generator=generator) * network.rgb_range


def test_state_dict_keys_read_like_the_spec():
    space = spacelang.load(SPACES / "dlsr_derived.space", C=16)
    net = space.fixed()
    assert isinstance(net, FixedNet)
    keys = set(net.state_dict())
    for key in ("fea.weight", "b.1.d1.weight", "b.1.d1.bias", "b.6.fused.weight",
                "b.1.r2.sep_conv.half.dwconv.weight", "b.3.esa.conv_max.weight",
                "x.3.weight", "fused.weight", "lr.weight", "up.weight"):
        assert key in keys
    assert isinstance(net.get_submodule("b.1.d1"), nn.Conv2d)
    assert net.get_submodule("b.1.d1").out_channels == 8
    values = {"fea", "b", "x", "fused", "lr", "up"}
    assert {key.split(".")[0] for key in keys} <= values


def test_alphas_and_betas_are_in_the_state_dict(dlsr):
    net = dlsr.supernet()
    state = net.state_dict()
    for site in dlsr.network.choice_sites:
        assert state[f"alphas.{param_key(site.key)}"].shape == (len(site.labels),)
    for site in dlsr.network.pick_sites:
        assert state[f"betas.{param_key(site.key)}"].shape == (len(site.candidates),)
    assert "alphas.rfdb/r1" in state and "betas.x/4" in state

    other = dlsr.supernet()
    other.load_state_dict(state)
    for (name, a), (_, b) in zip(net.named_arch_parameters(), other.named_arch_parameters(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert other.decisions() == net.decisions()


def test_arch_and_weight_parameters_partition_parameters(dlsr):
    net = dlsr.supernet()
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    everything = [id(p) for p in net.parameters()]
    assert len(everything) == len(set(everything))
    assert arch.isdisjoint(weights)
    assert arch | weights == set(everything)
    assert sum(p.numel() for p in net.arch_parameters()) == (
        dlsr.network.alpha_count + dlsr.network.beta_count)
    assert len(arch) == len(dlsr.network.choice_sites) + len(dlsr.network.pick_sites)


def test_to_float64_moves_the_architecture_parameters(small_dlsr):
    net = small_dlsr.supernet()
    arch = net.arch_parameters()
    net.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in net.parameters())
    assert all(p.dtype == torch.float64 for p in net.arch_parameters())
    assert [id(p) for p in net.arch_parameters()] == [id(p) for p in arch]
    assert all(p.dtype == torch.float64 for p in net.probabilities().values())
    y = net(lr_input(small_dlsr).double())
    assert y.dtype == torch.float64


@pytest.mark.parametrize(("mode", "hard"), [("darts", True), ("gdas", True), ("gdas", False)])
def test_gradient_reaches_the_architecture_parameters(small_dlsr, mode, hard):
    torch.manual_seed(0)
    net = small_dlsr.supernet(mode=mode, hard=hard)
    loss = net(lr_input(small_dlsr)).square().mean()
    loss.backward()
    for name, p in net.named_arch_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in net.weight_parameters())


def _count_candidate_runs(net: SuperNet):
    runs: dict[tuple[str, int], int] = {}
    mixed = [(name, m) for name, m in net.named_modules() if isinstance(m, MixedOp)]

    def hook(name, index):
        def count(module, inputs, output):
            runs[(name, index)] = runs.get((name, index), 0) + 1
        return count

    for name, m in mixed:
        for index, candidate in enumerate(m.candidates.values()):
            candidate.register_forward_hook(hook(name, index))
    return mixed, runs


def test_gdas_hard_runs_one_candidate_per_site(small_dlsr):
    torch.manual_seed(0)
    net = small_dlsr.supernet(mode="gdas", hard=True)
    mixed, runs = _count_candidate_runs(net)
    assert len(mixed) == 3 * 4  # three refine steps in each of four cells
    with torch.no_grad():
        net(lr_input(small_dlsr))
    for name, _ in mixed:
        ran = [index for (n, index) in runs if n == name]
        assert len(ran) == 1 and runs[(name, ran[0])] == 1, name
    # a shared site samples once per forward: every instance runs the same candidate
    by_site: dict[str, set[int]] = {}
    for name, m in mixed:
        by_site.setdefault(m.site, set()).update(i for (n, i) in runs if n == name)
    assert all(len(chosen) == 1 for chosen in by_site.values())


@pytest.mark.parametrize(("mode", "hard"), [("darts", True), ("gdas", False)])
def test_darts_and_soft_gdas_run_every_candidate(small_dlsr, mode, hard):
    net = small_dlsr.supernet(mode=mode, hard=hard)
    mixed, runs = _count_candidate_runs(net)
    with torch.no_grad():
        net(lr_input(small_dlsr))
    for name, m in mixed:
        assert sum(1 for (n, _) in runs if n == name) == len(m.candidates)


def test_decisions_are_valid_and_follow_the_weights(small_dlsr):
    network = small_dlsr.network
    net = small_dlsr.supernet()
    decisions = net.decisions()
    assert normalize(network, decisions) == decisions
    with torch.no_grad():
        net.alphas[param_key("rfdb.r2")][5] = 1.0
        beta = net.betas[param_key("x.4")]
        beta.copy_(torch.tensor([0.5, -1.0, 0.7]))
    decisions = net.decisions()
    assert decisions["rfdb.r2"] == 5
    assert decisions["x.4"] == (0, 2)
    assert normalize(network, decisions) == decisions
    fixed = small_dlsr.fixed(decisions)
    assert fixed(lr_input(small_dlsr)).shape == (1, 3, 32, 40)


@pytest.mark.parametrize("name", ["dlsr", "imdn_cell"])
@pytest.mark.parametrize("mode", ["darts", "gdas"])
def test_supernet_forward_shapes(name, mode):
    space = spacelang.load(SPACES / f"{name}.space", C=16)
    net = space.supernet(mode=mode)
    with torch.no_grad():
        y = net(lr_input(space, 16, 20, batch=2))
    assert y.shape == (2, 3, 32, 40)
    assert torch.isfinite(y).all()


def test_values_named_like_module_methods():
    space = spacelang.loads(textwrap.dedent(METHOD_NAMES), path="methods.space")
    keys = {s.key for s in space.network.choice_sites} | {s.key for s in space.network.pick_sites}
    assert {"train", "eval"} <= keys

    net = space.supernet()
    state = net.state_dict()
    assert "body.half.1.half.weight" in state
    assert "body.train.light.candidates.half.conv.weight" in state
    assert "body.forward.weight" in state
    assert "alphas.train/" in state and "betas.eval/" in state  # kept apart from the methods
    assert isinstance(net.get_submodule("body.eval"), nn.Conv2d)
    assert isinstance(net.get_submodule("body.train.light").candidates["half"], nn.Module)
    assert net(lr_input(space, 8, 6)).shape == (1, 3, 16, 12)
    net.train(False)
    assert not net.training
    net.train()
    assert net.training
    assert callable(net.half) and callable(net.body.forward)
    decisions = net.decisions()
    assert normalize(space.network, decisions) == decisions

    fixed = space.fixed({"train": "train", "half.1.keys": "half", "half.2.keys": 1,
                         "eval": ("half[2]",)})
    assert "half.1.half.weight" in fixed.state_dict()
    assert "forward.weight" in fixed.state_dict()
    assert isinstance(fixed.get_submodule("eval"), nn.Conv2d)
    assert fixed(lr_input(space, 8, 6)).shape == (1, 3, 16, 12)
    fixed.eval()
    assert not fixed.training
    fixed.half()
    assert all(p.dtype == torch.float16 for p in fixed.parameters())
