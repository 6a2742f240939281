"""Tests for spacelang.nas.search with the SR task: the DARTS/GDAS loop and its run folder.

Everything runs on tiny inline specs and a handful of 48×48 images, with one torch thread.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import attrs
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spacelang.backends.cost import cost_report
from spacelang.backends.torch.supernet import param_key

import spacelang
import spacelang.sr.task as task_module
from spacelang.cli import run_cli
from spacelang.nas.penalty import ComplexityPenalty
from spacelang.nas.search import SearchError, Settled, load_search_checkpoint, settled
from spacelang.nas.strategies import (
    STRATEGIES,
    Darts1,
    arch_batches,
    arch_gradient_first_order,
    arch_gradient_unrolled,
)
from spacelang.runtime.checkpoint import load_checkpoint
from spacelang.sr.config import SearchConfig, dump_config, load_config
from spacelang.sr.data import folder
from spacelang.sr.images import write_image
from spacelang.sr.search import search, search_splits
from tests.paths import REPO

# A ×2 task where one candidate is plainly right: `keep` passes the features on, `flat`
# replaces every channel by its mean and `blur` smears it with a 7×7 max filter.
TOY = """\
op keep(x: c) {
    return identity(x)
}

op flat(x: c) {
    return resize(mean(x), x)
}

op blur(x: c) {
    return maxpool(x, 7, stride=1, padding=3)
}

choice pre = [keep, flat, blur]

network toy(C = 8, scale = 2, rgb_range = 1) {
    f = conv(input, C, k=3)
    y = pre(f)
    return pixel_shuffle(conv(y, 3 * scale * scale, k=3), scale)
}
"""

# A cheap candidate that loses detail (a 1×1 conv of max-filtered features) against an
# expensive one that keeps it (the features plus a 7×7 conv of them).
COSTLY = """\
import "ops.space"

op poor(x: c) {
    return conv_1x1(maxpool(x, 7, stride=1, padding=3))
}

op rich(x: c) {
    return x + conv_7x7(x)
}

choice light = [poor, rich]

network costly(C = 8, scale = 2, rgb_range = 1) {
    f = conv(input, C, k=3)
    y = light(f)
    return pixel_shuffle(conv(y, 3 * scale * scale, k=3), scale)
}
"""

# Smooth everywhere (sigmoid, MSE), with a choice site used twice and a pick site.
SMOOTH = """\
import "ops.space"

op squash(x: c) {
    return sigmoid(conv_1x1(x))
}

choice mix = [conv_1x1, conv_3x3, squash]

