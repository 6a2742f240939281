"""Supervised super-resolution training, resumable to the exact batch.

`train` runs L1 + Adam on patches, validates on full images, and keeps a run folder::

    run_dir/config.yaml    resolved TrainConfig
    run_dir/spec.space     the architecture spec (when given)
    run_dir/metrics.jsonl  one JSON object per log line
    run_dir/last.pt        everything needed to continue (weights, optimizer, RNG, position)
    run_dir/best.pt        weights with the best validation PSNR, plus metadata

The pieces a search loop needs as well are public: `LRSchedule` (closed-form LR of the
iteration), `BatchStream` (deterministic, resumable batch order) fed by `patch_epochs`
(fresh patches each epoch), `TrainingProgress` (rich progress bar), `MetricsLog` (JSONL),
`evaluate` (PSNR/SSIM on full images) and `state_dict_mismatch` (resume compatibility).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from torch import nn
from torch.utils.data import DataLoader, Dataset

from spacelang.sr.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from spacelang.sr.config import ConfigError, TrainConfig, dump_config, parse_config

__all__ = [
    "BatchStream",
    "LRSchedule",
    "MetricsLog",
    "TrainError",
    "TrainResult",
    "TrainingProgress",
    "epoch_seed",
    "evaluate",
    "patch_epochs",
    "state_dict_mismatch",
    "train",
]

CHECKPOINT_KIND = "spacelang.sr.train"
CHECKPOINT_VERSION = 1

# Settings that may change on resume without changing the training trajectory.
_RESUME_SAFE = frozenset({"val_every", "log_every", "checkpoint_every", "workers", "val_data"})

# Streams of `epoch_seed`, so that different uses of the same (seed, epoch) are independent.
_ORDER_STREAM = 0
_PATCH_STREAM = 1
_LOADER_STREAM = 2


class TrainError(Exception):
    """Training cannot start or continue."""


@attrs.frozen
class TrainResult:
    """Outcome of `train`."""

    best_psnr: float | None
    last_iteration: int
    run_dir: Path
    best_ssim: float | None = None
    best_iteration: int | None = None


# --------------------------------------------------------------------------- LR schedule


@attrs.frozen(kw_only=True)
class LRSchedule:
    """Learning-rate multiplier as a closed-form function of the iteration.

    Because nothing but the iteration determines the LR, resuming reproduces it exactly.
    ``kind``: ``"cosine"`` (to ``min_factor`` at ``total``), ``"step"`` (times ``gamma`` every
    ``step_size`` iterations) or ``"constant"``; the first ``warmup`` iterations ramp up
    linearly.
    """

    total: int
    kind: Literal["cosine", "step", "constant"] = "cosine"
    warmup: int = 0
    step_size: int = 200000
    gamma: float = 0.5
    min_factor: float = 0.0

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> LRSchedule:
        """The schedule a `TrainConfig` describes."""
        return cls(
            total=cfg.iterations,
            kind=cfg.schedule,
            warmup=cfg.warmup,
            step_size=cfg.step_size,
            gamma=cfg.gamma,
        )

    def factor(self, iteration: int) -> float:
        """Multiplier of the base LR for the update at 0-based ``iteration``."""
        warm = (iteration + 1) / self.warmup if iteration < self.warmup else 1.0
        if self.kind == "constant":
            main = 1.0
        elif self.kind == "step":
            main = self.gamma ** (iteration // self.step_size)
        elif self.kind == "cosine":
            span = max(1, self.total - self.warmup)
            t = min(1.0, max(0.0, (iteration - self.warmup) / span))
            main = self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
        else:
            raise ValueError(f"unknown LR schedule {self.kind!r}")
        return warm * main

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        """Set every param group's LR for ``iteration``; return the first group's LR.

        A group's base LR is kept in ``group["initial_lr"]`` (set from its LR on first use,
        and saved with the optimizer state).
        """
        factor = self.factor(iteration)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor
        return float(optimizer.param_groups[0]["lr"])


# --------------------------------------------------------------------------- batches


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed derived from ``(seed, epoch, stream)``."""
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


