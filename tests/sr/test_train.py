"""Tests for spacelang.sr.train: schedule, batches, logging, training and exact resume."""

import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import Dataset

from spacelang.sr.checkpoint import load_checkpoint
from spacelang.sr.config import TrainConfig, load_config
from spacelang.sr.train import (
    BatchStream,
    LRSchedule,
    MetricsLog,
    TrainError,
    TrainingProgress,
    evaluate,
    state_dict_mismatch,
    train,
)

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- fixtures


def _fake_data_module() -> types.ModuleType:
    module = types.ModuleType("spacelang.sr.data")

    def full_image_tensors(pair: Any) -> tuple[torch.Tensor, torch.Tensor]:
        def conv(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 255.0)

        return conv(pair.lr), conv(pair.hr)

    module.full_image_tensors = full_image_tensors  # type: ignore[attr-defined]
    return module


def _fake_metrics_module() -> types.ModuleType:
    module = types.ModuleType("spacelang.sr.metrics")

    def to_uint8(image: torch.Tensor, rgb_range: float) -> np.ndarray:
        a = image.detach().double().numpy().transpose(1, 2, 0) * (255.0 / rgb_range)
        return np.floor(np.clip(a, 0, 255) + 0.5).astype(np.uint8)

    def psnr(sr: np.ndarray, hr: np.ndarray, *, crop: int, y_channel: bool = True) -> float:
        a = sr[crop:-crop, crop:-crop].astype(np.float64)
        b = hr[crop:-crop, crop:-crop].astype(np.float64)
        mse = float(np.mean((a - b) ** 2))
        return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)

    def ssim(sr: np.ndarray, hr: np.ndarray, *, crop: int, y_channel: bool = True) -> float:
        return 1.0 / (1.0 + float(np.mean(np.abs(sr.astype(float) - hr.astype(float)))))

    module.to_uint8, module.psnr, module.ssim = to_uint8, psnr, ssim  # type: ignore[attr-defined]
    return module


@pytest.fixture(autouse=True)
def sr_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the real data/metrics modules when importable, else small stand-ins."""
    try:
        from spacelang.sr.data import full_image_tensors  # noqa: F401
    except Exception:
        monkeypatch.setitem(sys.modules, "spacelang.sr.data", _fake_data_module())
    try:
        from spacelang.sr.metrics import psnr, ssim, to_uint8  # noqa: F401
    except Exception:
        monkeypatch.setitem(sys.modules, "spacelang.sr.metrics", _fake_metrics_module())


def smooth_image(seed: int, size: int) -> np.ndarray:
    """A smooth HxWx3 float image in [0, 1] (learnable to upsample)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    channels = [
        np.sin(xx * rng.uniform(1, 5) + rng.uniform(0, 6)) * np.cos(yy * rng.uniform(1, 5))
        for _ in range(3)
    ]
    return (np.stack(channels, -1) * 0.5 + 0.5).astype(np.float32)


POOL = [torch.from_numpy(smooth_image(s, 16)).permute(2, 0, 1).contiguous() for s in range(6)]


class Patches(Dataset):
    """Tiny deterministic patch dataset: item i is an 8x8 HR crop and its 4x4 LR."""

    def __init__(self, length: int = 24, seed: int = 0) -> None:
        self.length, self.seed = length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        y, x = (int(v) for v in rng.integers(0, 9, size=2))
        hr = POOL[index % len(POOL)][:, y : y + 8, x : x + 8]
        return nn.functional.avg_pool2d(hr[None], 2)[0], hr.clone()


def image_pair(seed: int, size: int = 24) -> types.SimpleNamespace:
    hr = torch.from_numpy(smooth_image(100 + seed, size)).permute(2, 0, 1)
    lr = nn.functional.avg_pool2d(hr[None], 2)[0]

    def u8(t: torch.Tensor) -> np.ndarray:
        return (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    return types.SimpleNamespace(name=f"val{seed}", lr=u8(lr), hr=u8(hr))


def tiny_model(channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, channels * 4, 3, padding=1), nn.PixelShuffle(2))


