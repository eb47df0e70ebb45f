"""What a training run shows while it runs: a rich live display on a terminal, plain lines
otherwise (CI, nohup, pipes). Only rank 0 shows anything."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from stackgan_cli.console import err

PLAIN_INTERVAL_S = 30.0  # at most one mid-epoch plain line per this many seconds


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_record(record: Mapping[str, Any], epochs: int) -> str:
    """One line summarising a metrics record: epoch, step, losses, lrs, speed."""
    return (
        f"epoch {record['epoch']}/{epochs} step {record['step']} | "
        f"D {record['errD']:.4f} G {record['errG']:.4f} KL {record['kl']:.4f} | "
        f"lr {record['lr_g']:.2e}/{record['lr_d']:.2e} | {record['images_per_s']:.1f} img/s"
    )


class TrainProgress:
    """Context manager driven by the loop: :meth:`advance` after each step (no values, no
    synchronisation), :meth:`update` with a metrics record at each logging point."""

    def __init__(
        self,
        *,
        title: str,
        epochs: int,
        start_epoch: int,
        total_steps: int,
        done_steps: int,
        global_batch: int,
        enabled: bool,
    ) -> None:
        self.title = title
        self.start_epoch = start_epoch
        self.global_batch = global_batch
        self.epochs = epochs
        self.total_steps = total_steps
        self.done_steps = done_steps
        self.enabled = enabled
        self.live = enabled and err.is_terminal
        self._progress: Progress | None = None
        self._task = None
        self._last_plain = 0.0

    def __enter__(self) -> TrainProgress:
        if self.live:
            self._progress = Progress(
                TextColumn(f"[bold]{escape(self.title)}[/]"),
                BarColumn(),
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                TextColumn("step {task.completed}"),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=err,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train",
                total=self.total_steps,
                completed=self.done_steps,
                epoch=self.start_epoch,
                epochs=self.epochs,
                stats="waiting for the first losses",
            )
        elif self.enabled:
            self._last_plain = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def advance(self, epoch: int) -> None:
        """One step done during 1-based ``epoch``."""
        self.done_steps += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1, epoch=epoch)

    def update(self, record: Mapping[str, Any], *, epoch_end: bool) -> None:
        """Show a metrics record; in plain mode print it at epoch ends and every
        ``PLAIN_INTERVAL_S`` seconds in between."""
        if not self.enabled:
            return
        if self._progress is not None:
            stats = (
                f"D {record['errD']:.3f} G {record['errG']:.3f} KL {record['kl']:.3f} "
                f"lr {record['lr_g']:.1e} {record['images_per_s']:.1f} img/s"
            )
            self._progress.update(self._task, stats=stats, epoch=record["epoch"])
            return
        now = time.monotonic()
        if epoch_end or now - self._last_plain >= PLAIN_INTERVAL_S:
            self._last_plain = now
            line = f"{self.title} {format_record(record, self.epochs)}"
            steps_per_s = record["images_per_s"] / self.global_batch
            if steps_per_s > 0:
                remaining = (self.total_steps - self.done_steps) / steps_per_s
                line += f" | ETA {_format_duration(remaining)}"
            err.print(line, highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        """A one-line message (checkpoint written, samples saved, ...)."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
        else:
            err.print(text, highlight=False, soft_wrap=True)
