"""``stackgan runs``: the training runs in a folder, as a table, JSON or a loss chart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def runs(
    runs_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="DIR",
            help="Folder holding run directories. Default: the cache's runs/.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the runs as a JSON list instead of a table."),
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            help="Also draw the runs' smoothed D and G losses into this PNG.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """List training runs, newest first: model, dataset, regime, progress, losses, evaluation.

    The regime lists the training options that differ from the defaults. Damaged or
    unfinished run folders are listed with what is known.

    Examples:

      stackgan runs

      stackgan runs ~/experiments --json

      stackgan runs --plot losses.png
    """
    from stackgan_cli.console import info, out
    from stackgan_cli.reports import runs_table
    from stackgan_cli.runs import collect_runs, runs_json

    records = collect_runs(runs_dir)
    if as_json:
        typer.echo(runs_json(records))
    elif records:
        out.print(runs_table(records))
    else:
        info("no runs yet: train one with `stackgan train`")
    if plot is not None:
        from stackgan_cli.runs.plot import plot_runs

        info(f"loss chart: {plot_runs(records, plot)}")
