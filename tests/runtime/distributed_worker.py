"""Scenarios that `test_distributed.py` runs on several ranks under torchrun.

``python -m torch.distributed.run --nproc-per-node 2 distributed_worker.py SCENARIO IMAGES OUT``
runs SCENARIO on every rank with the images in IMAGES; each rank leaves its results in OUT
(``<name>-rank<r>.pt`` / ``.txt``). The test process imports this file too, for the
one-process reference runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

import spacelang
import spacelang.nas.search as nas_search
from spacelang.runtime import distributed
from spacelang.sr.config import SearchConfig, TrainConfig
from spacelang.sr.data import folder
from spacelang.sr.images import write_image
from spacelang.sr.search import search
from spacelang.sr.train import TrainError, train

# Smooth everywhere, with a choice site used twice and a pick site.
SMOOTH = """\
import "ops.space"

op squash(x: c) {
    return sigmoid(conv_1x1(x))
}

choice mix = [conv_1x1, conv_3x3, squash]

network smooth(C = 4, scale = 2, rgb_range = 1) {
    a = conv(input, C, k=3)
    b = sigmoid(mix(a))
    c = sigmoid(mix(b))
    d = conv(concat(pick 2 of [a, b, c]), C, k=1)
    return pixel_shuffle(conv(d, 3 * scale * scale, k=3), scale)
}
"""

FIXED = """\
network tiny(C = 4, scale = 2, rgb_range = 1) {
    f = conv(input, C, k=3)
    return pixel_shuffle(conv(f, 3 * scale * scale, k=3), scale)
}
"""

STRATEGIES = ("darts1", "darts2", "gdas")


def write_images(root: Path, count: int = 4, size: int = 48) -> None:
    """``count`` images of a few random sinusoids each."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        image = np.zeros((size, size, 3))
        for _ in range(6):
            fy, fx = rng.uniform(-0.6, 0.6, 2)
            amplitude = rng.uniform(10, 30, 3)
            image += amplitude * np.sin(fy * yy + fx * xx + rng.uniform(0, 2 * np.pi))[..., None]
        write_image(root / f"img{i}.png", np.clip(image + 128, 0, 255).astype(np.uint8))


def search_config(strategy: str, **changes) -> SearchConfig:
    values = {"strategy": strategy, "iterations": 6, "arch_warmup": 1, "patch_size": 16,
              "batch_size": 4, "epoch_length": 8, "weight_lr": 3e-3, "arch_lr": 1e-2,
              "complexity": "macs", "complexity_weight": 0.1, "hr_size": (64, 64),
              "log_every": 1, "checkpoint_every": 1, "val_every": 1000, "seed": 0}
    values.update(changes)
    return SearchConfig(**values)


def run_search(strategy: str, images: Path, run_dir: Path, **changes) -> dict:
    """A short search of SMOOTH; returns this rank's final supernet state (α/β, weights).

    It checkpoints after every update, so the loop also checks after each one that every
    rank holds the same parameters.
    """
    space = spacelang.loads(SMOOTH, path=str(run_dir.parent / "smooth.space"))
    finished: list = []
    original = nas_search.finish

    def keep(space, net, *args, **kwargs):
        finished.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        return original(space, net, *args, **kwargs)

    nas_search.finish = keep
    try:
        search(space, search_config(strategy, **changes),
               train_set=folder(images, 2).materialize(), val_set=None, run_dir=run_dir,
               progress=False, device="cpu")
    finally:
        nas_search.finish = original
    return finished[0]


class FailingOnRank(Dataset):
    """Patches whose HR side is NaN from epoch 1 on, on rank 1 only."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        hr = torch.rand(3, 8, 8, generator=generator)
        lr = torch.nn.functional.avg_pool2d(hr[None], 2)[0]
        if self.epoch >= 1 and distributed.rank() == 1:
            hr = hr * float("nan")
        return lr, hr


def main(scenario: str, images: Path, out: Path) -> None:
    rank = distributed.init_from_env().rank
    torch.set_num_threads(1)
    if scenario == "lockstep":
        for strategy in STRATEGIES:
            state = run_search(strategy, images, out / f"run-{strategy}")
            torch.save(state, out / f"{strategy}-rank{rank}.pt")
        # the lockstep check names a tensor that one rank changed, on every rank
        if rank == 1:
            state["alphas.b"][0] += 1e-6
        (out / f"desync-rank{rank}.txt").write_text(
            str(distributed.check_lockstep(state)) + " " + str(distributed.check_lockstep(
                {k: v for k, v in state.items() if k != "alphas.b"})))
        # a NaN loss on rank 1 only stops both ranks at the same update
        cfg = TrainConfig(iterations=8, patch_size=8, batch_size=4, log_every=1,
                          checkpoint_every=1, val_every=1000, seed=0)
        space = spacelang.loads(FIXED, path=str(out / "tiny.space"))
        try:
            train(space.fixed(), cfg, train_set=FailingOnRank, val_set=None,
                  run_dir=out / "run-nan", rgb_range=1, progress=False, device="cpu")
            message = "finished"
        except TrainError as exc:
            message = str(exc)
        (out / f"nan-rank{rank}.txt").write_text(message)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
