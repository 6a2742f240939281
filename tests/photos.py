"""Synthetic photographs for tests that train, search or evaluate: smooth colour waves,
so that super-resolution is learnable and PSNR meaningful."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spacelang.sr.images import write_image


def write_photos(folder: Path, count: int, size: int, *, seed: int = 0,
                 prefix: str = "pic") -> Path:
    """`folder/{prefix}{i}.png`, `count` RGB images of `size`×`size`; returns `folder`."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [np.sin(2 * np.pi * (xx + yy * (c + 1) / 3) + phase[c]) for c in range(3)]
        image = (np.stack(channels, axis=-1) * 100 + 128).clip(0, 255).astype(np.uint8)
        write_image(folder / f"{prefix}{i}.png", image)
    return folder
