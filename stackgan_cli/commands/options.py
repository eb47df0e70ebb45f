"""Options that several commands take, declared once with one help text each.

Each is an ``Annotated`` alias; a command gives it a default, e.g. ``device: DeviceOption =
Device.auto``. Nothing here imports torch, so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackgan_cli.devices import Device

DeviceOption = Annotated[
    Device, typer.Option("--device", help="Where to run: auto picks CUDA when PyTorch sees a GPU.")
]
"""``--device auto|cpu|cuda``."""

MaybeDeviceOption = Annotated[
    Device | None,
    typer.Option(
        "--device",
        help="Where to run: auto picks CUDA when PyTorch sees a GPU. Default: as before.",
        show_default=False,
    ),
]
"""``--device`` where leaving it out keeps an earlier choice (resume)."""

SeedOption = Annotated[
    int | None,
    typer.Option(
        "--seed",
        min=0,
        max=2**32 - 2,
        help="Random seed: the same seed gives the same result (generate: random if not given, "
        "and printed).",
    ),
]
"""``--seed S``."""

CkptOption = Annotated[
    Path | None,
    typer.Option(
        "--ckpt",
        metavar="FILE",
        help="Generator file (from `stackgan train`) or an official netG .pth state dict. "
        "Default: the newest runs/*/generator.pt in the cache.",
        dir_okay=False,
        show_default=False,
    ),
]
"""``--ckpt FILE``: the generator to use."""

SizeOption = Annotated[
    int | None,
    typer.Option(
        "--size",
        help="Image size: a StackGAN-v2 file's branch, 64, 128 or 256 (default: its largest); "
        "for StackGAN-v1 files the stage, 64 = Stage I (of a Stage-II file too), 256 = Stage II.",
        show_default=False,
    ),
]
"""``--size 64|128|256`` (generate, evaluate): which output of the generator."""

TextEncoderOption = Annotated[
    str | None,
    typer.Option(
        "--text-encoder",
        metavar="DATASET|FILE",
        help="Text encoder for typed prompts, replacing the generator file's own (official "
        "netG files have none): a prepared dataset's (name such as cub, or path), or a file: a "
        "stackgan generator file's bundled encoder or a text_encoder.pt.",
        show_default=False,
    ),
]
"""``--text-encoder DATASET|FILE`` (generate, serve)."""

DamsmOption = Annotated[
    Path | None,
    typer.Option(
        "--damsm",
        metavar="PATH",
        help="AttnGAN files: the DAMSM text encoder to read prompts with, replacing the file's "
        "own: a DAMSM file (`stackgan train --arch damsm`) or an official "
        "DAMSMencoders/<dataset> folder (with --vocabulary).",
        show_default=False,
    ),
]
"""``--damsm PATH`` (generate, serve)."""

VocabularyOption = Annotated[
    Path | None,
    typer.Option(
        "--vocabulary",
        metavar="captions.pickle",
        help="With an official --damsm folder: the AttnGAN captions.pickle whose vocabulary "
        "its encoders were trained with.",
        show_default=False,
    ),
]
"""``--vocabulary captions.pickle`` (generate, serve)."""

ForceOption = Annotated[
    bool, typer.Option("--force", help="Prepare again even if the dataset is already prepared.")
]
"""``--force`` (prepare)."""

WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Processes that crop and resize images (0 or 1: in this process). "
        "Default: the CPU cores, at most 4.",
        show_default=False,
    ),
]
"""``--workers N`` (prepare)."""

NoTextEncoderOption = Annotated[
    bool,
    typer.Option(
        "--no-text-encoder",
        help="Skip training the text encoder, which maps free text to caption embeddings.",
    ),
]
"""``--no-text-encoder`` (prepare)."""
