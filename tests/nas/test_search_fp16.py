"""amp fp16 in `spacelang search`: the weight step and the α/β step each scale their loss.

The product runs fp16 on CUDA only (`amp_dtype` refuses it on CPU). Torch's CPU autocast
and `torch.amp.GradScaler("cpu")` run the same code, so these tests lift that refusal
(the `fp16_on_cpu` fixture, nothing else) and run real fp16 searches through the public
API; the CLI test keeps the refusal.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F
from spacelang.backends.cost import cost_report

import spacelang
import spacelang.runtime.speed as speed
from spacelang.nas.penalty import ComplexityPenalty
from spacelang.nas.search import SearchError
from spacelang.nas.strategies import STRATEGIES, Darts1, make_strategy, takes_loss_scale
from spacelang.runtime.checkpoint import load_checkpoint
from spacelang.sr.config import ConfigError, SearchConfig
from spacelang.sr.data import folder
from spacelang.sr.search import search
from tests.nas.test_search import SMOOTH, TOY, _config, _poisoned_loss, _records
from tests.paths import REPO
from tests.photos import write_photos

#: An initial loss scale that overflows the float16 gradients of TOY's search (it settles
#: near 2**19 there): the first steps must be skipped.
HUGE = 2.0**28
DEFAULT = 2.0**16  # torch.amp.GradScaler's initial scale


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """Let the loop autocast to float16 on CPU (the product refuses: no fast kernels)."""
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 1, 1))
        torch.amp.GradScaler("cpu")
    except (RuntimeError, ValueError) as exc:  # an older torch
        pytest.skip(f"this torch has no float16 autocast or GradScaler on CPU: {exc}")
    real = speed.amp_dtype

    def on_cpu_too(amp: str, device) -> torch.dtype | None:
        return speed.AMP_DTYPES[amp] if amp == "fp16" else real(amp, device)

    monkeypatch.setattr(speed, "amp_dtype", on_cpu_too)


@pytest.fixture
def huge_initial_scale(monkeypatch):
    """Every GradScaler the search makes starts at `HUGE`."""

    class Huge(torch.amp.GradScaler):
        def __init__(self, device: str = "cuda", **kwargs) -> None:
            super().__init__(device, init_scale=HUGE, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", Huge)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp16")
    return folder(write_photos(root / "images", 4, 48, prefix="img"), 2).materialize()


def _toy(tmp_path: Path):
    return spacelang.loads(TOY, path=str(tmp_path / "toy.space"))


def _adam_steps(state: dict) -> int:
    """Steps an Adam state_dict has taken (0: every step was skipped)."""
    steps = {int(s["step"]) for s in state["state"].values()}
    assert len(steps) <= 1
    return steps.pop() if steps else 0


def _skips(scale: float) -> int:
    """Skipped steps that brought a scale from `HUGE` down to ``scale`` (no growth within
    the scaler's growth interval of 2000 steps)."""
    halvings = HUGE / scale
    assert halvings == 2 ** round(torch.log2(torch.tensor(halvings)).item())
    return round(torch.log2(torch.tensor(halvings)).item())


# --------------------------------------------------------------------------- strategies


def _smooth_net(**options):
    """SMOOTH's supernet with random α/β; ``options`` as `Space.supernet` takes them."""
    space = spacelang.loads(SMOOTH, path=str(REPO / "spaces" / "smooth.space"))
    torch.manual_seed(3)
    net = space.supernet(**options)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return space, net


def _batches(size: int, count: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)

    def batch():
        return (torch.rand(count, 3, size, size, generator=gen, dtype=dtype),
                torch.rand(count, 3, 2 * size, 2 * size, generator=gen, dtype=dtype))

    return batch(), batch()


@pytest.mark.parametrize("name", ["darts1", "darts2", "gdas"])
@pytest.mark.parametrize("scale", [3.0, torch.tensor(DEFAULT, dtype=torch.float64)])
def test_a_strategy_sets_the_scale_times_the_gradient_and_returns_the_loss(name, scale):
    # float64, no autocast: scaling must change nothing but the factor
    strategy = make_strategy(name, SearchConfig(strategy=name, arch_objective="train+val"))
    space, net = _smooth_net(**strategy.supernet_options())
    net = net.double()
    train, val = _batches(6, 2, torch.float64)
    penalty = ComplexityPenalty(cost_report(space.network, (12, 12)), "macs", 0.05)
    results = []
    for loss_scale in (1.0, scale):
        torch.manual_seed(0)  # GDAS' sample
        strategy.prepare(net, 5, 10)
        loss = strategy.arch_gradient(net, train, val, F.mse_loss, penalty, 0.5,
                                      loss_scale=loss_scale)
        grads = torch.cat([p.grad.flatten() for p in net.arch_parameters()])
        results.append((float(loss), grads / loss_scale))
    (plain_loss, plain), (scaled_loss, scaled) = results
    assert scaled_loss == pytest.approx(plain_loss, rel=1e-12)
    assert plain.abs().max() > 0
    torch.testing.assert_close(scaled, plain, rtol=1e-9, atol=1e-12 * float(plain.abs().max()))


@pytest.mark.parametrize("name", ["darts1", "darts2"])
def test_fp16_architecture_gradient_underflows_unless_scaled(name, fp16_on_cpu):
    # an L1 loss over 4×3×192×192 pixels: each pixel's gradient is ~2e-6, below float16's
    # normal range, so the unscaled float16 backward pass loses most of its digits
    strategy = make_strategy(name, SearchConfig(strategy=name))
    _, net = _smooth_net()
    train, val = _batches(96, 4)

    def no_penalty(_net):
        return torch.zeros(())

    def gradient(amp: str, loss_scale: float) -> torch.Tensor:
        speed.optimise(net, amp=amp, device="cpu")
        strategy.arch_gradient(net, train, val, F.l1_loss, no_penalty, 0.01,
                               loss_scale=loss_scale)
        return torch.cat([p.grad.flatten() for p in net.arch_parameters()]) / loss_scale

    exact = gradient("fp32", 1.0)
    unscaled = float((gradient("fp16", 1.0) - exact).norm() / exact.norm())
    scaled = float((gradient("fp16", DEFAULT) - exact).norm() / exact.norm())
    print(f"relative error of the float16 gradient: {unscaled:.2%} unscaled, "
          f"{scaled:.2%} scaled")
    assert scaled < 1e-2
    assert unscaled > 10 * scaled


def test_an_overflowing_scale_leaves_no_unrolled_gradient_but_a_finite_loss(fp16_on_cpu):
    _, net = _smooth_net()
    speed.optimise(net, amp="fp16", device="cpu")
    train, val = _batches(16, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def no_penalty(_net):
        return torch.zeros(())

    strategy = make_strategy("darts2", SearchConfig(strategy="darts2"))
    # the scaled training gradient overflows float16: there is no virtual step to take
    loss = strategy.arch_gradient(net, train, val, F.l1_loss, no_penalty, 0.01,
                                  loss_scale=2.0**60)
    assert all(bool(p.grad.isnan().all()) for p in net.arch_parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # the objective at the current weights (ξ = 0 does not move them)
    plain = strategy.arch_gradient(net, train, val, F.l1_loss, no_penalty, 0.0)
    assert float(loss) == float(plain)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("name", ["darts1", "darts2", "gdas"])
def test_fp16_search_configs_are_accepted_for_every_shipped_strategy(name):
    assert takes_loss_scale(STRATEGIES[name])
    assert SearchConfig(strategy=name, amp="fp16").amp == "fp16"


def test_fp16_is_refused_for_a_strategy_that_cannot_take_a_loss_scale(monkeypatch):
    class Unscaled(Darts1):
        name = "unscaled"

        def arch_gradient(self, net, train_batch, val_batch, loss_fn, penalty, weight_lr):
            return super().arch_gradient(net, train_batch, val_batch, loss_fn, penalty,
                                         weight_lr)

    monkeypatch.setitem(STRATEGIES, "unscaled", Unscaled)
    assert not takes_loss_scale(Unscaled)
    assert SearchConfig(strategy="unscaled", amp="bf16").strategy == "unscaled"
    with pytest.raises(ConfigError, match="'unscaled' cannot take a loss scale") as caught:
        SearchConfig(strategy="unscaled", amp="fp16")
    assert caught.value.key == "amp"


# --------------------------------------------------------------------------- searches


@pytest.mark.parametrize("strategy", ["darts1", "darts2"])
def test_fp16_search_moves_alpha_and_records_both_scales(tmp_path, images, fp16_on_cpu,
                                                         strategy):
    cfg = _config(amp="fp16", strategy=strategy, iterations=20, arch_warmup=5, log_every=5,
                  checkpoint_every=20)
    search(_toy(tmp_path), cfg, train_set=images, val_set=None, run_dir=tmp_path / "run",
           progress=False)
    records = _records(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [5, 10, 15, 20]
    for record in records:
        assert 0 < record["loss_scale"] <= DEFAULT and 0 < record["arch_loss_scale"] <= DEFAULT
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["grad_scaler"]["scale"] == records[-1]["loss_scale"]
    assert state["arch_grad_scaler"]["scale"] == records[-1]["arch_loss_scale"]
    assert _adam_steps(state["weight_opt"]) > 15 and _adam_steps(state["arch_opt"]) > 10
    alphas = state["model"]["alphas.y"]
    assert alphas.dtype == torch.float32 and torch.isfinite(alphas).all()
    assert float(alphas.abs().max()) > 1e-3  # α/β start at 0


def test_an_overflowing_scale_skips_steps_and_backs_off(tmp_path, images, fp16_on_cpu,
                                                        huge_initial_scale):
    cfg = _config(amp="fp16", iterations=20, arch_warmup=4, log_every=1, checkpoint_every=20)
    search(_toy(tmp_path), cfg, train_set=images, val_set=None, run_dir=tmp_path / "run",
           progress=False)
    records = _records(tmp_path / "run" / "metrics.jsonl")
    assert records[0]["loss_scale"] == HUGE / 2  # the first weight step overflowed
    assert records[4]["arch_loss_scale"] == HUGE / 2  # so did the first α/β step
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    weight_skips = _skips(state["grad_scaler"]["scale"])
    arch_skips = _skips(state["arch_grad_scaler"]["scale"])
    assert 0 < weight_skips < 20 and 0 < arch_skips < 16
    # each skipped update left its optimizer untouched; the others stepped
    assert _adam_steps(state["weight_opt"]) == 20 - weight_skips
    assert _adam_steps(state["arch_opt"]) == 16 - arch_skips
    assert torch.isfinite(state["model"]["alphas.y"]).all()
    assert float(state["model"]["alphas.y"].abs().max()) > 0


@pytest.mark.parametrize("amp", ["fp32", "fp16"])
def test_a_non_finite_architecture_gradient_stops_fp32_and_is_skipped_in_fp16(
        tmp_path, images, monkeypatch, fp16_on_cpu, amp):
    # from loss call 16 on (the architecture loss of update 14) every gradient is NaN
    # while the losses stay finite
    _poisoned_loss(monkeypatch, 10 + 2 * 3, "nan_grad")
    cfg = _config(amp=amp, iterations=20, arch_warmup=10, checkpoint_every=20)
    run = tmp_path / "run"
    if amp == "fp32":
        with pytest.raises(SearchError, match="non-finite architecture gradient at iteration 14"):
            search(_toy(tmp_path), cfg, train_set=images, val_set=None, run_dir=run,
                   progress=False)
        return
    search(_toy(tmp_path), cfg, train_set=images, val_set=None, run_dir=run, progress=False)
    state = load_checkpoint(run / "last.pt")
    # updates 14..20 skipped both steps, and each skip halved both scales
    assert _adam_steps(state["arch_opt"]) == 3 and _adam_steps(state["weight_opt"]) == 13
    assert state["arch_grad_scaler"]["scale"] == state["grad_scaler"]["scale"] == DEFAULT / 2**7
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def _timeless(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed"} for r in records]


def test_resume_restores_both_scales_exactly(tmp_path, images, fp16_on_cpu,
                                             huge_initial_scale):
    # constant learning rates, so that a run extended from 12 to 24 updates is one of 24;
    # a resumed run that started from HUGE again would skip other updates
    cfg = _config(amp="fp16", iterations=24, arch_warmup=4, log_every=1, checkpoint_every=12,
                  weight_schedule="step", step_size=10**6)
    space = _toy(tmp_path)
    search(space, attrs.evolve(cfg, iterations=12), train_set=images, val_set=None,
           run_dir=tmp_path / "resumed", progress=False)
    halfway = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert halfway["grad_scaler"]["scale"] < HUGE and halfway["arch_grad_scaler"]["scale"] < HUGE
    search(space, cfg, train_set=images, val_set=None, run_dir=tmp_path / "resumed",
           resume=True, progress=False)
    search(space, cfg, train_set=images, val_set=None, run_dir=tmp_path / "straight",
           progress=False)
    got = _records(tmp_path / "resumed" / "metrics.jsonl")
    want = _records(tmp_path / "straight" / "metrics.jsonl")
    assert _timeless(got) == _timeless(want)
    final = load_checkpoint(tmp_path / "resumed" / "last.pt")
    reference = load_checkpoint(tmp_path / "straight" / "last.pt")
    for key in ("grad_scaler", "arch_grad_scaler"):
        assert final[key] == reference[key]
    for key, value in reference["model"].items():
        assert torch.equal(final["model"][key], value), key


def test_an_fp32_run_resumed_in_fp16_starts_fresh_scales(tmp_path, images, fp16_on_cpu,
                                                         huge_initial_scale):
    cfg = _config(iterations=16, arch_warmup=4, log_every=1, checkpoint_every=8)
    space = _toy(tmp_path)
    search(space, attrs.evolve(cfg, iterations=8), train_set=images, val_set=None,
           run_dir=tmp_path / "run", progress=False)
    assert "grad_scaler" not in load_checkpoint(tmp_path / "run" / "last.pt")
    search(space, attrs.evolve(cfg, amp="fp16"), train_set=images, val_set=None,
           run_dir=tmp_path / "run", resume=True, progress=False)
    records = _records(tmp_path / "run" / "metrics.jsonl")
    assert "loss_scale" not in records[7]
    # the first fp16 update starts from the initial scale (and overflows it)
    assert records[8]["iteration"] == 9
    assert records[8]["loss_scale"] == records[8]["arch_loss_scale"] == HUGE / 2
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["iteration"] == 16 and state["arch_grad_scaler"]["scale"] < HUGE
