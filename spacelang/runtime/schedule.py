"""Learning rate as a closed-form function of the iteration (so resuming reproduces it)."""

from __future__ import annotations

import bisect
import math
from typing import Literal

import attrs
import torch

__all__ = ["LRSchedule"]


@attrs.frozen(kw_only=True)
class LRSchedule:
    """Learning-rate multiplier as a closed-form function of the iteration.

    Because nothing but the iteration determines the LR, resuming reproduces it exactly.
    ``kind``: ``"cosine"`` (to ``min_factor`` at ``total``), ``"step"`` (times ``gamma`` every
    ``step_size`` iterations), ``"multistep"`` (times ``gamma`` at each of the sorted
    ``milestones``, iterations) or ``"constant"``; the first ``warmup`` iterations ramp up
    linearly.
    """

    total: int
    kind: Literal["cosine", "step", "multistep", "constant"] = "cosine"
    warmup: int = 0
    step_size: int = 200000
    gamma: float = 0.5
    milestones: tuple[int, ...] = ()
    min_factor: float = 0.0

    def factor(self, iteration: int) -> float:
        """Multiplier of the base LR for the update at 0-based ``iteration``."""
        warm = (iteration + 1) / self.warmup if iteration < self.warmup else 1.0
        if self.kind == "constant":
            main = 1.0
        elif self.kind == "step":
            main = self.gamma ** (iteration // self.step_size)
        elif self.kind == "multistep":
            main = self.gamma ** bisect.bisect_right(sorted(self.milestones), iteration)
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
