"""The SR task's run configurations: `TrainConfig` (retraining) and `SearchConfig` (search).

Both are typed configs of `spacelang.runtime.config` (YAML, checked by annotation). The
loss is computed on the 0–1 scale whatever the network's input range, so ``grad_clip``
and ``complexity_weight`` mean the same for every spec. ``lr_warmup`` is the weights' LR
warm-up; ``arch_warmup`` (search) the iterations before α/β start to move.
"""

import difflib
from typing import Any, ClassVar, Literal

import attrs

from spacelang.nas.strategies import STRATEGIES, takes_loss_scale
from spacelang.runtime.config import (
    Check,
    ConfigError,
    Count,
    adam_betas,
    all_positive,
    dump_config,
    first_problem,
    load_config,
    non_negative,
    parse_config,
    parse_overrides,
    positive,
    valid_seed,
    validated,
)
from spacelang.runtime.speed import Amp

__all__ = [
    "ConfigError",
    "SearchConfig",
    "TrainConfig",
    "dump_config",
    "load_config",
    "parse_config",
    "parse_overrides",
]

Schedule = Literal["step", "cosine"]
WeightSchedule = Literal["step", "multistep", "cosine"]
ArchSchedule = Literal["constant", "step", "cosine"]
Loss = Literal["l1", "l1_hfen"]
Hfen = Literal["log9", "dlsr"]
Complexity = Literal["macs", "params", "none"]
ArchObjective = Literal["val", "train+val"]
ArchStepOrder = Literal["before", "after"]
ArchSplit = Literal["alternate", "ranges"]

#: Settings that may change when a run is resumed. The rest would make the resumed run
#: differ from the one its checkpoint began, so a change to them is refused. ``iterations``
#: may grow (or shrink) to extend a run; schedules that depend on it (cosine LR, GDAS τ)
#: then follow the new length from the resumed iteration on.
#: ``amp``, ``channels_last`` and ``compile`` change how the arithmetic runs, not what is
#: optimised (a run may move to another machine); the loop prints such changes.
RESUME_SAFE = frozenset(
    {"iterations", "val_every", "log_every", "checkpoint_every", "workers", "data", "val_data",
     "derive", "amp", "channels_last", "compile"}
)

_WARMUP_RENAMED = (
    "'warmup' was split in two: use 'lr_warmup' (linear LR warm-up of the weights, "
    "iterations) or, in a search, 'arch_warmup' (iterations before α/β updates start)"
)

#: Option names from BasicSR-style option files, to point people at the new name.
_FAMILIAR_NAMES: dict[str, str] = {
    "total_iter": "iterations",
    "niter": "iterations",
    "learning_rate": "lr",
    "manual_seed": "seed",
    "gt_size": "patch_size",
    "batch_size_per_gpu": "batch_size",
    "num_worker": "workers",
    "num_workers": "workers",
    "num_worker_per_gpu": "workers",
    "val_freq": "val_every",
    "print_freq": "log_every",
    "save_checkpoint_freq": "checkpoint_every",
    "warmup_iter": "lr_warmup",
    "lr_schedule": "schedule",
    "scheduler": "schedule",
    "clip_grad": "grad_clip",
    "grad_clip_norm": "grad_clip",
}

#: Checks of the fields every run has: its data and its loop.
_DATA_CHECKS: dict[str, Check] = {
    "scale": positive,
    "patch_size": positive,
    "batch_size": positive,
    "iterations": positive,
}
_RUN_CHECKS: dict[str, Check] = {
    "lr_warmup": non_negative,
    "hfen_weight": non_negative,
    "val_every": positive,
    "log_every": positive,
    "checkpoint_every": positive,
    "seed": valid_seed,
    "workers": non_negative,
    "epoch_length": positive,
    "grad_clip": positive,
}