def tiny_config(**changes: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "scale": 2,
        "patch_size": 8,
        "batch_size": 4,
        "iterations": 20,
        "lr": 1e-2,
        "log_every": 5,
        "val_every": 10,
        "checkpoint_every": 10,
        "seed": 3,
    }
    values.update(changes)
    return TrainConfig(**values)


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
    cfg = tiny_config(schedule="step", step_size=7, gamma=0.1, warmup=2)
    assert LRSchedule.from_config(cfg) == LRSchedule(
        total=20, kind="step", warmup=2, step_size=7, gamma=0.1
    )


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


# --------------------------------------------------------------------------- evaluate


def test_evaluate_perfect_model_and_mode_restore() -> None:
    model = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Identity())
    pairs = []
    for seed in range(2):
        lr = (np.random.default_rng(seed).random((10, 12, 3)) * 255).astype(np.uint8)
        hr = lr.repeat(2, axis=0).repeat(2, axis=1)
        pairs.append(types.SimpleNamespace(name=f"im{seed}", lr=lr, hr=hr))
    model.train()
    for rgb_range in (1, 255):
        mean_psnr, mean_ssim, per_image = evaluate(model, pairs, 2, rgb_range)
        assert mean_psnr == math.inf and mean_ssim == pytest.approx(1.0)
        assert [p["name"] for p in per_image] == ["im0", "im1"]
    assert model.training
    with pytest.raises(ValueError, match="model output is"):
        evaluate(nn.Identity(), pairs, 2, 1)


# --------------------------------------------------------------------------- training


def test_train_tiny_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = io.StringIO()
    cfg = tiny_config()
    result = train(
        tiny_model(),
        cfg,
        train_set=Patches(),
        val_set=[image_pair(0), image_pair(1)],
        run_dir=run,
        rgb_range=255,
        spec_text="space tiny {}\n",
        console=Console(file=out, force_terminal=True, width=120),
    )
    assert "it/s" in out.getvalue() and "val PSNR" in out.getvalue()
    records = MetricsLog(run / "metrics.jsonl").read()
    assert [r["iteration"] for r in records] == [5, 10, 15, 20]
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 for r in records)
    assert records[0]["lr"] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 4 / 20)))
    validated = [r for r in records if "val_psnr" in r]
    assert [r["iteration"] for r in validated] == [10, 20]
    assert records[-1]["loss"] < records[0]["loss"]

    assert result.last_iteration == 20 and result.run_dir == run
    assert result.best_psnr == max(r["val_psnr"] for r in validated)
    assert load_config(TrainConfig, run / "config.yaml") == cfg
    assert (run / "spec.space").read_text() == "space tiny {}\n"
    last = load_checkpoint(run / "last.pt")
    assert last["iteration"] == 20 and last["scheduler"]["iteration"] == 20
    assert set(last) >= {"model", "optimizer", "rng", "best_psnr", "config"}
    best = load_checkpoint(run / "best.pt")
    assert best["psnr"] == result.best_psnr and best["iteration"] == result.best_iteration
    assert best["spec"] == "space tiny {}\n" and best["rgb_range"] == 255
    model = tiny_model()
    model.load_state_dict(best["model"])
    assert not any(p.name.endswith(".tmp") for p in run.iterdir())


def test_train_without_validation_keeps_final_weights_as_best(tmp_path: Path) -> None:
    result = train(
        tiny_model(),
        tiny_config(iterations=6, log_every=2, checkpoint_every=4),
        train_set=Patches(),
        val_set=None,
        run_dir=tmp_path,
        rgb_range=1,
        progress=False,
        console=Console(file=io.StringIO()),
    )
    assert result.best_psnr is None and result.last_iteration == 6
    assert load_checkpoint(tmp_path / "best.pt")["iteration"] == 6
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 6


def quiet(**kwargs: Any) -> dict[str, Any]:
    return {"progress": False, "console": Console(file=io.StringIO()), **kwargs}


