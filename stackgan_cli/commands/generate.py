"""``stackgan generate``: prompts in, images and a captioned grid out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackgan_cli.commands.options import (
    CkptOption,
    DamsmOption,
    DeviceOption,
    SeedOption,
    SizeOption,
    TextEncoderOption,
    VocabularyOption,
)
from stackgan_cli.devices import Device
from stackgan_cli.limits import MAX_SAMPLES, MAX_STEPS


def generate(
    texts: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="TEXT",
            help="Prompts, one grid row each. With --embedding-file: optional captions, one per "
            "row of the file.",
            show_default=False,
        ),
    ] = None,
    num_samples: Annotated[
        int,
        typer.Option(
            "-n",
            "--num-samples",
            min=1,
            max=MAX_SAMPLES,
            help=f"Images per prompt (1 to {MAX_SAMPLES}).",
        ),
    ] = 8,
    ckpt: CkptOption = None,
    stage: Annotated[
        int | None,
        typer.Option(
            "--stage",
            min=1,
            max=2,
            help="Output stage: 1 gives a Stage-II file's 64x64 sketches. Default: the file's "
            "own stage.",
            show_default=False,
        ),
    ] = None,
    show_stages: Annotated[
        bool,
        typer.Option(
            "--show-stages",
            help="Stage-II files: put each 64x64 sketch (enlarged) beside its 256x256 result; "
            "StackGAN-v2 files: every branch up to --size side by side.",
        ),
    ] = False,
    size: SizeOption = None,
    seed: SeedOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Output folder (created; same-named files are replaced). Default: a new "
            "./samples/YYYYmmdd-HHMMSS/.",
            show_default=False,
        ),
    ] = None,
    embedding_file: Annotated[
        Path | None,
        typer.Option(
            "--embedding-file",
            metavar="F.npy",
            help="Precomputed text embeddings, shape (P, text_dim) or (text_dim,): each row is "
            "a prompt (official state dicts carry no text encoder: this or --text-encoder).",
            show_default=False,
        ),
    ] = None,
    interpolate: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--interpolate",
            metavar="A B",
            help="Also write interpolation.png: per sample, a strip moving from prompt A to "
            "prompt B with fixed noise. With --embedding-file, A and B may be row numbers.",
            show_default=False,
        ),
    ] = None,
    steps: Annotated[
        int,
        typer.Option(
            "--steps",
            min=2,
            max=MAX_STEPS,
            help=f"Frames per interpolation strip (2 to {MAX_STEPS}).",
        ),
    ] = 8,
    text_encoder: TextEncoderOption = None,
    damsm: DamsmOption = None,
    vocabulary: VocabularyOption = None,
    attention: Annotated[
        bool,
        typer.Option(
            "--attention",
            help="AttnGAN files: also write PP_KK_attention.png, each sample beside the "
            "attention map of every word at each attending stage.",
        ),
    ] = False,
    device: DeviceOption = Device.auto,
) -> None:
    """Generate images from text with a trained generator.

    Writes DIR/grid.png (one row per prompt, its caption beneath) and every image as
    DIR/PP_KK.png (prompt index PP, sample index KK, zero-padded). Sample k uses the same
    noise for every prompt, so a grid column differs only in its text.

    Examples:

      stackgan generate "a red circle" "a blue square" -n 8

      stackgan generate "a small yellow bird with black wings" --ckpt s2.pt --show-stages

      stackgan generate --interpolate "a red circle" "a blue circle" --steps 8 --seed 1

      stackgan generate --ckpt netG_epoch_600.pth --embedding-file emb.npy "caption of row 0"

      stackgan generate "a small red bird" --ckpt netG_210000.pth --text-encoder cub -n 8

      stackgan generate "a red bird with black wings" --ckpt bird_AttnGAN2.pth --damsm
      DAMSMencoders/bird --vocabulary captions.pickle --attention
    """
    from stackgan_cli import generate as generation
    from stackgan_cli.console import out as console

    out_dir = out if out is not None else generation.default_out_dir()
    result = generation.generate(
        ckpt,
        list(texts or []),
        n=num_samples,
        out_dir=out_dir,
        stage=stage,
        show_stages=show_stages,
        seed=seed,
        embedding_file=embedding_file,
        interpolate_between=interpolate,
        steps=steps,
        device=device.value,
        size=size,
        text_encoder=text_encoder,
        damsm=damsm,
        vocabulary=vocabulary,
        attention=attention,
    )
    if result.grid is not None:
        count = sum(len(row) for row in result.images) + sum(len(row) for row in result.sketches)
        console.print(
            f"wrote {count} images to {result.out_dir}/",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
        console.print(f"grid: {result.grid}", highlight=False, soft_wrap=True, markup=False)
    if result.attention:
        count = sum(len(row) for row in result.attention)
        console.print(
            f"attention figures: {count} (PP_KK_attention.png)",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    if result.interpolation is not None:
        console.print(
            f"interpolation: {result.interpolation}", highlight=False, soft_wrap=True, markup=False
        )
