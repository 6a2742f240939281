"""Progressive pruning in the supernet: a pruned candidate has probability 0, gets no
gradient, is not run, and stays pruned through updates and a save/load of the state."""

from __future__ import annotations

import textwrap

import pytest
import torch
from spacelang.backends.torch.supernet import MixedOp, param_key

import spacelang
from tests.paths import SPACES

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SPEC = """\
op c1(x: c) {
    return conv(x, c, k=1, bias=false)
}

op c3(x: c) {
    return conv(x, c, k=3, bias=false)
}

op c5(x: c) {
    return conv(x, c, k=5, bias=false)
}

choice mix = [c1, c3, c5]

network p(C = 4, scale = 2, rgb_range = 1) {
    f = conv(input, C, k=3)
    a = mix(f)
    b = mix(a)
    return pixel_shuffle(conv(a + b, 3 * scale * scale, k=3), scale)
}
"""


@pytest.fixture
def space() -> spacelang.Space:
    return spacelang.loads(textwrap.dedent(SPEC), path="p.space")


def counted(net) -> dict[tuple[str, str], int]:
    """Count the calls of every candidate module of every mixed op."""
    calls: dict[tuple[str, str], int] = {}
    for name, module in net.named_modules():
        if isinstance(module, MixedOp):
            for label, candidate in module.candidates.items():
                def hook(*_, key=(name, label)):
                    calls[key] = calls.get(key, 0) + 1
                candidate.register_forward_hook(hook)
    return calls


def set_alphas(net, site: str, values: list[float]) -> None:
    with torch.no_grad():
        net.alphas[param_key(site)].copy_(torch.tensor(values))


def test_a_prune_drops_the_least_probable_live_candidate_of_every_site(space):
    net = space.supernet(pruning=True)
    set_alphas(net, "a", [0.3, -0.2, 0.1])
    set_alphas(net, "b", [-1.0, 0.5, 0.0])
    assert net.prune(keep=1) == {"a": "c3", "b": "c1"}
    assert net.prune(keep=1) == {"a": "c5", "b": "c5"}
    assert net.prune(keep=1) == {}  # one left per site: nothing more to drop
    assert net.live_candidates("a") == (0,) and net.live_candidates("b") == (1,)
    assert net.decisions() == {"a": 0, "b": 1}


def test_prune_keeps_the_requested_number(space):
    net = space.supernet(pruning=True)
    assert len(net.prune(keep=2)) == 2
    assert net.prune(keep=2) == {}
    assert all(len(net.live_candidates(s)) == 2 for s in ("a", "b"))


def test_a_pruned_candidate_has_zero_probability_no_gradient_and_does_not_run(space):
    torch.manual_seed(0)
    net = space.supernet(pruning=True)
    set_alphas(net, "a", [0.3, -0.2, 0.1])
    set_alphas(net, "b", [0.3, -0.2, 0.1])
    net.prune(keep=1)  # c3 goes at both sites
    calls = counted(net)
    net(torch.rand(2, 3, 8, 8)).square().mean().backward()
    assert {label for (_, label) in calls} == {"c1", "c5"}
    for site in ("a", "b"):
        p = net.probabilities()[site]
        assert p[1].item() == 0.0 and p.sum().item() == pytest.approx(1.0)
        alpha = net.alphas[param_key(site)]
        assert alpha.grad[1].item() == 0.0 and alpha.grad[[0, 2]].abs().sum() > 0
    pruned = [net.body.a.candidates["c3"], net.body.b.candidates["c3"]]
    assert all(p.grad is None for m in pruned for p in m.parameters())
    live = net.body.a.candidates["c1"]
    assert all(p.grad is not None for p in live.parameters())


def test_a_pruned_candidate_cannot_come_back(space):
    net = space.supernet(pruning=True)
    set_alphas(net, "a", [0.0, -1.0, 0.0])
    net.prune(keep=2)
    opt = torch.optim.Adam(net.arch_parameters(), lr=1.0)
    for _ in range(5):  # push the pruned α far above the rest
        opt.zero_grad()
        (-net.alphas[param_key("a")][1] * 100).backward()
        opt.step()
    assert net.alphas[param_key("a")][1] > 1.0
    assert net.probabilities()["a"][1].item() == 0.0
    assert net.decisions()["a"] != 1
    calls = counted(net)
    net(torch.rand(1, 3, 8, 8))
    assert ("body.a", "c3") not in calls


def test_gdas_never_samples_a_pruned_candidate(space):
    torch.manual_seed(0)
    net = space.supernet(mode="gdas", hard=True, pruning=True)
    set_alphas(net, "a", [0.0, -5.0, 0.0])
    net.prune(keep=2)
    set_alphas(net, "a", [0.0, 50.0, 0.0])  # the most likely by far, were it alive
    calls = counted(net)
    for _ in range(20):
        net(torch.rand(1, 3, 8, 8)).mean().backward()
    assert ("body.a", "c3") not in calls
    assert sum(n for (name, _), n in calls.items() if name == "body.a") == 20


