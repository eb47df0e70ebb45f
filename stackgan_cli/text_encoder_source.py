"""``--text-encoder DATASET|FILE``: where a generator gets its text encoder from.

Official generator files carry none, and a generator file's own encoder may be replaced. The
encoder comes from a prepared dataset (its ``text_encoder.pt``, named like ``--dataset``: a
name such as ``cub`` or a path) or from a file: a stackgan generator file (its bundled encoder)
or a ``text_encoder.pt``. An existing file wins over a dataset of the same name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stackgan_cli.errors import StackGANError
from stackgan_cli.formats import check_regular_file
from stackgan_cli.generator_file import FORMAT as GENERATOR_FORMAT
from stackgan_cli.generator_file import GeneratorBundle, text_encoder_from_dict

OPTION = "--text-encoder"


def load_text_encoder(source: str | Path) -> Any:
    """The ``TextEncoder`` (float32, CPU, eval mode) that ``source`` names: a file (stackgan
    generator file or ``text_encoder.pt``) or a prepared dataset name or path. Raises a one-line
    StackGANError when there is none there."""
    path = Path(source).expanduser()
    if os.path.lexists(path) and not path.is_dir():
        # A file (or a FIFO, a broken link: refused as such, never opened) wins over a dataset.
        return _from_file(check_regular_file(path, f"{OPTION} {path}"))
    from stackgan_cli.data.prepared import load_prepared

    try:
        dataset = load_prepared(str(source))
    except StackGANError as exc:
        raise StackGANError(
            f"{OPTION} {source}: not a file, and not a prepared dataset ({exc})"
        ) from None
    data = dataset.text_encoder_dict()
    if data is None:
        raise StackGANError(
            f"{OPTION} {source}: dataset {dataset.name!r} was prepared without a text encoder; "
            f"run `stackgan prepare {dataset.name} --force` to train one"
        )
    return text_encoder_from_dict(data, f"{OPTION} {source}")


def _from_file(path: Path) -> Any:
    from stackgan_cli.models.official import read_torch_file
    from stackgan_cli.text.encoder import FORMAT as ENCODER_FORMAT

    where = f"{OPTION} {path}"
    try:
        data = read_torch_file(path)
    except StackGANError as exc:
        raise StackGANError(f"{OPTION}: {exc}") from None
    if isinstance(data, Mapping) and data.get("format") == GENERATOR_FORMAT:
        entry = data.get("text_encoder")
        if entry is None:
            raise StackGANError(f"{where} is a generator file that carries no text encoder")
        return text_encoder_from_dict(entry, where)
    if isinstance(data, Mapping) and data.get("format") == ENCODER_FORMAT:
        return text_encoder_from_dict(data, where)
    raise StackGANError(
        f"{where} is neither a stackgan generator file nor a text encoder (text_encoder.pt)"
    )


def use_text_encoder(bundle: GeneratorBundle, encoder: Any, source: str | Path) -> None:
    """Replace ``bundle``'s text encoder with ``encoder`` (from ``source``) after checking that
    its embeddings have the generator's ``text_dim``."""
    out_dim = encoder.config.out_dim
    if out_dim != bundle.cfg.text_dim:
        raise StackGANError(
            f"{OPTION} {source} gives {out_dim}-d embeddings but {bundle.path} needs "
            f"{bundle.cfg.text_dim}-d ones"
        )
    bundle.text_encoder = encoder


def no_text_encoder_message(bundle: GeneratorBundle, *, embedding_file: bool = True) -> str:
    """Why ``bundle`` cannot read typed text, and the ways out (``--embedding-file`` named
    only where the command has it)."""
    kind = "an official state dict" if bundle.source == "official" else "trained without one"
    if bundle.family.reads_words:
        return (
            f"{bundle.path} carries no text encoder ({kind}): give the DAMSM it was trained "
            "with, e.g. --damsm DAMSMencoders/bird --vocabulary captions.pickle"
        )
    message = (
        f"{bundle.path} carries no text encoder ({kind}): take one from a prepared dataset "
        f"with {OPTION} cub (after `stackgan prepare cub`)"
    )
    if embedding_file:
        message += ", or give precomputed embeddings with --embedding-file F.npy"
    return message
