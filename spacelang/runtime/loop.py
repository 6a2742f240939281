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
keys, except for the keys the run lists as safe to change (``resume_safe``).
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

from spacelang.runtime.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from spacelang.runtime.config import ConfigError, config_changes, dump_config, parse_config
from spacelang.runtime.log import MetricsLog, TrainingProgress

__all__ = [
    "FORMAT_VERSION",
    "Hook",
    "Loop",
    "NonFinite",
    "RunError",
    "Step",
    "StepFailure",
    "clip_gradients",
    "denormals_flushed",
    "state_dict_mismatch",
]

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
        """A line of output (above the progress bar when it is shown)."""
        if self.display is not None:
            self.display.print(message)
        else:
            self.console.print(message, highlight=False, markup=False)

    # -- resume

    def _restore(self) -> tuple[dict[str, Any], int]:
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
        if changes:
            keys = ", ".join(change.split(" ", 1)[0] for change in changes)
            safe = ", ".join(sorted(self.resume_safe)) or "none"
            raise self.error(
                f"cannot resume {self.run_dir}: the config changed in {keys} "
                f"({'; '.join(changes)}), so the run would not continue the one it "
                f"began; undo the change or start a new run folder (settings that may "
                f"change on resume: {safe})"
            )

    # -- the loop

    def run(self, *, resume: bool = False, until: int | None = None) -> int:
        """Run (or continue, with ``resume``) to ``config.iterations``; return the last one.

        ``until`` stops earlier, after that many updates, with a checkpoint there (a run
        that later resumes from it goes on as if it had never stopped: schedules follow
        ``config.iterations``).
        """
        with denormals_flushed():
            return self._run(resume, until)

    def _run(self, resume: bool, until: int | None = None) -> int:
        cfg = self.config
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
            if self.last_path.exists():
                raise self.error(
                    f"{self.run_dir} already holds a {self.noun} ({self.last_path.name}); "
                    "resume it or choose another run folder"
                )
            start = 0
            metrics.reset()
            seed_everything(cfg.seed)
        atomic_write_bytes(self.run_dir / "config.yaml", dump_config(cfg).encode("utf-8"))
        for name, text in self.files.items():
            atomic_write_bytes(self.run_dir / name, text.encode("utf-8"))

        started = time.monotonic()
        last_good = self.last_path if resume else None

        def elapsed() -> float:
            return elapsed_before + time.monotonic() - started

        def save(done: int) -> None:
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
            return self.error(f"non-finite {what} at iteration {done}; {where}")

        self.iteration = start
        try:
            self.step.begin(start)
            for hook in self.hooks:
                hook.on_start(start, self)
            if saved_rng is not None:
                set_rng_state(saved_rng)  # last, so nothing above disturbs the restored streams
            self.display = TrainingProgress(cfg.iterations, start=start, console=self.console,
                                            enabled=self.progress, description=self.kind
                                            .removeprefix("spacelang."))
            with self.display:
                end = cfg.iterations if until is None else min(until, cfg.iterations)
                for iteration in range(start, end):
                    try:
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
                    record: dict[str, Any] | None = None
                    if due(done, cfg.log_every, cfg.iterations) or any(
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
                    if due(done, cfg.checkpoint_every, cfg.iterations) or done == until:
                        if not self._weights_finite():
                            raise stop(done, "weights")
                        save(done)
                        last_good = self.last_path
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