def test_resume_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match=r"cannot resume: .*last\.pt does not exist"):
        train(
            tiny_model(),
            tiny_config(),
            train_set=Patches(),
            val_set=None,
            run_dir=tmp_path,
            rgb_range=1,
            resume=True,
            **quiet(),
        )
    cfg = tiny_config(iterations=4, checkpoint_every=2)
    train(
        tiny_model(),
        cfg,
        train_set=Patches(),
        val_set=None,
        run_dir=tmp_path,
        rgb_range=1,
        **quiet(),
    )
    with pytest.raises(TrainError, match="already holds a training run"):
        train(
            tiny_model(),
            cfg,
            train_set=Patches(),
            val_set=None,
            run_dir=tmp_path,
            rgb_range=1,
            **quiet(),
        )
    with pytest.raises(TrainError) as info:
        train(
            tiny_model(channels=4),
            cfg,
            train_set=Patches(),
            val_set=None,
            run_dir=tmp_path,
            rgb_range=1,
            resume=True,
            **quiet(),
        )
    assert str(info.value) == (
        f"cannot resume {tmp_path}: the model does not match the checkpoint: key '0.weight' "
        "has shape (12, 3, 3, 3) in the checkpoint but (16, 3, 3, 3) in the model"
    )
    (tmp_path / "last.pt").write_text("not a checkpoint")
    with pytest.raises(TrainError, match=r"cannot resume: .*not a PyTorch checkpoint"):
        train(
            tiny_model(),
            cfg,
            train_set=Patches(),
            val_set=None,
            run_dir=tmp_path,
            rgb_range=1,
            resume=True,
            **quiet(),
        )


def test_resume_extends_run_and_warns_about_changed_settings(tmp_path: Path) -> None:
    cfg = tiny_config(iterations=4, log_every=1, checkpoint_every=2)
    train(
        tiny_model(),
        cfg,
        train_set=Patches(),
        val_set=None,
        run_dir=tmp_path,
        rgb_range=1,
        **quiet(),
    )
    out = io.StringIO()
    longer = tiny_config(iterations=8, log_every=1, checkpoint_every=2, lr=2e-2)
    result = train(
        tiny_model(),
        longer,
        train_set=Patches(),
        val_set=None,
        run_dir=tmp_path,
        rgb_range=1,
        progress=False,
        console=Console(file=out, width=200),
        resume=True,
    )
    assert result.last_iteration == 8
    message = " ".join(out.getvalue().split())
    assert "warning: resuming with changed settings" in message
    assert "iterations 4 -> 8; lr 0.01 -> 0.02" in message
    records = MetricsLog(tmp_path / "metrics.jsonl").read()
    assert [r["iteration"] for r in records] == list(range(1, 9))
    assert load_config(TrainConfig, tmp_path / "config.yaml") == longer


def test_state_dict_mismatch_names_first_key() -> None:
    a = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)).state_dict()
    assert state_dict_mismatch(a, dict(a)) is None
    b = dict(a)
    del b["1.weight"]
    assert state_dict_mismatch(a, b) == (
        "key '1.weight' is in the model but missing from the checkpoint"
    )
    c = {**a, "extra": torch.zeros(1)}
    assert state_dict_mismatch(a, c) == "key 'extra' is in the checkpoint but not in the model"


class BreaksAt(nn.Module):
    """Upsampler whose output turns NaN from forward call ``when`` on."""

    def __init__(self, when: int) -> None:
        super().__init__()
        self.body = tiny_model()
        self.calls, self.when = 0, when

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = self.body(x)
        return y * float("nan") if self.calls >= self.when else y


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = tiny_config(iterations=20, checkpoint_every=5, log_every=1)
    model = BreaksAt(8)
    with pytest.raises(TrainError) as info:
        train(
            model, cfg, train_set=Patches(), val_set=None, run_dir=tmp_path, rgb_range=1, **quiet()
        )
    assert str(info.value) == (
        f"non-finite loss at iteration 8; last good checkpoint kept at {tmp_path / 'last.pt'}"
    )
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["iteration"] == 5
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    # and the run can be resumed from there
    resumed = train(
        BreaksAt(10**9),
        cfg,
        train_set=Patches(),
        val_set=None,
        run_dir=tmp_path,
        rgb_range=1,
        resume=True,
        **quiet(),
    )
    assert resumed.last_iteration == 20


def test_nonfinite_loss_before_any_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match="iteration 1; no checkpoint had been written yet"):
        train(
            BreaksAt(1),
            tiny_config(),
            train_set=Patches(),
            val_set=None,
            run_dir=tmp_path,
            rgb_range=1,
            **quiet(),
        )
    assert not (tmp_path / "last.pt").exists()


def test_output_shape_mismatch(tmp_path: Path) -> None:
    model = nn.Conv2d(3, 3, 3, padding=1)
    with pytest.raises(TrainError, match="does the model upscale by 2"):
        train(
            model,
            tiny_config(),
            train_set=Patches(),
            val_set=None,
            run_dir=tmp_path,
            rgb_range=1,
            **quiet(),
        )


