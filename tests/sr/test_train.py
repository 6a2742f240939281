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

from spacelang.runtime.checkpoint import load_checkpoint
from spacelang.runtime.log import MetricsLog
from spacelang.runtime.loop import state_dict_mismatch
from spacelang.sr.config import TrainConfig, load_config
from spacelang.sr.task import evaluate
from spacelang.sr.train import TrainError, lr_schedule, train
from tests.paths import REPO

# --------------------------------------------------------------------------- fixtures


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
    assert last["iteration"] == 20
    assert (last["kind"], last["version"]) == ("spacelang.train", 2)
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


def test_resume_may_extend_a_run_but_refuses_other_changes(tmp_path: Path) -> None:
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
    changed = tiny_config(iterations=8, log_every=1, checkpoint_every=2, lr=2e-2, seed=4)
    with pytest.raises(TrainError) as info:
        train(tiny_model(), changed, train_set=Patches(), val_set=None, run_dir=tmp_path,
              rgb_range=1, resume=True, **quiet())
    message = str(info.value)
    assert message.startswith(f"cannot resume {tmp_path}: the config changed in lr, seed (")
    assert "lr 0.01 -> 0.02; seed 3 -> 4" in message and "iterations" not in message.split(
        "(settings")[0]
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 4  # nothing lost

    longer = tiny_config(iterations=8, log_every=1, checkpoint_every=2)
    result = train(tiny_model(), longer, train_set=Patches(), val_set=None, run_dir=tmp_path,
                   rgb_range=1, resume=True, **quiet())
    assert result.last_iteration == 8
    records = MetricsLog(tmp_path / "metrics.jsonl").read()
    assert [r["iteration"] for r in records] == list(range(1, 9))
    assert load_config(TrainConfig, tmp_path / "config.yaml") == longer


def test_lr_schedule_of_a_config() -> None:
    cfg = tiny_config(schedule="step", step_size=7, gamma=0.1, lr_warmup=2)
    schedule = lr_schedule(cfg)
    assert (schedule.total, schedule.kind, schedule.warmup) == (20, "step", 2)
    assert schedule.factor(0) == pytest.approx(0.5) and schedule.factor(7) == pytest.approx(0.1)


def test_loss_is_on_the_unit_scale_whatever_the_range(tmp_path: Path) -> None:
    """The same model and data give the same logged loss for rgb_range 1 and 255."""
    losses = {}
    for rgb_range in (1, 255):

        class Ranged(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = tiny_model()

            def forward(self, x: torch.Tensor, r: int = rgb_range) -> torch.Tensor:
                return self.body(x / r) * r

        run = tmp_path / str(rgb_range)
        train(Ranged(), tiny_config(iterations=3, log_every=1, lr=1e-3), train_set=Patches(),
              val_set=None, run_dir=run, rgb_range=rgb_range, **quiet())
        losses[rgb_range] = [r["loss"] for r in MetricsLog(run / "metrics.jsonl").read()]
    assert losses[255] == pytest.approx(losses[1], rel=1e-4)


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
    scale=2, patch_size=8, batch_size=4, iterations={iterations}, lr=5e-3, lr_warmup=3,
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