DatasetSource = Dataset | Callable[[int], Dataset]


class BatchStream:
    """Endless, deterministic stream of batches that can resume at any batch.

    Epoch ``e`` draws a permutation of the dataset with a generator seeded from
    ``(seed, e)`` and cuts it into ``len(dataset) // batch_size`` full batches, so batch ``k``
    of the stream depends only on ``(seed, k)``. ``start`` skips the first ``start`` batches
    without loading them. ``dataset`` is a map-style Dataset (reshuffled each epoch) or a
    function ``epoch -> Dataset`` (e.g. fresh random patches each epoch); every epoch's dataset
    must have the same length. Sampling never touches the global RNGs.
    """

    def __init__(
        self,
        dataset: DatasetSource,
        batch_size: int,
        *,
        seed: int,
        start: int = 0,
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if isinstance(dataset, Dataset) or not callable(dataset):
            fixed = dataset
            self._make: Callable[[int], Dataset] = lambda epoch: fixed
        else:
            self._make = dataset
        self._first = self._make(0)
        self.epoch_size = len(self._first)  # type: ignore[arg-type]
        self.batch_size = batch_size
        self.batches_per_epoch = self.epoch_size // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"an epoch has {self.epoch_size} samples, fewer than one batch of "
                f"{batch_size} (use a longer epoch or a smaller batch)"
            )
        self.seed = seed
        self.position = start
        self.workers = workers
        self.pin_memory = pin_memory

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Sample indices of ``epoch`` as a ``(batches_per_epoch, batch_size)`` tensor."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, _ORDER_STREAM))
        perm = torch.randperm(self.epoch_size, generator=generator)
        used = self.batches_per_epoch * self.batch_size
        return perm[:used].view(self.batches_per_epoch, self.batch_size)

    def _dataset(self, epoch: int) -> Dataset:
        dataset = self._first if epoch == 0 else self._make(epoch)
        if len(dataset) != self.epoch_size:  # type: ignore[arg-type]
            raise ValueError(
                f"epoch {epoch} has {len(dataset)} samples but epoch 0 had "  # type: ignore[arg-type]
                f"{self.epoch_size}; every epoch must have the same length"
            )
        return dataset

    def __iter__(self) -> Iterator[Any]:
        while True:
            epoch, offset = divmod(self.position, self.batches_per_epoch)
            batches = self.epoch_order(epoch)[offset:].tolist()
            loader = DataLoader(
                self._dataset(epoch),
                batch_sampler=batches,
                num_workers=self.workers,
                pin_memory=self.pin_memory,
                # An explicit generator keeps DataLoader from drawing on the global torch RNG.
                generator=torch.Generator().manual_seed(
                    epoch_seed(self.seed, epoch, _LOADER_STREAM)
                ),
            )
            for batch in loader:
                self.position += 1
                yield batch


# --------------------------------------------------------------------------- progress, logs


