"""The search driver: a spec's supernet, a task and a strategy on the runtime loop.

Bi-level optimisation: the weights learn on one data split, α/β on the other. For
``arch_warmup`` updates only the weights move; from then on each update also lets the
strategy set α/β's gradient (``arch_objective``: the task loss on an architecture
batch, or on the training batch plus it; plus the complexity penalty) and steps them,
before the weight step on the training batch or after it (``arch_step_order``). The run
folder holds ``last.pt`` (kind ``spacelang.search``), ``metrics.jsonl``, ``arch.jsonl``
(α/β once per epoch) and, at the end, ``derived.space`` and ``derived.pt`` (the derived
network's weights inherited from the supernet, `SuperNet.fixed_state_dict`).

Under ``amp: fp16`` (CUDA) both steps scale their loss, each with its own
`torch.amp.GradScaler` (α/β's gradients are far smaller than the weights'): the weight
step as `spacelang train` does (`backward_and_step`), the architecture step by passing the
scale to the strategy (``loss_scale``, `spacelang.nas.strategies`). A non-finite gradient
then skips that step and backs its scale off instead of stopping the run; both scales
are in the checkpoint (``grad_scaler``, ``arch_grad_scaler``) and in the metrics
(``loss_scale``, ``arch_loss_scale``).

`run_search_family` runs one search per budget (a Pareto family): the weight warm-up,
which no budget influences, runs once in ``RUN_DIR/warmup``; each budget continues from
it in ``RUN_DIR/budget-<budget>``; ``pareto.csv`` / ``pareto.json`` tabulate the results.

The task is any object with ``stream(data, seed=, start=)`` (resumable batches),
``to_device(batch)``, ``criterion(output, target)``, ``has_validation`` and
``validate(model) -> (score, second score)``; `spacelang.sr.task.SRTask` is one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console

from spacelang.backends.cost import CostReport
from spacelang.backends.torch.supernet import SuperNet
from spacelang.nas.penalty import ComplexityPenalty
from spacelang.nas.selection import Selection, select
from spacelang.nas.strategies import Strategy, make_strategy
from spacelang.runtime.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from spacelang.runtime.config import dump_config
from spacelang.runtime.distributed import all_reduce_grads, is_main, mean_scalars
from spacelang.runtime.log import MetricsLog
from spacelang.runtime.loop import (
    FORMAT_VERSION,
    GradScalerState,
    Hook,
    Loop,
    NonFinite,
    RunError,
    backward_and_step,
    due,
    state_dict_mismatch,
)
from spacelang.runtime.schedule import LRSchedule
from spacelang.units import format_count

__all__ = [
    "CHECKPOINT_KIND",
    "SearchError",
    "SearchResult",
    "architecture_summary",
    "derive_selection",
    "derived_header",
    "finish",
    "load_search_checkpoint",
    "run_search",
    "run_search_family",
    "settled",
]

CHECKPOINT_KIND = "spacelang.search"
#: The checkpoint entry that holds the `Space.supernet` options of the search, as JSON.
SUPERNET_OPTIONS = "supernet_options"


class SearchError(RunError):
    """A search that cannot start or cannot go on; the message says why."""


@attrs.frozen
class SearchResult:
    """A finished search: the argmax ``decisions``, the derived spec and its cost
    (`CostReport.architecture`, what `spacelang flops` says of the derived spec) and the
    validation PSNR of the derived network with the inherited weights (None without
    validation images)."""

    run_dir: Path
    decisions: dict[str, Any]
    derived_path: Path
    iterations: int
    params: int = 0
    macs: int = 0
    val_psnr: float | None = None
    budget: int | None = None


def derive_selection(net: SuperNet, report: CostReport, cfg: Any) -> Selection:
    """What the search derives now: ``cfg.derive`` (`spacelang.nas.selection`) applied to
    the supernet's α/β with the config's budget, in its complexity unit."""
    probabilities = {k: v.detach().tolist() for k, v in net.probabilities().items()}
    return select(net.network, probabilities, report, cfg.cost_field, cfg.budget, cfg.derive)


def architecture_summary(net: SuperNet, decisions: dict[str, Any] | None = None) -> str:
    """An architecture (default: the current argmax) in one line: ``site=label ...
    site<-a,b``."""
    decisions = net.decisions() if decisions is None else decisions
    parts = []
    for site in net.network.choice_sites:
        parts.append(f"{site.key}={site.labels[decisions[site.key]]}")
    for site in net.network.pick_sites:
        chosen = ",".join(site.candidates[i] for i in decisions[site.key])
        parts.append(f"{site.key}<-{chosen}")
    return " ".join(parts)


@attrs.define
class _SearchStep:
    """One update: α/β by the strategy (after warm-up), then the weights."""

    net: SuperNet
    task: Any
    strategy: Strategy
    penalty: ComplexityPenalty
    weight_opt: torch.optim.Optimizer
    arch_opt: torch.optim.Optimizer
    cfg: Any
    weight_data: Any
    arch_data: Any
    schedule: LRSchedule = attrs.field(init=False)
    arch_schedule: LRSchedule = attrs.field(init=False)
    epoch_length: int = 1
    arch_loss: torch.Tensor = attrs.Factory(lambda: torch.zeros(()))
    pruned: dict[str, str] = attrs.Factory(dict)  # what the last update pruned: site → label
    # amp fp16: the loss scalers of the weight step and of the architecture step
    scaler: torch.amp.GradScaler | None = None
    arch_scaler: torch.amp.GradScaler | None = None
    _weights: Any = None
    _arch: Any = None
    _arch_version: int = 0  # counts the changes to α/β and the pruning masks
    _derived: tuple[int, Selection] | None = None

    def derived(self) -> Selection:
        """What the search derives now (`derive_selection`), computed once per α/β state
        (α/β and the pruning masks)."""
        if self._derived is None or self._derived[0] != self._arch_version:
            selection = derive_selection(self.net, self.penalty.report, self.cfg)
            self._derived = (self._arch_version, selection)
        return self._derived[1]

    def __attrs_post_init__(self) -> None:
        cfg = self.cfg
        self.schedule = LRSchedule(total=cfg.iterations, kind=cfg.weight_schedule,
                                   warmup=cfg.lr_warmup, step_size=cfg.step_size,
                                   gamma=cfg.gamma, milestones=tuple(cfg.milestones))
        self.arch_schedule = LRSchedule(total=max(1, cfg.iterations - cfg.arch_warmup),
                                        kind=cfg.arch_schedule, step_size=cfg.step_size,
                                        gamma=cfg.gamma)

    def begin(self, start: int) -> None:
        cfg = self.cfg
        try:
            weight_stream = self.task.stream(self.weight_data, seed=cfg.seed, start=start)
            arch_stream = self.task.stream(self.arch_data, seed=cfg.seed + 1,
                                           start=max(0, start - cfg.arch_warmup))
        except ValueError as exc:
            raise SearchError(f"training data: {exc}") from None
        self.epoch_length = weight_stream.batches_per_epoch
        self._weights, self._arch = iter(weight_stream), iter(arch_stream)
        self.net.train()

    def __call__(self, iteration: int) -> dict[str, float]:
        cfg, net, task = self.cfg, self.net, self.task
        self.pruned = {}
        lr_now = self.schedule.apply(self.weight_opt, iteration)
        self.strategy.prepare(net, iteration, cfg.iterations)
        x, target = task.to_device(next(self._weights))
        arch_batch = None
        if iteration >= cfg.arch_warmup:
            arch_batch = task.to_device(next(self._arch))
            if cfg.arch_step_order == "before":
                self._arch_step(iteration, (x, target), arch_batch, lr_now)
        self.weight_opt.zero_grad(set_to_none=True)
        loss = task.criterion(net(x), target)
        # the mean over ranks, so that every rank stops at the same update
        (loss_value,) = mean_scalars(loss.detach())
        if not math.isfinite(loss_value):
            raise NonFinite("weight loss")
        # a finite loss can still have a non-finite gradient: stop (fp32, bf16) or skip
        # (fp16) before the step
        backward_and_step(loss, self.weight_opt, net.weight_parameters(), cfg.grad_clip,
                          self.scaler)
        if arch_batch is not None and cfg.arch_step_order == "after":
            self._arch_step(iteration, (x, target), arch_batch, lr_now)
        (arch_value,) = mean_scalars(self.arch_loss)
        if not math.isfinite(arch_value):
            raise NonFinite("architecture loss")
        with torch.no_grad():
            expected = float(self.penalty.expected(net))
        values = {"loss": loss_value, "arch_loss": arch_value, "lr": lr_now,
                  f"expected_{self.penalty.field}": expected}
        if self.scaler is not None and self.arch_scaler is not None:
            values["loss_scale"] = float(self.scaler.get_scale())
            values["arch_loss_scale"] = float(self.arch_scaler.get_scale())
        return values

    def _arch_step(self, iteration: int, train_batch: Any, arch_batch: Any,
                   lr_now: float) -> None:
        net = self.net
        steps = iteration - self.cfg.arch_warmup  # architecture steps before this one
        self.arch_schedule.apply(self.arch_opt, steps)
        self.arch_opt.zero_grad(set_to_none=True)
        # fp16 (only: a strategy without loss_scale runs in fp32 and bf16): the strategy
        # backpropagates its loss times the scale, a tensor on the device
        scaling = {} if self.arch_scaler is None else \
            {"loss_scale": self.arch_scaler.scale(net.arch_parameters()[0].new_ones(()))}
        self.arch_loss = self.strategy.arch_gradient(net, train_batch, arch_batch,
                                                     self.task.criterion, self.penalty, lr_now,
                                                     **scaling)
        all_reduce_grads(net.arch_parameters())  # distributed: the mean over ranks
        if self.arch_scaler is not None:
            # unscales α/β's gradients; skips the step and backs the scale off when one is
            # not finite
            self.arch_scaler.step(self.arch_opt)
            self.arch_scaler.update()
        elif not all(torch.isfinite(p.grad).all() for p in net.arch_parameters()):
            raise NonFinite("architecture gradient")
        else:
            self.arch_opt.step()
        self._arch_version += 1
        self.pruned = self.strategy.after_arch_step(net, steps + 1,
                                                    lambda: self.derived().decisions)
        if self.pruned:
            self._arch_version += 1

    def finished(self) -> str | None:
        """A search that prunes ends once pruning has left one architecture: no
        architecture step can change it, and more weight steps are `train`'s work."""
        if self.strategy.prune_every and self.net.decided():
            return "pruning has decided every site"
        return None

    def end(self) -> None:
        for batches in (self._weights, self._arch):
            close = getattr(batches, "close", None)
            if close is not None:
                close()


