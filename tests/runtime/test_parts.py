"""Tests for spacelang.runtime's parts: LR schedule, batch streams, metrics log, progress."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import Dataset

from spacelang.runtime.batches import BatchStream
from spacelang.runtime.log import MetricsLog, TrainingProgress
from spacelang.runtime.schedule import LRSchedule


class Patches(Dataset):
    """Tiny deterministic dataset: item i is a random 8x8 "HR" tensor and its 4x4 "LR"."""

    def __init__(self, length: int = 24, seed: int = 0) -> None:
        self.length, self.seed = length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        hr = torch.from_numpy(rng.random((3, 8, 8), dtype=np.float32))
        return nn.functional.avg_pool2d(hr[None], 2)[0], hr


# --------------------------------------------------------------------------- LR schedule


def test_lr_schedule_closed_form() -> None:
    cosine = LRSchedule(total=100)
    assert cosine.factor(0) == 1.0
    assert cosine.factor(50) == pytest.approx(0.5)
    assert cosine.factor(100) == pytest.approx(0.0)
    warm = LRSchedule(total=110, warmup=10)
    assert [warm.factor(i) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert warm.factor(60) == pytest.approx(0.5)
    step = LRSchedule(total=1000, kind="step", step_size=100, gamma=0.5)
    assert [step.factor(i) for i in (0, 99, 100, 250)] == [1.0, 1.0, 0.5, 0.25]
    assert LRSchedule(total=5, kind="constant").factor(4) == 1.0


def test_lr_schedule_apply_scales_each_group() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = torch.optim.Adam(
        [{"params": a.parameters()}, {"params": b.parameters(), "lr": 1.0}], lr=0.1
    )
    schedule = LRSchedule(total=10, kind="step", step_size=2, gamma=0.5)
    assert schedule.apply(optimizer, 5) == pytest.approx(0.025)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.25)
    assert schedule.apply(optimizer, 0) == pytest.approx(0.1)  # pure function of iteration


# --------------------------------------------------------------------------- batches


def batches_of(stream: BatchStream, count: int) -> list[torch.Tensor]:
    iterator = iter(stream)
    return [next(iterator)[1] for _ in range(count)]


def test_batch_stream_resumes_exactly_and_spares_global_rng() -> None:
    dataset = Patches(length=10)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    full = batches_of(BatchStream(dataset, 3, seed=1), 12)  # 3 batches per epoch, 4 epochs
    assert torch.equal(before, torch.get_rng_state())
    resumed = batches_of(BatchStream(dataset, 3, seed=1, start=4), 8)
    for a, b in zip(full[4:], resumed, strict=True):
        assert torch.equal(a, b)
    other = batches_of(BatchStream(dataset, 3, seed=2), 3)
    assert not all(torch.equal(a, b) for a, b in zip(full[:3], other, strict=True))
    stream = BatchStream(dataset, 3, seed=1)
    epochs = [stream.epoch_order(e) for e in range(2)]
    assert epochs[0].shape == (3, 3) and not torch.equal(epochs[0], epochs[1])
    assert len(set(epochs[0].flatten().tolist())) == 9  # no repeats inside an epoch


def test_batch_stream_with_workers_matches_in_process() -> None:
    dataset = Patches(length=8)
    serial = batches_of(BatchStream(dataset, 2, seed=4, start=3), 6)
    parallel = batches_of(BatchStream(dataset, 2, seed=4, start=3, workers=2), 6)
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a, b)


def test_batch_stream_factory_and_short_epoch() -> None:
    seen: list[int] = []

    def make(epoch: int) -> Dataset:
        seen.append(epoch)
        return Patches(length=4, seed=epoch)

    stream = BatchStream(make, 2, seed=0, start=3)
    batches_of(stream, 4)  # batches 3..6 span epochs 1, 2 and 3
    assert seen == [0, 1, 2, 3] and stream.position == 7
    with pytest.raises(ValueError, match="fewer than one batch"):
        BatchStream(Patches(length=3), 4, seed=0)


# --------------------------------------------------------------------------- logs, progress


def test_metrics_log_truncate_drops_later_and_torn_lines(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for i in (1, 2, 3, 4):
        log.write({"iteration": i, "loss": i / 10})
    with log.path.open("a") as handle:
        handle.write('{"iteration": 5, "lo')  # a crash in mid-write
    assert [r["iteration"] for r in log.read()] == [1, 2, 3, 4]
    log.truncate_after(2)
    log.write({"iteration": 3, "loss": 9.0})
    assert log.read() == [
        {"iteration": 1, "loss": 0.1},
        {"iteration": 2, "loss": 0.2},
        {"iteration": 3, "loss": 9.0},
    ]


def test_progress_renders_on_a_terminal_and_is_quiet_otherwise() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with TrainingProgress(10, console=console, start=2) as bar:
        assert bar.active
        for i in range(3, 6):
            bar.update(i, loss=0.5, lr=1e-3)
        bar.print("a message")
    assert "a message" in out.getvalue() and "it/s" in out.getvalue()
    plain = io.StringIO()
    with TrainingProgress(10, console=Console(file=plain, force_terminal=False)) as bar:
        assert not bar.active
        bar.update(1, loss=0.5)
    assert plain.getvalue() == ""
    assert not TrainingProgress(10, console=console, enabled=False).active




def test_multistep_schedule_multiplies_by_gamma_at_each_milestone() -> None:
    schedule = LRSchedule(total=100, kind="multistep", milestones=(10, 30, 60), gamma=0.5)
    factors = [schedule.factor(i) for i in (0, 9, 10, 29, 30, 59, 60, 99)]
    assert factors == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
