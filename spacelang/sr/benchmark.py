"""Benchmark roots: several evaluation sets under one folder, scored set by set.

A benchmark root holds one folder per set, each in the benchmark layout
(``ROOT/Set5/HR/*.png`` and optionally ``ROOT/Set5/LR_bicubic/X{s}/*x{s}.png``). The
usual sets come first in their customary order (Set5, Set14, B100, Urban100,
Manga109); any other set folder follows in name order. Each set is scored by
:func:`spacelang.sr.train.evaluate`, so its numbers are those of evaluating the set
on its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
from torch import nn

from spacelang.sr.data import ImagePair, ImageSet, OnError, open_dataset
from spacelang.sr.task import evaluate

__all__ = ["USUAL_SETS", "SetScore", "counted", "find_sets", "is_benchmark_root", "open_sets",
           "score_sets"]

USUAL_SETS = ("Set5", "Set14", "B100", "BSD100", "Urban100", "Manga109")


@attrs.frozen
class SetScore:
    """Mean PSNR/SSIM of one set at one scale; ``per_image`` rows are ``{name, psnr, ssim}``."""

    name: str
    scale: int
    psnr: float
    ssim: float
    per_image: tuple[dict[str, Any], ...]

    @property
    def count(self) -> int:
        return len(self.per_image)

    def as_json(self) -> dict[str, Any]:
        return {"set": self.name, "scale": self.scale, "psnr": self.psnr, "ssim": self.ssim,
                "count": self.count, "images": list(self.per_image)}


def _is_set(folder: Path) -> bool:
    return folder.is_dir() and (folder / "HR").is_dir() and not folder.name.startswith(".")


def find_sets(root: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """The set folders under ``root`` as ``(name, path)``, usual sets first."""
    base = Path(root).expanduser()
    found = {p.name: p for p in sorted(base.iterdir()) if _is_set(p)} if base.is_dir() else {}
    usual = [name for name in USUAL_SETS if name in found]
    rest = [name for name in found if name not in USUAL_SETS]
    return [(name, found[name]) for name in usual + rest]


def is_benchmark_root(source: str | os.PathLike[str] | None) -> bool:
    """True for a folder that is not itself a set but holds at least one set folder."""
    if source is None or source == "embedded":
        return False
    base = Path(source).expanduser()
    return base.is_dir() and not (base / "HR").is_dir() and bool(find_sets(base))


def counted(images: ImageSet, advance: Callable[[], None]) -> Sequence[ImagePair]:
    """``images``, calling ``advance()`` after each image has been used (progress bars)."""
    return _Counted(images, advance)


class _Counted(Sequence[ImagePair]):
    """An image set that calls ``advance()`` after each image has been used."""

    def __init__(self, images: ImageSet, advance: Callable[[], None]) -> None:
        self._images = images
        self._advance = advance

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index):  # type: ignore[override]
        return self._images[index]

    def __iter__(self) -> Iterator[ImagePair]:
        for pair in self._images:
            yield pair
            self._advance()


def score_sets(
    model: nn.Module,
    sets: Sequence[tuple[str, ImageSet]],
    scale: int,
    rgb_range: int,
    *,
    y_channel: bool = True,
    save_dir: Path | None = None,
    on_image: Callable[[str], None] | None = None,
) -> list[SetScore]:
    """Score ``model`` on each named set; SR outputs go to ``save_dir/<set>/X<scale>/``.

    ``on_image(set_name)`` is called after each image (for a progress bar).
    """
    scores = []
    for name, images in sets:
        used: Sequence[ImagePair] = images
        if on_image is not None:
            used = _Counted(images, lambda name=name: on_image(name))
        target = save_dir / name / f"X{scale}" if save_dir is not None else None
        psnr, ssim, rows = evaluate(model, used, scale, rgb_range, y_channel=y_channel,
                                    save_dir=target)
        scores.append(SetScore(name, scale, psnr, ssim, tuple(rows)))
    return scores


def open_sets(root: str | os.PathLike[str], scale: int, *,
              on_error: OnError = "fail") -> list[tuple[str, ImageSet]]:
    """Open every set under a benchmark root at ``scale`` (see :func:`find_sets`)."""
    return [(name, open_dataset(path, scale, split="val", on_error=on_error))
            for name, path in find_sets(root)]

