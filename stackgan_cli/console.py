"""Terminal output: one console for results, one for messages, and progress bars."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

out = Console()
"""Results (tables, file names) go to standard output."""

err = Console(stderr=True)
"""Messages, warnings, errors and progress bars go to standard error."""


def warn(message: str) -> None:
    """Print a one-line warning."""
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


def info(message: str) -> None:
    """Print a one-line status message."""
    err.print(message, highlight=False)


def task_progress() -> Progress:
    """A progress bar for counted work (images, steps): bar, N/M, elapsed, ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )


def download_progress() -> Progress:
    """A progress bar for downloads: bytes, speed, ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