def test_the_masks_survive_a_save_and_load_of_the_state_dict(space):
    net = space.supernet(pruning=True)
    set_alphas(net, "a", [0.3, -0.2, 0.1])
    net.prune(keep=1)
    state = net.state_dict()
    assert state["alive.a"].tolist() == [True, False, True]
    fresh = space.supernet(pruning=True)
    assert fresh.live_candidates("a") == (0, 1, 2)  # read before the load
    fresh.load_state_dict(state)
    assert fresh.live_candidates("a") == (0, 2)
    for site, p in net.probabilities().items():
        assert torch.equal(fresh.probabilities()[site], p)
    calls = counted(fresh)
    fresh(torch.rand(1, 3, 8, 8))
    assert ("body.a", "c3") not in calls and ("body.a", "c1") in calls


def test_without_pruning_the_state_dict_is_unchanged(space):
    """A search that does not prune keeps its checkpoint's keys (old ones still load)."""
    assert not any(key.startswith("alive.") for key in space.supernet().state_dict())


def test_the_expected_cost_and_the_derivation_see_the_masks():
    space = spacelang.load(SPACES / "dlsr.space", C=8, cells=3)
    net = space.supernet(pruning=True)
    report = space.cost((64, 64))
    with torch.no_grad():
        before = float(report.expected(net.probabilities(), "params"))
        for _ in range(8):
            net.prune(keep=1)
        after = float(report.expected(net.probabilities(), "params"))
    assert after != before
    assert after == pytest.approx(report.architecture(net.decisions()).params)


PICKING = """\
op c1(x: c) {
    return conv(x, c, k=1, bias=false)
}

op c3(x: c) {
    return conv(x, c, k=3, bias=false)
}

choice mix = [c1, c3]

network w(C = 4, scale = 2, rgb_range = 1) {
    a = conv(input, C, k=3)
    b = mix(a)
    c = mix(b)
    d = conv(concat(pick 2 of [a, b, c, a + c]), C, k=1)
    return pixel_shuffle(conv(d, 3 * scale * scale, k=3), scale)
}
"""


@pytest.fixture
def picking() -> spacelang.Space:
    return spacelang.loads(PICKING, path="w.space")


def set_betas(net, site: str, values: list[float]) -> None:
    with torch.no_grad():
        net.betas[param_key(site)].copy_(torch.tensor(values))


def test_pick_sites_are_pruned_down_to_their_k_and_then_the_network_is_decided(picking):
    net = picking.supernet(pruning=True)
    set_alphas(net, "b", [0.2, -0.2])
    set_alphas(net, "c", [-0.2, 0.2])
    set_betas(net, "d", [0.3, -0.5, 0.1, -0.1])
    assert not net.decided()
    assert net.prune(keep=1) == {"b": "c3", "c": "c1", "d": "b"}
    assert not net.decided()  # three candidates left where the pick takes two
    assert net.prune(keep=1) == {"d": "add(...)"}
    assert net.decided() and net.prune(keep=1) == {}
    assert net.decisions() == {"b": 0, "c": 1, "d": (0, 2)}
    assert net.probabilities()["d"].tolist()[1] == 0.0
    assert net.state_dict()["alive.d"].tolist() == [True, False, True, False]


def test_keep_leaves_spare_candidates_at_pick_sites_too(picking):
    net = picking.supernet(pruning=True)
    for _ in range(5):
        net.prune(keep=2)
    assert len(net.live_candidates("b")) == 2
    assert int(net.state_dict()["alive.d"].sum()) == 3  # k + 1
    assert not net.decided()


def test_prune_spares_the_protected_decisions(picking):
    net = picking.supernet(pruning=True)
    set_alphas(net, "b", [0.2, -0.2])
    set_alphas(net, "c", [0.2, -0.2])
    set_betas(net, "d", [0.3, -0.5, 0.1, -0.1])
    # the least likely candidates are the protected ones: the next least go instead
    protect = {"b": 1, "d": (1, 3)}
    assert net.prune(keep=1, protect=protect) == {"b": "c1", "c": "c3", "d": "c"}
    assert net.prune(keep=1, protect=protect) == {"d": "a"}
    assert net.decided() and net.decisions() == {"b": 1, "c": 0, "d": (1, 3)}


@pytest.mark.parametrize("mode", ["darts", "gdas"])
def test_a_pruned_pick_candidate_passes_nothing_and_its_beta_gets_no_gradient(picking, mode):
    torch.manual_seed(0)
    net = picking.supernet(mode=mode, pruning=True)
    set_betas(net, "d", [0.3, -0.5, 0.1, -0.1])
    net.prune(keep=2)  # drops b
    set_betas(net, "d", [0.3, 9.0, 0.1, -0.1])  # b the most likely by far, were it alive
    for _ in range(10):
        net.zero_grad()
        net(torch.rand(1, 3, 8, 8)).square().mean().backward()
        assert net.site_weights("d", pick=True)[1].item() == 0.0
        assert net.betas["d"].grad[1].item() == 0.0
    assert 1 not in net.decisions()["d"]
