"""The differentiable complexity term of the architecture loss.

Its weight means the same for every spec, width and HR size:

- with a budget, ``weight · relu(E[cost] / budget − 1)``: ``weight`` loss units (the
  task loss is on the 0–1 scale) per 100 % of expected cost above the budget, nothing
  within it. Without ``weight``, `DEFAULT_BUDGET_WEIGHT`.
- without a budget, only when ``weight`` is given: ``weight · (E[cost] − min) /
  (max − min)`` over the space's cheapest and dearest architectures: ``weight`` loss
  units for going from the cheapest to the dearest.

``of="argmax"`` puts the cost of the current argmax architecture (what ``derive:
argmax`` would write, `CostReport.architecture`) in place of E[cost] in the value, with
E[cost]'s gradient (straight-through): the term then bounds the argmax, and is zero as
soon as that fits the budget, however much probability is left on dearer ops.

E[cost] (`CostReport.expected`) is additive over sites: it counts every site as if
its cell were read, while `CostReport.architecture` counts only what reaches the output
once the picks are made. The two agree whenever every cell reaches the output (DLSR:
all cells feed the final fusion); in a space where a pick can leave a cell unread,
E[cost] over-estimates the derived network's cost by that cell's share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spacelang.backends.cost import CostReport
from spacelang.backends.torch.supernet import SuperNet

__all__ = ["COST_OF", "DEFAULT_BUDGET_WEIGHT", "ComplexityPenalty"]

#: What the term's value measures: E[cost] under softmax(α/β), or the argmax's cost.
COST_OF = ("expected", "argmax")

#: The weight of the hinge when a budget is given without a weight: one loss unit per
#: 100 % over budget (an L1 loss on the 0–1 scale is a few hundredths).
DEFAULT_BUDGET_WEIGHT = 1.0


class ComplexityPenalty:
    """The expected cost (Multi-Adds or parameters) under the supernet's α/β, as a loss
    term; see the module docstring for what ``weight`` means with and without ``budget``.
    """

    def __init__(self, report: CostReport, field: str, weight: float | None,
                 budget: int | None = None, of: str = "expected"):
        if of not in COST_OF:
            raise ValueError(f"'of' must be one of {COST_OF}, got {of!r}")
        self.report = report
        self.field = field
        self.budget = budget
        self.of = of
        if weight is None:
            weight = DEFAULT_BUDGET_WEIGHT if budget is not None else 0.0
        self.weight = float(weight)
        self.minimum = report.extreme(field, min)
        self.maximum = report.extreme(field, max)

    @property
    def active(self) -> bool:
        return self.weight > 0 and self.report.searchable

    def expected(self, net: SuperNet) -> torch.Tensor:
        """E[cost] under the supernet's current probabilities."""
        return self.report.expected(net.probabilities(), self.field)

    def __call__(self, net: SuperNet) -> torch.Tensor:
        if not self.active:
            return torch.zeros(())
        expected = self.expected(net)
        if self.of == "argmax":
            derived = getattr(self.report.architecture(net.decisions()), self.field)
            expected = expected + (derived - expected).detach()
        if self.budget is not None:
            return self.weight * F.relu(expected / self.budget - 1)
        span = self.maximum - self.minimum
        if span <= 0:
            return torch.zeros(())
        return self.weight * (expected - self.minimum) / span

    def describe(self) -> str:
        """One line for the run's log: what the term is."""
        unit = "parameters" if self.field == "params" else "Multi-Adds"
        if not self.active:
            return "no complexity term"
        what = f"E[{unit}]" if self.of == "expected" else f"{unit} of the argmax"
        if self.budget is not None:
            return f"complexity: {self.weight:g} · relu({what} / {self.budget:,} − 1)"
        return (f"complexity: {self.weight:g} · ({what} − {self.minimum:,}) / "
                f"({self.maximum:,} − {self.minimum:,})")
