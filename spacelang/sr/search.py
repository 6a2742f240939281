"""`spacelang search` on SR data: the SR task plugged into `spacelang.nas.search`.

The weights learn on every other training image, α/β on the rest (`split_images`); the
argmax architecture is scored on ``val_set`` every ``val_every`` updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from spacelang.nas.search import SearchError, SearchResult, run_search
from spacelang.runtime.distributed import default_device
from spacelang.sr.config import RESUME_SAFE, SearchConfig
from spacelang.sr.data import ImageSet
from spacelang.sr.task import SRTask, split_images

__all__ = ["search"]


def search(space: Any, cfg: SearchConfig, *, train_set: ImageSet, val_set: Sequence | None,
           run_dir: str | Path, resume: bool = False, console: Console | None = None,
           progress: bool = True, device: torch.device | str | None = None) -> SearchResult:
    """Search ``space`` on SR images; writes ``run_dir/derived.space``.

    ``device`` defaults to CUDA (``cuda:LOCAL_RANK`` under torchrun) when available.
    Resuming refuses a changed config unless only `RESUME_SAFE` settings changed.
    """
    network = space.network
    if cfg.scale != network.scale:
        raise SearchError(f"the config says scale {cfg.scale} but network `{network.name}` "
                          f"upscales ×{network.scale}")
    device = torch.device(device) if device is not None else default_device()
    task = SRTask(cfg=cfg, rgb_range=network.rgb_range, device=device, val_set=val_set)
    weight_images, arch_images = split_images(train_set)
    return run_search(space, cfg, task=task, weight_data=weight_images, arch_data=arch_images,
                      run_dir=run_dir, device=device, resume=resume, resume_safe=RESUME_SAFE,
                      console=console, progress=progress)
