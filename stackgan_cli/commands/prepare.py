"""``stackgan prepare cub|shapes``: get a dataset ready for training (see data/prepare.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Download (or generate) a dataset and prepare it for training.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

DEFAULT_SHAPES_IMAGES = 1000  # kept equal to stackgan_cli.data.shapes.DEFAULT_IMAGES
MIN_SHAPES_IMAGES = 24  # one per (colour, shape) class; stackgan_cli.data.shapes.MIN_IMAGES

Force = Annotated[
    bool, typer.Option("--force", help="Prepare again even if the dataset is already prepared.")
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Processes that crop and resize images (0 or 1: in this process). "
        "Default: the CPU cores, at most 4.",
        show_default=False,
    ),
]
NoTextEncoder = Annotated[
    bool,
    typer.Option(
        "--no-text-encoder",
        help="Skip training the text encoder, which maps free text to caption embeddings.",
    ),
]


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
    force: Force = False,
    workers: Workers = None,
    no_text_encoder: NoTextEncoder = False,
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

    result = prepare_cub(
        source_dir=source_dir,
        mirror=mirror,
        verify=not no_verify,
        force=force,
        workers=workers,
        text_encoder=not no_text_encoder,
    )
    _report(result, "cub", "")


@app.command("shapes")
def shapes(
    images: Annotated[
        int,
        typer.Option(
            "--images",
            min=MIN_SHAPES_IMAGES,
            help=f"Number of images to draw (at least {MIN_SHAPES_IMAGES}, one per class).",
        ),
    ] = DEFAULT_SHAPES_IMAGES,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same dataset.")] = 0,
    force: Force = False,
    workers: Workers = None,
    no_text_encoder: NoTextEncoder = False,
) -> None:
    """Generate and prepare the synthetic shapes dataset (offline, seconds).

    Coloured circles, squares, triangles and stars on muted backgrounds, with 10 captions per
    image naming colour and shape and stand-in text embeddings, in CUB's layout. Test classes
    are colour/shape combinations never seen in training. The text encoder gets 3 epochs.
    Running it again does nothing unless --force.

    Examples:

        stackgan prepare shapes

        stackgan prepare shapes --images 5000 --seed 1 --force
    """
    from stackgan_cli.data.prepare import prepare_shapes

    result = prepare_shapes(
        images=images,
        seed=seed,
        force=force,
        workers=workers,
        text_encoder=not no_text_encoder,
    )
    requested = {"images": images, "seed": seed}
    stored = result.metadata.get("inputs", {}).get("shapes", {})
    note = ""
    if result.already_prepared and any(stored.get(k) != v for k, v in requested.items()):
        note = (
            f" It was drawn with --images {stored.get('images')} --seed {stored.get('seed')}; "
            f"add --force to redraw it with --images {images} --seed {seed}."
        )
    _report(result, "shapes", note)


def _report(result: Any, name: str, note: str) -> None:
    """The one-line no-op notice, or the summary tables of a finished prepare."""
    from stackgan_cli.console import info, out

    if result.already_prepared:
        info(
            f"{name} is already prepared at {result.root} (use --force to prepare it again)." + note
        )
        return
    for renderable in _summary(result):
        out.print(renderable)


def _summary(result: Any) -> list:
    """Counts per split, disk size and time; the text encoder's scores against baselines."""
    from rich.table import Table

    metadata = result.metadata
    table = Table(title=f"Prepared {metadata['dataset']}", title_justify="left")
    for column in ("split", "images", "classes", "captions"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, counts in metadata["splits"].items():
        table.add_row(
            split, f"{counts['images']:,}", f"{counts['classes']:,}", f"{counts['captions']:,}"
        )
    renderables: list = [
        table,
        f"{_size(metadata['bytes'])} in {result.root}, prepared in {result.seconds:.1f} s",
    ]

    report = metadata.get("text_encoder")
    encoder = Table(title="Text encoder (mean cosine to the test embeddings)", title_justify="left")
    encoder.add_column("predictor")
    encoder.add_column("cosine", justify="right")
    if report:
        encoder.add_row("[bold]trained text encoder[/]", f"[bold]{report['test_cosine']:.3f}[/]")
        encoder.add_row(
            "baseline: mean embedding", f"{report['baseline_mean_embedding_cosine']:.3f}"
        )
        encoder.add_row(
            "baseline: nearest caption", f"{report['baseline_nearest_caption_cosine']:.3f}"
        )
        renderables.append(encoder)
    else:
        renderables.append("Text encoder: not trained (--no-text-encoder).")
    return renderables


def _size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB"):
        if num_bytes < 1000:
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return f"{num_bytes:.1f} GB"
