"""The differentiable complexity term of the architecture loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spacelang.backends.cost import CostReport
from spacelang.backends.torch.supernet import SuperNet

__all__ = ["ComplexityPenalty"]


class ComplexityPenalty:
    """The expected cost (Multi-Adds or parameters) under softmax(α/β), as a loss term.

    Without a budget: `weight · E[cost] / max cost`. With a budget: `weight ·
    relu(E[cost] / budget − 1)`, zero while the expected cost is within it. The expected
    cost is a torch expression of α/β, so its gradient reaches them.
    """

    def __init__(self, report: CostReport, field: str, weight: float,
                 budget: int | None = None):
        self.report = report
        self.field = field
        self.weight = weight
        self.budget = budget
        self.scale = float(budget or max(1, report.extreme(field, max)))

    def expected(self, net: SuperNet) -> torch.Tensor:
        """E[cost] under the supernet's current probabilities."""
        return self.report.expected(net.probabilities(), self.field)

    def __call__(self, net: SuperNet) -> torch.Tensor:
        if self.weight == 0 or not self.report.searchable:
            return torch.zeros(())
        ratio = self.expected(net) / self.scale
        if self.budget is not None:
            return self.weight * F.relu(ratio - 1)
        return self.weight * ratio
