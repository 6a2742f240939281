"""Supervised super-resolution training (`spacelang train`): the SR task on the runtime loop.

`train` runs the pixel loss (0–1 scale) + Adam on patches, validates on full images, and
keeps a run folder::

    run_dir/config.yaml    resolved TrainConfig
    run_dir/spec.space     the architecture spec (when given)
    run_dir/metrics.jsonl  one JSON object per log line
    run_dir/last.pt        everything needed to continue (kind "spacelang.train")
    run_dir/best.pt        weights with the best validation PSNR, plus metadata
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console
from torch import nn

from spacelang.runtime.checkpoint import save_checkpoint
from spacelang.runtime.config import dump_config
from spacelang.runtime.distributed import default_device, is_main, mean_scalars
from spacelang.runtime.loop import (
    GradScalerState,
    Hook,
    Loop,
    NonFinite,
    RunError,
    backward_and_step,
    due,
)
from spacelang.runtime.schedule import LRSchedule
from spacelang.sr.config import RESUME_SAFE, TrainConfig
from spacelang.sr.task import SRTask, evaluate

__all__ = ["CHECKPOINT_KIND", "TrainError", "TrainResult", "evaluate", "train"]

CHECKPOINT_KIND = "spacelang.train"
MODEL_KIND = "spacelang.sr.model"


class TrainError(RunError):
    """Training cannot start or continue."""


@attrs.frozen
class TrainResult:
    """Outcome of `train`."""

    best_psnr: float | None
    last_iteration: int
    run_dir: Path
    best_ssim: float | None = None
    best_iteration: int | None = None


def lr_schedule(cfg: TrainConfig) -> LRSchedule:
    """The weights' LR schedule a `TrainConfig` describes."""
    return LRSchedule(total=cfg.iterations, kind=cfg.schedule, warmup=cfg.lr_warmup,
                      step_size=cfg.step_size, gamma=cfg.gamma)


@attrs.define
class _WeightStep:
    """One Adam step of the weights on a training batch."""

    task: SRTask
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    data: Any
    grad_clip: float | None
    seed: int
    scaler: torch.amp.GradScaler | None = None  # amp fp16: the loss is scaled
    _batches: Any = None

    def begin(self, start: int) -> None:
        try:
            self._batches = iter(self.task.stream(self.data, seed=self.seed, start=start))
        except ValueError as exc:
            raise TrainError(f"training data: {exc}") from None
        self.model.train()

    def __call__(self, iteration: int) -> dict[str, float]:
        lr_now = self.schedule.apply(self.optimizer, iteration)
        batch = self.task.to_device(next(self._batches))
        loss = self.task.loss(self.model, batch)
        (value,) = mean_scalars(loss.detach())  # over ranks: all stop together on NaN/inf
        if not math.isfinite(value):
            raise NonFinite("loss")
        self.optimizer.zero_grad(set_to_none=True)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        backward_and_step(loss, self.optimizer, params, self.grad_clip, self.scaler)
        if self.scaler is None:
            return {"loss": value, "lr": lr_now}
        return {"loss": value, "lr": lr_now, "loss_scale": float(self.scaler.get_scale())}

    def end(self) -> None:
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()