@attrs.define
class _ArchitectureLog(Hook):
    """The derived architecture in each metrics record; α/β in ``arch.jsonl`` each epoch;
    pruned candidates, when the strategy prunes, on the console (and in the record)."""

    net: SuperNet
    step: _SearchStep
    log: MetricsLog

    def state_dict(self) -> dict[str, Any]:
        return {"decisions": json.dumps(self.net.decisions())}

    def on_start(self, start: int, loop: Loop) -> None:
        if start:
            self.log.truncate_after(start)
        else:
            self.log.reset()

    def after_step(self, done: int, record: dict[str, Any] | None, loop: Loop) -> None:
        if self.step.pruned:
            dropped = " ".join(f"{k}-{v}" for k, v in self.step.pruned.items())
            loop.print(f"{done}: pruned {dropped}")
            if record is not None:
                record["pruned"] = dropped
        if record is not None:
            field = self.step.penalty.field
            derived = self.step.derived()
            record["architecture"] = architecture_summary(self.net, derived.decisions)
            record[f"derived_{field}"] = derived.cost
            record[f"argmax_{field}"] = getattr(
                self.step.penalty.report.architecture(self.net.decisions()), field)
        if due(done, self.step.epoch_length, loop.config.iterations):
            self.log.write({"iteration": done, "epoch": done // self.step.epoch_length,
                            "arch": self.net.arch_state(),
                            "decisions": {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in self.net.decisions().items()}})


