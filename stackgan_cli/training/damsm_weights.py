"""The ImageNet weights of the DAMSM image encoder's frozen Inception-v3 trunk.

The official encoder loads torchvision's Google Inception-v3 weights (attngan-spec.md 3; the
code of 2018 named ``inception_v3_google-1a9a5a14.pth``, torchvision 0.29 publishes
``inception_v3_google-0cc3c7bd.pth`` as ``Inception_V3_Weights.IMAGENET1K_V1``). We fetch the
published file once into the cache's ``weights/`` folder with the project's resumable download
(``data/download.py``: ``NAME.part`` and HTTP ranges), check it as torchvision does (the hex
digits after the last ``-`` of the file name start its SHA-256), or take ``--inception-weights
FILE`` offline. ``$STACKGAN_DAMSM_INCEPTION_URL`` replaces the URL (a mirror, or the tests'
server on 127.0.0.1); the file name in that URL names the digest expected.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from stackgan_cli import paths
from stackgan_cli.console import info
from stackgan_cli.data.download import fetch
from stackgan_cli.data.sources import Artifact
from stackgan_cli.errors import StackGANError

URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
"""torchvision 0.29's ``Inception_V3_Weights.IMAGENET1K_V1.url``."""

URL_ENV = "STACKGAN_DAMSM_INCEPTION_URL"
"""Environment variable that replaces :data:`URL` (its file name must carry the digest)."""

_DIGEST_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's HASH_REGEX


@dataclass(frozen=True)
class Backbone:
    """A torchvision Inception-v3 state dict, the file it came from and the file's SHA-256."""

    state: dict[str, Tensor]
    path: Path
    sha256: str


def weights_url() -> str:
    """The download URL: ``$STACKGAN_DAMSM_INCEPTION_URL`` if set, else :data:`URL`."""
    return os.environ.get(URL_ENV) or URL


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_weights(url: str | None = None) -> Path:
    """The published weights file in the cache, downloaded (resumably) on first use and
    checked against the digest its name carries; a bad download is deleted."""
    url = url or weights_url()
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    match = _DIGEST_IN_NAME.search(name)
    if match is None:
        raise StackGANError(
            f"{URL_ENV}={url}: the file name must carry the start of its SHA-256 after a '-' "
            "(as inception_v3_google-0cc3c7bd.pth does)"
        )
    prefix = match[1]
    target = paths.weights_dir() / name
    if not target.is_file():
        info(f"downloading the Inception-v3 ImageNet weights (about 104 MB) from {url}")
    try:
        # mirror="": $STACKGAN_MIRROR is for the dataset archives, not this file.
        path = fetch(Artifact(name=name, url=url), paths.weights_dir(), mirror="")
    except StackGANError as exc:
        raise StackGANError(
            f"{exc}; or download {URL} yourself and pass --inception-weights FILE"
        ) from None
    actual = _sha256(path)
    if not actual.startswith(prefix):
        path.unlink(missing_ok=True)
        raise StackGANError(
            f"{name} from {url} has SHA-256 {actual[:12]}..., expected one starting with "
            f"{prefix}; the bad file was deleted (run again to download it again, or pass "
            "--inception-weights FILE)"
        )
    return path


def load_backbone_weights(local: str | Path | None) -> Backbone:
    """The trunk's weights: ``local`` (``--inception-weights``) if given, else the cached or
    downloaded published file. One-line StackGANError for a missing or unreadable file or one
    that is not a torchvision Inception-v3 state dict."""
    where = f"--inception-weights {local}" if local is not None else None
    if local is not None:
        path = Path(local).expanduser()
        if not path.is_file():
            raise StackGANError(f"{where}: no such file")
    else:
        path = fetch_weights()
        where = str(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means "not a weights file"
        reason = type(exc).__name__
        raise StackGANError(f"{where} is not a PyTorch weights file ({reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise StackGANError(f"{where} is not a state dict (torchvision's {URL.rsplit('/')[-1]})")
    return Backbone(state=state, path=path.resolve(), sha256=_sha256(path))


def fill_trunk(image_encoder: torch.nn.Module, backbone: Backbone, where: str) -> None:
    """Fill ``image_encoder``'s trunk from ``backbone``; StackGANError naming ``where`` when
    the state dict is not torchvision's Inception-v3."""
    try:
        image_encoder.load_backbone(backbone.state)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StackGANError(f"{where}: {first}") from None
