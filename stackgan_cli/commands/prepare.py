"""``stackgan prepare cub|shapes``: get a dataset ready for training (see data/prepare.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackgan_cli.commands.options import ForceOption, NoTextEncoderOption, WorkersOption
from stackgan_cli.data import shapes as shapes_data

app = typer.Typer(
    help="Download (or generate) a dataset and prepare it for training.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.command("cub")
def cub(
    source_dir: Annotated[
        Path | None,
        typer.Option(
            "--source-dir",
            help="Folder holding CUB_200_2011.tgz and birds.zip, or their unpacked folders "
            "CUB_200_2011/ and birds/ (used in place), instead of downloading.",
            file_okay=False,
            exists=True,
            show_default=False,
        ),
    ] = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror",
            help="Base URL to fetch CUB_200_2011.tgz and birds.zip from instead of the upstream "
            "hosts. Default: $STACKGAN_MIRROR if set.",
            show_default=False,
        ),
    ] = None,
    no_verify: Annotated[
        bool,
        typer.Option(
            "--no-verify",
            help="Accept archives whose checksum differs from the published one (repacked or "
            "partial), after a warning.",
        ),
    ] = False,
    force: ForceOption = False,
    workers: WorkersOption = None,
    no_text_encoder: NoTextEncoderOption = False,
) -> None:
    """Prepare CUB-200-2011 birds with StackGAN's captions, split and embeddings.

    Downloads CUB_200_2011.tgz (1.1 GB) and birds.zip into the cache, unpacks them, crops every
    image around its bird as the official code does (76x76 and 304x304), and trains the text
    encoder. Running it again does nothing unless --force.

    Examples:

        stackgan prepare cub

        stackgan prepare cub --source-dir ~/datasets/cub --workers 4
    """
    from stackgan_cli.data.prepare import prepare_cub
    from stackgan_cli.reports import print_prepare

    result = prepare_cub(
        source_dir=source_dir,
        mirror=mirror,
        verify=not no_verify,
        force=force,
        workers=workers,
        text_encoder=not no_text_encoder,
    )
    print_prepare(result, "cub")


@app.command("shapes")
def shapes(
    images: Annotated[
        int,
        typer.Option(
            "--images",
            min=shapes_data.MIN_IMAGES,
            help=f"Number of images to draw (at least {shapes_data.MIN_IMAGES}, one per class).",
        ),
    ] = shapes_data.DEFAULT_IMAGES,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same dataset.")] = 0,
    force: ForceOption = False,
    workers: WorkersOption = None,
    no_text_encoder: NoTextEncoderOption = False,
) -> None:
    """Generate and prepare the synthetic shapes dataset (offline, seconds).

    Coloured circles, squares, triangles and stars on muted backgrounds, with 10 captions per
    image naming colour and shape and stand-in text embeddings, in CUB's layout. Test classes
    are colour/shape combinations never seen in training. The text encoder trains for a few
    epochs. Running it again does nothing unless --force.

    Examples:

        stackgan prepare shapes

        stackgan prepare shapes --images 5000 --seed 1 --force
    """
    from stackgan_cli.data.prepare import prepare_shapes
    from stackgan_cli.reports import print_prepare

    result = prepare_shapes(
        images=images,
        seed=seed,
        force=force,
        workers=workers,
        text_encoder=not no_text_encoder,
    )
    print_prepare(result, "shapes")