network smooth(C = 4, scale = 2, rgb_range = 1) {
    a = conv(input, C, k=3)
    b = sigmoid(mix(a))
    c = sigmoid(mix(b))
    d = conv(concat(pick 2 of [a, b, c]), C, k=1)
    return pixel_shuffle(conv(d, 3 * scale * scale, k=3), scale)
}
"""


def _config(**changes) -> SearchConfig:
    values = {
        "iterations": 60,
        "arch_warmup": 20,
        "patch_size": 16,
        "batch_size": 4,
        "epoch_length": 16,
        "weight_lr": 3e-3,
        "arch_lr": 1e-2,
        "complexity": "none",
        "hr_size": (64, 64),
        "seed": 0,
        "log_every": 10,
        "checkpoint_every": 60,
        "val_every": 1000,
    }
    values.update(changes)
    return SearchConfig(**values)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Four 48×48 images of a few random sinusoids each (smooth, but with detail)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    for i in range(4):
        image = np.zeros((48, 48, 3))
        for _ in range(6):
            fy, fx = rng.uniform(-0.6, 0.6, 2)
            amplitude = rng.uniform(10, 30, 3)
            image += amplitude * np.sin(fy * yy + fx * xx + rng.uniform(0, 2 * np.pi))[..., None]
        write_image(root / f"img{i}.png", np.clip(image + 128, 0, 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def images(image_dir):
    return folder(image_dir, 2).materialize()


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, images):
    """One search of TOY, from a spec file, with validation on; shared by several tests."""
    root = tmp_path_factory.mktemp("toy")
    spec = root / "toy.space"
    spec.write_text(TOY)
    space = spacelang.load(spec)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures start before `torch_one_thread`
    try:
        cfg = _config(val_every=30, checkpoint_every=20)
        result = search(space, cfg, train_set=images, val_set=images[:1],
                        run_dir=root / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    return space, cfg, result


# --------------------------------------------------------------------------- the search


def test_search_finds_the_candidate_that_keeps_the_signal(toy_run):
    _, cfg, result = toy_run
    assert result.decisions == {"y": 0}
    assert result.iterations == cfg.iterations
    alphas = _records(result.run_dir / "arch.jsonl")[-1]["arch"]["y"]
    assert alphas[0] == max(alphas)
    derived = spacelang.load(result.derived_path)
    assert derived.is_fixed
    assert "y = keep(f)" in result.derived_path.read_text()
    metrics = _records(result.run_dir / "metrics.jsonl")
    psnrs = [r["val_psnr_derived"] for r in metrics if "val_psnr_derived" in r]
    assert len(psnrs) == 2 and all(math.isfinite(p) and p > 15 for p in psnrs)
    losses = [r["loss"] for r in metrics if "loss" in r]
    assert [r["iteration"] for r in metrics if "loss" in r] == list(range(10, 61, 10))
    assert losses[-1] < losses[0]


def test_no_budget_picks_the_expensive_op_and_a_budget_below_it_does_not(tmp_path, images):
    space = spacelang.loads(COSTLY, path=str(tmp_path / "costly.space"))
    report = cost_report(space.network, (64, 64))
    rich = report.architecture({"y": 1}).macs
    poor = report.architecture({"y": 0}).macs
    free = search(space, _config(complexity="macs"), train_set=images, val_set=None,
                  run_dir=tmp_path / "free", progress=False)
    assert free.decisions == {"y": 1} and free.macs == rich
    budget = (rich + poor) // 2
    tight = search(space, _config(complexity="macs", budget_macs=budget), train_set=images,
                   val_set=None, run_dir=tmp_path / "tight", progress=False)
    assert tight.decisions == {"y": 0} and tight.macs == poor <= budget
    assert spacelang.load(tight.derived_path).cost((64, 64)).base.macs == tight.macs
    # a budget above the expensive op's cost leaves the choice to the data
    loose = search(space, _config(complexity="macs", budget_macs=2 * rich), train_set=images,
                   val_set=None, run_dir=tmp_path / "loose", progress=False)
    assert loose.decisions == {"y": 1}


def test_complexity_penalty_gradient_points_to_cheaper_ops(spaces_dir):
    space = spacelang.load(spaces_dir / "dlsr.space", C=8)
    torch.manual_seed(0)
    net = space.supernet()
    report = cost_report(space.network, (64, 64))
    assert report.sites
    penalty = ComplexityPenalty(report, "macs", 1.0)  # no budget: over the space's range
    low, high = report.extreme("macs", min), report.extreme("macs", max)
    value = penalty(net)
    expected = float(report.expected(net.probabilities(), "macs").detach())
    assert value.item() == pytest.approx((expected - low) / (high - low), rel=1e-6)
    value.backward()
    for site in report.sites:
        costs = [c.macs for c in site.costs]
        cheap, dear = costs.index(min(costs)), costs.index(max(costs))
        assert min(costs) < max(costs)
        grad = net.alphas[param_key(site.key)].grad
        assert grad is not None and bool(grad.abs().sum() > 0)
        # descent raises the cheapest candidate's logit and lowers the dearest one's
        assert grad[cheap] < 0 < grad[dear]
        p = F.softmax(net.alphas[param_key(site.key)].detach().double(), -1)
        mean = float((p * torch.tensor(costs, dtype=torch.float64)).sum())
        analytic = p * (torch.tensor(costs, dtype=torch.float64) - mean) / (high - low)
        torch.testing.assert_close(grad.double(), analytic, rtol=1e-4, atol=1e-12)
    # a step against the gradient lowers the expected cost
    with torch.no_grad():
        for p in net.alphas.values():
            p -= 0.5 * p.grad
    assert float(report.expected(net.probabilities(), "macs").detach()) < expected

    for p in net.arch_parameters():
        p.grad = None
    within = ComplexityPenalty(report, "macs", 1.0, budget=int(expected * 1.5) + 1)
    zero = within(net)
    assert zero.item() == 0.0
    zero.backward()
    assert all(p.grad is None or not p.grad.any() for p in net.arch_parameters())
    over = ComplexityPenalty(report, "macs", 1.0, budget=int(expected * 0.5))
    assert over(net).item() > 0
    assert ComplexityPenalty(report, "macs", 0.0)(net).item() == 0.0
    # no budget and no weight: no complexity term at all
    assert ComplexityPenalty(report, "macs", None)(net).item() == 0.0


@pytest.mark.parametrize("width", [4, 8])
@pytest.mark.parametrize("hr", [(64, 64), (96, 48)])
def test_the_weight_means_loss_per_100_percent_over_budget(spaces_dir, width, hr):
    """The same relative overshoot costs the same, whatever the width or HR size."""
    space = spacelang.load(spaces_dir / "dlsr.space", C=width)
    torch.manual_seed(0)
    net = space.supernet()
    report = cost_report(space.network, hr)
    expected = float(report.expected(net.probabilities(), "macs").detach())
    for over in (0.1, 0.5, 1.0):
        budget = expected / (1 + over)
        penalty = ComplexityPenalty(report, "macs", 0.3, budget=round(budget))
        assert penalty(net).item() == pytest.approx(0.3 * over, rel=1e-3)
    default = ComplexityPenalty(report, "macs", None, budget=round(expected / 2))
    assert default(net).item() == pytest.approx(1.0, rel=1e-3)  # DEFAULT_BUDGET_WEIGHT
    # without a budget the weight spans the space: 0 at the cheapest architecture,
    # `weight` at the dearest
    spanned = ComplexityPenalty(report, "macs", 0.3)
    for pick, value in ((min, 0.0), (max, 0.3)):
        with torch.no_grad():
            for site in report.sites:
                costs = [c.macs for c in site.costs]
                alpha = net.alphas[param_key(site.key)]
                alpha.fill_(-1e4)
                alpha[costs.index(pick(costs))] = 0.0
        assert spanned(net).item() == pytest.approx(value, abs=1e-6)


def _unrolled_objective(net, train_batch, val_batch, loss_fn, penalty, xi) -> float:
    """L_val(w − ξ∇w L_train(w, α), α), computed exactly; weights restored afterwards."""
    weights = [p for p in net.weight_parameters() if p.requires_grad]
    backup = [w.detach().clone() for w in weights]
    lr, hr = train_batch
    grads = torch.autograd.grad(loss_fn(net(lr), hr), weights, allow_unused=True)
    with torch.no_grad():
        for w, g in zip(weights, grads, strict=True):
            if g is not None:
                w -= xi * g
        vlr, vhr = val_batch
        value = float(loss_fn(net(vlr), vhr) + penalty(net))
        for w, b in zip(weights, backup, strict=True):
            w.copy_(b)
    return value


def test_unrolled_gradient_matches_finite_differences():
    space = spacelang.loads(SMOOTH, path=str(REPO / "spaces" / "smooth.space"))
    torch.manual_seed(3)
    net = space.supernet().double()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    gen = torch.Generator().manual_seed(1)
    train_batch = (torch.rand(2, 3, 6, 6, generator=gen, dtype=torch.float64),
                   torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64))
    val_batch = (torch.rand(2, 3, 6, 6, generator=gen, dtype=torch.float64),
                 torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64))
    loss_fn = F.mse_loss
    penalty = ComplexityPenalty(cost_report(space.network, (12, 12)), "macs", 0.05)
    xi = 0.5
    before = {k: v.clone() for k, v in net.state_dict().items()}

    arch_gradient_unrolled(net, train_batch, val_batch, loss_fn, penalty, xi)
    unrolled = torch.cat([p.grad.flatten() for p in net.arch_parameters()])
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights not restored"

    arch_gradient_first_order(net, val_batch, loss_fn, penalty)
    first = torch.cat([p.grad.flatten() for p in net.arch_parameters()])

    h = 1e-5
    numeric = []
    for p in net.arch_parameters():
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += h
            up = _unrolled_objective(net, train_batch, val_batch, loss_fn, penalty, xi)
            with torch.no_grad():
                p.view(-1)[i] -= 2 * h
            down = _unrolled_objective(net, train_batch, val_batch, loss_fn, penalty, xi)
            with torch.no_grad():
                p.view(-1)[i] += h
            numeric.append((up - down) / (2 * h))
    numeric = torch.tensor(numeric, dtype=torch.float64)
    # α of the two choice sites (`mix` at b and at c, not shared) and β of the pick site
    assert numeric.numel() == 3 + 3 + 3
    scale = float(numeric.abs().max())
    assert scale > 0
    # DARTS' finite-difference Hessian-vector product is the only approximation
    # (it agrees to ~1e-4 here)
    torch.testing.assert_close(unrolled, numeric, rtol=2e-3, atol=2e-3 * scale)
    # the second-order term matters here, so the comparison above has teeth
    assert float((first - numeric).abs().max()) > 0.1 * scale


def test_first_order_gradient_is_the_validation_gradient():
    space = spacelang.loads(SMOOTH, path=str(REPO / "spaces" / "smooth.space"))
    torch.manual_seed(4)
    net = space.supernet().double()
    gen = torch.Generator().manual_seed(2)
    batch = (torch.rand(2, 3, 6, 6, generator=gen, dtype=torch.float64),
             torch.rand(2, 3, 12, 12, generator=gen, dtype=torch.float64))
    penalty = ComplexityPenalty(cost_report(space.network, (12, 12)), "macs", 0.05)
    arch_gradient_first_order(net, batch, F.mse_loss, penalty)
    h = 1e-6
    for p in net.arch_parameters():
        for i in range(p.numel()):
            values = []
            for step in (h, -2 * h, h):
                with torch.no_grad():
                    p.view(-1)[i] += step
                    values.append(float(F.mse_loss(net(batch[0]), batch[1]) + penalty(net)))
            numeric = (values[0] - values[1]) / (2 * h)
            assert float(p.grad.view(-1)[i]) == pytest.approx(numeric, rel=1e-5, abs=1e-9)


# --------------------------------------------------------------------------- failures


def _poisoned_loss(monkeypatch, from_call: int, kind: str) -> None:
    """Make the search's pixel loss go bad from its `from_call`-th call (0-based).

    `nan`: the loss value becomes NaN. `nan_grad`: the value stays finite but its
    gradient is NaN (d/dx sqrt(|x|) at 0).
    """
    real = task_module.pixel_loss
    calls = [0]

    def make(kind_name, hfen_weight=0.2, hfen="log9"):
        inner = real(kind_name, hfen_weight, hfen)

        def loss(sr, hr):
            calls[0] += 1
            value = inner(sr, hr)
            if calls[0] - 1 < from_call:
                return value
            if kind == "nan":
                return value * float("nan")
            return value + (sr - sr.detach()).abs().sqrt().sum()

        return loss

    monkeypatch.setattr(task_module, "pixel_loss", make)


def test_nan_loss_stops_the_search_and_keeps_the_last_good_checkpoint(
        tmp_path, images, monkeypatch):
    space = spacelang.loads(TOY, path=str(tmp_path / "toy.space"))
    # warmup 10: one loss call per iteration, then two (architecture, weights); call 16
    # is the architecture loss of iteration 13 (0-based)
    _poisoned_loss(monkeypatch, 10 + 2 * 3, "nan")
    cfg = _config(iterations=30, arch_warmup=10, checkpoint_every=5, log_every=1)
    with pytest.raises(SearchError, match="non-finite") as caught:
        search(space, cfg, train_set=images, val_set=None, run_dir=tmp_path / "run",
               progress=False)
    message = str(caught.value)
    assert "iteration 14" in message and "last.pt" in message
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["iteration"] == 10
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())
    net = load_search_checkpoint(space, tmp_path / "run")
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())
    metrics = _records(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in metrics] == list(range(1, 14))
    assert all(math.isfinite(r["loss"]) for r in metrics)


@pytest.mark.parametrize("grad_clip", [5.0, None])
def test_nan_gradient_never_reaches_the_checkpoint(tmp_path, images, monkeypatch, grad_clip):
    space = spacelang.loads(TOY, path=str(tmp_path / "toy.space"))
    # the loss of iteration 9 (0-based) is finite but its gradient is not; the run would
    # checkpoint right after that iteration's weight step
    _poisoned_loss(monkeypatch, 9, "nan_grad")
    cfg = _config(iterations=30, arch_warmup=20, checkpoint_every=5, grad_clip=grad_clip)
    with pytest.raises(SearchError, match="non-finite weight gradient at iteration 10"):
        search(space, cfg, train_set=images, val_set=None, run_dir=tmp_path / "run",
               progress=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["iteration"] == 5
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_resume_without_a_checkpoint_is_refused(tmp_path, images):
    space = spacelang.loads(TOY, path=str(tmp_path / "toy.space"))
    with pytest.raises(SearchError, match="cannot resume"):
        search(space, _config(), train_set=images, val_set=None, run_dir=tmp_path / "run",
               resume=True, progress=False)


# --------------------------------------------------------------------------- resume

_KILLED_RUN = """\
import os, signal, sys
from pathlib import Path

