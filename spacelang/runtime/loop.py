"""The training loop that `spacelang train` and `spacelang search` both run.

A run plugs three things into `Loop`:

- a `Step`: one update of whatever the run optimises (`train`: the weights; `search`:
  α/β by a strategy, then the weights). It returns its scalars (``loss`` required);
- ``stateful``: the objects whose ``state_dict`` goes into the checkpoint (model first,
  then optimizers), restored on resume;
- `Hook`s: periodic work beside the update (validation, best weights, extra logs).

The loop owns the rest: seeding, resume (checkpoint kind, format version and config
check), the iteration counter, ``metrics.jsonl``, the progress bar, stopping on
non-finite values, and crash-safe checkpoints. ``run_dir/last.pt`` holds::

    kind, version       what wrote it ("spacelang.train", "spacelang.search") and FORMAT_VERSION
    iteration           updates done
    config              the run's resolved config (YAML text)
    rng, loss_window, elapsed
    <stateful name>     one state_dict per stateful object ("model", "optimizer", ...)
    <hook entries>      each hook's `Hook.state_dict` entries
    <extra entries>     what the run adds (spec text, network name, ...)

Resuming with a config that differs from the stored one is refused, naming the changed
keys, except for the keys the run lists as safe to change (``resume_safe``); those
changes are printed.

A config's ``amp``, ``channels_last`` and ``compile`` (when it has them) say how the model
(``stateful["model"]``) computes; the loop applies them before the first update
(`spacelang.runtime.speed.optimise`).

Every update runs with torch's random generators seeded from ``(seed, iteration)``
(`step_random`), so random draws inside a step (GDAS' Gumbel samples) depend on nothing
else: not on the rank, not on whether the run was resumed.

Under torchrun (`spacelang.runtime.distributed`) every rank runs the same loop: rank 0
reads the checkpoint and hands it to the others, rank 0 alone writes the run folder and
prints, the model's state starts from rank 0's, and each checkpoint first checks that
every rank holds bitwise the same model. A step keeps the ranks together: it averages its
gradients (`spacelang.runtime.distributed.all_reduce_grads`) and the values it decides on
(``mean_scalars``: the loss, so that a NaN on one rank stops them all at once). After a
torchrun restart (``--max-restarts``) the run resumes from ``last.pt`` by itself.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import numpy as np
import torch
from rich.console import Console
from torch import nn

from spacelang.runtime.batches import epoch_seed
from spacelang.runtime.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from spacelang.runtime.config import ConfigError, config_changes, dump_config, parse_config
from spacelang.runtime.distributed import (
    RankLost,
    all_reduce_grads,
    broadcast_,
    broadcast_object,
    check_lockstep,
    init_from_env,
    is_distributed,
    is_main,
    restart_count,
    world_size,
)
from spacelang.runtime.log import MetricsLog, TrainingProgress
from spacelang.runtime.speed import SpeedError, optimise

__all__ = [
    "FORMAT_VERSION",
    "GradScalerState",
    "Hook",
    "Loop",
    "NonFinite",
    "RunError",
    "Step",
    "StepFailure",
    "backward_and_step",
    "clip_gradients",
    "denormals_flushed",
    "same_on_every_rank",
    "state_dict_mismatch",
    "step_random",
]

#: `epoch_seed` stream of the per-update random seed (`step_random`).
STEP_STREAM = 3

#: Version of the ``last.pt`` layout above (1: train only, loss on the model's range).
FORMAT_VERSION = 2


class RunError(Exception):
    """A run that cannot start or go on; the message says why."""


class StepFailure(Exception):
    """Raised by a step or hook to stop the run; the loop re-raises it as the run's error."""


