"""``stackgan prepare cub|shapes|flowers|coco|PATH``: get a dataset ready for training (see
data/prepare.py).

``PATH`` is any argument that is not a command's name: ``_PrepareGroup`` hands it to the
hidden ``folder`` command, so ``stackgan prepare ./my-images`` needs no subcommand of its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from stackgan_cli.commands.options import ForceOption, NoTextEncoderOption, WorkersOption
from stackgan_cli.data import shapes as shapes_data
from stackgan_cli.errors import UsageError

FOLDER_COMMAND = "folder"


class _PrepareGroup(TyperGroup):
    """The ``prepare`` commands, where an argument that names none of them is a folder."""

    def resolve_command(self, ctx, args):
        first = args[0]
        is_command = first in self.commands and first != FOLDER_COMMAND
        if is_command or first.startswith("-"):
            return super().resolve_command(ctx, args)
        return FOLDER_COMMAND, self.commands[FOLDER_COMMAND], args


class _FolderCommand(TyperCommand):
    """The folder command, whose usage line reads ``stackgan prepare PATH`` (no name)."""

    def format_usage(self, ctx, formatter) -> None:
        parent = ctx.parent.command_path if ctx.parent is not None else "stackgan prepare"
        formatter.write_usage(parent, " ".join(self.collect_usage_pieces(ctx)))

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [*pieces[1:], *pieces[:1]]  # PATH before [OPTIONS], as it must come first


app = typer.Typer(
    cls=_PrepareGroup,
    help="Download (or generate) a dataset and prepare it for training; or prepare a folder "
    "of your own images and captions: [bold]stackgan prepare PATH[/] (see "
    "[bold]stackgan prepare PATH --help[/]).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    subcommand_metavar="COMMAND|PATH [ARGS]...",
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


_NoVerifyOption = Annotated[
    bool,
    typer.Option(
        "--no-verify",
        help="Accept archives whose checksum differs from the published one (repacked or "
        "partial), after a warning.",
    ),
]


def _source_dir_option(holds: str) -> typer.Option:
    return typer.Option(
        "--source-dir",
        help=f"Folder holding {holds} (used in place), instead of downloading.",
        file_okay=False,
        exists=True,
        show_default=False,
    )


def _mirror_option(files: str) -> typer.Option:
    return typer.Option(
        "--mirror",
        help=f"Base URL to fetch {files} from instead of the upstream hosts. Default: "
        "$STACKGAN_MIRROR if set.",
        show_default=False,
    )


@app.command("flowers")
def flowers(
    source_dir: Annotated[
        Path | None,
        _source_dir_option(
            "102flowers.tgz and flowers.zip, or their unpacked folders jpg/ and flowers/"
        ),
    ] = None,
    mirror: Annotated[str | None, _mirror_option("102flowers.tgz and flowers.zip")] = None,
    no_verify: _NoVerifyOption = False,
    force: ForceOption = False,
    workers: WorkersOption = None,
    no_text_encoder: NoTextEncoderOption = False,
) -> None:
    """Prepare Oxford-102 flowers with StackGAN's captions, split and embeddings.

    Downloads 102flowers.tgz (330 MB, Oxford VGG) and StackGAN's flowers.zip into the cache,
    unpacks them, resizes every listed image whole to 76x76 and 304x304 (no bounding boxes, as
    the official preprocessing does), and trains the text encoder as for CUB. An interrupted
    prepare resumes where it stopped when run again; running it after it completed does
    nothing unless --force.

    Examples:

        stackgan prepare flowers

        stackgan prepare flowers --source-dir ~/datasets/flowers --workers 4
    """
    from stackgan_cli.data.prepare import prepare_flowers
    from stackgan_cli.reports import print_prepare

    result = prepare_flowers(
        source_dir=source_dir,
        mirror=mirror,
        verify=not no_verify,
        force=force,
        workers=workers,
        text_encoder=not no_text_encoder,
    )
    print_prepare(result, "flowers")


@app.command("coco")
def coco(
    source_dir: Annotated[
        Path | None,
        _source_dir_option(
            "coco.zip, val_captions.t7, train2014.zip and val2014.zip, or the unpacked folders "
            "coco/ (with test/val_captions.t7), train2014/ and val2014/"
        ),
    ] = None,
    mirror: Annotated[
        str | None,
        _mirror_option("coco.zip, val_captions.t7, train2014.zip and val2014.zip"),
    ] = None,
    no_verify: _NoVerifyOption = False,
    force: ForceOption = False,
    workers: WorkersOption = None,
    no_text_encoder: NoTextEncoderOption = False,
) -> None:
    """Prepare MS-COCO 2014 with StackGAN-Pytorch's captions, split and embeddings.

    Downloads StackGAN-Pytorch's coco.zip and val_captions.t7, then the COCO image archives
    the split uses (train2014.zip 13.5 GB, val2014.zip 6.6 GB; read in place, not unpacked),
    resizes every listed image whole to 76x76 and 304x304 in parallel worker processes, and
    trains the text encoder. Each image's 5 captions fill its 10 caption slots in order; each
    image is its own class. An interrupted prepare resumes where it stopped when run again;
    running it after it completed does nothing unless --force.

    Examples:

        stackgan prepare coco

        stackgan prepare coco --source-dir ~/datasets/coco --workers 8
    """
    from stackgan_cli.data.prepare import prepare_coco
    from stackgan_cli.reports import print_prepare

    result = prepare_coco(
        source_dir=source_dir,
        mirror=mirror,
        verify=not no_verify,
        force=force,
        workers=workers,
        text_encoder=not no_text_encoder,
    )
    print_prepare(result, "coco")


@app.command(FOLDER_COMMAND, cls=_FolderCommand, hidden=True)
def folder(
    path: Annotated[
        str,
        typer.Argument(
            metavar="PATH",
            help="Your folder: a metadata.jsonl (or train/ and test/ folders with one each), "
            "or CUB's images/<class>/ and text/<class>/ folders.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Dataset name, for `train --dataset NAME`. Default: the folder's name.",
            show_default=False,
        ),
    ] = None,
    test_fraction: Annotated[
        float | None,
        typer.Option(
            "--test-fraction",
            metavar="F",
            help="Share of the images for the test split, whole classes when the folder has "
            "classes (0: all for training). Default: 0.2; split folders are kept instead.",
            show_default=False,
        ),
    ] = None,
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="Leave out images that cannot be used (listed in skipped.jsonl of the "
            "prepared dataset) instead of stopping at the first.",
        ),
    ] = False,
    force: ForceOption = False,
    workers: WorkersOption = None,
    seed: Annotated[
        int,
        typer.Option("--seed", min=0, help="Random seed of the split; same seed, same split."),
    ] = 0,
) -> None:
    """Prepare a folder of your own images and captions.

    Two layouts: the image-folder one, a metadata.jsonl with one JSON object per image
    ({"file_name": "a.jpg", "text": "a caption" or a list of captions, optional "label" and
    "bbox": \\[x, y, width, height]}), at the top or in train/ and test/ folders; or CUB's,
    images/<class>/<name>.jpg with text/<class>/<name>.txt (one caption per line) and an
    optional bounding_boxes.txt. Images of any size and mode are converted to RGB and cropped
    to their box, else to the centre square (76x76 and 304x304). A file that cannot be used
    stops it with one line naming it, unless --skip-bad. There are no text embeddings: train a
    DAMSM on the dataset for them. Running it again does nothing unless --force.

    Examples:

        stackgan prepare ./my-birds

        stackgan prepare ~/data/flowers-captioned --name flowers2 --test-fraction 0.1 --skip-bad
    """
    from stackgan_cli.data.prepare import prepare_folder
    from stackgan_cli.reports import print_prepare

    if os.sep not in path and "/" not in path and not Path(path).is_dir():
        known = ", ".join(c.name for c in app.registered_commands if c.name != FOLDER_COMMAND)
        raise UsageError(
            f"{path!r} is neither a dataset `stackgan prepare` knows ({known}) nor a folder; "
            f"for a folder, give its path (e.g. ./{path})"
        )
    result = prepare_folder(
        path,
        name=name,
        test_fraction=test_fraction,
        skip_bad=skip_bad,
        force=force,
        workers=workers,
        seed=seed,
    )
    print_prepare(result, result.root.parent.name)