import torch

import spacelang
import spacelang.runtime.loop as L
from spacelang.sr.search import search, search_splits
from spacelang.sr.config import SearchConfig, parse_config
from spacelang.sr.data import folder

torch.set_num_threads(1)
spec, config, images, run_dir, kill_at = sys.argv[1:6]
save = L.save_checkpoint


def save_or_die(path, payload):
    if payload["iteration"] == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    save(path, payload)


L.save_checkpoint = save_or_die
space = spacelang.loads(Path(spec).read_text(), path=spec)
cfg = parse_config(SearchConfig, Path(config).read_text())
search(space, cfg, train_set=folder(images, 2).materialize(), val_set=None,
         run_dir=run_dir, progress=False)
"""


@pytest.mark.parametrize("strategy", ["darts2", "gdas"])
def test_resume_after_sigkill_continues_exactly(tmp_path, image_dir, images, strategy):
    spec = tmp_path / "toy.space"
    spec.write_text(TOY)
    # checkpoints at 15 and 30; the subprocess dies as it is about to write the second,
    # after logging iterations 16..30, which the resumed run must drop and redo
    cfg = _config(iterations=40, arch_warmup=10, checkpoint_every=15, log_every=1,
                  strategy=strategy)
    config = tmp_path / "search.yaml"
    config.write_text(dump_config(cfg))
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_RUN)
    interrupted = tmp_path / "interrupted"
    proc = subprocess.run(
        [sys.executable, str(script), str(spec), str(config), str(image_dir),
         str(interrupted), "30"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint(interrupted / "last.pt")["iteration"] == 15
    assert _records(interrupted / "metrics.jsonl")[-1]["iteration"] == 30

    resumed = search(spacelang.loads(TOY, path=str(spec)), cfg, train_set=images,
                     val_set=None, run_dir=interrupted, resume=True, progress=False)
    straight = search(spacelang.loads(TOY, path=str(spec)), cfg, train_set=images,
                      val_set=None, run_dir=tmp_path / "straight", progress=False)

    got = _records(interrupted / "metrics.jsonl")
    want = _records(tmp_path / "straight" / "metrics.jsonl")
    assert [r["iteration"] for r in got] == list(range(1, 41))
    assert [r["iteration"] for r in got] == [r["iteration"] for r in want]
    for a, b in zip(got, want, strict=True):
        # bit for bit: same batches, learning rates, optimizer states and random numbers
        for key in ("loss", "arch_loss", "lr", "expected_macs", "architecture"):
            assert a[key] == b[key], (a, b)
    arch_got = _records(interrupted / "arch.jsonl")
    arch_want = _records(tmp_path / "straight" / "arch.jsonl")
    assert [r["iteration"] for r in arch_got] == [r["iteration"] for r in arch_want]
    assert arch_got == arch_want
    assert resumed.decisions == straight.decisions
    final = load_checkpoint(interrupted / "last.pt")
    reference = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert final["iteration"] == reference["iteration"] == 40
    assert final["model"].keys() == reference["model"].keys()
    for key, value in reference["model"].items():
        assert torch.equal(final["model"][key], value), key


# --------------------------------------------------------------------------- derive


def test_derive_writes_a_spec_the_language_tools_accept(toy_run, tmp_path, capsys):
    result = toy_run[2]
    out = tmp_path / "derived.space"
    assert run_cli(["derive", str(result.run_dir), "-o", str(out)]) == 0
    text = out.read_text()
    # the same text the search wrote at its end (same checkpoint, same header)
    assert text == result.derived_path.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("y -> keep" in line and "softmax α" in line for line in header)
    state = load_checkpoint(result.run_dir / "last.pt")
    probabilities = F.softmax(state["model"]["alphas.y"], -1).tolist()
    for label, p in zip(("keep", "flat", "blur"), probabilities, strict=True):
        assert f"{label} {p:.3f}" in text
    capsys.readouterr()
    assert run_cli(["check", str(out)]) == 0
    assert run_cli(["flops", str(out)]) == 0
    # to standard output, from the checkpoint file itself
    capsys.readouterr()
    assert run_cli(["derive", str(result.run_dir / "last.pt")]) == 0
    assert capsys.readouterr().out == text


def test_derived_spec_is_canonically_formatted(toy_run, tmp_path, capsys):
    result = toy_run[2]
    out = tmp_path / "derived.space"
    assert run_cli(["derive", str(result.run_dir), "-o", str(out)]) == 0
    capsys.readouterr()
    assert run_cli(["fmt", "--check", str(out)]) == 0


def test_derive_falls_back_to_the_runs_copy_of_the_spec(tmp_path, images, capsys):
    spec = tmp_path / "gone.space"
    spec.write_text(TOY)
    space = spacelang.load(spec)
    result = search(space, _config(iterations=25), train_set=images, val_set=None,
                    run_dir=tmp_path / "run", progress=False)
    spec.unlink()
    capsys.readouterr()
    assert run_cli(["derive", str(result.run_dir)]) == 0
    text = capsys.readouterr().out
    assert "network toy" in text and "softmax α" in text


@pytest.mark.parametrize("make", ["text", "torch", "empty_dir"])
def test_derive_rejects_what_is_not_a_search_checkpoint(tmp_path, capsys, make):
    if make == "text":
        source = tmp_path / "notes.pt"
        source.write_text("not a checkpoint\n")
    elif make == "torch":
        source = tmp_path / "weights.pt"
        torch.save({"state_dict": {"w": torch.zeros(2)}}, source)
    else:
        source = tmp_path / "run"
        source.mkdir()
    capsys.readouterr()
    assert run_cli(["derive", str(source)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error:") and "Traceback" not in err
    assert str(source.name) in err
    assert {"text": "not a PyTorch checkpoint", "torch": "not a spacelang search checkpoint",
            "empty_dir": "not found"}[make] in err


# --------------------------------------------------------------------------- picks

# Three predecessors of the fusion conv; only `f` keeps the image's detail.
WIRES = """\
op flat(x: c) {
    return resize(mean(x), x)
}