class NonFinite(StepFailure):
    """A non-finite value (``what``: "loss", "weight gradient", ...) in the current update."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Step(Protocol):
    """One update of a run."""

    def begin(self, start: int) -> None:
        """Called once before the first update, with the number of updates already done."""

    def __call__(self, iteration: int) -> dict[str, float]:
        """Make update ``iteration`` (0-based); return its scalars: ``loss``, ``lr``, ..."""

    def end(self) -> None:
        """Called once when the loop stops (also on errors): release data loaders."""

    def finished(self) -> str | None:
        """Optional: why the run is over before ``iterations`` (None: go on). Asked after
        each update; the loop then logs and checkpoints that update and stops."""


class Hook:
    """Periodic work beside the update; every method is optional."""

    def state_dict(self) -> dict[str, Any]:
        """Entries saved in each checkpoint (plain values only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from a checkpoint's entries (all of them)."""

    def on_start(self, start: int, loop: Loop) -> None:
        """Before the first update (after `Step.begin`), ``start`` updates already done."""

    def wants_record(self, done: int) -> bool:
        """Whether update ``done`` (1-based) needs a metrics record even off the log cadence."""
        return False

    def after_step(self, done: int, record: dict[str, Any] | None, loop: Loop) -> None:
        """After update ``done``; ``record`` (None off cadence) may gain fields before it is
        written."""

    def on_end(self, done: int, loop: Loop) -> None:
        """After the last update."""


def due(done: int, every: int, total: int) -> bool:
    """Whether something done every ``every`` updates (and at the end) is due at ``done``."""
    return done % every == 0 or done == total


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """Flush denormal floats to zero inside the block, then restore the default.

    CPU convolutions over denormals (supernets and fresh networks make them)
    run up to a hundred times slower; flushing changes no result that matters.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@contextlib.contextmanager
def step_random(seed: int, iteration: int) -> Iterator[None]:
    """Seed torch's CPU generator (and the current CUDA device's) from ``(seed, iteration)``
    inside the block and restore their states afterwards."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = [torch.cuda.current_device()] if cuda else []
    value = epoch_seed(seed, iteration, STEP_STREAM)
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(value)
        if cuda:
            torch.cuda.manual_seed(value)
        yield


def same_on_every_rank(exc: Exception) -> Exception:
    """Mark ``exc`` as raised alike by every rank (the CLI prints it on rank 0 only)."""
    exc.same_on_every_rank = True  # type: ignore[attr-defined]
    return exc


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def clip_gradients(params: Sequence[torch.Tensor], max_norm: float | None) -> float:
    """Clip the gradients' joint norm to ``max_norm`` (None: no clipping); return the norm.

    Raises `NonFinite` ("weight gradient") when the norm is not finite, so that the
    optimizer step never writes NaN into the weights.
    """
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else math.inf)
    if not torch.isfinite(norm):
        raise NonFinite("weight gradient")
    return float(norm)


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      params: Sequence[torch.Tensor], max_norm: float | None,
                      scaler: torch.amp.GradScaler | None = None) -> None:
    """Backpropagate ``loss`` into ``params`` (the mean over ranks), clip their gradients
    to ``max_norm`` (`clip_gradients`) and step ``optimizer``.

    Without ``scaler`` a non-finite gradient raises `NonFinite`. With one (amp fp16) the
    loss is multiplied by the scale before the backward pass, so that small gradients do
    not underflow in float16, and the gradients divided by it before the clip; a
    non-finite gradient then means the scale was too large: the step is skipped and the
    scale backs off (`torch.amp.GradScaler.update`), and the run goes on.
    """
    if scaler is None:
        loss.backward()
        all_reduce_grads(params)
        clip_gradients(params, max_norm)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    all_reduce_grads(params)
    scaler.unscale_(optimizer)
    with contextlib.suppress(NonFinite):  # the scaler has seen it and skips the step
        clip_gradients(params, max_norm)
    scaler.step(optimizer)
    scaler.update()


@attrs.define
class GradScalerState(Hook):
    """A loss scaler's state (amp fp16) in each checkpoint under ``key``; a run resumed
    from a checkpoint without it (one that ran in another precision) starts from the
    scaler's initial scale."""

    scaler: torch.amp.GradScaler
    key: str = "grad_scaler"

    def state_dict(self) -> dict[str, Any]:
        return {self.key: self.scaler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get(self.key):
            self.scaler.load_state_dict(state[self.key])


def state_dict_mismatch(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]
) -> str | None:
    """Describe the first key where ``found`` differs from ``expected`` (None: compatible)."""
    for key, tensor in expected.items():
        if key not in found:
            return f"key {key!r} is in the model but missing from the checkpoint"
        other = found[key]
        if not isinstance(other, torch.Tensor):
            return f"key {key!r} is a {type(other).__name__} in the checkpoint, not a tensor"
        if tuple(other.shape) != tuple(tensor.shape):
            return (
                f"key {key!r} has shape {tuple(other.shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} in the model"
            )
    for key in found:
        if key not in expected:
            return f"key {key!r} is in the checkpoint but not in the model"
    return None