class _RateColumn(ProgressColumn):
    """Iterations per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            "-- it/s" if speed is None else f"{speed:.2f} it/s", style="progress.data.speed"
        )


class TrainingProgress:
    """Rich progress bar (iteration, loss, it/s, ETA); a no-op when disabled or not a TTY.

    Use as a context manager; `print` writes above the bar (or plainly when it is off).
    """

    def __init__(
        self,
        total: int,
        *,
        start: int = 0,
        console: Console | None = None,
        enabled: bool = True,
        description: str = "train",
    ) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self.active = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        if self.active:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                _RateColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task(
                description, total=total, completed=start, status=""
            )

    def __enter__(self) -> TrainingProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, iteration: int, **values: float) -> None:
        """Show ``iteration`` done, with e.g. ``loss=...``, ``lr=...`` next to the bar."""
        if self._progress is None:
            return
        status = "  ".join(f"{k} {_fmt(v)}" for k, v in values.items())
        self._progress.update(self._task, completed=iteration, status=status)

    def print(self, message: str) -> None:
        """Print a line (above the bar when it is shown)."""
        self.console.print(message, highlight=False, markup=False)


def _fmt(value: float) -> str:
    if isinstance(value, float) and (value == 0.0 or 1e-3 <= abs(value) < 1e4):
        return f"{value:.4f}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class MetricsLog:
    """Append-only JSON-lines metrics file, one object per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line (flushed to the OS before returning)."""
        line = json.dumps(dict(record), separators=(", ", ": ")) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)

    def read(self) -> list[dict[str, Any]]:
        """All complete records (a torn last line from a crash is ignored)."""
        return self.read_records(self.path)

    @staticmethod
    def read_records(path: str | Path) -> list[dict[str, Any]]:
        """Records of a metrics file; missing file: ``[]``."""
        path = Path(path)
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def truncate_after(self, iteration: int) -> None:
        """Drop records past ``iteration`` (written after the checkpoint being resumed)."""
        kept = [r for r in self.read() if int(r.get("iteration", 0)) <= iteration]
        text = "".join(json.dumps(r, separators=(", ", ": ")) + "\n" for r in kept)
        atomic_write_bytes(self.path, text.encode("utf-8"))

    def reset(self) -> None:
        """Start an empty log."""
        atomic_write_bytes(self.path, b"")


# --------------------------------------------------------------------------- validation


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def evaluate(
    model: nn.Module,
    image_set: Sequence[Any],
    scale: int,
    rgb_range: int,
    *,
    device: torch.device | str | None = None,
    y_channel: bool = True,
    save_dir: Path | None = None,
) -> tuple[float, float, list[dict[str, Any]]]:
    """Super-resolve every full image of ``image_set``; PSNR/SSIM on Y with ``crop=scale``.

    ``y_channel=False`` scores RGB instead; ``save_dir`` receives each SR output as
    ``<name>.png`` (8-bit RGB).

    Model input is the LR image times ``rgb_range``; the output is clamped to
    ``[0, rgb_range]`` and rounded to 8 bits before scoring. Returns
    ``(mean_psnr, mean_ssim, [{"name", "psnr", "ssim"}, ...])``. The model's train/eval mode
    is restored afterwards.
    """
    from spacelang.sr.data import full_image_tensors
    from spacelang.sr.metrics import psnr, ssim, to_uint8

    if len(image_set) == 0:
        raise ValueError("evaluate() needs at least one image")
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    scores: list[dict[str, Any]] = []
    try:
        with torch.no_grad():
            for pair in image_set:
                lr, _ = full_image_tensors(pair)
                out = model(lr.unsqueeze(0).to(device) * rgb_range)
                sr = to_uint8(out[0].clamp(0, rgb_range), rgb_range)
                hr = np.asarray(pair.hr)
                if sr.shape != hr.shape:
                    raise ValueError(
                        f"image {pair.name!r}: model output is {sr.shape[1]}x{sr.shape[0]} but "
                        f"the HR image is {hr.shape[1]}x{hr.shape[0]} (scale={scale})"
                    )
                if save_dir is not None:
                    from spacelang.sr.images import write_image

                    save_dir.mkdir(parents=True, exist_ok=True)
                    write_image(save_dir / f"{pair.name}.png", sr)
                scores.append(
                    {
                        "name": pair.name,
                        "psnr": float(psnr(sr, hr, crop=scale, y_channel=y_channel)),
                        "ssim": float(ssim(sr, hr, crop=scale, y_channel=y_channel)),
                    }
                )
    finally:
        model.train(was_training)
    mean_psnr = float(np.mean([s["psnr"] for s in scores]))
    mean_ssim = float(np.mean([s["ssim"] for s in scores]))
    return mean_psnr, mean_ssim, scores


# --------------------------------------------------------------------------- checkpoints


def state_dict_mismatch(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]
) -> str | None:
    """Describe the first key where ``found`` differs from ``expected`` (None: compatible)."""
    for key, tensor in expected.items():
        if key not in found:
            return f"key {key!r} is in the model but missing from the checkpoint"
        other = found[key]
        if not isinstance(other, torch.Tensor):
            return f"key {key!r} is a {type(other).__name__} in the checkpoint, not a tensor"
        if tuple(other.shape) != tuple(tensor.shape):
            return (
                f"key {key!r} has shape {tuple(other.shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} in the model"
            )
    for key in found:
        if key not in expected:
            return f"key {key!r} is in the checkpoint but not in the model"
    return None


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _config_changes(old_text: str, cfg: TrainConfig) -> list[str]:
    """Trajectory-relevant settings that differ from the checkpoint's config."""
    try:
        old = parse_config(TrainConfig, old_text, source="last.pt")
    except ConfigError as exc:
        return [f"(stored config unreadable: {exc})"]
    changes = []
    for field in attrs.fields(TrainConfig):
        before, after = getattr(old, field.name), getattr(cfg, field.name)
        if field.name not in _RESUME_SAFE and before != after:
            changes.append(f"{field.name} {before!r} -> {after!r}")
    return changes