network wires(C = 8, scale = 2, rgb_range = 1) {
    f = conv(input, C, k=3)
    a = flat(f)
    b = flat(conv(f, C, k=1))
    y = conv(concat(pick 1 of [a, f, b]), C, k=1)
    return pixel_shuffle(conv(y, 3 * scale * scale, k=3), scale)
}
"""


@pytest.mark.parametrize("strategy", ["darts1", "gdas"])
def test_the_derived_wiring_reads_the_predecessor_that_carries_the_signal(
        tmp_path, images, strategy):
    space = spacelang.loads(WIRES, path=str(tmp_path / "wires.space"))
    (site,) = space.network.pick_sites
    result = search(space, _config(strategy=strategy, iterations=80, gdas_tau_max=2.0),
                    train_set=images, val_set=None, run_dir=tmp_path / strategy,
                    progress=False)
    assert result.decisions == {site.key: (1,)}
    assert "concat(f)" in result.derived_path.read_text().replace(" ", "")


def test_gdas_samples_k_predecessors_with_a_straight_through_gradient(tmp_path):
    space = spacelang.loads(SMOOTH, path=str(tmp_path / "smooth.space"))
    net = space.supernet(mode="gdas", tau=1.0, hard=True)
    (site,) = net.network.pick_sites
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        weights = net.site_weights(site.key, pick=True)
        net._sampled = {}
        assert sorted(weights.detach().tolist()) == [0.0, 1.0, 1.0]  # k = 2 of 3, hard
        seen.add(tuple(int(i) for i in torch.nonzero(weights.detach()).flatten()))
    assert len(seen) == 3  # every pair gets drawn
    x = torch.rand(1, 3, 8, 8)
    net(x).mean().backward()
    beta = net.betas[param_key(site.key)]
    assert beta.grad is not None and bool(beta.grad.abs().sum() > 0)


# --------------------------------------------------------------------------- inheritance


def test_val_psnr_derived_is_what_eval_of_the_derived_spec_gives(tmp_path, image_dir, images,
                                                                  cli):
    space = spacelang.loads(SMOOTH, path=str(tmp_path / "smooth.space"))
    val = folder(image_dir, 2)
    result = search(space, _config(iterations=30, arch_warmup=10, val_every=30),
                    train_set=images, val_set=val, run_dir=tmp_path / "run", progress=False)
    final = [r for r in _records(result.run_dir / "metrics.jsonl") if "val_psnr_derived" in r]
    assert final[-1]["iteration"] == 30
    code, out, err = cli("eval", str(result.derived_path), "--weights",
                         str(result.run_dir / "derived.pt"), "--data", str(image_dir),
                         "--scale", "2", "--json", "--no-progress")
    assert code == 0, err
    psnr = json.loads(out)["psnr"]
    assert psnr == pytest.approx(final[-1]["val_psnr_derived"], abs=1e-9)
    assert psnr == pytest.approx(result.val_psnr, abs=1e-9)


# --------------------------------------------------------------------------- procedure


def test_train_plus_val_objective_is_the_sum_of_both_batch_losses():
    space = spacelang.loads(SMOOTH, path="smooth.space")
    torch.manual_seed(0)
    net = space.supernet()
    g = torch.Generator().manual_seed(3)
    train = (torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 16, 16, generator=g))
    val = (torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 16, 16, generator=g))

    def no_penalty(_net):
        return torch.zeros(())

    grads = {}
    for objective in ("val", "train+val"):
        batches = arch_batches(train, val, objective)
        loss = arch_gradient_first_order(net, batches, F.mse_loss, no_penalty)
        grads[objective] = [p.grad.clone() for p in net.arch_parameters()]
        expected = sum(float(F.mse_loss(net(x), t).detach()) for x, t in batches)
        assert float(loss) == pytest.approx(expected, rel=1e-6)
    arch_gradient_first_order(net, train, F.mse_loss, no_penalty)
    train_only = [p.grad.clone() for p in net.arch_parameters()]
    for both, v, t in zip(grads["train+val"], grads["val"], train_only, strict=True):
        torch.testing.assert_close(both, v + t, rtol=1e-5, atol=1e-8)


class _Probe(Darts1):
    """darts1 that records the weights it sees at each architecture step."""

    name = "probe"
    seen: ClassVar[list] = []

    def arch_gradient(self, net, train_batch, val_batch, loss_fn, penalty, weight_lr):
        _Probe.seen.append([p.detach().clone() for p in net.weight_parameters()])
        return super().arch_gradient(net, train_batch, val_batch, loss_fn, penalty, weight_lr)


@pytest.mark.parametrize("order", ["before", "after"])
def test_arch_step_order_says_which_weights_the_architecture_step_sees(tmp_path, images,
                                                                        order, monkeypatch):
    monkeypatch.setitem(STRATEGIES, "probe", _Probe)
    _Probe.seen = []
    space = spacelang.loads(SMOOTH, path=str(tmp_path / "smooth.space"))
    cfg = _config(strategy="probe", arch_step_order=order, iterations=1, arch_warmup=0,
                  checkpoint_every=1)
    search(space, cfg, train_set=images, val_set=None, run_dir=tmp_path / order,
           progress=False)
    torch.manual_seed(cfg.seed)
    initial = space.supernet().weight_parameters()
    (seen,) = _Probe.seen
    same = all(torch.equal(a, b.detach()) for a, b in zip(seen, initial, strict=True))
    assert same == (order == "before")


def test_image_splits_alternate_by_range_or_from_a_second_folder(images):
    alternate = search_splits(images, _config())
    assert [p.name for p in alternate[0]] == [p.name for p in images[0::2]]
    assert [p.name for p in alternate[1]] == [p.name for p in images[1::2]]
    ranged = search_splits(images, _config(arch_split="ranges", weight_images=(0, 3),
                                           arch_images=(3, 4)))
    assert [p.name for p in ranged[0]] == [p.name for p in images[:3]]
    assert [p.name for p in ranged[1]] == [images[3].name]
    folder_split = search_splits(images[:2], _config(arch_data="x"), arch_set=images[2:])
    assert len(folder_split[0]) == 2 and [p.name for p in folder_split[1]] == \
        [p.name for p in images[2:]]
    with pytest.raises(SearchError, match=r"reaches past the 4 training images"):
        search_splits(images, _config(arch_split="ranges", weight_images=(0, 3),
                                      arch_images=(3, 10)))


def test_reference_config_runs_a_few_steps(tmp_path, images, spaces_dir):
    cfg = load_config(SearchConfig, REPO / "spacelang/configs/dlsr_reference.yaml", {
        "iterations": "4", "arch_warmup": "2", "patch_size": "32", "batch_size": "2",
        "epoch_length": "4", "weight_images": "[0, 3]", "arch_images": "[3, 4]",
        "milestones": "[1, 2, 3]", "log_every": "1", "checkpoint_every": "4"})
    space = spacelang.load(spaces_dir / "dlsr.space", C=4, cells=3)
    result = search(space, cfg, train_set=images, val_set=None, run_dir=tmp_path / "ref",
                    progress=False)
    metrics = _records(result.run_dir / "metrics.jsonl")
    assert [r["lr"] for r in metrics] == pytest.approx([5e-4 * 0.5**i for i in range(4)])
    assert metrics[-1]["arch_loss"] > 0 and spacelang.load(result.derived_path).is_fixed


def test_penalty_of_the_argmax_bounds_what_would_be_derived(spaces_dir):
    space = spacelang.load(spaces_dir / "dlsr.space", C=4)
    torch.manual_seed(0)
    net = space.supernet()
    report = cost_report(space.network, (64, 64))
    derived = report.architecture(net.decisions()).macs
    expected = float(report.expected(net.probabilities(), "macs").detach())
    budget = round(derived / 1.5)
    argmax = ComplexityPenalty(report, "macs", 0.5, budget=budget, of="argmax")
    value = argmax(net)
    assert value.item() == pytest.approx(0.5 * (derived / budget - 1), rel=1e-4)
    value.backward()
    straight = [p.grad.clone() for p in net.alphas.values()]
    for p in net.arch_parameters():
        p.grad = None
    ComplexityPenalty(report, "macs", 0.5, budget=budget)(net).backward()
    for got, want in zip(straight, [p.grad for p in net.alphas.values()], strict=True):
        if expected > budget:  # same gradient as the hinge on E[cost] (straight-through)
            torch.testing.assert_close(got, want)
    # once the argmax fits, nothing, whatever E[cost] says
    fits = ComplexityPenalty(report, "macs", 0.5, budget=derived, of="argmax")
    assert fits(net).item() == 0.0
    with pytest.raises(ValueError, match="'of'"):
        ComplexityPenalty(report, "macs", 0.5, of="mean")


def test_time_to_architecture_is_the_first_record_of_the_final_architecture():
    records = [{"iteration": 10, "elapsed": 1.0, "architecture": "a"},
               {"iteration": 20, "elapsed": 2.0, "architecture": "b"},
               {"iteration": 25, "elapsed": 2.5, "val_psnr_derived": 30.0},
               {"iteration": 30, "elapsed": 3.0, "architecture": "a"},
               {"iteration": 40, "elapsed": 4.0, "architecture": "a"}]
    assert settled(records) == Settled(30, 3.0)
    assert settled(records[:2]) == Settled(20, 2.0)
    assert settled([{"iteration": 5, "elapsed": 0.1, "loss": 1.0}]) is None


# --------------------------------------------------------------------------- cheaper search

# Two choice sites whose candidates keep their input's width: partial channels apply.
PARTIAL = """\
op c1(x: c) {
    return conv(x, c, k=1, bias=false)
}

