"""The SR task's run configurations: `TrainConfig` (retraining) and `SearchConfig` (search).

Both are typed configs of `spacelang.runtime.config` (YAML, checked by annotation). The
loss is computed on the 0–1 scale whatever the network's input range, so ``grad_clip``
and ``complexity_weight`` mean the same for every spec. ``lr_warmup`` is the weights' LR
warm-up; ``arch_warmup`` (search) the iterations before α/β start to move.
"""

import difflib
from typing import Any, ClassVar, Literal

import attrs

from spacelang.nas.strategies import STRATEGIES
from spacelang.runtime.config import (
    Check,
    ConfigError,
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
ArchSchedule = Literal["constant", "step", "cosine"]
Loss = Literal["l1", "l1_hfen"]
Complexity = Literal["macs", "params", "none"]

#: Settings that may change when a run is resumed. The rest would make the resumed run
#: differ from the one its checkpoint began, so a change to them is refused. ``iterations``
#: may grow (or shrink) to extend a run; schedules that depend on it (cosine LR, GDAS τ)
#: then follow the new length from the resumed iteration on.
RESUME_SAFE = frozenset(
    {"iterations", "val_every", "log_every", "checkpoint_every", "workers", "data", "val_data"}
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
    val_every: int = 200
    log_every: int = 10
    checkpoint_every: int = 100
    seed: int = 0
    workers: int = 0
    epoch_length: int | None = None  # patches per epoch; None: the dataset's own length
    data: str | None = None
    val_data: str | None = None
    grad_clip: float | None = None  # max gradient norm of the 0–1-scale loss

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
    weight_schedule: Schedule = "cosine"
    lr_warmup: int = 0  # linear LR warm-up of the weights, iterations
    step_size: int = 200000  # for weight_schedule: step
    gamma: float = 0.5  # for weight_schedule: step
    arch_lr: float = 3e-4
    arch_schedule: ArchSchedule = "constant"  # over the iterations after arch_warmup
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    strategy: str = "darts1"  # a name in spacelang.nas.strategies.STRATEGIES
    gdas_tau_max: float = 10.0
    gdas_tau_min: float = 0.1
    gdas_hard: bool = True
    loss: Loss = "l1"
    hfen_weight: float = 0.2
    complexity: Complexity = "macs"
    complexity_weight: float = 0.1
    budget_macs: int | None = None
    budget_params: int | None = None
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
    overrides: dict[str, int] = attrs.Factory(dict)  # spec parameter overrides, e.g. C: 16

    checks: ClassVar[dict[str, Check]] = {
        **_DATA_CHECKS,
        "arch_warmup": non_negative,
        "strategy": _registered_strategy,
        "weight_lr": positive,
        "step_size": positive,
        "gamma": positive,
        "arch_lr": positive,
        "arch_betas": adam_betas,
        "arch_weight_decay": non_negative,
        "gdas_tau_max": positive,
        "gdas_tau_min": positive,
        "complexity_weight": non_negative,
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
        ]
        first_problem(problems)
