"""Search strategies: how α/β get their gradient, as registered objects.

A strategy says which supernet it needs (`supernet_options`: the relaxation `mode`,
partial channels), adjusts the supernet before each update (`prepare`: e.g. GDAS'
temperature), sets the gradients of the architecture parameters (`arch_gradient`) and
acts after each architecture step (`after_arch_step`: progressive pruning). Partial
channels and pruning are options of every strategy (`configure`): ``partial_channels``
K runs each choice site's candidates on 1/K of its channels (PC-DARTS); every
``prune_every`` architecture steps each choice site drops its live candidate of least
softmax(α) (each pick site its live candidate of least softmax(β)), sparing the derived
architecture, until ``prune_keep`` are left (a pick site: its k + ``prune_keep`` − 1)
(`SuperNet.prune`). `STRATEGIES` maps a config's
``strategy`` name to its class; `register_strategy` adds one, `make_strategy` builds one
from a config. ``loss_fn(output, target)`` is the task's loss; batches are ``(input, target)``.

The architecture objective is the task loss on the validation batch (``objective``
``"val"``, DARTS) or on the training batch plus the validation batch (``"train+val"``,
DLSR's search), plus the complexity penalty.

Under amp fp16 the search passes ``loss_scale`` S (a float or a 0-d tensor, from a
`torch.amp.GradScaler`): the strategy then sets S × the gradient, computed by
backpropagating S × the objective, so that α/β's small gradients do not underflow in the
float16 backward pass; the caller divides by S and skips the step when the result is not
finite. A strategy runs under fp16 only if its ``arch_gradient`` takes ``loss_scale``
(`takes_loss_scale`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from spacelang.backends.torch.supernet import SuperNet
from spacelang.runtime.distributed import average_gradients

__all__ = [
    "OBJECTIVES",
    "STRATEGIES",
    "Darts1",
    "Darts2",
    "Gdas",
    "Strategy",
    "arch_batches",
    "arch_gradient_first_order",
    "arch_gradient_unrolled",
    "make_strategy",
    "register_strategy",
    "takes_loss_scale",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Penalty = Callable[[SuperNet], torch.Tensor]
Batch = Sequence[torch.Tensor]
LossScale = float | torch.Tensor  # S > 0: a float or a 0-d tensor on the net's device


def _weights_of(net: SuperNet) -> list[torch.nn.Parameter]:
    return [p for p in net.weight_parameters() if p.requires_grad]


OBJECTIVES = ("val", "train+val")


def arch_batches(train_batch: Batch, val_batch: Batch, objective: str) -> list[Batch]:
    """The batches whose task losses the architecture objective sums."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return [val_batch] if objective == "val" else [train_batch, val_batch]


def _task_loss(net: SuperNet, batches: Sequence[Batch], loss_fn: LossFn) -> torch.Tensor:
    return sum((loss_fn(net(x), target) for x, target in batches), torch.zeros(()))


def arch_gradient_first_order(net: SuperNet, batch: Batch | Sequence[Batch], loss_fn: LossFn,
                              penalty: Penalty, loss_scale: LossScale = 1.0) -> torch.Tensor:
    """Set α/β gradients (times ``loss_scale``) from the batch (or the sum over a list of
    batches) at the current weights; return the loss (unscaled)."""
    batches = [batch] if isinstance(batch[0], torch.Tensor) else list(batch)
    loss = _task_loss(net, batches, loss_fn) + penalty(net)
    arch = net.arch_parameters()
    grads = torch.autograd.grad(loss * loss_scale, arch, allow_unused=True)
    for p, g in zip(arch, grads, strict=True):
        p.grad = torch.zeros_like(p) if g is None else g
    return loss.detach()