@attrs.define
class _BestWeights(Hook):
    """Validates every ``val_every`` updates and keeps the best weights in ``best.pt``."""

    task: SRTask
    model: nn.Module
    cfg: TrainConfig
    path: Path
    spec_text: str | None
    best_psnr: float | None = None
    best_ssim: float | None = None
    best_iteration: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"best_psnr": self.best_psnr, "best_ssim": self.best_ssim,
                "best_iteration": self.best_iteration}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_psnr, self.best_ssim = state.get("best_psnr"), state.get("best_ssim")
        self.best_iteration = state.get("best_iteration")

    def wants_record(self, done: int) -> bool:
        return self.task.has_validation and due(done, self.cfg.val_every, self.cfg.iterations)

    def after_step(self, done: int, record: dict[str, Any] | None, loop: Loop) -> None:
        if record is None or not self.wants_record(done):
            return
        val_psnr, val_ssim = self.task.validate(self.model)
        record["val_psnr"], record["val_ssim"] = val_psnr, val_ssim
        if self.best_psnr is None or val_psnr > self.best_psnr:
            self.best_psnr, self.best_ssim, self.best_iteration = val_psnr, val_ssim, done
            self.save(done, val_psnr, val_ssim)
        loop.print(f"iteration {done}: val PSNR {val_psnr:.3f} dB, SSIM {val_ssim:.4f} "
                   f"(best {self.best_psnr:.3f} dB at {self.best_iteration})")

    def on_end(self, done: int, loop: Loop) -> None:
        if not self.task.has_validation:
            # Without validation data the final weights are the best we know of.
            self.save(done, None, None)
            self.best_iteration = done

    def save(self, done: int, psnr: float | None, ssim: float | None) -> None:
        if not is_main():
            return
        save_checkpoint(self.path, {
            "kind": MODEL_KIND,
            "model": {k: v.detach().to("cpu", copy=True)
                      for k, v in self.model.state_dict().items()},
            "iteration": done,
            "psnr": psnr,
            "ssim": ssim,
            "scale": self.cfg.scale,
            "rgb_range": self.task.rgb_range,
            "config": dump_config(self.cfg),
            "spec": self.spec_text,
        })


def train(
    model: nn.Module,
    cfg: TrainConfig,
    *,
    train_set: Any,
    val_set: Sequence[Any] | None,
    run_dir: str | Path,
    rgb_range: int,
    resume: bool = False,
    spec_text: str | None = None,
    console: Console | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> TrainResult:
    """Train ``model`` for ``cfg.iterations`` steps of the pixel loss + Adam in ``run_dir``.

    ``train_set`` is an ImageSet (random patches via PatchDataset, fresh each epoch), a
    Dataset of ``(lr, hr)`` tensors in [0, 1], or a function ``epoch -> Dataset``.
    ``val_set`` (ImagePairs, may be None) is scored every ``cfg.val_every`` iterations and at
    the end. ``resume=True`` continues from ``run_dir/last.pt`` with exactly the batches,
    learning rates and random numbers an uninterrupted run would have used; a changed
    config is refused unless only `RESUME_SAFE` settings changed. A fresh run seeds python,
    numpy and torch from ``cfg.seed`` (the model is expected to be initialised already).

    Under torchrun every rank calls this (see `spacelang.runtime.distributed`): the model
    starts from rank 0's weights, ``cfg.batch_size`` is the global batch, gradients are
    averaged, validation images are split across ranks, and rank 0 writes ``run_dir``.
    ``device`` defaults to ``cuda:LOCAL_RANK`` when CUDA is available.
    """
    if rgb_range not in (1, 255):
        raise TrainError(f"rgb_range must be 1 or 255, got {rgb_range!r}")
    run_dir = Path(run_dir)
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainError("the model has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    task = SRTask(cfg=cfg, rgb_range=rgb_range, device=device, val_set=val_set)
    best = _BestWeights(task, model, cfg, run_dir / "best.pt", spec_text)
    # amp, channels_last and compile are applied by the loop (spacelang.runtime.speed)
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
    loop = Loop(
        kind=CHECKPOINT_KIND,
        noun="training run",
        run_dir=run_dir,
        config=cfg,
        step=_WeightStep(task, model, optimizer, lr_schedule(cfg), train_set, cfg.grad_clip,
                         cfg.seed, scaler),
        stateful={"model": model, "optimizer": optimizer},
        hooks=[best] if scaler is None else [best, GradScalerState(scaler)],
        resume_safe=RESUME_SAFE,
        extra={"rgb_range": rgb_range, "spec": spec_text},
        files={} if spec_text is None else {"spec.space": spec_text},
        error=TrainError,
        console=console if console is not None else Console(stderr=True),
        progress=progress,
    )
    last = loop.run(resume=resume)
    return TrainResult(best_psnr=best.best_psnr, last_iteration=last, run_dir=run_dir,
                       best_ssim=best.best_ssim, best_iteration=best.best_iteration)
