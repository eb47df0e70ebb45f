"""The DAMSM file: a text encoder, its vocabulary and an image encoder trained together.

What ``--damsm PATH`` names: our own file (``stackgan train --arch damsm --out FILE``), a plain
dict read with ``weights_only=True``::

    {"format": "stackgan-damsm", "format_version": 1, "model_config": ModelConfig.to_dict(),
     "text_encoder": DAMSMText.to_dict(), "image_encoder": state dict | None,
     "dataset": str | None, "epoch": int | None}

or an official ``DAMSMencoders/<dataset>/`` folder (``text_encoder<N>.pth`` and
``image_encoder<N>.pth``), which holds no vocabulary: ``--vocabulary captions.pickle`` gives the
one the encoders were trained with.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from torch import nn

from stackgan_cli.errors import StackGANError
from stackgan_cli.formats import check_format
from stackgan_cli.fsutil import atomic_torch_save
from stackgan_cli.models.config import ModelConfig

FORMAT = "stackgan-damsm"
FORMAT_VERSION = 1


@dataclass
class DAMSMBundle:
    """A loaded DAMSM: ``text`` (a DAMSMText), the image encoder (eval mode, CPU; None for an
    official folder without ``image_encoder<N>.pth``), where it came from."""

    text: Any
    image_encoder: nn.Module | None
    path: Path
    source: str  # "stackgan" or "official"
    dataset: str | None = None
    epoch: int | None = None

    @property
    def cfg(self) -> ModelConfig:
        return self.text.cfg

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of what the DAMSM computes: the text encoder's fingerprint (widths,
        vocabulary, weights) and the image encoder's weights and statistics."""
        digest = hashlib.sha256(self.text.fingerprint.encode())
        if self.image_encoder is not None:
            for key, value in sorted(self.image_encoder.state_dict().items()):
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def require_image_encoder(self, purpose: str) -> nn.Module:
        if self.image_encoder is None:
            raise StackGANError(f"{self.path} has no image encoder, which {purpose} needs")
        return self.image_encoder


def save_damsm_file(
    path: str | Path,
    text: Any,
    image_encoder: nn.Module | None,
    *,
    dataset: str | None,
    epoch: int | None,
) -> None:
    """Write a DAMSM file atomically (weights on the CPU)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": text.cfg.to_dict(),
        "text_encoder": text.to_dict(),
        "image_encoder": (
            {k: v.detach().cpu() for k, v in image_encoder.state_dict().items()}
            if image_encoder is not None
            else None
        ),
        "dataset": dataset,
        "epoch": epoch,
    }
    atomic_torch_save(payload, Path(path))


def load_damsm(
    path: str | Path, vocabulary: str | Path | None = None, *, image_encoder: bool = True
) -> DAMSMBundle:
    """The DAMSM that ``path`` names (see the module docstring); ``vocabulary`` (a
    ``captions.pickle``) is needed by, and only allowed with, an official folder. With
    ``image_encoder`` False only the text encoder is read (what ``generate`` needs)."""
    from stackgan_cli.text.damsm_text import DAMSMText

    path = Path(path).expanduser()
    if path.is_dir():
        return _load_official(path, vocabulary, image_encoder)
    if vocabulary is not None:
        raise StackGANError(
            f"--vocabulary: {path} carries its own vocabulary (it goes with official "
            "DAMSMencoders folders only)"
        )
    from stackgan_cli.models.official import read_torch_file

    data = read_torch_file(path)
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise StackGANError(
            f"--damsm {path} is neither a stackgan DAMSM file (`stackgan train --arch damsm`) "
            "nor an official DAMSMencoders/<dataset> folder"
        )
    check_format(
        data,
        tag=FORMAT,
        versions=(FORMAT_VERSION,),
        where=str(path),
        what="DAMSM file",
        remedy="a newer stackgan may read it",
    )
    text = DAMSMText.from_dict(data.get("text_encoder"), str(path))
    state = data.get("image_encoder")
    images = _image_encoder(state, text.cfg, path) if state is not None and image_encoder else None
    return DAMSMBundle(
        text=text,
        image_encoder=images,
        path=path,
        source="stackgan",
        dataset=data.get("dataset") if isinstance(data.get("dataset"), str) else None,
        epoch=data.get("epoch") if isinstance(data.get("epoch"), int) else None,
    )


def _image_encoder(state: Any, cfg: ModelConfig, path: Path) -> nn.Module:
    from stackgan_cli.models import DAMSMImageEncoder

    if not isinstance(state, Mapping):
        raise StackGANError(f"{path}: its image encoder entry is not a state dict")
    encoder = DAMSMImageEncoder(cfg)
    try:
        encoder.load_state_dict(dict(state), strict=True)
    except (RuntimeError, TypeError, ValueError):
        raise StackGANError(f"{path}: its image encoder does not match its widths") from None
    return encoder.eval()


def _load_official(
    folder: Path, vocabulary: str | Path | None, with_image_encoder: bool
) -> DAMSMBundle:
    from stackgan_cli.models.official_attngan import (
        load_official_image_encoder,
        official_encoder_files,
        read_official_text_encoder,
    )
    from stackgan_cli.text.damsm_text import DAMSMText
    from stackgan_cli.text.words import read_captions_pickle

    if vocabulary is None:
        raise StackGANError(
            f"--damsm {folder} is an official encoders folder, which holds no vocabulary: "
            "add --vocabulary captions.pickle (the dataset's file the encoders were trained with)"
        )
    text_path, image_path = official_encoder_files(folder)
    cfg, state = read_official_text_encoder(text_path)
    words = read_captions_pickle(vocabulary).vocabulary
    text = DAMSMText.from_state_dict(state, words, cfg, str(text_path))
    image_encoder = None
    if image_path is not None and with_image_encoder:
        image_encoder = load_official_image_encoder(image_path, cfg)
    return DAMSMBundle(text=text, image_encoder=image_encoder, path=folder, source="official")


def check_same_damsm(bundle: DAMSMBundle, recorded: str | None) -> None:
    """StackGANError when a run that started with the DAMSM of fingerprint ``recorded`` is
    given another (a replaced or different file): its features would differ."""
    if recorded is not None and bundle.fingerprint != recorded:
        raise StackGANError(
            f"--damsm {bundle.path} is not the DAMSM this run started with (fingerprint "
            f"{bundle.fingerprint[:12]}..., the run's {recorded[:12]}...): give the original file"
        )


@functools.lru_cache(maxsize=2)
def _load_damsm_cached(path: str, vocabulary: str | None, stamp: tuple) -> DAMSMBundle:
    return load_damsm(path, vocabulary)


def load_damsm_once(path: str | Path, vocabulary: str | Path | None) -> DAMSMBundle:
    """:func:`load_damsm`, read once per process while the file is unchanged: a run's set-up
    reads its widths and fingerprint, then training its encoders."""
    where = Path(path).expanduser()
    try:
        stamp = (where.stat().st_mtime_ns, where.stat().st_size)
    except OSError:
        stamp = ()
    return _load_damsm_cached(str(where), None if vocabulary is None else str(vocabulary), stamp)
