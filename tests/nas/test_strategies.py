"""spacelang.nas.strategies: the registry, and a strategy added from outside."""

import pytest
import torch

import spacelang
from spacelang.nas.strategies import STRATEGIES, Gdas, Strategy, make_strategy
from spacelang.sr.config import SearchConfig

SPEC = """\
import "ops.space"

choice mix = [conv_1x1, conv_3x3]

network tiny(C = 4, scale = 2, rgb_range = 1) {
    a = conv(input, C, k=3)
    b = mix(a)
    return pixel_shuffle(conv(b, 3 * scale * scale, k=3), scale)
}
"""


def test_shipped_strategies_are_registered_with_their_relaxation():
    assert set(STRATEGIES) >= {"darts1", "darts2", "gdas"}
    cfg = SearchConfig(strategy="gdas", gdas_tau_max=4.0, gdas_tau_min=1.0, gdas_hard=False)
    gdas = make_strategy("gdas", cfg)
    assert isinstance(gdas, Gdas)
    assert gdas.supernet_options() == {"mode": "gdas", "hard": False, "tau": 4.0,
                                       "partial_channels": 1, "pruning": False}
    assert [gdas.tau(i, 4) for i in range(4)] == pytest.approx([4.0, 3.0, 2.0, 1.0])
    assert make_strategy("darts1", cfg).supernet_options() == {
        "mode": "darts", "partial_channels": 1, "pruning": False}
    with pytest.raises(ValueError, match="unknown search strategy 'enas'"):
        make_strategy("enas", cfg)


def test_a_registered_strategy_is_accepted_by_the_config_and_used(monkeypatch, spaces_dir):
    calls = []

    class Frozen(Strategy):
        """Leaves α/β where they are (zero gradient)."""

        name = "frozen"

        def arch_gradient(self, net, train_batch, val_batch, loss_fn, penalty, weight_lr):
            calls.append(weight_lr)
            for p in net.arch_parameters():
                p.grad = torch.zeros_like(p)
            return torch.zeros(())

    monkeypatch.setitem(STRATEGIES, "frozen", Frozen)
    cfg = SearchConfig(strategy="frozen")
    strategy = make_strategy(cfg.strategy, cfg)
    space = spacelang.loads(SPEC, path=str(spaces_dir / "tiny.space"))
    net = space.supernet(**strategy.supernet_options())
    batch = (torch.rand(1, 3, 4, 4), torch.rand(1, 3, 8, 8))
    loss = strategy.arch_gradient(net, batch, batch, torch.nn.functional.l1_loss,
                                  lambda n: torch.zeros(()), 0.1)
    assert calls == [0.1] and float(loss) == 0.0
    assert all(not p.grad.any() for p in net.arch_parameters())


@pytest.mark.parametrize("name", ["darts1", "darts2", "gdas"])
def test_partial_channels_and_pruning_are_options_of_every_strategy(name, spaces_dir):
    cfg = SearchConfig(strategy=name, partial_channels=2, prune_every=3, prune_keep=1)
    strategy = make_strategy(name, cfg)
    options = strategy.supernet_options()
    assert options["partial_channels"] == 2 and options["pruning"] is True
    space = spacelang.loads(SPEC, path=str(spaces_dir / "tiny.space"))
    net = space.supernet(**options)
    assert net.partial_channels == 2
    # a prune after every third architecture step, until one candidate is left
    dropped = [strategy.after_arch_step(net, step) for step in range(1, 10)]
    assert [bool(d) for d in dropped] == [False, False, True] + [False] * 6
    assert net.live_candidates("b") in ((0,), (1,))


def test_without_prune_every_nothing_is_pruned(spaces_dir):
    strategy = make_strategy("darts1", SearchConfig())
    assert strategy.prune_every == 0 and strategy.prune_keep == 2
    net = spacelang.loads(SPEC, path=str(spaces_dir / "tiny.space")).supernet()
    assert all(strategy.after_arch_step(net, step) == {} for step in range(1, 50))
    assert net.live_candidates("b") == (0, 1)


def test_pruning_asks_for_the_derived_architecture_only_when_it_prunes(spaces_dir):
    cfg = SearchConfig(prune_every=3, prune_keep=1)
    strategy = make_strategy("darts1", cfg)
    net = spacelang.loads(SPEC, path=str(spaces_dir / "tiny.space")).supernet(
        **strategy.supernet_options())
    asked = []

    def protect():
        asked.append(len(asked))
        return {"b": 1}

    with torch.no_grad():
        net.alphas["b"].copy_(torch.tensor([1.0, -1.0]))  # b's argmax is 0; 1 is protected
    dropped = [strategy.after_arch_step(net, step, protect) for step in range(1, 7)]
    assert len(asked) == 2  # steps 3 and 6
    assert dropped[2] == {"b": net.network.choice_sites[0].labels[0]}
    assert net.live_candidates("b") == (1,)
