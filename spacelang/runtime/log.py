"""Run output: the metrics log (``metrics.jsonl``) and the progress bar."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from spacelang.runtime.checkpoint import atomic_write_bytes
from spacelang.runtime.distributed import is_main

__all__ = ["MetricsLog", "TrainingProgress"]


class _RateColumn(ProgressColumn):
    """Iterations per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            "-- it/s" if speed is None else f"{speed:.2f} it/s", style="progress.data.speed"
        )


class TrainingProgress:
    """Rich progress bar (iteration, loss, it/s, ETA); a no-op when disabled or not a TTY.

    Use as a context manager; `print` writes above the bar (or plainly when it is off).
    """

    def __init__(
        self,
        total: int,
        *,
        start: int = 0,
        console: Console | None = None,
        enabled: bool = True,
        description: str = "train",
    ) -> None:
        self.console = console if console is not None else Console(stderr=True)
        self.active = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        if self.active:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                _RateColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task(
                description, total=total, completed=start, status=""
            )

    def __enter__(self) -> TrainingProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, iteration: int, **values: float) -> None:
        """Show ``iteration`` done, with e.g. ``loss=...``, ``lr=...`` next to the bar."""
        if self._progress is None:
            return
        status = "  ".join(f"{k} {_fmt(v)}" for k, v in values.items())
        self._progress.update(self._task, completed=iteration, status=status)

    def print(self, message: str) -> None:
        """Print a line (above the bar when it is shown)."""
        self.console.print(message, highlight=False, markup=False)


def _fmt(value: float) -> str:
    if isinstance(value, float) and (value == 0.0 or 1e-3 <= abs(value) < 1e4):
        return f"{value:.4f}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class MetricsLog:
    """Append-only JSON-lines metrics file, one object per line.

    In a distributed run only rank 0 writes (`write`, `truncate_after` and `reset` do
    nothing on the other ranks), so a run has one log whatever its number of ranks.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line (flushed to the OS before returning)."""
        if not is_main():
            return
        line = json.dumps(dict(record), separators=(", ", ": ")) + "\n"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)

    def read(self) -> list[dict[str, Any]]:
        """All complete records (a torn last line from a crash is ignored)."""
        return self.read_records(self.path)

    @staticmethod
    def read_records(path: str | Path) -> list[dict[str, Any]]:
        """Records of a metrics file; missing file: ``[]``."""
        path = Path(path)
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def truncate_after(self, iteration: int) -> None:
        """Drop records past ``iteration`` (written after the checkpoint being resumed)."""
        if not is_main():
            return
        kept = [r for r in self.read() if int(r.get("iteration", 0)) <= iteration]
        text = "".join(json.dumps(r, separators=(", ", ": ")) + "\n" for r in kept)
        atomic_write_bytes(self.path, text.encode("utf-8"))

    def reset(self) -> None:
        """Start an empty log."""
        if not is_main():
            return
        atomic_write_bytes(self.path, b"")
