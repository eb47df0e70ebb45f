"""How ``train`` and ``resume`` end: the result printed, or exit code 130 after a stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer


def report_training(work: Callable[[], Any]) -> None:
    """Run ``work()`` (start or resume a run) and print where the results are; a Ctrl-C or
    SIGTERM stop prints how to continue and exits with 130. Under torchrun only rank 0 prints.
    """
    from stackgan_cli.reports import print_training_result, print_training_stopped
    from stackgan_cli.training.loop import TrainingInterrupted

    try:
        result = work()
    except TrainingInterrupted as stop:
        if stop.main_process:
            print_training_stopped(stop)
        raise typer.Exit(130) from None
    if result.main_process:
        print_training_result(result)