def patch_epochs(
    images: Sequence[Any],
    *,
    scale: int,
    patch_size: int,
    batch_size: int,
    seed: int,
    epoch_length: int | None = None,
    augment: bool = True,
) -> Callable[[int], Dataset]:
    """``epoch -> PatchDataset`` with fresh random crops each epoch, for `BatchStream`.

    An epoch has ``epoch_length`` patches, by default every image once rounded up to whole
    batches. Epoch ``e`` uses patch seed ``epoch_seed(seed, e, 1)``, so the patches depend
    only on ``(seed, e, index)``.
    """
    from spacelang.sr.data import PatchDataset

    length = epoch_length or batch_size * math.ceil(len(images) / batch_size)

    def make(epoch: int) -> Dataset:
        return PatchDataset(
            images,  # type: ignore[arg-type]
            scale,
            patch_size,
            seed=epoch_seed(seed, epoch, _PATCH_STREAM),
            augment=augment,
            length=length,
        )

    return make


def _training_data(train_set: Any, cfg: TrainConfig) -> DatasetSource:
    """A Dataset or per-epoch dataset factory for `BatchStream`."""
    if isinstance(train_set, Dataset) or callable(train_set):
        return train_set
    return patch_epochs(
        train_set,
        scale=cfg.scale,
        patch_size=cfg.patch_size,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        epoch_length=cfg.epoch_length,
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _due(iteration: int, every: int, total: int) -> bool:
    return iteration % every == 0 or iteration == total


# --------------------------------------------------------------------------- the trainer


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """Flush denormal floats to zero inside the block, then restore the default.

    CPU convolutions over denormals (supernets and fresh networks make them)
    run up to a hundred times slower; flushing changes no result that matters.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def train(model: nn.Module, cfg: TrainConfig, **kwargs: Any) -> TrainResult:
    """Train ``model`` for ``cfg.iterations`` steps of L1 + Adam, keeping ``run_dir`` current.

    Keyword arguments are those of `train_run`; denormals are flushed meanwhile.
    """
    with denormals_flushed():
        return train_run(model, cfg, **kwargs)


def train_run(
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
    """Train ``model`` for ``cfg.iterations`` steps of L1 + Adam, keeping ``run_dir`` current.

    ``train_set`` is an ImageSet (random patches via PatchDataset, fresh each epoch), a
    Dataset of ``(lr, hr)`` tensors in [0, 1], or a function ``epoch -> Dataset``.
    ``val_set`` (ImagePairs, may be None) is scored every ``cfg.val_every`` iterations and at
    the end. ``resume=True`` continues from ``run_dir/last.pt`` with exactly the batches,
    learning rates and random numbers an uninterrupted run would have used.
    A fresh run seeds python, numpy and torch from ``cfg.seed`` (the model is expected to be
    initialised already).
    """
    if rgb_range not in (1, 255):
        raise TrainError(f"rgb_range must be 1 or 255, got {rgb_range!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    console = console if console is not None else Console(stderr=True)
    metrics = MetricsLog(run_dir / "metrics.jsonl")

    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainError("the model has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    schedule = LRSchedule.from_config(cfg)

    start = 0
    best_psnr: float | None = None
    best_ssim: float | None = None
    best_iteration: int | None = None
    loss_sum, loss_count = 0.0, 0
    elapsed_before = 0.0
    saved_rng: dict[str, Any] | None = None

    if resume:
        if not last_path.exists():
            raise TrainError(
                f"cannot resume: {last_path} does not exist (the run never reached its first "
                "checkpoint, or the run folder is wrong); start it without resume"
            )
        try:
            ckpt = load_checkpoint(last_path)
        except CheckpointError as exc:
            raise TrainError(f"cannot resume: {exc}") from None
        if ckpt.get("kind") != CHECKPOINT_KIND or "model" not in ckpt:
            raise TrainError(f"cannot resume: {last_path} is not a training checkpoint")
        problem = state_dict_mismatch(model.state_dict(), ckpt["model"])
        if problem is not None:
            raise TrainError(
                f"cannot resume {run_dir}: the model does not match the checkpoint: {problem}"
            )
        model.load_state_dict(ckpt["model"])
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as exc:
            raise TrainError(
                f"cannot resume {run_dir}: optimizer state does not fit: {exc}"
            ) from None
        start = int(ckpt["iteration"])
        best_psnr, best_ssim = ckpt.get("best_psnr"), ckpt.get("best_ssim")
        best_iteration = ckpt.get("best_iteration")
        loss_sum, loss_count = float(ckpt["loss_window"][0]), int(ckpt["loss_window"][1])
        elapsed_before = float(ckpt.get("elapsed", 0.0))
        saved_rng = ckpt["rng"]
        changes = _config_changes(str(ckpt.get("config", "")), cfg)
        if changes:
            console.print(
                "warning: resuming with changed settings, so the run will differ from an "
                "uninterrupted one: " + "; ".join(changes),
                highlight=False,
                markup=False,
            )
        metrics.truncate_after(start)
    else:
        if last_path.exists():
            raise TrainError(
                f"{run_dir} already holds a training run ({last_path.name}); resume it or "
                "choose another run folder"
            )
        metrics.reset()
        _seed_everything(cfg.seed)

    atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode("utf-8"))
    if spec_text is not None:
        atomic_write_bytes(run_dir / "spec.space", spec_text.encode("utf-8"))

    try:
        stream = BatchStream(
            _training_data(train_set, cfg),
            cfg.batch_size,
            seed=cfg.seed,
            start=start,
            workers=cfg.workers,
            pin_memory=device.type == "cuda",
        )
    except ValueError as exc:
        raise TrainError(f"training data: {exc}") from None
    if saved_rng is not None:
        set_rng_state(saved_rng)  # last, so nothing above disturbs the restored streams

    def save_last(iteration: int) -> None:
        save_checkpoint(
            last_path,
            {
                "kind": CHECKPOINT_KIND,
                "version": CHECKPOINT_VERSION,
                "iteration": iteration,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"iteration": iteration, "kind": cfg.schedule},
                "rng": rng_state(),
                "best_psnr": best_psnr,
                "best_ssim": best_ssim,
                "best_iteration": best_iteration,
                "loss_window": [loss_sum, loss_count],
                "elapsed": elapsed_before + time.monotonic() - started,
                "config": dump_config(cfg),
                "rgb_range": rgb_range,
                "spec": spec_text,
            },
        )

    def save_best(iteration: int, psnr: float | None, ssim: float | None) -> None:
        save_checkpoint(
            best_path,
            {
                "kind": "spacelang.sr.model",
                "model": _cpu_state(model),
                "iteration": iteration,
                "psnr": psnr,
                "ssim": ssim,
                "scale": cfg.scale,
                "rgb_range": rgb_range,
                "config": dump_config(cfg),
                "spec": spec_text,
            },
        )

    display = TrainingProgress(
        cfg.iterations, start=start, console=console, enabled=progress, description="train"
    )
    has_val = val_set is not None and len(val_set) > 0
    started = time.monotonic()
    iteration = start
    last_good = last_path if resume else None
    batches = iter(stream)
    model.train()
    try:
        with display:
            while iteration < cfg.iterations:
                lr_now = schedule.apply(optimizer, iteration)
                lr_batch, hr_batch = next(batches)
                lr_batch = lr_batch.to(device, non_blocking=True) * rgb_range
                hr_batch = hr_batch.to(device, non_blocking=True) * rgb_range
                output = model(lr_batch)
                if output.shape != hr_batch.shape:
                    raise TrainError(
                        f"model output has shape {tuple(output.shape)} but the HR batch has "
                        f"{tuple(hr_batch.shape)}; does the model upscale by {cfg.scale}?"
                    )
                loss = F.l1_loss(output, hr_batch)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise TrainError(_nonfinite_message(iteration + 1, "loss", last_good))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                iteration += 1
                loss_sum += loss_value
                loss_count += 1

                validate = has_val and _due(iteration, cfg.val_every, cfg.iterations)
                record: dict[str, Any] | None = None
                if validate or _due(iteration, cfg.log_every, cfg.iterations):
                    record = {
                        "iteration": iteration,
                        "loss": loss_sum / loss_count,
                        "lr": lr_now,
                        "elapsed": round(elapsed_before + time.monotonic() - started, 3),
                    }
                    loss_sum, loss_count = 0.0, 0
                if validate:
                    assert val_set is not None and record is not None
                    val_psnr, val_ssim, _ = evaluate(model, val_set, cfg.scale, rgb_range)
                    record["val_psnr"], record["val_ssim"] = val_psnr, val_ssim
                    if best_psnr is None or val_psnr > best_psnr:
                        best_psnr, best_ssim, best_iteration = val_psnr, val_ssim, iteration
                        save_best(iteration, val_psnr, val_ssim)
                    display.print(
                        f"iteration {iteration}: val PSNR {val_psnr:.3f} dB, SSIM "
                        f"{val_ssim:.4f} (best {best_psnr:.3f} dB at {best_iteration})"
                    )
                if record is not None:
                    metrics.write(record)
                    if not display.active and not validate:
                        display.print(
                            f"iteration {iteration}/{cfg.iterations}: loss "
                            f"{record['loss']:.5f}, lr {lr_now:.3g}"
                        )
                display.update(iteration, loss=loss_value, lr=lr_now)

                if _due(iteration, cfg.checkpoint_every, cfg.iterations):
                    if not all(bool(torch.isfinite(p).all()) for p in params):
                        raise TrainError(_nonfinite_message(iteration, "weights", last_good))
                    save_last(iteration)
                    last_good = last_path
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()

    if not has_val:
        # Without validation data the final weights are the best we know of.
        save_best(iteration, None, None)
        best_iteration = iteration
    return TrainResult(
        best_psnr=best_psnr,
        last_iteration=iteration,
        run_dir=run_dir,
        best_ssim=best_ssim,
        best_iteration=best_iteration,
    )


def _nonfinite_message(iteration: int, what: str, last_good: Path | None) -> str:
    where = (
        f"last good checkpoint kept at {last_good}"
        if last_good is not None
        else "no checkpoint had been written yet"
    )
    return f"non-finite {what} at iteration {iteration}; {where}"
