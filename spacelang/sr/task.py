"""Super-resolution as a task for the generic loop and search: batches, loss, validation.

`SRTask` turns images into resumable patch streams (`spacelang.runtime.batches`), feeds
the network inputs on its own range (``rgb_range`` 1 or 255) and computes the pixel
loss on the 0–1 scale whatever that range, so a loss value, ``grad_clip`` and the search's
complexity weight mean the same for every spec. `evaluate` scores full images with
PSNR/SSIM (Y channel, ``scale`` pixels cropped, output rounded to 8 bits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from spacelang.checker import first_empty
from spacelang.runtime.batches import PATCH_STREAM, BatchStream, DatasetSource, epoch_seed
from spacelang.runtime.distributed import gather_objects, shard_items
from spacelang.runtime.loop import StepFailure
from spacelang.sr.data import ImageSet, PatchDataset, full_image_tensors
from spacelang.sr.images import write_image
from spacelang.sr.losses import pixel_loss
from spacelang.sr.metrics import psnr, ssim, to_uint8

__all__ = ["SRTask", "evaluate", "patch_epochs", "split_images"]

Batch = tuple[torch.Tensor, torch.Tensor]


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
    batches. Epoch ``e`` uses patch seed ``epoch_seed(seed, e, PATCH_STREAM)``, so the
    patches depend only on ``(seed, e, index)``.
    """
    length = epoch_length or batch_size * math.ceil(len(images) / batch_size)

    def make(epoch: int) -> Dataset:
        return PatchDataset(
            images,  # type: ignore[arg-type]
            scale,
            patch_size,
            seed=epoch_seed(seed, epoch, PATCH_STREAM),
            augment=augment,
            length=length,
        )

    return make


def split_images(images: ImageSet) -> tuple[ImageSet, ImageSet]:
    """Alternate images between the weight split and the architecture split."""
    if len(images) < 2:
        return images, images
    return images[0::2], images[1::2]


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


@attrs.define(kw_only=True)
class SRTask:
    """×``scale`` super-resolution of RGB images for a network on ``rgb_range`` (1 or 255).

    ``cfg`` is a `TrainConfig` or `SearchConfig` (patch and batch sizes, seed, loss).
    Batches are ``(lr, hr)`` on ``device``, on the network's range; `criterion` takes
    ``(sr, hr)`` on that range and returns the loss on the 0–1 scale.
    """

    cfg: Any
    rgb_range: int
    device: torch.device
    val_set: Sequence[Any] | None = None
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        raw = pixel_loss(self.cfg.loss, self.cfg.hfen_weight, self.cfg.hfen)
        rgb = self.rgb_range

        def criterion(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
            if sr.shape != hr.shape:
                raise StepFailure(
                    f"model output has shape {tuple(sr.shape)} but the HR batch has "
                    f"{tuple(hr.shape)}; does the model upscale by {self.cfg.scale}?"
                )
            return raw(sr / rgb, hr / rgb)

        self.criterion = criterion

    def stream(self, data: Any, *, seed: int, start: int) -> BatchStream:
        """Batches of ``data`` from batch ``start`` on: an ImageSet (fresh random patches
        each epoch), a Dataset of ``(lr, hr)`` in [0, 1], or a function ``epoch -> Dataset``.
        """
        source: DatasetSource
        if isinstance(data, Dataset) or callable(data):
            source = data
        else:
            source = patch_epochs(data, scale=self.cfg.scale, patch_size=self.cfg.patch_size,
                                  batch_size=self.cfg.batch_size, seed=seed,
                                  epoch_length=self.cfg.epoch_length)
        return BatchStream(source, self.cfg.batch_size, seed=seed, start=start,
                           workers=self.cfg.workers, pin_memory=self.device.type == "cuda")

    def to_device(self, batch: Sequence[torch.Tensor]) -> Batch:
        """A ``(lr, hr)`` batch in [0, 1] on the network's range and device."""
        lr, hr = batch
        return (lr.to(self.device, non_blocking=True) * self.rgb_range,
                hr.to(self.device, non_blocking=True) * self.rgb_range)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The pixel loss of ``model`` on a device batch (0–1 scale)."""
        lr, hr = batch
        return self.criterion(model(lr), hr)

    def validate(self, model: nn.Module) -> tuple[float, float]:
        """Mean PSNR and SSIM of ``model`` on the validation images.

        In a distributed run each rank scores every world-th image; the per-image scores are
        gathered and averaged in the set's order, so the figures are those of one process.
        """
        assert self.val_set is not None
        mine = shard_items(len(self.val_set))
        scores = evaluate(model, [self.val_set[i] for i in mine], self.cfg.scale,
                          self.rgb_range)[2] if mine else []
        parts = gather_objects(list(zip(mine, scores, strict=True)))
        gathered = sorted((item for part in parts for item in part), key=lambda item: item[0])
        ordered = [score for _, score in gathered]
        return (float(np.mean([s["psnr"] for s in ordered])),
                float(np.mean([s["ssim"] for s in ordered])))

    @property
    def has_validation(self) -> bool:
        return self.val_set is not None and len(self.val_set) > 0


def patch_size_problem(network: Any, patch_size: int, scale: int) -> str | None:
    """Why an HR training patch of ``patch_size`` is too small for ``network`` (some value,
    e.g. after ESA's strided conv and pool, would be empty), or None when it is not."""
    side = patch_size // scale
    found = first_empty(network.graph, side, side)
    if found is None:
        return None
    node, w, h = found
    smallest = next((p for p in range(patch_size + scale, 64 * patch_size + 1, scale)
                     if first_empty(network.graph, p // scale, p // scale) is None), None)
    hint = f"; use a patch_size of at least {smallest}" if smallest else ""
    return (f"'patch_size' {patch_size} is too small for network `{network.name}`: its LR "
            f"patch of {side}×{side} becomes {w}×{h} at `{node.path or node.op}` "
            f"(scope {node.scope or 'network'}){hint}")
