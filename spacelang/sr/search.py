"""`spacelang search` on SR data: the SR task plugged into `spacelang.nas.search`.

Which images train what (`search_splits`): by default the weights learn on every other
training image and α/β on the rest (``arch_split: alternate``); ``arch_split: ranges``
gives each an index range of the training images (``weight_images: [0, 3000]``,
``arch_images: [3000, 3450]``, end excluded, as DLSR split DF2K); ``arch_data`` names a
second folder for α/β (the weights then learn on all of ``data``). The argmax
architecture is scored on ``val_set`` every ``val_every`` updates. With ``budgets`` the
search runs once per budget (`spacelang.nas.search.run_search_family`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from spacelang.nas.search import SearchError, SearchResult, run_search, run_search_family
from spacelang.runtime.distributed import default_device
from spacelang.sr.config import RESUME_SAFE, SearchConfig
from spacelang.sr.data import ImageSet
from spacelang.sr.task import SRTask, patch_size_problem, split_images

__all__ = ["check_patch_size", "search", "search_splits"]


def check_patch_size(network: Any, patch_size: int, scale: int) -> None:
    """A `SearchError` when an HR patch of ``patch_size`` leaves some value of
    ``network`` empty (see `spacelang.sr.task.patch_size_problem`)."""
    problem = patch_size_problem(network, patch_size, scale)
    if problem is not None:
        raise SearchError(problem)


def search_splits(train_set: ImageSet, cfg: SearchConfig,
                  arch_set: ImageSet | None = None) -> tuple[ImageSet, ImageSet]:
    """(images that train the weights, images that train α/β) as the config says."""
    if arch_set is not None:
        if len(arch_set) == 0:
            raise SearchError(f"'arch_data' {cfg.arch_data} holds no images")
        return train_set, arch_set
    if cfg.arch_split == "ranges":
        parts = []
        for name, (start, end) in (("weight_images", cfg.weight_images),
                                   ("arch_images", cfg.arch_images)):
            if end > len(train_set):
                raise SearchError(f"'{name}' [{start}, {end}) reaches past the "
                                  f"{len(train_set)} training images")
            parts.append(train_set[start:end])
        return parts[0], parts[1]
    return split_images(train_set)


def search(space: Any, cfg: SearchConfig, *, train_set: ImageSet, val_set: Sequence | None,
           run_dir: str | Path, resume: bool = False, console: Console | None = None,
           progress: bool = True, device: torch.device | str | None = None,
           arch_set: ImageSet | None = None) -> SearchResult | list[SearchResult]:
    """Search ``space`` on SR images; writes ``run_dir/derived.space``.

    With ``cfg.budgets``, one search per budget in ``run_dir/budget-<budget>`` and the
    list of their results. ``arch_set`` (the images of ``cfg.arch_data``) trains α/β when
    given. ``device`` defaults to CUDA (``cuda:LOCAL_RANK`` under torchrun) when
    available. Resuming refuses a changed config unless only `RESUME_SAFE` settings
    changed.
    """
    network = space.network
    if cfg.scale != network.scale:
        raise SearchError(f"the config says scale {cfg.scale} but network `{network.name}` "
                          f"upscales ×{network.scale}")
    check_patch_size(network, cfg.patch_size, cfg.scale)
    device = torch.device(device) if device is not None else default_device()
    task = SRTask(cfg=cfg, rgb_range=network.rgb_range, device=device, val_set=val_set)
    weight_images, arch_images = search_splits(train_set, cfg, arch_set)
    run = run_search_family if cfg.budgets else run_search
    return run(space, cfg, task=task, weight_data=weight_images, arch_data=arch_images,
               run_dir=run_dir, device=device, resume=resume, resume_safe=RESUME_SAFE,
               console=console, progress=progress)
