"""spacelang.runtime.loop on a task-free toy run: hooks, checkpoint format, exact resume,
and what resuming refuses (another kind, another format version, a changed config)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import torch
from rich.console import Console
from torch import nn

from spacelang.runtime.checkpoint import load_checkpoint, save_checkpoint
from spacelang.runtime.config import positive, validated
from spacelang.runtime.log import MetricsLog
from spacelang.runtime.loop import (
    FORMAT_VERSION,
    GradScalerState,
    Hook,
    Loop,
    NonFinite,
    RunError,
    backward_and_step,
)


@attrs.frozen(kw_only=True, field_transformer=validated)
class ToyConfig:
    iterations: int = 12
    log_every: int = 2
    checkpoint_every: int = 4
    seed: int = 0
    lr: float = 0.1

    checks: ClassVar[dict[str, Any]] = {"iterations": positive, "lr": positive}


@attrs.define
class Regression:
    """Fits y = 3x with SGD on fresh random x each update (global torch RNG)."""

    model: nn.Linear
    optimizer: torch.optim.Optimizer
    poison_at: int | None = None
    started: list[int] = attrs.Factory(list)

    def begin(self, start: int) -> None:
        self.started.append(start)

    def __call__(self, iteration: int) -> dict[str, float]:
        if iteration == self.poison_at:
            raise NonFinite("weight gradient")
        x = torch.randn(8, 1)
        loss = ((self.model(x) - 3 * x) ** 2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach()), "weight": float(self.model.weight.detach())}

    def end(self) -> None:
        pass


@attrs.define
class Counter(Hook):
    """Counts updates; its count lives in the checkpoint."""

    count: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: Any) -> None:
        self.count = state["count"]

    def after_step(self, done: int, record: dict[str, Any] | None, loop: Loop) -> None:
        self.count += 1
        if record is not None:
            record["count"] = self.count


def make_loop(run_dir: Path, cfg: ToyConfig, *, kind: str = "toy", poison_at: int | None = None
              ) -> tuple[Loop, Regression, Counter]:
    torch.manual_seed(1)
    model = nn.Linear(1, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    step = Regression(model, optimizer, poison_at)
    counter = Counter()
    loop = Loop(kind=kind, noun="toy run", run_dir=run_dir, config=cfg, step=step,
                stateful={"model": model, "optimizer": optimizer}, hooks=[counter],
                resume_safe=frozenset({"iterations"}), extra={"note": "hello"},
                files={"notes.txt": "toy\n"}, console=Console(file=io.StringIO()),
                progress=False)
    return loop, step, counter


def test_checkpoint_holds_the_format_and_every_part(tmp_path: Path) -> None:
    loop, _, counter = make_loop(tmp_path, ToyConfig())
    assert loop.run() == 12 and counter.count == 12
    last = load_checkpoint(tmp_path / "last.pt")
    assert (last["kind"], last["version"], last["iteration"]) == ("toy", FORMAT_VERSION, 12)
    assert {"model", "optimizer", "rng", "config", "loss_window", "elapsed"} <= set(last)
    assert last["count"] == 12 and last["note"] == "hello"
    assert (tmp_path / "notes.txt").read_text() == "toy\n"
    records = MetricsLog(tmp_path / "metrics.jsonl").read()
    assert [r["iteration"] for r in records] == [2, 4, 6, 8, 10, 12]
    assert [r["count"] for r in records] == [2, 4, 6, 8, 10, 12]


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight, _, _ = make_loop(tmp_path / "a", ToyConfig())
    straight.run()
    short, _, _ = make_loop(tmp_path / "b", ToyConfig(iterations=6))
    short.run()  # checkpoints at 4 and 6; extend to 12 (iterations may change)
    resumed, step, counter = make_loop(tmp_path / "b", ToyConfig())
    assert resumed.run(resume=True) == 12
    assert step.started == [6] and counter.count == 12
    want = MetricsLog(tmp_path / "a" / "metrics.jsonl").read()
    got = MetricsLog(tmp_path / "b" / "metrics.jsonl").read()
    strip = [{k: v for k, v in r.items() if k != "elapsed"} for r in (*want, *got)]
    assert strip[: len(want)] == strip[len(want):]


def test_resume_refusals(tmp_path: Path) -> None:
    make_loop(tmp_path, ToyConfig(iterations=4))[0].run()
    with pytest.raises(RunError, match="already holds a toy run"):
        make_loop(tmp_path, ToyConfig(iterations=4))[0].run()
    with pytest.raises(RunError, match=r"is a 'toy' checkpoint, not 'other'"):
        make_loop(tmp_path, ToyConfig(), kind="other")[0].run(resume=True)
    with pytest.raises(RunError) as info:
        make_loop(tmp_path, ToyConfig(lr=0.2, seed=3))[0].run(resume=True)
    assert str(info.value).startswith(
        f"cannot resume {tmp_path}: the config changed in seed, lr (seed 0 -> 3; lr 0.1 -> 0.2)")
    assert "settings that may change on resume: iterations" in str(info.value)
    state = load_checkpoint(tmp_path / "last.pt")
    for version in (FORMAT_VERSION - 1, None):
        if version is None:
            del state["version"]
        else:
            state["version"] = version
        save_checkpoint(tmp_path / "last.pt", state)
        with pytest.raises(RunError, match="checkpoint format version"):
            make_loop(tmp_path, ToyConfig())[0].run(resume=True)


def test_nonfinite_from_the_step_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    loop, _, _ = make_loop(tmp_path, ToyConfig(), poison_at=9)
    with pytest.raises(RunError) as info:
        loop.run()
    assert str(info.value) == (
        f"non-finite weight gradient at iteration 10; last good checkpoint kept at "
        f"{tmp_path / 'last.pt'}"
    )
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 8


def _fp16_step(init_scale: float, max_norm: float | None):
    """One `backward_and_step` of a float16-autocast conv on CPU; returns (the conv, its
    weights before, the scaler, the optimizer)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    before = conv.weight.detach().clone()
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    with torch.autocast("cpu", dtype=torch.float16):
        out = conv(torch.rand(2, 3, 16, 16))
    loss = out.float().square().mean()
    backward_and_step(loss, optimizer, list(conv.parameters()), max_norm, scaler)
    return conv, before, scaler, optimizer