@attrs.define
class _DerivedValidation(Hook):
    """Scores the network derived now (`_SearchStep.derived`), with the weights it
    inherits from the supernet, every val_every."""

    space: Any
    net: SuperNet
    step: _SearchStep
    task: Any
    device: torch.device
    every: int
    total: int

    def wants_record(self, done: int) -> bool:
        return self.task.has_validation and due(done, self.every, self.total)

    def after_step(self, done: int, record: dict[str, Any] | None, loop: Loop) -> None:
        if record is None or not self.wants_record(done):
            return
        decisions = self.step.derived().decisions
        fixed = self.space.fixed(decisions).to(self.device)
        self.net.inherit_into(fixed, decisions)
        psnr, ssim = self.task.validate(fixed)
        record["val_psnr_derived"], record["val_ssim_derived"] = psnr, ssim
        loop.print(f"{done}: derived architecture {architecture_summary(self.net, decisions)}"
                   f"; PSNR {psnr:.2f} dB with inherited weights")


def run_search(space: Any, cfg: Any, *, task: Any, weight_data: Any, arch_data: Any,
               run_dir: str | Path, device: torch.device, resume: bool = False,
               resume_safe: Iterable[str] = (), console: Console | None = None,
               progress: bool = True, until: int | None = None) -> SearchResult:
    """Search ``space``'s architecture with ``task``; write ``run_dir/derived.space``.

    ``cfg`` is a search config (`spacelang.sr.config.SearchConfig` names the fields read;
    its ``budget`` is the one budget of its ``complexity`` unit). ``weight_data`` trains
    the weights, ``arch_data`` α/β (``task.stream`` reads them). ``until`` stops after
    that many updates (a checkpoint, no derived spec; the result's ``iterations``).
    """
    network = space.network
    if network.is_fixed:
        raise SearchError(f"network `{network.name}` has no choice or pick sites; "
                          "there is nothing to search (use `spacelang train`)")
    run_dir = Path(run_dir)
    strategy = make_strategy(cfg.strategy, cfg)
    torch.manual_seed(cfg.seed)
    options = strategy.supernet_options()
    net = space.supernet(**options).to(device)
    report = space.cost(tuple(cfg.hr_size))
    penalty = ComplexityPenalty(report, cfg.cost_field,
                                0.0 if cfg.complexity == "none" else cfg.complexity_weight,
                                cfg.budget, of=cfg.complexity_of)
    weight_opt = torch.optim.Adam(net.weight_parameters(), lr=cfg.weight_lr,
                                  betas=tuple(cfg.weight_betas),
                                  weight_decay=cfg.weight_decay)
    arch_opt = torch.optim.Adam(net.arch_parameters(), lr=cfg.arch_lr,
                                betas=tuple(cfg.arch_betas),
                                weight_decay=cfg.arch_weight_decay)
    # amp fp16 (the loop checks that the device can): a loss scale per optimizer
    fp16 = cfg.amp == "fp16"
    scaler = torch.amp.GradScaler(device.type) if fp16 else None
    arch_scaler = torch.amp.GradScaler(device.type) if fp16 else None
    step = _SearchStep(net, task, strategy, penalty, weight_opt, arch_opt, cfg,
                       weight_data, arch_data, scaler=scaler, arch_scaler=arch_scaler)
    loop = Loop(
        kind=CHECKPOINT_KIND,
        noun="search",
        run_dir=run_dir,
        config=cfg,
        step=step,
        stateful={"model": net, "weight_opt": weight_opt, "arch_opt": arch_opt},
        hooks=[_ArchitectureLog(net, step, MetricsLog(run_dir / "arch.jsonl")),
               _DerivedValidation(space, net, step, task, device, cfg.val_every,
                                  cfg.iterations),
               *([] if scaler is None else [GradScalerState(scaler, "grad_scaler"),
                                            GradScalerState(arch_scaler, "arch_grad_scaler")])],
        resume_safe=frozenset(resume_safe),
        extra={"network": network.name, "spec_path": str(Path(space.path).resolve()),
               "overrides": json.dumps(space.overrides),
               SUPERNET_OPTIONS: json.dumps(options)},
        files=space.program.files_for_copy("spec.space"),
        error=SearchError,
        console=console or Console(stderr=True),
        progress=progress,
    )
    if not resume:
        loop.print(penalty.describe())
    done = loop.run(resume=resume, until=until)
    if done < cfg.iterations and step.finished() is None:  # stopped by ``until``
        return SearchResult(run_dir, net.decisions(), run_dir / "last.pt", done)
    since = settled(MetricsLog.read_records(run_dir / "metrics.jsonl"))
    if since is not None:
        loop.print(f"the derived architecture has not changed since update {since.iteration} "
                   f"({since.elapsed:.0f} s into the run)")
    return finish(space, net, run_dir, done, report, task=task, device=device,
                  cfg=cfg, console=loop.console)