def arch_gradient_unrolled(net: SuperNet, train_batch: Batch, val_batch: Batch,
                           loss_fn: LossFn, penalty: Penalty, xi: float,
                           objective: str = "val",
                           loss_scale: LossScale = 1.0) -> torch.Tensor:
    """DARTS' second-order gradient: ∇α L_val(w − ξ∇w L_train(w, α), α), where L_val is
    the objective's loss (``"train+val"``: both batches at the unrolled weights); returns
    L_val at the unrolled weights.

    The Hessian-vector product is a central finite difference with
    ε = 0.01 / ‖∇w' L_val‖, as in DARTS. Weights are restored afterwards. In a distributed
    run the weight gradients are averaged over ranks where they set shared values (the
    virtual step, ε); the caller averages the α/β gradients it leaves.

    With ``loss_scale`` S (amp fp16) every backward pass runs on S × its loss, so that no
    gradient underflows in float16, and the result is S × the gradient: the virtual step
    takes ξ/S of the scaled training gradient, the weights move by the same 0.01 along
    ∇w' L_val as unscaled, and the difference quotient is divided by S once. The
    weights that autocast rounds to float16 still resolve that move: on a C = 8 DLSR
    supernet the scaled fp16 gradient is within 0.1% of float32's, the unscaled one
    22% off. When the training gradient is not finite (under scaling: S overflowed it)
    there are no unrolled weights: α/β's gradients are NaN, so that the caller skips
    the step (fp16) or stops, and the loss returned is L_val at the current weights.
    """
    weights = _weights_of(net)
    arch = net.arch_parameters()
    backup = [w.detach().clone() for w in weights]
    x, target = train_batch
    batches = arch_batches(train_batch, val_batch, objective)
    train_grads = torch.autograd.grad(loss_fn(net(x), target) * loss_scale, weights,
                                      allow_unused=True)
    # distributed: every rank unrolls the same weights (ε below agrees likewise)
    train_grads = average_gradients(train_grads, weights)
    finite = [torch.isfinite(g).all() for g in train_grads if g is not None]
    if finite and not bool(torch.stack(finite).all()):  # one device sync
        for p in arch:
            p.grad = torch.full_like(p, math.nan)
        with torch.no_grad():
            return (_task_loss(net, batches, loss_fn) + penalty(net)).detach()
    with torch.no_grad():
        for w, g in zip(weights, train_grads, strict=True):
            if g is not None:
                w.sub_(xi / loss_scale * g)
    val_loss = _task_loss(net, batches, loss_fn) + penalty(net)
    grads = torch.autograd.grad(val_loss * loss_scale, [*arch, *weights], allow_unused=True)
    d_arch = [torch.zeros_like(p) if g is None else g
              for p, g in zip(arch, grads[:len(arch)], strict=True)]
    d_weights = [torch.zeros_like(w) if g is None else g
                 for w, g in zip(weights, average_gradients(grads[len(arch):], weights),
                                 strict=True)]
    norm = torch.sqrt(sum((g * g).sum() for g in d_weights))
    eps = 0.01 / (float(norm) + 1e-12)

    def train_arch_grad(sign: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for w, b, d in zip(weights, backup, d_weights, strict=True):
                w.copy_(b + sign * eps * d)
        g = torch.autograd.grad(loss_fn(net(x), target) * loss_scale, arch,
                                allow_unused=True)
        return [torch.zeros_like(p) if v is None else v for p, v in zip(arch, g, strict=True)]

    plus, minus = train_arch_grad(+1.0), train_arch_grad(-1.0)
    with torch.no_grad():
        for w, b in zip(weights, backup, strict=True):
            w.copy_(b)
    # ε is 1/S of the unscaled one (‖∇w' L_val‖ came scaled), the difference S × it
    for p, d, gp, gm in zip(arch, d_arch, plus, minus, strict=True):
        p.grad = d - xi * (gp - gm) / (2 * eps * loss_scale)
    return val_loss.detach()


class Strategy:
    """How the architecture parameters learn; subclasses set `name` and may set `mode`."""

    name: ClassVar[str]
    mode: ClassVar[str] = "darts"  # the SuperNet relaxation the strategy needs
    objective: str = "val"  # the architecture objective, one of OBJECTIVES
    # unconfigured: no partial channels, no pruning (the config's defaults: `configure`)
    partial_channels: int = 1  # K: choice sites see 1/K of their channels (1: all)
    prune_every: int = 0  # architecture steps between prunes (0: never)
    prune_keep: int  # live candidates per choice site that pruning leaves

    @classmethod
    def from_config(cls, cfg: Any) -> Strategy:
        """The strategy a search config describes."""
        return cls().configure(cfg)

    def configure(self, cfg: Any) -> Strategy:
        """Take the options every strategy has from a search config; returns self."""
        self.objective = cfg.arch_objective
        self.partial_channels = cfg.partial_channels
        self.prune_every, self.prune_keep = cfg.prune_every, cfg.prune_keep
        return self

    def supernet_options(self) -> dict[str, Any]:
        """Keyword arguments for `Space.supernet` (mode, temperature, partial channels,
        whether the pruning masks are saved)."""
        return {"mode": self.mode, "partial_channels": self.partial_channels,
                "pruning": self.prune_every > 0}

    def prepare(self, net: SuperNet, iteration: int, total: int) -> None:
        """Adjust ``net`` before update ``iteration`` (0-based) of ``total``."""

    def after_arch_step(self, net: SuperNet, steps: int,
                        protect: Callable[[], Mapping[str, Any]] | None = None
                        ) -> dict[str, str]:
        """After architecture step number ``steps`` (1-based): every ``prune_every``
        steps, prune ``net`` (`SuperNet.prune`), sparing the decisions ``protect()``
        returns (the architecture the search derives now); returns site key → dropped
        label."""
        if self.prune_every and steps % self.prune_every == 0:
            return net.prune(self.prune_keep, None if protect is None else protect())
        return {}

    def arch_gradient(self, net: SuperNet, train_batch: Batch, val_batch: Batch,
                      loss_fn: LossFn, penalty: Penalty, weight_lr: float,
                      loss_scale: LossScale = 1.0) -> torch.Tensor:
        """Set the gradients of ``net.arch_parameters()`` to ``loss_scale`` × the
        objective's gradient (backpropagate the scaled loss: under fp16 the unscaled one
        underflows); return the architecture loss (unscaled)."""
        raise NotImplementedError


STRATEGIES: dict[str, type[Strategy]] = {}


def takes_loss_scale(cls: type[Strategy]) -> bool:
    """Whether ``cls.arch_gradient`` takes ``loss_scale``, which amp fp16 needs."""
    return "loss_scale" in inspect.signature(cls.arch_gradient).parameters


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` available as ``strategy: <cls.name>``."""
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str, cfg: Any) -> Strategy:
    """The registered strategy ``name``, configured from ``cfg``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name].from_config(cfg)


@register_strategy
class Darts1(Strategy):
    """First-order DARTS: the validation gradient at the current weights."""

    name = "darts1"

    def arch_gradient(self, net, train_batch, val_batch, loss_fn, penalty, weight_lr,
                      loss_scale=1.0):
        return arch_gradient_first_order(
            net, arch_batches(train_batch, val_batch, self.objective), loss_fn, penalty,
            loss_scale)


@register_strategy
class Darts2(Strategy):
    """Second-order DARTS: unrolled by one weight step of the current LR. Under amp fp16
    it takes the loss scale through every backward pass of the unroll
    (`arch_gradient_unrolled` says how, and why the result stays right)."""

    name = "darts2"

    def arch_gradient(self, net, train_batch, val_batch, loss_fn, penalty, weight_lr,
                      loss_scale=1.0):
        return arch_gradient_unrolled(net, train_batch, val_batch, loss_fn, penalty, weight_lr,
                                      self.objective, loss_scale)


@register_strategy
class Gdas(Strategy):
    """GDAS: one candidate per choice site sampled by Gumbel-softmax, k per pick site by
    Gumbel top-k (straight-through), temperature annealed linearly.

    Distributed, every rank draws the same sample (the loop seeds each update from
    ``(seed, iteration)``), so the ranks run one path per forward, as one process would on
    the global batch: the update is that process's, whatever the number of ranks.
    """

    name = "gdas"
    mode = "gdas"

    def __init__(self, tau_max: float = 10.0, tau_min: float = 0.1, hard: bool = True):
        self.tau_max, self.tau_min, self.hard = tau_max, tau_min, hard

    @classmethod
    def from_config(cls, cfg: Any) -> Strategy:
        return cls(cfg.gdas_tau_max, cfg.gdas_tau_min, cfg.gdas_hard).configure(cfg)

    def supernet_options(self) -> dict[str, Any]:
        return {**super().supernet_options(), "hard": self.hard, "tau": self.tau_max}

    def tau(self, iteration: int, total: int) -> float:
        """The temperature at update ``iteration``: ``tau_max`` down to ``tau_min``."""
        t = iteration / max(1, total - 1)
        return self.tau_max - (self.tau_max - self.tau_min) * t

    def prepare(self, net: SuperNet, iteration: int, total: int) -> None:
        net.tau = self.tau(iteration, total)

    def arch_gradient(self, net, train_batch, val_batch, loss_fn, penalty, weight_lr,
                      loss_scale=1.0):
        return arch_gradient_first_order(
            net, arch_batches(train_batch, val_batch, self.objective), loss_fn, penalty,
            loss_scale)