@attrs.define(kw_only=True, eq=False)
class Loop:
    """One run: ``config.iterations`` updates of ``step`` with checkpoints in ``run_dir``.

    ``config`` is a typed config (`spacelang.runtime.config`) with ``iterations``,
    ``log_every``, ``checkpoint_every`` and ``seed``. ``kind`` names the run in its
    checkpoints; ``noun`` in messages ("training run"). ``files`` are written into the
    run folder at the start (name -> text). ``error`` is the exception type the loop
    raises (a `RunError` subclass of the caller's).
    """

    kind: str
    noun: str
    run_dir: Path = attrs.field(converter=Path)
    config: Any
    step: Step
    stateful: dict[str, Any]
    hooks: Sequence[Hook] = ()
    resume_safe: frozenset[str] = frozenset()
    extra: dict[str, Any] = attrs.Factory(dict)
    files: dict[str, str] = attrs.Factory(dict)
    error: type[Exception] = RunError
    console: Console = attrs.Factory(lambda: Console(stderr=True))
    progress: bool = True
    iteration: int = 0
    display: TrainingProgress | None = None

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    def print(self, message: str) -> None:
        """A line of output (above the progress bar when it is shown); rank 0 only."""
        if not is_main():
            return
        if self.display is not None:
            self.display.print(message)
        else:
            self.console.print(message, highlight=False, markup=False)

    def _agreed(self, work: Any) -> Any:
        """``work()`` on rank 0; every rank returns its result or raises its error."""
        if not is_distributed():
            return work()
        result, message = None, None
        if is_main():
            try:
                result = work()
            except self.error as exc:
                message = str(exc)
        result, message = broadcast_object((result, message))
        if message is not None:
            raise same_on_every_rank(self.error(message))
        return result

    # -- resume

    def _read_checkpoint(self) -> dict[str, Any]:
        """``last.pt`` checked for kind, format version and config."""
        path = self.last_path
        if not path.exists():
            raise self.error(
                f"cannot resume: {path} does not exist (the run never reached its first "
                "checkpoint, or the run folder is wrong); start it without resume"
            )
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as exc:
            raise self.error(f"cannot resume: {exc}") from None
        kind, version = ckpt.get("kind"), ckpt.get("version")
        if kind != self.kind:
            found = f"a {kind!r} checkpoint" if isinstance(kind, str) else \
                "a checkpoint without a kind (an older spacelang's?)"
            raise self.error(f"cannot resume: {path} is {found}, not {self.kind!r}")
        if version != FORMAT_VERSION:
            raise self.error(
                f"cannot resume: {path} has checkpoint format version {version!r}; this "
                f"spacelang resumes version {FORMAT_VERSION} only"
            )
        self._check_config(str(ckpt.get("config", "")))
        return ckpt

    def _restore(self) -> tuple[dict[str, Any], int]:
        path = self.last_path
        ckpt = self._agreed(self._read_checkpoint)  # read by rank 0, the same on every rank
        for name, obj in self.stateful.items():
            if name not in ckpt:
                raise self.error(f"cannot resume: {path} has no {name!r} entry")
            if isinstance(obj, nn.Module):
                problem = state_dict_mismatch(obj.state_dict(), ckpt[name])
                if problem is not None:
                    raise self.error(
                        f"cannot resume {self.run_dir}: the {name} does not match the "
                        f"checkpoint: {problem}"
                    )
            try:
                obj.load_state_dict(ckpt[name])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise self.error(
                    f"cannot resume {self.run_dir}: {name} state does not fit: {exc}"
                ) from None
        for hook in self.hooks:
            hook.load_state_dict(ckpt)
        return ckpt, int(ckpt["iteration"])

    def _check_config(self, stored: str) -> None:
        try:
            old = parse_config(type(self.config), stored, source=f"{self.last_path} config")
        except ConfigError as exc:
            raise self.error(f"cannot resume: the run's stored config is unreadable: {exc}") \
                from None
        changes = config_changes(old, self.config, self.resume_safe)
        if not changes:
            allowed = config_changes(old, self.config)
            if allowed:
                self.print(f"resuming {self.run_dir} with changed settings: "
                           f"{'; '.join(allowed)}")
        if changes:
            keys = ", ".join(change.split(" ", 1)[0] for change in changes)
            safe = ", ".join(sorted(self.resume_safe)) or "none"
            raise self.error(
                f"cannot resume {self.run_dir}: the config changed in {keys} "
                f"({'; '.join(changes)}), so the run would not continue the one it "
                f"began; undo the change or start a new run folder (settings that may "
                f"change on resume: {safe})"
            )

    def _apply_speed_options(self) -> None:
        model = self.stateful.get("model")
        if not isinstance(model, nn.Module):
            return
        try:
            optimise(model, amp=getattr(self.config, "amp", "fp32"),
                     channels_last=getattr(self.config, "channels_last", False),
                     compile=getattr(self.config, "compile", False))
        except SpeedError as exc:
            raise same_on_every_rank(self.error(str(exc))) from None

    # -- distributed

    def _modules(self) -> list[nn.Module]:
        return [obj for obj in self.stateful.values() if isinstance(obj, nn.Module)]

    def _share_rank0_state(self) -> None:
        """Every rank's model takes rank 0's state (fresh weights differ between ranks)."""
        for module in self._modules():
            broadcast_([t for t in module.state_dict().values()
                        if isinstance(t, torch.Tensor) and t.numel()])

    def _check_lockstep(self, done: int) -> None:
        if not is_distributed():
            return
        for name, module in self.stateful.items():
            if not isinstance(module, nn.Module):
                continue
            differs = check_lockstep(dict(module.named_parameters()))
            if differs is not None:
                raise same_on_every_rank(self.error(
                    f"the ranks' {name} disagree at iteration {done} (first in {differs}); "
                    "a step used a value that was not averaged across ranks"))

    def _config_text(self) -> str:
        text = dump_config(self.config)
        if not is_distributed():
            return text
        batch = getattr(self.config, "batch_size", None)
        per_rank = f" ({batch // world_size()} per rank)" if isinstance(batch, int) else ""
        return (f"# data-parallel run on {world_size()} ranks: batch_size is the global "
                f"batch{per_rank}; the learning rates are used as written\n{text}")

    # -- the loop

    def run(self, *, resume: bool = False, until: int | None = None) -> int:
        """Run (or continue, with ``resume``) to ``config.iterations``; return the last one.

        Under torchrun this joins the job first (`init_from_env`); after a torchrun restart
        it resumes from ``last.pt`` when there is one, without being asked.
        ``until`` stops earlier, after that many updates, with a checkpoint there (a run
        that later resumes from it goes on as if it had never stopped: schedules follow
        ``config.iterations``).
        """
        init_from_env()
        with denormals_flushed():
            try:
                return self._run(resume, until)
            except RankLost as exc:
                raise self.error(str(exc)) from None

    def _run(self, resume: bool, until: int | None = None) -> int:
        cfg = self.config
        main = is_main()
        if not resume and restart_count() > 0:
            resume = bool(self._agreed(self.last_path.exists))
            if resume:
                self.print(f"torchrun restart {restart_count()}: resuming from {self.last_path}")
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        loss_sum, loss_count, elapsed_before = 0.0, 0, 0.0
        saved_rng: dict[str, Any] | None = None
        if resume:
            ckpt, start = self._restore()
            loss_sum, loss_count = float(ckpt["loss_window"][0]), int(ckpt["loss_window"][1])
            elapsed_before = float(ckpt.get("elapsed", 0.0))
            saved_rng = ckpt["rng"]
            metrics.truncate_after(start)
        else:
            def fresh() -> None:
                if self.last_path.exists():
                    raise self.error(
                        f"{self.run_dir} already holds a {self.noun} ({self.last_path.name}); "
                        "resume it or choose another run folder"
                    )

            self._agreed(fresh)
            start = 0
            metrics.reset()
            seed_everything(cfg.seed)
        self._share_rank0_state()
        self._apply_speed_options()
        if main:
            atomic_write_bytes(self.run_dir / "config.yaml", self._config_text().encode("utf-8"))
            for name, text in self.files.items():  # a name may hold folders (`lib/ops.space`)
                (self.run_dir / name).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(self.run_dir / name, text.encode("utf-8"))

        started = time.monotonic()
        last_good = self.last_path if resume else None

        def elapsed() -> float:
            return elapsed_before + time.monotonic() - started

        def save(done: int) -> None:
            self._check_lockstep(done)
            if not main:
                return
            payload: dict[str, Any] = {
                "kind": self.kind,
                "version": FORMAT_VERSION,
                "iteration": done,
                "config": dump_config(cfg),
                "rng": rng_state(),
                "loss_window": [loss_sum, loss_count],
                "elapsed": elapsed(),
            }
            for name, obj in self.stateful.items():
                payload[name] = obj.state_dict()
            for hook in self.hooks:
                payload.update(hook.state_dict())
            payload.update(self.extra)
            save_checkpoint(self.last_path, payload)

        def stop(done: int, what: str) -> Exception:
            where = (f"last good checkpoint kept at {last_good}" if last_good is not None
                     else "no checkpoint had been written yet")
            return same_on_every_rank(
                self.error(f"non-finite {what} at iteration {done}; {where}"))

        self.iteration = start
        try:
            self.step.begin(start)
            for hook in self.hooks:
                hook.on_start(start, self)
            if saved_rng is not None:
                set_rng_state(saved_rng)  # last, so nothing above disturbs the restored streams
            self.display = TrainingProgress(cfg.iterations, start=start, console=self.console,
                                            enabled=self.progress and main,
                                            description=self.kind.removeprefix("spacelang."))
            finished = getattr(self.step, "finished", lambda: None)
            with self.display:
                end = cfg.iterations if until is None else min(until, cfg.iterations)
                if finished() is not None:  # resumed from the update that ended it
                    end = start
                for iteration in range(start, end):
                    try:
                        with step_random(cfg.seed, iteration):
                            values = self.step(iteration)
                    except NonFinite as exc:
                        raise stop(iteration + 1, exc.what) from None
                    except StepFailure as exc:
                        raise self.error(str(exc)) from None
                    loss = float(values["loss"])
                    if not math.isfinite(loss):
                        raise stop(iteration + 1, "loss")
                    done = self.iteration = iteration + 1
                    loss_sum += loss
                    loss_count += 1
                    reason = finished()
                    record: dict[str, Any] | None = None
                    if due(done, cfg.log_every, cfg.iterations) or reason is not None or any(
                        h.wants_record(done) for h in self.hooks
                    ):
                        record = {"iteration": done, "loss": loss_sum / loss_count}
                        record.update((k, v) for k, v in values.items() if k != "loss")
                        record["elapsed"] = round(elapsed(), 3)
                        loss_sum, loss_count = 0.0, 0
                    try:
                        for hook in self.hooks:
                            hook.after_step(done, record, self)
                    except StepFailure as exc:
                        raise self.error(str(exc)) from None
                    if record is not None:
                        metrics.write(record)
                        if not self.display.active and not any(k.startswith("val_")
                                                               for k in record):
                            lr = f", lr {record['lr']:.3g}" if "lr" in record else ""
                            self.print(f"iteration {done}/{cfg.iterations}: loss "
                                       f"{record['loss']:.5f}{lr}")
                    self.display.update(done, **values)
                    if (due(done, cfg.checkpoint_every, cfg.iterations) or done == until
                            or reason is not None):
                        if not self._weights_finite():
                            raise stop(done, "weights")
                        save(done)
                        last_good = self.last_path
                    if reason is not None:
                        self.print(f"{self.noun} ends at update {done} of {cfg.iterations}: "
                                   f"{reason}")
                        break
        finally:
            self.display = None
            self.step.end()
        for hook in self.hooks:
            hook.on_end(self.iteration, self)
        return self.iteration

    def _weights_finite(self) -> bool:
        for obj in self.stateful.values():
            if isinstance(obj, nn.Module):
                for p in obj.parameters():
                    if not bool(torch.isfinite(p).all()):
                        return False
        return True