@attrs.frozen
class Settled:
    """When a search's derived architecture last changed: from the log record of update
    ``iteration`` (``elapsed`` seconds into the run) on, every record shows the final one.
    This is the run's time-to-architecture (to the resolution of ``log_every``)."""

    iteration: int
    elapsed: float


def settled(records: Sequence[dict[str, Any]]) -> Settled | None:
    """Time-to-architecture of a search from its ``metrics.jsonl`` records (None without
    any record that names the architecture)."""
    logged = [r for r in records if "architecture" in r and "elapsed" in r]
    if not logged:
        return None
    first = logged[-1]
    for record in reversed(logged):
        if record["architecture"] != logged[-1]["architecture"]:
            break
        first = record
    return Settled(int(first["iteration"]), float(first["elapsed"]))


def derived_header(space: Any, net: SuperNet, run_dir: Path, iterations: int,
                   selection: Selection | None = None, cfg: Any = None) -> str:
    """The comment block of a derived spec: where it came from, the final α/β and the
    rule that chose ``selection`` (default: the argmax)."""
    lines = [f"Derived by `spacelang search` from {space.path}",
             f"run: {run_dir} ({iterations} iterations)"]
    if space.overrides:
        lines.append("overrides: " + ", ".join(f"{k}={v}" for k, v in space.overrides.items()))
    probabilities = net.probabilities()
    decisions = net.decisions() if selection is None else selection.decisions
    if selection is not None and cfg is not None and cfg.budget is not None \
            and cfg.derive == "budget":
        unit = "parameters" if cfg.cost_field == "params" else "Multi-Adds"
        lines.append(f"derive: budget: the most probable architecture within "
                     f"{format_count(cfg.budget)} {unit} (tilt λ = {selection.lam:.4g}; "
                     f"its {unit}: {selection.cost:,})")
    for site in net.network.choice_sites:
        p = probabilities[site.key].tolist()
        shown = ", ".join(f"{label} {v:.3f}" for label, v in zip(site.labels, p, strict=True))
        lines.append(f"{site.key} -> {site.labels[decisions[site.key]]}  (softmax α: {shown})")
    for site in net.network.pick_sites:
        p = probabilities[site.key].tolist()
        shown = ", ".join(f"{c} {v:.3f}" for c, v in zip(site.candidates, p, strict=True))
        chosen = ", ".join(site.candidates[i] for i in decisions[site.key])
        lines.append(f"{site.key} -> {chosen}  (softmax β: {shown})")
    return "\n".join(lines)