def _registered_strategy(name: str) -> str | None:
    if name in STRATEGIES:
        return None
    known = ", ".join(repr(s) for s in STRATEGIES)
    close = difflib.get_close_matches(name, list(STRATEGIES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"must be one of {known}; got {name!r}{hint}"


def _milestones(value: tuple[int, ...]) -> str | None:
    if any(m <= 0 for m in value) or list(value) != sorted(set(value)):
        return f"must be increasing iterations > 0, got {list(value)!r}"
    return None


def _image_range(value: tuple[int, int] | None) -> str | None:
    if value is None or 0 <= value[0] < value[1]:
        return None
    return f"must be [start, end) with 0 <= start < end, got {list(value)!r}"


def _search_problems(cfg: Any) -> list[tuple[bool, tuple[str, ...], str]]:
    other = {"macs": "budget_params", "params": "budget_macs"}.get(cfg.complexity)
    ranges = cfg.arch_split == "ranges"
    return [
        (
            cfg.weight_schedule == "multistep" and not cfg.milestones,
            ("milestones", "weight_schedule"),
            "'weight_schedule: multistep' needs 'milestones' (iterations where the LR "
            "is multiplied by 'gamma')",
        ),
        (
            ranges and (cfg.weight_images is None or cfg.arch_images is None),
            ("arch_split", "weight_images", "arch_images"),
            "'arch_split: ranges' needs 'weight_images' and 'arch_images', e.g. "
            "[0, 3000] and [3000, 3450] (image indices, end excluded)",
        ),
        (
            not ranges and (cfg.weight_images is not None or cfg.arch_images is not None),
            ("weight_images", "arch_images", "arch_split"),
            "'weight_images'/'arch_images' are read only with 'arch_split: ranges'",
        ),
        (
            cfg.arch_data is not None and ranges,
            ("arch_data", "arch_split"),
            "give either 'arch_data' (a second folder trains α/β) or 'arch_split: ranges', "
            "not both",
        ),
        (
            cfg.complexity == "none" and (cfg.budget_macs or cfg.budget_params or cfg.budgets),
            ("complexity", "budget_macs", "budget_params", "budgets"),
            "a budget is set but 'complexity' is 'none'",
        ),
        (
            other is not None and getattr(cfg, other) is not None,
            (other or "", "complexity"),
            f"'{other}' is set but 'complexity' is {cfg.complexity!r}; the budget must be "
            f"of the unit the penalty counts (set 'complexity: "
            f"{'params' if other == 'budget_params' else 'macs'}')",
        ),
        (
            bool(cfg.budgets) and cfg.budget is not None,
            ("budgets", "budget_macs", "budget_params"),
            "give either 'budgets' (a Pareto family) or a single budget, not both",
        ),
    ]


def _common_problems(cfg: Any) -> list[tuple[bool, tuple[str, ...], str]]:
    return [
        (
            cfg.patch_size % cfg.scale != 0,
            ("patch_size", "scale"),
            f"'patch_size' ({cfg.patch_size}) must be a multiple of 'scale' ({cfg.scale})",
        ),
        (
            cfg.lr_warmup >= cfg.iterations,
            ("lr_warmup", "iterations"),
            f"'lr_warmup' ({cfg.lr_warmup}) must be less than 'iterations' ({cfg.iterations})",
        ),
    ]


@attrs.frozen(kw_only=True, field_transformer=validated)
class TrainConfig:
    """Supervised SR training run."""

    scale: int = 2
    patch_size: int = 64  # HR patch side
    batch_size: int = 16
    iterations: int = 1000
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: Schedule = "cosine"
    step_size: int = 200000
    gamma: float = 0.5
    lr_warmup: int = 0  # linear LR warm-up iterations
    loss: Loss = "l1"
    hfen_weight: float = 0.2  # for loss: l1_hfen
    hfen: Hfen = "log9"  # for loss: l1_hfen; spacelang.sr.losses.HFEN_FORMS
    val_every: int = 200
    log_every: int = 10
    checkpoint_every: int = 100
    seed: int = 0
    workers: int = 0
    epoch_length: int | None = None  # patches per epoch; None: the dataset's own length
    data: str | None = None
    val_data: str | None = None
    grad_clip: float | None = None  # max gradient norm of the 0–1-scale loss
    # how the network computes (spacelang.runtime.speed): autocast of the forward pass
    # (fp16: CUDA only), NHWC weights, torch.compile
    amp: Amp = "fp32"
    channels_last: bool = False
    compile: bool = False

    checks: ClassVar[dict[str, Check]] = {
        **_DATA_CHECKS,
        "lr": positive,
        "betas": adam_betas,
        "weight_decay": non_negative,
        "step_size": positive,
        "gamma": positive,
        **_RUN_CHECKS,
    }
    renamed: ClassVar[dict[str, str]] = {"warmup": _WARMUP_RENAMED}
    familiar: ClassVar[dict[str, str]] = _FAMILIAR_NAMES

    def __attrs_post_init__(self) -> None:
        first_problem(_common_problems(self))


@attrs.frozen(kw_only=True, field_transformer=validated)
class SearchConfig:
    """Differentiable architecture search run."""

    scale: int = 2
    patch_size: int = 48  # HR patch side
    batch_size: int = 16
    iterations: int = 2000
    arch_warmup: int = 200  # iterations before architecture updates start
    weight_lr: float = 5e-4
    weight_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    weight_schedule: WeightSchedule = "cosine"
    lr_warmup: int = 0  # linear LR warm-up of the weights, iterations
    step_size: int = 200000  # for weight_schedule: step
    milestones: tuple[int, ...] = ()  # for weight_schedule: multistep (iterations)
    gamma: float = 0.5  # for weight_schedule: step, multistep
    arch_lr: float = 3e-4
    arch_schedule: ArchSchedule = "constant"  # over the iterations after arch_warmup
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    arch_objective: ArchObjective = "val"  # val: DARTS; train+val: DLSR's L_train + L_val
    arch_step_order: ArchStepOrder = "before"  # α/β step before or after the weight step
    arch_split: ArchSplit = "alternate"  # which training images train α/β (not arch_data)
    weight_images: tuple[int, int] | None = None  # for arch_split: ranges, [start, end)
    arch_images: tuple[int, int] | None = None  # for arch_split: ranges, [start, end)
    arch_data: str | None = None  # a second folder that trains α/β (weights: all of data)
    strategy: str = "darts1"  # a name in spacelang.nas.strategies.STRATEGIES
    gdas_tau_max: float = 10.0
    gdas_tau_min: float = 0.1
    gdas_hard: bool = True
    # PC-DARTS: each choice site's candidates see the first 1/K of its channels, the rest
    # bypass them (1: off); spacelang.backends.torch.supernet
    partial_channels: int = 1
    prune_every: int = 0  # architecture updates between prunes of each site's weakest (0: off)
    prune_keep: int = 2  # candidates per choice site that pruning leaves (pick: k + this − 1)
    loss: Loss = "l1"
    hfen_weight: float = 0.2
    hfen: Hfen = "log9"
    complexity: Complexity = "macs"
    # None: spacelang.nas.penalty.DEFAULT_BUDGET_WEIGHT with a budget, no term without one
    complexity_weight: float | None = None
    budget_macs: Count | None = None  # Multi-Adds at hr_size, e.g. 12G
    budget_params: Count | None = None  # e.g. 300K
    budgets: tuple[Count, ...] = ()  # a Pareto family: one search per budget (complexity's unit)
    complexity_of: Literal["expected", "argmax"] = "expected"  # spacelang.nas.penalty
    # which architecture is derived: spacelang.nas.selection (budget: the most probable
    # one within the budget, spending it; argmax: softmax's most likely per site)
    derive: Literal["budget", "argmax"] = "budget"
    hr_size: tuple[int, int] = (1280, 720)  # (width, height) at which complexity is measured
    val_every: int = 200
    log_every: int = 10
    checkpoint_every: int = 100
    seed: int = 0
    workers: int = 0
    data: str | None = None
    val_data: str | None = None
    epoch_length: int | None = None
    grad_clip: float | None = 5.0  # max gradient norm of the 0–1-scale loss
    # how the network computes (spacelang.runtime.speed): autocast of the forward pass
    # (fp16: CUDA only; both the weight and the α/β step scale their loss), NHWC weights,
    # torch.compile
    amp: Amp = "fp32"
    channels_last: bool = False
    compile: bool = False
    overrides: dict[str, int] = attrs.Factory(dict)  # spec parameter overrides, e.g. C: 16

    checks: ClassVar[dict[str, Check]] = {
        **_DATA_CHECKS,
        "arch_warmup": non_negative,
        "milestones": _milestones,
        "weight_images": _image_range,
        "arch_images": _image_range,
        "strategy": _registered_strategy,
        "weight_lr": positive,
        "weight_betas": adam_betas,
        "weight_decay": non_negative,
        "step_size": positive,
        "gamma": positive,
        "arch_lr": positive,
        "arch_betas": adam_betas,
        "arch_weight_decay": non_negative,
        "gdas_tau_max": positive,
        "gdas_tau_min": positive,
        "partial_channels": positive,
        "prune_every": non_negative,
        "prune_keep": positive,
        "complexity_weight": non_negative,
        "budgets": all_positive,
        "budget_macs": positive,
        "budget_params": positive,
        "hr_size": all_positive,
        **_RUN_CHECKS,
    }
    renamed: ClassVar[dict[str, str]] = {"warmup": _WARMUP_RENAMED}
    familiar: ClassVar[dict[str, str]] = _FAMILIAR_NAMES

    def __attrs_post_init__(self) -> None:
        problems = _common_problems(self)
        problems += [
            (
                self.arch_warmup >= self.iterations,
                ("arch_warmup", "iterations"),
                f"'arch_warmup' ({self.arch_warmup}) must be less than "
                f"'iterations' ({self.iterations})",
            ),
            (
                self.gdas_tau_min > self.gdas_tau_max,
                ("gdas_tau_min", "gdas_tau_max"),
                f"'gdas_tau_min' ({self.gdas_tau_min}) must not exceed "
                f"'gdas_tau_max' ({self.gdas_tau_max})",
            ),
            *_search_problems(self),
            (
                self.amp == "fp16" and self.strategy in STRATEGIES
                and not takes_loss_scale(STRATEGIES[self.strategy]),
                ("amp", "strategy"),
                f"'amp: fp16' scales the architecture loss, so that float16 gradients of α/β "
                f"do not underflow, but strategy {self.strategy!r} cannot take a loss scale "
                "(its arch_gradient has no 'loss_scale' argument); use 'amp: bf16'",
            ),
        ]
        first_problem(problems)

    @property
    def budget(self) -> int | None:
        """The single budget of the ``complexity`` unit (None: none, or a Pareto family)."""
        if self.complexity == "params":
            return self.budget_params
        return self.budget_macs if self.complexity == "macs" else None

    @property
    def cost_field(self) -> str:
        """The `Cost` field the complexity term and the budget measure: params or macs."""
        return "params" if self.complexity == "params" else "macs"

    def for_budget(self, budget: int) -> "SearchConfig":
        """This config with one budget of its complexity unit (a member of `budgets`)."""
        return attrs.evolve(self, budgets=(), **{f"budget_{self.cost_field}": budget})

