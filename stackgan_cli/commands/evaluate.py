"""``stackgan evaluate``: Inception Score, FID and a mode-collapse check for a generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackgan_cli.commands.options import CkptOption, DeviceOption, SeedOption, SizeOption
from stackgan_cli.devices import Device


def evaluate(
    ckpt: CkptOption = None,
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
            help="With --real: 64 or 256 (default: the --ckpt's largest size, else 64).",
        ),
    ] = None,
    size: SizeOption = None,
    seed: SeedOption = 0,
    diversity: Annotated[
        bool,
        typer.Option(
            "--diversity/--no-diversity",
            help="Mode-collapse check: feature distance among 8 samples of each of 10 captions.",
        ),
    ] = True,
    device: DeviceOption = Device.auto,
    out: Annotated[
        Path | None,
        typer.Option(
            help="JSON report. Default: <ckpt>.eval.json beside the checkpoint, "
            "<ckpt>.<size>px.eval.json for a smaller --size (--real: evaluations/ in the cache).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Score a generator: Inception Score, FID and a mode-collapse check, on the test split.

    Without --inception or --fid both are computed. Examples:

        stackgan evaluate --ckpt s1.pt --num-samples 2000

        stackgan evaluate --real --dataset cub

        stackgan evaluate --ckpt netG_210000.pth --dataset cub --size 128

    Real images at 128 px (StackGAN-v2's middle branch) are the 256 px centre crop of the
    stored 304 px images, shrunk to 128.
    """
    from stackgan_cli.evaluation.report import save_report
    from stackgan_cli.evaluation.runner import EvalOptions, evaluate
    from stackgan_cli.reports import print_evaluation

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
        size=size,
        seed=seed,
        diversity=diversity,
        device=device.value,
    )
    result = evaluate(options)
    print_evaluation(result, save_report(result, out))