def finish(space: Any, net: SuperNet, run_dir: Path, iterations: int,
           report: CostReport | None = None, *, task: Any = None,
           device: torch.device | None = None, cfg: Any = None,
           console: Console | None = None) -> SearchResult:
    """Derive `net`'s architecture (`derive_selection` under ``cfg``; without one the
    argmax) into ``run_dir/derived.space``, its inherited weights into
    ``run_dir/derived.pt``; score them on ``task``'s validation images when it has some."""
    report = report or space.cost()
    selection = derive_selection(net, report, cfg) if cfg is not None else None
    decisions = net.decisions() if selection is None else selection.decisions
    budget = cfg.budget if cfg is not None else None
    field = cfg.cost_field if cfg is not None else "macs"
    text = space.derive(decisions, header=derived_header(space, net, run_dir, iterations,
                                                         selection, cfg))
    path = run_dir / "derived.space"
    if is_main():
        atomic_write_bytes(path, text.encode("utf-8"))
    fixed = space.fixed(decisions)
    if device is not None:
        fixed = fixed.to(device)
    net.inherit_into(fixed, decisions)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in fixed.state_dict().items()}, buffer)
    if is_main():
        atomic_write_bytes(run_dir / "derived.pt", buffer.getvalue())
    cost = report.architecture(decisions)
    psnr = None
    if task is not None and task.has_validation:
        psnr, _ = task.validate(fixed)
    if console is not None:
        within = ""
        if budget is not None:
            spent = getattr(cost, field)
            within = f" ({spent / budget:.0%} of the budget {format_count(budget)})"
        console.print(f"derived: {cost.params:,} parameters, {cost.macs / 1e9:.2f} G "
                      f"Multi-Adds at HR {report.hr[0]}x{report.hr[1]}{within}"
                      + (f"; PSNR {psnr:.2f} dB with inherited weights"
                         if psnr is not None else ""))
    return SearchResult(run_dir, decisions, path, iterations, cost.params, cost.macs, psnr,
                        budget)


def read_search_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(file, payload)`` of a search run's ``last.pt`` (a run folder or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    state = load_checkpoint(path)
    if state.get("kind") != CHECKPOINT_KIND or "model" not in state:
        raise SearchError(f"{path} is not a spacelang search checkpoint")
    if state.get("version") != FORMAT_VERSION:
        raise SearchError(f"{path} has checkpoint format version {state.get('version')!r}; "
                          f"this spacelang reads version {FORMAT_VERSION}")
    return path, state


