"""``stackgan evaluate``: Inception Score, FID, a mode-collapse check and R-precision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackgan_cli.commands.options import (
    CkptOption,
    DeviceOption,
    SeedOption,
    SizeOption,
    VocabularyOption,
)
from stackgan_cli.devices import Device


def evaluate(
    ckpt: CkptOption = None,
    inception: Annotated[
        bool, typer.Option("--inception", help="Compute the Inception Score.")
    ] = False,
    fid: Annotated[
        bool, typer.Option("--fid", help="Compute FID against the real test images.")
    ] = False,
    r_precision: Annotated[
        bool,
        typer.Option(
            "--r-precision",
            help="R-precision (needs --damsm): how often the DAMSM ranks each image's own "
            "caption above 99 captions of other-class test images (cosine of its cnn_code and "
            "the sentence features); mean and std over --splits.",
        ),
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
        int,
        typer.Option(
            min=1, help="Inception Score and R-precision splits (mean and std over them)."
        ),
    ] = 10,
    batch_size: Annotated[
        int,
        typer.Option(min=1, help="Batch size for generation, Inception features and DAMSM codes."),
    ] = 64,
    inception_weights: Annotated[
        Path | None,
        typer.Option(
            help="A local copy of torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
            "(default: downloaded once into the cache's weights/ folder).",
            dir_okay=False,
        ),
    ] = None,
    damsm: Annotated[
        Path | None,
        typer.Option(
            "--damsm",
            metavar="PATH",
            help="The DAMSM that scores --r-precision: a DAMSM file (`stackgan train --arch "
            "damsm`) or an official DAMSMencoders/<dataset> folder (with --vocabulary). It "
            "also conditions an AttnGAN file that carries no text encoder.",
            show_default=False,
        ),
    ] = None,
    vocabulary: VocabularyOption = None,
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
            help="Mode-collapse check (with IS or FID): feature distance among 8 samples of "
            "each of 10 captions.",
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
    """Score a generator: Inception Score, FID, a mode-collapse check and R-precision, on the
    test split.

    Without --inception, --fid or --r-precision, IS and FID are computed. The diversity check
    goes with IS and FID: --r-precision alone loads no Inception network. Examples:

        stackgan evaluate --ckpt s1.pt --num-samples 2000

        stackgan evaluate --real --dataset cub

        stackgan evaluate --ckpt netG_210000.pth --dataset cub --size 128

        stackgan evaluate --ckpt bird_AttnGAN2.pth --dataset cub --r-precision --damsm
        DAMSMencoders/bird --vocabulary captions.pickle

    Real images at 128 px (StackGAN-v2's middle branch) are the 256 px centre crop of the
    stored 304 px images, shrunk to 128.

    R-precision (AttnGAN's, computed as DM-GAN does): each sample (the same images IS and FID
    see), its ground-truth caption and 99 mismatched ones, each a random caption of a random
    test image of another class (seeded with --seed), all encoded by the DAMSM text encoder;
    a hit when the image's DAMSM code is closer (cosine) to its own caption than to every other
    (a tie is a miss). With --real: each real test image against one of its own captions, the
    ceiling a generator can reach.
    """
    from stackgan_cli.evaluation.report import save_report
    from stackgan_cli.evaluation.runner import EvalOptions, evaluate
    from stackgan_cli.formats import check_regular_file
    from stackgan_cli.reports import print_evaluation

    if vocabulary is not None and damsm is not None:
        # The captions.pickle reader opens what it is given: a FIFO would block it.
        check_regular_file(vocabulary.expanduser(), f"--vocabulary {vocabulary}")

    both = not inception and not fid and not r_precision
    inception, fid = inception or both, fid or both
    options = EvalOptions(
        ckpt=ckpt,
        inception=inception,
        fid=fid,
        dataset=dataset,
        num_samples=num_samples,
        splits=splits,
        batch_size=batch_size,
        inception_weights=inception_weights,
        real=real,
        resolution=resolution,
        size=size,
        seed=seed,
        diversity=diversity and (inception or fid),
        device=device.value,
        r_precision=r_precision,
        damsm=damsm,
        vocabulary=vocabulary,
    )
    result = evaluate(options)
    path = save_report(result, out)
    print_evaluation(result, path)
