"""``stackgan evaluate``: Inception Score, FID and a mode-collapse check for a generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackgan_cli.commands.choices import Device


def evaluate(
    ckpt: Annotated[
        Path | None,
        typer.Option(
            help="Generator file (or official netG .pth). Default: the newest "
            "runs/*/generator.pt in the cache.",
            dir_okay=False,
        ),
    ] = None,
    inception: Annotated[
        bool, typer.Option("--inception", help="Compute the Inception Score.")
    ] = False,
    fid: Annotated[
        bool, typer.Option("--fid", help="Compute FID against the real test images.")
    ] = False,
    dataset: Annotated[
        str | None,
        typer.Option(help="Prepared dataset name or path. Default: the generator file's dataset."),
    ] = None,
    num_samples: Annotated[
        int,
        typer.Option(
            min=2,
            help="Samples to generate (30000 as in the paper; with --real: at most this "
            "many real test images).",
        ),
    ] = 30000,
    splits: Annotated[
        int, typer.Option(min=1, help="Inception Score splits (mean and std over them).")
    ] = 10,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Batch size for generation and Inception features.")
    ] = 64,
    inception_weights: Annotated[
        Path | None,
        typer.Option(
            help="A local copy of torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
            "(default: downloaded once into the cache's weights/ folder).",
            dir_okay=False,
        ),
    ] = None,
    real: Annotated[
        bool,
        typer.Option("--real", help="Score the real test images instead (a reference)."),
    ] = False,
    resolution: Annotated[
        int | None,
        typer.Option(
            help="With --real: 64 or 256 (default: the --ckpt's resolution, else 64).",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=2**32 - 2, help="Seed of the noise and of the IS shuffle.")
    ] = 0,
    diversity: Annotated[
        bool,
        typer.Option(
            "--diversity/--no-diversity",
            help="Mode-collapse check: feature distance among 8 samples of each of 10 captions.",
        ),
    ] = True,
    device: Annotated[Device, typer.Option(help="auto picks CUDA when present.")] = Device.auto,
    out: Annotated[
        Path | None,
        typer.Option(
            help="JSON report. Default: <ckpt>.eval.json beside the checkpoint "
            "(--real: evaluations/ in the cache).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Score a generator: Inception Score, FID and a mode-collapse check, on the test split.

    Without --inception or --fid both are computed. Examples:

        stackgan evaluate --ckpt s1.pt --num-samples 2000

        stackgan evaluate --real --dataset cub
    """
    if resolution is not None and resolution not in (64, 256):
        raise typer.BadParameter("must be 64 or 256", param_hint="--resolution")
    if resolution is not None and not real:
        raise typer.BadParameter("only applies with --real", param_hint="--resolution")
    if not real and splits > num_samples:
        raise typer.BadParameter(
            f"cannot exceed --num-samples {num_samples}", param_hint="--splits"
        )

    from stackgan_cli.errors import StackGANError
    from stackgan_cli.evaluation.report import print_report, write_report
    from stackgan_cli.evaluation.runner import (
        EvalOptions,
        default_out_path,
        evaluate_generator,
        evaluate_real,
    )

    both = not inception and not fid
    options = EvalOptions(
        ckpt=ckpt,
        inception=inception or both,
        fid=fid or both,
        dataset=dataset,
        num_samples=num_samples,
        splits=splits,
        batch_size=batch_size,
        inception_weights=inception_weights,
        real=real,
        resolution=resolution,
        seed=seed,
        diversity=diversity,
        device=device.value,
    )
    result = evaluate_real(options) if real else evaluate_generator(options)
    path = out if out is not None else default_out_path(result)
    try:
        write_report(path, result)
    except OSError as exc:
        raise StackGANError(f"cannot write the report {path} ({exc}); pass --out FILE") from None
    print_report(result, path)
