"""The upstream files stackgan downloads, and where to fetch them from."""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Artifact:
    """One upstream file: its name on disk, where it lives, and what is known about its content.

    ``md5``/``sha256`` are lower-case hex digests and ``size`` is in bytes; each is ``None``
    when unknown. ``drive_id`` marks a Google Drive file, which needs Drive's confirmation flow.
    """

    name: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    drive_id: str | None = None


def _drive_url(file_id: str) -> str:
    return f"https://drive.google.com/uc?export=download&id={file_id}"


_BIRDS_DRIVE_ID = "0B3y_msrWZaXLT1BZdVdycDY5TEE"

ARTIFACTS: dict[str, Artifact] = {
    artifact.name: artifact
    for artifact in (
        # CUB-200-2011 images, boxes and metadata (Wah et al.), hosted by CaltechDATA.
        Artifact(
            name="CUB_200_2011.tgz",
            url="https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
            md5="97eceeb196236b17998738112f37df78",
            size=1150585339,
        ),
        # StackGAN's split, captions and char-CNN-RNN embeddings; no published checksum.
        Artifact(
            name="birds.zip",
            url=_drive_url(_BIRDS_DRIVE_ID),
            drive_id=_BIRDS_DRIVE_ID,
        ),
    )
}
"""Every upstream artifact, by file name."""

MIRROR_ENV = "STACKGAN_MIRROR"


def mirror_base(mirror: str | None = None) -> str | None:
    """The mirror in effect: ``mirror`` if given, else ``$STACKGAN_MIRROR``, else ``None``."""
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV)
    return mirror.rstrip("/") if mirror else None


def resolve_url(artifact: Artifact, mirror: str | None = None) -> str:
    """The URL to fetch ``artifact`` from: ``MIRROR/<name>`` when a mirror is in effect (the
    ``mirror`` argument, else ``$STACKGAN_MIRROR``), otherwise the upstream URL.

    >>> resolve_url(ARTIFACTS["birds.zip"], "https://example.org/stackgan/")
    'https://example.org/stackgan/birds.zip'
    """
    base = mirror_base(mirror)
    return f"{base}/{artifact.name}" if base else artifact.url