def test_train_on_image_set(tmp_path: Path) -> None:
    """Integration with spacelang.sr.data: an ImageSet becomes fresh patches each epoch."""
    data = pytest.importorskip("spacelang.sr.data")
    if not hasattr(data, "open_dataset"):
        pytest.skip("spacelang.sr.data is a stand-in")
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(3):
        pixels = (smooth_image(seed, 32) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{seed}.png")
    images = data.open_dataset(folder, 2, cache_dir=tmp_path / "cache")
    result = train(
        tiny_model(),
        tiny_config(iterations=6, val_every=3, log_every=3),
        train_set=images,
        val_set=images,
        run_dir=tmp_path / "run",
        rgb_range=1,
        **quiet(),
    )
    assert result.last_iteration == 6 and result.best_psnr is not None


# --------------------------------------------------------------------------- kill and resume

RUN_SCRIPT = """
import random
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, {repo!r})
torch.set_num_threads(1)
from spacelang.sr.config import TrainConfig
from spacelang.sr.train import train

run_dir, mode, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])


class Patches(Dataset):
    def __len__(self):
        return 24

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(1000 + index)
        hr = torch.rand(3, 8, 8, generator=g)
        return nn.functional.avg_pool2d(hr[None], 2)[0], hr


class Noisy(nn.Module):
    # Draws from python, numpy and torch RNGs, so resuming must restore all three.
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x):
        time.sleep(delay)
        y = self.body(x)
        if self.training:
            scale = 0.01 * random.random() * float(np.random.rand())
            y = y + scale * torch.randn_like(y)
        return y


torch.manual_seed(123)
cfg = TrainConfig(
    scale=2, patch_size=8, batch_size=4, iterations={iterations}, lr=5e-3, warmup=3,
    log_every=1, val_every=1000, checkpoint_every={checkpoint_every}, seed=7,
)
result = train(Noisy(), cfg, train_set=Patches(), val_set=None, run_dir=run_dir,
               rgb_range=1, resume=mode == "resume", progress=False)
print("done", result.last_iteration)
"""

ITERATIONS, CHECKPOINT_EVERY, KILL_AFTER = 40, 5, 17


def losses(run_dir: Path) -> list[tuple[int, float, float]]:
    return [
        (r["iteration"], r["loss"], r["lr"]) for r in MetricsLog(run_dir / "metrics.jsonl").read()
    ]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path) -> None:
    script = tmp_path / "run_tiny.py"
    script.write_text(
        textwrap.dedent(RUN_SCRIPT).format(
            repo=str(REPO), iterations=ITERATIONS, checkpoint_every=CHECKPOINT_EVERY
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def start(run: str, mode: str, delay: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / run), mode, str(delay)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    reference = start("reference", "fresh", 0.0)
    victim = start("victim", "fresh", 0.05)
    victim_dir = tmp_path / "victim"
    deadline = time.monotonic() + 120
    while True:
        records = MetricsLog(victim_dir / "metrics.jsonl").read()
        if records and records[-1]["iteration"] >= KILL_AFTER and (victim_dir / "last.pt").exists():
            os.kill(victim.pid, signal.SIGKILL)
            break
        if victim.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {victim.communicate()[1]!r}")
        assert time.monotonic() < deadline, "run made no progress"
        time.sleep(0.005)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(victim_dir / "last.pt")["iteration"]
    assert 0 < killed_at < ITERATIONS and killed_at % CHECKPOINT_EVERY == 0
    assert max(i for i, _, _ in losses(victim_dir)) >= KILL_AFTER

    resumed = start("victim", "resume", 0.0)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()
    assert b"warning" not in err
    _, err_ref = reference.communicate(timeout=120)
    assert reference.returncode == 0, err_ref.decode()

    expected = losses(tmp_path / "reference")
    assert [i for i, _, _ in expected] == list(range(1, ITERATIONS + 1))
    assert losses(victim_dir) == expected  # exact, iteration by iteration
    ref_last = load_checkpoint(tmp_path / "reference" / "last.pt")["model"]
    victim_last = load_checkpoint(victim_dir / "last.pt")["model"]
    for key, value in ref_last.items():
        assert torch.equal(value, victim_last[key])
    assert (
        json.loads((victim_dir / "metrics.jsonl").read_text().splitlines()[-1])["iteration"] == 40
    )