op c3(x: c) {
    return conv(x, c, k=3, bias=false)
}

op keep(x: c) {
    return identity(x)
}

choice mix = [c1, c3, keep]

network pc(C = 8, scale = 2, rgb_range = 1) {
    f = conv(input, C, k=3)
    a = mix(f)
    b = mix(a)
    return pixel_shuffle(conv(a + b, 3 * scale * scale, k=3), scale)
}
"""

_CLI_CONFIG = """\
iterations: 8
arch_warmup: 2
patch_size: 16
batch_size: 2
epoch_length: 8
complexity: none
hr_size: [64, 64]
log_every: 2
checkpoint_every: 4
val_every: 8
"""


def test_pruning_drops_candidates_on_schedule_and_resumes_exactly(tmp_path, images):
    space = spacelang.loads(TOY, path=str(tmp_path / "toy.space"))
    # constant learning rates, so that a run extended from 30 to 60 updates is the same
    # as one of 60; architecture steps 10 and 20 (updates 30 and 40) prune, and the
    # second leaves one candidate: the search ends there, at update 40 of 60
    cfg = _config(prune_every=10, prune_keep=1, log_every=5, checkpoint_every=30,
                  weight_schedule="step", step_size=10**6)
    first = search(space, attrs.evolve(cfg, iterations=30), train_set=images, val_set=None,
                   run_dir=tmp_path / "resumed", progress=False)
    alive = load_checkpoint(first.run_dir / "last.pt")["model"]["alive.y"]
    assert alive.sum().item() == 2 and alive[first.decisions["y"]]
    resumed = search(space, cfg, train_set=images, val_set=None,
                     run_dir=tmp_path / "resumed", resume=True, progress=False)
    straight = search(space, cfg, train_set=images, val_set=None,
                      run_dir=tmp_path / "straight", progress=False)
    assert resumed.iterations == straight.iterations == 40
    metrics = _records(tmp_path / "straight" / "metrics.jsonl")
    pruned = {r["iteration"]: r["pruned"] for r in metrics if "pruned" in r}
    assert list(pruned) == [30, 40] and all(v.startswith("y-") for v in pruned.values())
    assert metrics[-1]["iteration"] == 40

    def timeless(records):
        return [{k: v for k, v in r.items() if k != "elapsed"} for r in records]

    assert timeless(_records(tmp_path / "resumed" / "metrics.jsonl")) == timeless(metrics)
    final = load_checkpoint(tmp_path / "resumed" / "last.pt")
    reference = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert final["iteration"] == reference["iteration"] == 40
    assert final["model"].keys() == reference["model"].keys()
    for key, value in reference["model"].items():
        assert torch.equal(final["model"][key], value), key
    assert final["model"]["alive.y"].sum().item() == 1
    assert resumed.decisions == straight.decisions
    assert straight.decisions["y"] == int(final["model"]["alive.y"].int().argmax())
    # `derive` rebuilds the supernet as the search did, masks included
    net = load_search_checkpoint(space, tmp_path / "straight")
    assert net.probabilities()["y"].count_nonzero().item() == 1
    # resuming a decided search does no more updates
    again = search(space, cfg, train_set=images, val_set=None,
                   run_dir=tmp_path / "straight", resume=True, progress=False)
    assert again.iterations == 40 and again.decisions == straight.decisions
    assert _records(tmp_path / "straight" / "metrics.jsonl")[-1]["iteration"] == 40


def test_pruning_spares_the_architecture_the_budget_derives(tmp_path, images):
    """The images favour `rich`, a budget only `poor` fits: the derivation picks `poor`
    though α's argmax is `rich`, and pruning drops `rich`, not the derived candidate."""
    space = spacelang.loads(COSTLY, path=str(tmp_path / "costly.space"))
    report = cost_report(space.network, (64, 64))
    poor, rich = (report.architecture({"y": i}).macs for i in range(2))
    cfg = _config(prune_every=20, prune_keep=1, complexity="macs", budget_macs=poor,
                  complexity_weight=1e-6, log_every=5)
    result = search(space, cfg, train_set=images, val_set=None, run_dir=tmp_path / "run",
                    progress=False)
    records = _records(tmp_path / "run" / "metrics.jsonl")
    before = next(r for r in records if r["iteration"] == 35)
    assert before["argmax_macs"] == rich and before["derived_macs"] == poor  # the premise
    assert result.iterations == 40  # the prune after architecture step 20 decided it
    assert records[-1]["pruned"] == "y-rich"
    assert result.decisions == {"y": 0} and result.macs == poor