def load_search_checkpoint(space: Any, path: str | Path) -> SuperNet:
    """The supernet saved in a search run's `last.pt` (a run folder or the file), built as
    the search built it (`SUPERNET_OPTIONS`: partial channels, pruning masks)."""
    path, state = read_search_checkpoint(path)
    net = space.supernet(**json.loads(state.get(SUPERNET_OPTIONS, "{}")))
    problem = state_dict_mismatch(net.state_dict(), state["model"])
    if problem:
        raise SearchError(f"{path} does not belong to {space.path}: {problem}")
    net.load_state_dict(state["model"])
    return net


PARETO_COLUMNS = ("budget", "params", "macs", "val_psnr", "derived")


def budget_dir(run_dir: Path, budget: int) -> Path:
    """Where the member of a Pareto family with ``budget`` runs: ``budget-12G``."""
    return run_dir / f"budget-{format_count(budget)}"


def _seed_from_warmup(warm: Path, target: Path, cfg: Any) -> None:
    """Start ``target`` at the end of the shared warm-up, as a run of ``cfg`` would be."""
    state = load_checkpoint(warm / "last.pt")
    state["config"] = dump_config(cfg)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "arch.jsonl"):
        if (warm / name).exists():
            shutil.copyfile(warm / name, target / name)
    save_checkpoint(target / "last.pt", state)


def run_search_family(space: Any, cfg: Any, *, task: Any, weight_data: Any, arch_data: Any,
                      run_dir: str | Path, device: torch.device, resume: bool = False,
                      resume_safe: Iterable[str] = (), console: Console | None = None,
                      progress: bool = True) -> list[SearchResult]:
    """One search per budget in ``cfg.budgets``; writes ``pareto.csv`` and ``pareto.json``.

    The first ``arch_warmup`` updates train only the weights, and α/β (and so the budget)
    play no part in them, so they run once (``run_dir/warmup``); each budget's run
    continues from that checkpoint as if it had run the warm-up itself. ``resume``
    continues every member that has a checkpoint and starts the rest.
    """
    run_dir = Path(run_dir)
    budgets = list(dict.fromkeys(cfg.budgets))
    if not budgets:
        raise SearchError("a Pareto family needs at least one budget ('budgets')")
    console = console or Console(stderr=True)
    common = dict(task=task, weight_data=weight_data, arch_data=arch_data, device=device,
                  resume_safe=resume_safe, console=console, progress=progress)
    warm = run_dir / "warmup"
    members = [cfg.for_budget(b) for b in budgets]
    needs_warmup = cfg.arch_warmup > 0 and not all(
        (budget_dir(run_dir, b) / "last.pt").exists() and resume for b in budgets)
    if needs_warmup:
        warm_resume = resume and (warm / "last.pt").exists()
        console.print(f"weight warm-up ({cfg.arch_warmup} updates), shared by "
                      f"{len(budgets)} budgets, in {warm}")
        run_search(space, members[0], run_dir=warm, resume=warm_resume,
                   until=cfg.arch_warmup, **common)
    results = []
    for budget, member in zip(budgets, members, strict=True):
        target = budget_dir(run_dir, budget)
        member_resume = resume and (target / "last.pt").exists()
        if not member_resume and cfg.arch_warmup > 0:
            if (target / "last.pt").exists():
                raise SearchError(f"{target} already holds a search; resume it or choose "
                                  "another run folder")
            _seed_from_warmup(warm, target, member)
            member_resume = True
        console.print(f"budget {format_count(budget)} in {target}")
        results.append(run_search(space, member, run_dir=target, resume=member_resume,
                                  **common))
    write_pareto(run_dir, results)
    return results


def write_pareto(run_dir: Path, results: Sequence[SearchResult]) -> None:
    """``pareto.csv`` and ``pareto.json``: one row per budget (PARETO_COLUMNS)."""
    rows = [{"budget": r.budget, "params": r.params, "macs": r.macs, "val_psnr": r.val_psnr,
             "derived": str(r.derived_path.relative_to(run_dir))} for r in results]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=PARETO_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(run_dir / "pareto.csv", text.getvalue().encode("utf-8"))
    atomic_write_bytes(run_dir / "pareto.json",
                       (json.dumps(rows, indent=2) + "\n").encode("utf-8"))
