"""Deterministic, resumable batch streams.

Batch ``k`` of a `BatchStream` depends only on ``(seed, k)``; streams never touch the
global RNGs, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from spacelang.runtime.distributed import shard, world_size

__all__ = ["BatchStream", "DatasetSource", "epoch_seed"]

# Streams of `epoch_seed`, so that different uses of the same (seed, epoch) are independent.
ORDER_STREAM = 0
PATCH_STREAM = 1
LOADER_STREAM = 2


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

    In a distributed run (`spacelang.runtime.distributed`) ``batch_size`` is the global
    batch: each rank yields its own contiguous ``batch_size / world`` slice of every batch
    and loads only those samples, so the ranks together see exactly the batches one process
    would.
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
        if batch_size % world_size():
            raise ValueError(
                f"batch_size {batch_size} (the global batch) does not split evenly over "
                f"{world_size()} ranks; make it a multiple of {world_size()}"
            )
        self.seed = seed
        self.position = start
        self.workers = workers
        self.pin_memory = pin_memory

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Sample indices of ``epoch`` as a ``(batches_per_epoch, batch_size)`` tensor."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, ORDER_STREAM))
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
            batches = shard(self.epoch_order(epoch)[offset:]).tolist()
            loader = DataLoader(
                self._dataset(epoch),
                batch_sampler=batches,
                num_workers=self.workers,
                pin_memory=self.pin_memory,
                # An explicit generator keeps DataLoader from drawing on the global torch RNG.
                generator=torch.Generator().manual_seed(
                    epoch_seed(self.seed, epoch, LOADER_STREAM)
                ),
            )
            for batch in loader:
                self.position += 1
                yield batch
