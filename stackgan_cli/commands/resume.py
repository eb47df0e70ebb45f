"""``stackgan resume``: continue an interrupted or finished training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackgan_cli.commands.options import MaybeDeviceOption


def resume(
    run_dir: Annotated[
        Path,
        typer.Argument(help="The run directory (holding checkpoints/last.pt).", file_okay=False),
    ],
    epochs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="New total number of epochs (default: the run's own). A 2-epoch run resumed "
            "with --epochs 4 ends after epoch 4.",
            show_default=False,
        ),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Continue from this checkpoint (e.g. checkpoints/epoch_0050.pt) instead of "
            "last.pt.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    device: MaybeDeviceOption = None,
) -> None:
    """Continue a training run exactly where it stopped (settings come from the checkpoint).

    The result equals an uninterrupted run (bit for bit on the CPU). A checkpoint continues
    only the run it belongs to (same family, widths and dataset as RUN_DIR/config.json), and
    only the folder that started a run writes its --out file: a copy of the folder trains on
    in its own folder and leaves the original's --out alone. Example:

        stackgan resume ~/.cache/stackgan/runs/stage1-cub-20250101-120000 --epochs 600
    """
    from stackgan_cli.commands.outcome import report_training
    from stackgan_cli.training.run import resume_training

    report_training(
        lambda: resume_training(
            run_dir,
            epochs=epochs,
            from_file=from_file,
            device=device.value if device else None,
        )
    )