def test_a_scaled_step_clips_the_unscaled_gradient_and_an_overflow_skips_it() -> None:
    conv, before, scaler, _ = _fp16_step(2.0**8, max_norm=1e-3)
    assert scaler.get_scale() == 2.0**8  # no overflow: the scale stays
    moved = float((conv.weight.detach() - before).norm())
    assert moved > 0
    # the clip saw the gradients unscaled: SGD moved by lr × (at most) max_norm
    assert moved <= 0.1 * 1e-3 * (1 + 1e-3)
    conv, before, scaler, _ = _fp16_step(2.0**60, max_norm=1e-3)
    assert torch.equal(conv.weight.detach(), before)  # overflowed: skipped, no error
    assert scaler.get_scale() == 2.0**59


def test_an_unscaled_non_finite_gradient_stops() -> None:
    weight = nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    loss = (weight * torch.tensor([1.0, float("inf")])).sum() * 0
    with pytest.raises(NonFinite, match="weight gradient"):
        backward_and_step(loss, optimizer, [weight], None)
    assert torch.equal(weight.detach(), torch.ones(2))


def test_scaler_state_round_trips_and_a_checkpoint_without_it_leaves_it_fresh() -> None:
    _, _, scaler, _ = _fp16_step(2.0**60, max_norm=None)
    hook = GradScalerState(scaler, "arch_grad_scaler")
    saved = hook.state_dict()
    assert set(saved) == {"arch_grad_scaler"}
    fresh = torch.amp.GradScaler("cpu", init_scale=4.0)
    GradScalerState(fresh, "arch_grad_scaler").load_state_dict({"grad_scaler": saved})
    assert fresh.get_scale() == 4.0  # another key: not this scaler's state
    GradScalerState(fresh, "arch_grad_scaler").load_state_dict(saved)
    assert fresh.get_scale() == 2.0**59