def test_search_cli_with_partial_channels_runs_and_derives(cli, tmp_path, image_dir):
    spec = tmp_path / "pc.space"
    spec.write_text(PARTIAL)
    config = tmp_path / "search.yaml"
    config.write_text(_CLI_CONFIG + "partial_channels: 2\nprune_every: 2\n")
    run = tmp_path / "run"
    code, out, err = cli("search", str(spec), "--config", str(config), "--data",
                         str(image_dir), "--run-dir", str(run), "--no-progress")
    assert code == 0, err
    assert "pruned a-" in err
    state = load_checkpoint(run / "last.pt")
    assert state["model"]["body.a.candidates.c3.conv.weight"].shape == (4, 4, 3, 3)
    assert all(state["model"][f"alive.{s}"].sum() == 2 for s in ("a", "b"))
    derived = spacelang.load(run / "derived.space")
    assert derived.is_fixed  # the full-width network, to retrain
    fixed = derived.fixed()
    fixed.load_state_dict(torch.load(run / "derived.pt"))
    assert all(m.in_channels == 8 for m in fixed.modules() if isinstance(m, torch.nn.Conv2d)
               and m is not fixed.get_submodule("f"))
    code, out, err = cli("derive", str(run))
    assert code == 0, err
    assert out == (run / "derived.space").read_text()


@pytest.mark.parametrize(("setting", "fragments"), [
    ("partial_channels: 3", ["pc.space:", "choice site `a` cannot run on 1/3 of its channels",
                             "8 channels, not a multiple of 3"]),
    ("partial_channels: 0", ["search.yaml:11", "'partial_channels' must be > 0"]),
    ("prune_keep: 0", ["'prune_keep' must be > 0"]),
    ("prune_every: -1", ["'prune_every' must be >= 0"]),
])
def test_search_cli_refuses_bad_cheaper_search_settings(cli, tmp_path, image_dir, setting,
                                                        fragments):
    spec = tmp_path / "pc.space"
    spec.write_text(PARTIAL)
    config = tmp_path / "search.yaml"
    config.write_text(_CLI_CONFIG + setting + "\n")
    run = tmp_path / "run"
    code, _, err = cli("search", str(spec), "--config", str(config), "--data",
                       str(image_dir), "--run-dir", str(run), "--no-progress")
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err
    for fragment in fragments:
        assert fragment in err, err
    assert not (run / "last.pt").exists()
